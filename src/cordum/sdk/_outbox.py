"""Reports a worker owes the server, each job's in the order they were made.

Order matters within a job: its progress must not arrive after its result. Different jobs'
reports are independent, so the pump sends everything queued at once, one sequence per
job, and removes a report only once its delivery has succeeded (or was given up). Sending
them together rather than one by one lets a server commit a burst of results at once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
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

BATCH_LIMIT = 256
"""Reports sent at once, at most."""


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

        async def in_order(reports: Iterable[Report]) -> None:
            for report in reports:
                await deliver(report)

        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = list(itertools.islice(self._pending, BATCH_LIMIT))
                by_job: dict[str, list[Report]] = {}
                for report in batch:
                    by_job.setdefault(report.job_id, []).append(report)
                await asyncio.gather(*(in_order(reports) for reports in by_job.values()))
                for _ in batch:
                    self._pending.popleft()
            self._idle.set()
