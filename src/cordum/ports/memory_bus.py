"""The embedded Bus: asyncio queues inside one process.

Each subscription owns a queue and a task that drains it, so a slow handler delays only
its own subscription and per-subscriber order is kept. Subscribers receive the
published dict itself, not a copy (this is the hot path): handlers must treat it as
read-only. Queue groups pick members round
robin. Like every bus here it carries notifications only; the store is the truth.
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

    def __init__(self, bus: MemoryBus, subject: str, queue: str | None, handler: BusHandler):
        self.subject = subject
        self.queue = queue
        self._bus = bus
        self._handler = handler
        self._inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._drain())

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
        """Stop delivery; the message being handled finishes first."""
        self._bus.forget(self)
        self._inbox.put_nowait(None)
        if asyncio.current_task() is self._task:
            return  # a handler unsubscribing itself: its task ends after the handler returns
        await asyncio.shield(self._task)


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
        self, subject: str, handler: BusHandler, *, queue: str | None = None
    ) -> MemorySubscription:
        """See :meth:`cordum.ports.bus.Bus.subscribe`."""
        if self._closed:
            raise BusClosedError("the bus is closed")
        if not valid_subject(subject, pattern=True):
            raise ValueError(f"invalid subject pattern {subject!r}")
        sub = MemorySubscription(self, subject, queue, handler)
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
