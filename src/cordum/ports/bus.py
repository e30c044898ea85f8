"""The Bus port: notifications between roles, never the source of truth.

Subjects are dot-separated tokens as in NATS and CAP: ``*`` matches one token, ``>`` the
rest. A queue group delivers each message to one member of the group; plain subscribers
each get every message. Payloads are JSON-ready dicts; a distributed adapter encodes them
on the wire (CAP protobuf) and decodes them back, so services never see bytes.

Delivery is at most once: anything a crash or a full buffer loses is re-driven from the
store by the reconciler (invariant 1).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cordum.models.subjects import subject_matches, valid_subject

__all__ = ["Bus", "BusHandler", "Message", "Subscription", "subject_matches", "valid_subject"]


@dataclass(frozen=True)
class Message:
    """One published message as a subscriber receives it."""

    subject: str
    data: dict[str, Any]
    reply: str | None = None
    """Where the sender waits for an answer (a request), or None; answer by publishing
    to it. Only network buses carry requests."""


BusHandler = Callable[[Message], Awaitable[None]]


class Subscription(Protocol):
    """A live subscription; stop it with :meth:`unsubscribe`."""

    subject: str
    queue: str | None

    async def unsubscribe(self) -> None:
        """Stop delivery; messages already being handled finish."""
        ...


class Bus(Protocol):
    """Publish/subscribe with queue groups."""

    async def publish(self, subject: str, data: dict[str, Any]) -> None:
        """Send ``data`` to every subscription matching ``subject`` (one per queue group)."""
        ...

    async def subscribe(
        self,
        subject: str,
        handler: BusHandler,
        *,
        queue: str | None = None,
        concurrency: int = 1,
    ) -> Subscription:
        """Call ``handler`` for every message on ``subject`` (a pattern with * and >).

        With ``concurrency`` 1 the handler runs for one message at a time, in publish
        order. With N > 1 up to N calls run at once: handlers start in publish order but
        may finish in any order (for handlers whose messages are independent, such as one
        job each, so one waiting on I/O does not hold up the rest). A handler that raises
        is logged; the subscription keeps running. ``concurrency`` < 1 is a ValueError.
        """
        ...

    async def close(self) -> None:
        """Stop every subscription and refuse further publishing."""
        ...
