"""Reports a worker owes the server, sent one at a time in the order they were made.

Order matters: a job's progress must not arrive after its result. A single pump sends the
head of the queue and only removes it once delivery has succeeded (or was given up).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProgressReport:
    """A progress update; best effort."""

    job_id: str
    message: str | None
    percent: float | None
    data: dict[str, Any]


@dataclass(frozen=True)
class ResultReport:
    """A job's outcome; delivered at least once."""

    job_id: str
    status: str
    result: Any
    error: dict[str, str] | None
    retryable: bool


Report = ProgressReport | ResultReport


class Outbox:
    """An ordered queue of reports with one sender."""

    def __init__(self) -> None:
        self._pending: deque[Report] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def put(self, report: Report) -> None:
        """Queue a report (call on the event loop)."""
        self._pending.append(report)
        self._idle.clear()
        self._wake.set()

    @property
    def results_pending(self) -> int:
        """Results not yet delivered."""
        return sum(isinstance(r, ResultReport) for r in self._pending)

    def pending_result_ids(self) -> list[str]:
        """Jobs whose result is still owed to the server."""
        return [r.job_id for r in self._pending if isinstance(r, ResultReport)]

    async def flushed(self) -> None:
        """Return once every queued report has been dealt with."""
        await self._idle.wait()

    async def pump(self, deliver: Callable[[Report], Awaitable[None]]) -> None:
        """Send reports forever; ``deliver`` returns once a report is delivered or dropped."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await deliver(self._pending[0])
                self._pending.popleft()
            self._idle.set()
