"""The reconciler: the store is the truth, so every job is re-driven from it.

At start-up it picks up where a crashed process stopped; then, every ``interval``, it
finds what the bus lost or what ran out of time:

- SCHEDULED (gate B passed, never published): back to PENDING.
- DISPATCHED and never claimed: re-driven when its worker is lost, the dispatch timed out,
  or (at start-up) when the bus could not have kept the message. No handler ran, so this
  is always safe.
- RUNNING on a lost worker: the handler may have run. Retried only if the job has no
  idempotency key and retries are left; otherwise FAILED with ``worker_lost`` (DLQ).
- RUNNING past the running timeout: TIMEOUT, and the worker is told to stop.
- PENDING that nobody is scheduling (a lost notification): scheduled again.
- Jobs past their deadline: TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from cordum.models.pipeline import DLQReason, JobRecord
from cordum.models.state import JobState
from cordum.ports import ConflictError, JobFilter, Store
from cordum.services.execution import Execution
from cordum.services.lease import Lease, SoleProcess
from cordum.services.scheduler import Scheduler
from cordum.services.workers import WorkerDirectory

log = logging.getLogger(__name__)

OPEN_STATES = frozenset(
    {
        JobState.PENDING,
        JobState.APPROVAL_REQUIRED,
        JobState.SCHEDULED,
        JobState.DISPATCHED,
        JobState.RUNNING,
        JobState.RETRYING,
    }
)
PAGE = 500


class Reconciler:
    """Periodic repair of jobs whose notifications were lost or whose time ran out."""

    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        execution: Execution,
        directory: WorkerDirectory,
        *,
        interval: float,
        dispatch_timeout: float,
        running_timeout: float,
        lease: Lease | None = None,
    ) -> None:
        """``lease``: with several scheduler replicas, only its holder scans."""
        self.store = store
        self.scheduler = scheduler
        self.execution = execution
        self.directory = directory
        self.interval = interval
        self.dispatch_timeout = dispatch_timeout
        self.running_timeout = running_timeout
        self.lease: Lease = lease if lease is not None else SoleProcess("reconciler")
        self._task: asyncio.Task[None] | None = None
        self._started_at = time.time()

    async def recover(self, *, bus_durable: bool) -> None:
        """Start-up pass: load workers, count running jobs, re-drive everything open."""
        self._started_at = time.time()
        for worker in await self.store.list_workers():
            if worker.transport == "inprocess" and not bus_durable:
                # in-process workers died with the process that ran them
                await self.store.remove_worker(worker.worker_id)
                continue
            self.directory.apply("heartbeat", worker)
        async for job in self._open_jobs():
            if job.state in (JobState.DISPATCHED, JobState.RUNNING):
                self.scheduler.track_running(job)
        await self.scan(lost_bus=not bus_durable)

    def start(self) -> None:
        """Run :meth:`scan` every ``interval`` seconds."""
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    async def stop(self) -> None:
        """Stop the periodic scan."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                if await self.lease.held():
                    await self.scan()
            except Exception:
                log.exception("reconciler scan failed; retrying next interval")

    async def scan(self, *, lost_bus: bool = False) -> None:
        """One pass over every open job."""
        now = time.time()
        lost_workers = {w.record.worker_id for w in self.directory.lost(now)}
        known = set(self.directory.workers)
        armed = self.scheduler.timers_for()
        jobs = [job async for job in self._open_jobs()]
        for job in jobs:
            try:
                await self._repair(job, now, lost_workers, known, armed, lost_bus)
            except ConflictError:
                continue  # it moved on while we looked: nothing to repair

    async def _repair(
        self,
        job: JobRecord,
        now: float,
        lost_workers: set[str],
        known: set[str],
        armed: set[str],
        lost_bus: bool,
    ) -> None:
        if (
            job.deadline_at is not None
            and now >= job.deadline_at
            and job.state
            in (
                JobState.PENDING,
                JobState.APPROVAL_REQUIRED,
                JobState.SCHEDULED,
            )
        ):
            await self.execution.time_out(job, "the job's deadline passed before it could run")
            return
        worker_gone = job.worker_id is not None and (
            job.worker_id in lost_workers or job.worker_id not in known
        )
        if self.scheduler.is_busy(job.id):
            return  # the scheduler is moving it right now
        if job.state is JobState.SCHEDULED:
            await self.store.transition(
                job.id, JobState.PENDING, expect={JobState.SCHEDULED}, reason="requeued"
            )
            await self.scheduler.schedule(job.id)
        elif job.state is JobState.RETRYING:
            await self.execution.requeue(
                job.id, reason="requeued after interruption", expect={JobState.RETRYING}
            )
        elif job.state is JobState.DISPATCHED:
            stale = (
                job.dispatched_at is not None and now - job.dispatched_at > self.dispatch_timeout
            )
            if lost_bus or worker_gone or stale:
                why = (
                    "dispatch lost"
                    if lost_bus
                    else "worker lost"
                    if worker_gone
                    else "dispatch timed out"
                )
                await self.execution.requeue(
                    job.id, reason=f"{why}; never started, re-driven", expect={JobState.DISPATCHED}
                )
                self.directory.release(job.id)  # not before: a job claimed since keeps its slot
        elif job.state is JobState.RUNNING:
            await self._repair_running(job, now, worker_gone)
        elif job.state is JobState.PENDING and not (
            self.scheduler.is_tracked(job.id) or job.id in armed
        ):
            await self.scheduler.schedule(job.id)

    async def _repair_running(self, job: JobRecord, now: float, worker_gone: bool) -> None:
        started = job.started_at or job.dispatched_at or job.updated_at
        if now - started > self.running_timeout:
            self.directory.release(job.id)
            await self.execution.time_out(
                job, f"the job ran longer than the running timeout of {self.running_timeout:g} s"
            )
            return
        if not worker_gone:
            return
        self.directory.release(job.id)
        if job.idempotency_key is None and job.attempts <= self.execution.max_retries(job):
            await self.execution.requeue(
                job.id,
                reason="worker lost while running; retried",
                why="worker lost",
                expect={JobState.RUNNING},
            )
            return
        why = (
            "it has an idempotency key, so it is not run again"
            if job.idempotency_key
            else "no retries left"
        )
        await self.execution.fail(
            job,
            DLQReason.WORKER_LOST,
            f"worker {job.worker_id} was lost while running the job; the outcome is unknown and"
            f" {why}",
        )

    async def _open_jobs(self) -> AsyncIterator[JobRecord]:
        cursor: str | None = None
        while True:
            page = await self.store.list_jobs(
                JobFilter(states=OPEN_STATES), cursor=cursor, limit=PAGE
            )
            for job in page.jobs:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
