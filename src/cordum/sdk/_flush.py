"""Confirmed publishes sharing one round trip: a group commit for NATS flushes.

A NATS flush is a PING answered by a PONG once the server has read everything sent
before it. So one flush confirms every publish made before it started: a worker
reporting many results at once needs one round trip, not one each. Callers that arrive
while a flush is answered wait for it, then share the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

Flush = Callable[[], Awaitable[None]]


class SharedFlush:
    """``await shared(flush)`` returns once a flush started after the call is answered."""

    def __init__(self) -> None:
        self._running: asyncio.Task[None] | None = None
        self._next: asyncio.Task[None] | None = None

    async def __call__(self, flush: Flush) -> None:
        """Confirm what the caller published before calling; raises what the flush raised."""
        if self._next is None:
            self._next = asyncio.ensure_future(self._after(self._running, flush))
            self._next.add_done_callback(_retrieve)
        # Shielded: one caller giving up must not cancel the flush the others wait on.
        await asyncio.shield(self._next)

    async def _after(self, previous: asyncio.Task[None] | None, flush: Flush) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        # From here on, callers publish after this flush starts: they join the next one.
        self._running, self._next = self._next, None
        await flush()


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a failure seen: every caller may have stopped waiting (each re-raises its own)."""
    with contextlib.suppress(asyncio.CancelledError):
        task.exception()
