"""The embedded Bus: asyncio queues inside one process.

Each subscription owns a queue and as many tasks draining it as its ``concurrency``, so a
slow handler delays only its own subscription, and with one task per-subscriber order is
kept. Subscribers receive the published dict itself, not a copy (this is the hot path):
handlers must treat it as read-only. Queue groups pick members round robin. Like every
bus here it carries notifications only; the store is the truth.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import defaultdict
from typing import Any

from cordum.models.subjects import subject_matches, valid_subject
from cordum.ports.bus import BusHandler, Message

log = logging.getLogger(__name__)


class BusClosedError(RuntimeError):
    """The bus was closed; nothing more can be published or subscribed."""


class MemorySubscription:
    """One subscriber: a queue and the task feeding its handler."""

    def __init__(
        self,
        bus: MemoryBus,
        subject: str,
        queue: str | None,
        handler: BusHandler,
        concurrency: int,
    ) -> None:
        self.subject = subject
        self.queue = queue
        self._bus = bus
        self._handler = handler
        self._inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._drain()) for _ in range(concurrency)]

    def deliver(self, message: Message) -> None:
        """Queue a message for the handler."""
        self._inbox.put_nowait(message)

    async def _drain(self) -> None:
        while (message := await self._inbox.get()) is not None:
            try:
                await self._handler(message)
            except Exception:
                log.exception("bus handler for %s failed on %s", self.subject, message.subject)

    async def unsubscribe(self) -> None:
        """Stop delivery; messages being handled finish first."""
        self._bus.forget(self)
        for _ in self._tasks:
            self._inbox.put_nowait(None)
        # a handler unsubscribing itself: its own task ends after the handler returns
        others = [task for task in self._tasks if task is not asyncio.current_task()]
        if others:
            await asyncio.shield(asyncio.gather(*others))


class MemoryBus:
    """The Bus port inside one process."""

    def __init__(self) -> None:
        self._plain: list[MemorySubscription] = []
        self._groups: dict[tuple[str, str], list[MemorySubscription]] = defaultdict(list)
        self._turns: dict[tuple[str, str], itertools.count[int]] = {}
        self._closed = False

    async def publish(self, subject: str, data: dict[str, Any]) -> None:
        """See :meth:`cordum.ports.bus.Bus.publish`."""
        self.publish_nowait(subject, data)

    def publish_nowait(self, subject: str, data: dict[str, Any]) -> None:
        """Publish without yielding to the loop (the embedded hot path)."""
        if self._closed:
            raise BusClosedError("the bus is closed")
        if not valid_subject(subject):
            raise ValueError(f"invalid subject {subject!r}")
        message = Message(subject, data)
        for sub in self._plain:
            if subject_matches(sub.subject, subject):
                sub.deliver(message)
        for key, members in self._groups.items():
            if members and subject_matches(key[0], subject):
                turn = next(self._turns[key])
                members[turn % len(members)].deliver(message)

    async def subscribe(
        self,
        subject: str,
        handler: BusHandler,
        *,
        queue: str | None = None,
        concurrency: int = 1,
    ) -> MemorySubscription:
        """See :meth:`cordum.ports.bus.Bus.subscribe`."""
        if self._closed:
            raise BusClosedError("the bus is closed")
        if not valid_subject(subject, pattern=True):
            raise ValueError(f"invalid subject pattern {subject!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        sub = MemorySubscription(self, subject, queue, handler, concurrency)
        if queue is None:
            self._plain.append(sub)
        else:
            key = (subject, queue)
            self._turns.setdefault(key, itertools.count())
            self._groups[key].append(sub)
        return sub

    def forget(self, sub: MemorySubscription) -> None:
        """Remove a subscription from routing (called by the subscription itself)."""
        if sub.queue is None:
            if sub in self._plain:
                self._plain.remove(sub)
        else:
            members = self._groups.get((sub.subject, sub.queue), [])
            if sub in members:
                members.remove(sub)

    async def close(self) -> None:
        """See :meth:`cordum.ports.bus.Bus.close`."""
        self._closed = True
        subs = [*self._plain, *(s for members in self._groups.values() for s in members)]
        for sub in subs:
            await sub.unsubscribe()
