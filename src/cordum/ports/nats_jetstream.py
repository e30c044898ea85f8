"""The JetStream half of the NATS bus: which subscriptions are durable, and the stream and
consumers behind them.

Subjects listed as durable are captured by one stream (interest retention: a message is
kept until every queue group consuming it has acked it, or ``max_age`` passes). A queue
subscription on a durable subject is a push consumer with a deliver group, shared by name
by every member of the queue group in every process, so each message goes to one member
and waits on the server while the group has none. Plain subscriptions stay core NATS.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]+")
DELIVER_ROOT = "_CORDUM.deliver"
"""Where push consumers deliver: outside any stream's subjects and any test prefix."""


def pattern_covers(outer: str, inner: str) -> bool:
    """Whether every subject matching pattern ``inner`` also matches pattern ``outer``."""
    wide, narrow = outer.split("."), inner.split(".")
    for i, token in enumerate(wide):
        if token == ">":
            return len(narrow) > i
        if i >= len(narrow) or narrow[i] == ">":
            return False
        if token != "*" and narrow[i] != token:
            return False
    return len(narrow) == len(wide)


def patterns_overlap(a: str, b: str) -> bool:
    """Whether some subject matches both patterns."""
    left, right = a.split("."), b.split(".")
    for i in range(max(len(left), len(right))):
        if i >= len(left) or i >= len(right):
            return False
        if ">" in (left[i], right[i]):
            return True
        if "*" not in (left[i], right[i]) and left[i] != right[i]:
            return False
    return True


def merge_patterns(current: Sequence[str], added: Sequence[str]) -> list[str]:
    """``current`` widened by ``added``, dropping patterns a wider one covers.

    A stream refuses overlapping subjects, and processes sharing it may each list only
    some durable subjects, so ours are merged into what is there rather than replacing it.
    """
    merged = list(current)
    for pattern in added:
        if not any(pattern_covers(kept, pattern) for kept in merged):
            merged = [kept for kept in merged if not pattern_covers(pattern, kept)] + [pattern]
    return merged


def stream_name(stream: str, prefix: str | None) -> str:
    """The stream's name on the server: a prefixed (test) bus gets a stream of its own."""
    if _UNSAFE_NAME.search(stream):
        raise ValueError(f"stream name {stream!r} may only hold letters, digits, _ and -")
    return stream if prefix is None else f"{stream}-{_UNSAFE_NAME.sub('_', prefix)}"


def durable_name(queue: str, subject: str) -> str:
    """The consumer shared by every member of ``queue`` on ``subject``, in every process.

    Readable for operators (wildcards spelled out) plus a hash of the exact pair, because
    making the pair a valid name folds distinct pairs together (``a.b`` and ``a_b``).
    """
    spelled = f"{queue}__{subject}".replace("*", "any").replace(">", "all")
    digest = hashlib.sha256(f"{queue}\n{subject}".encode()).hexdigest()[:10]
    return f"{_UNSAFE_NAME.sub('_', spelled)[:48]}-{digest}"


@dataclass(frozen=True)
class Durability:
    """Which subjects are durable and how their stream and consumers are configured."""

    stream: str
    """The stream's name on the server (see :func:`stream_name`)."""
    subjects: tuple[str, ...]
    """Durable patterns as the services name them (no test prefix)."""
    max_age: float
    ack_wait: float
    max_ack_pending: int

    def covers(self, pattern: str) -> bool:
        """Whether every subject of ``pattern`` is durable."""
        return any(pattern_covers(durable, pattern) for durable in self.subjects)

    def touches(self, pattern: str) -> bool:
        """Whether some subject of ``pattern`` is durable."""
        return any(patterns_overlap(durable, pattern) for durable in self.subjects)

    def deliver_subject(self, durable: str) -> str:
        """Where the consumer ``durable`` pushes its messages.

        Fixed rather than a random inbox, so members starting at once create the very
        same consumer (an identical create is a no-op on the server).
        """
        return f"{DELIVER_ROOT}.{self.stream}.{durable}"

    async def ensure_stream(self, js: Any, wire_subjects: list[str]) -> None:
        """Create the stream, or widen the existing one to capture ``wire_subjects`` too."""
        try:
            info = await js.stream_info(self.stream)
        except NotFoundError:
            config = StreamConfig(
                name=self.stream,
                subjects=wire_subjects,
                retention=RetentionPolicy.INTEREST,
                storage=StorageType.FILE,
                max_age=self.max_age,
            )
            try:
                await js.add_stream(config)
                return
            except BadRequestError:  # another process created it meanwhile
                info = await js.stream_info(self.stream)
        current = list(info.config.subjects or [])
        merged = merge_patterns(current, wire_subjects)
        if merged != current or info.config.max_age != self.max_age:
            await js.update_stream(info.config.evolve(subjects=merged, max_age=self.max_age))

    async def ensure_consumer(self, js: Any, durable: str, queue: str, wire_pattern: str) -> None:
        """Create the queue group's consumer, or update its redelivery settings.

        New consumers start with the next message (DeliverPolicy.NEW); an existing one
        keeps its position, so a restarted group resumes from its ack floor.
        """
        config = ConsumerConfig(
            durable_name=durable,
            deliver_subject=self.deliver_subject(durable),
            deliver_group=queue,
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_ack_pending=self.max_ack_pending,
            filter_subject=wire_pattern,
        )
        await js.add_consumer(self.stream, config)
