"""The scheduler: gate B, routing, slots, deferrals, and the timers that drive them.

For each PENDING job: find its pool, reserve a slot on the least-loaded live worker,
ask the kernel again (gate B, invariant 3), and only on ALLOW record SCHEDULED and
DISPATCHED (one write, two events) and publish the assignment to ``worker.<id>.jobs``.
Anything that prevents a dispatch now (no workers, kernel unavailable in fail-closed
mode, throttle, tenant limit) defers the job with backoff; after
``max_scheduling_attempts`` it fails to the DLQ. Jobs waiting only for a free slot wait
in a per-pool queue, woken in batches as slots free. Many jobs are in flight at once:
each waits on store commits, and one at a time a busy process would move one job per
event-loop turn.

All of this is driven by bus notices, but none depends on them: the reconciler re-drives
every job from the store (invariant 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from cordum.models import Decision, Priority
from cordum.models.pipeline import (
    DecisionEntry,
    DLQReason,
    Gate,
    JobError,
    JobRecord,
    WorkerRecord,
)
from cordum.models.state import JobState
from cordum.policy import InvalidJobError
from cordum.ports import Bus, ConflictError, Message, Store, Subscription
from cordum.services import subjects
from cordum.services.approvals import Approvals
from cordum.services.execution import Execution, assignment_of, backoff, dlq_entry
from cordum.services.metrics import Metrics
from cordum.services.safety import SafetyClient, SafetyUnavailableError
from cordum.services.submission import decision_entry, safety_fields
from cordum.services.workers import LiveWorker, WorkerDirectory

log = logging.getLogger(__name__)

PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.INTERACTIVE: 1, None: 1, Priority.BATCH: 2}


@dataclass(frozen=True)
class SchedulerSettings:
    """The scheduler's knobs (reference section 4)."""

    max_scheduling_attempts: int = 50
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    throttle_requeue_s: float = 5.0
    pool_queue_limit: int = 100_000
    unclaimed_grace_s: float = 10.0
    """A RUNNING job its worker does not report after this long never reached it."""
    concurrency: int = 64
    """Jobs decided and dispatched at once. Each waits on store commits; one at a time,
    a busy process would move one job per event-loop turn."""


class Scheduler:
    """Moves PENDING jobs to workers, through gate B."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        gate_b: SafetyClient,
        execution: Execution,
        directory: WorkerDirectory,
        metrics: Metrics,
        settings: SchedulerSettings,
        approvals: Approvals,
    ) -> None:
        self.store = store
        self.bus = bus
        self.approvals = approvals
        self.gate_b = gate_b
        self.execution = execution
        self.directory = directory
        self.metrics = metrics
        self.settings = settings
        self._busy: set[str] = set()
        self._waiting: dict[str, list[tuple[int, int, str, str, str]]] = defaultdict(list)
        """Parked jobs by pool: (priority rank, arrival, job id, topic, tenant)."""
        self._waiting_ids: set[str] = set()
        self._waking: dict[str, int] = defaultdict(int)
        self._want_workers: set[str] = set()
        self._order = itertools.count()
        self._timers: list[tuple[float, int, str, str]] = []
        self._timer_wake = asyncio.Event()
        self._tenant_active: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._subscriptions: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the bus and start the timer loop."""
        # One replica schedules each job (a queue group); every replica hears which jobs
        # finished and which workers changed, because each holds its own slot counts.
        for subject, handler, queue in (
            (subjects.SUBMIT, self._on_submit, subjects.SCHEDULER_QUEUE),
            (subjects.FINISHED, self._on_finished, None),
            (subjects.WORKER_EVENTS, self._on_worker, None),
        ):
            concurrency = 1 if handler == self._on_worker else self.settings.concurrency
            self._subscriptions.append(
                await self.bus.subscribe(subject, handler, queue=queue, concurrency=concurrency)
            )
        self._tasks.append(asyncio.create_task(self._timer_loop(), name="scheduler-timers"))

    async def stop(self) -> None:
        """Stop timers and subscriptions (jobs stay in the store for the next start)."""
        for sub in self._subscriptions:
            await sub.unsubscribe()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._subscriptions.clear()
        self._tasks.clear()

    def track_running(self, job: JobRecord) -> None:
        """Count a job already on a worker (found at start-up) against its slots."""
        if job.worker_id is None:
            return
        worker = self.directory.workers.get(job.worker_id)
        if worker is not None:
            self.directory.reserve(worker, job.id)
        self._tenant_active[(job.tenant_id, job.topic)].add(job.id)
        self._arm_runtime(job)

    # --- bus handlers ---------------------------------------------------------------------

    async def _on_submit(self, message: Message) -> None:
        await self.schedule(str(message.data["job_id"]))

    async def _on_finished(self, message: Message) -> None:
        job_id = str(message.data["job_id"])
        worker = self.directory.release(job_id)
        self._forget_active(job_id)
        if worker is not None:
            await self._wake_pool(worker.record.pool)

    async def _on_worker(self, message: Message) -> None:
        record = WorkerRecord.model_validate(message.data["worker"])
        event = str(message.data["event"])
        self.directory.apply(event, record)
        reported = message.data.get("job_ids")
        if isinstance(reported, list):
            listed_at = float(message.data.get("listed_at") or time.time())
            await self._recover_undelivered(record.worker_id, {str(j) for j in reported}, listed_at)
        if event == "register" and self._want_workers:
            # jobs that backed off for lack of workers need not wait out their backoff
            waiting, self._want_workers = self._want_workers, set()
            for job_id in sorted(waiting):
                await self.schedule(job_id, now=True)
        if event in ("register", "heartbeat"):
            await self._wake_pool(record.pool)

    async def _recover_undelivered(
        self, worker_id: str, reported: set[str], listed_at: float
    ) -> None:
        """Re-drive jobs meant for a worker that says it never got them.

        A claim is committed before the assignment is sent; if the answer carrying it is
        lost (a crash, a dropped connection), the worker never saw the job. A dispatch
        can also be lost (published while the worker was reconnecting). The worker's
        heartbeat lists every job it holds, so a job dispatched or claimed for it long
        ago and missing from the list never ran, and is safe to run again.
        """
        worker = self.directory.workers.get(worker_id)
        if worker is None:
            return
        # Measured from when the worker made its list, not from now: a heartbeat that
        # waited (a slow store, a busy bus) must not make a job it did not know about yet
        # look lost.
        cutoff = min(time.time(), listed_at) - self.settings.unclaimed_grace_s
        for job_id in sorted(worker.active - reported):
            job = await self.store.get_job(job_id)
            if job is None or job.worker_id != worker_id:
                continue
            since = job.started_at if job.state is JobState.RUNNING else job.dispatched_at
            if job.state not in (JobState.DISPATCHED, JobState.RUNNING) or (since or 0) > cutoff:
                continue
            try:
                await self.execution.requeue(
                    job_id,
                    reason="re-driven: the assignment was lost",
                    why=f"worker {worker_id} never received the job",
                    expect={job.state},
                )
            except ConflictError:
                continue  # it moved on (claimed meanwhile, say): nothing to re-drive
            self.directory.release(job_id)
            self._forget_active(job_id)

    def _forget_active(self, job_id: str) -> None:
        for active in self._tenant_active.values():
            active.discard(job_id)

    # --- scheduling -----------------------------------------------------------------------

    async def schedule(self, job_id: str, *, now: bool = False) -> None:
        """Try to dispatch one job (safe to call any number of times).

        ``now`` ignores the job's backoff, for when the reason it backed off is gone.
        """
        if job_id in self._busy:
            return
        self._busy.add(job_id)
        try:
            await self._schedule(job_id, ignore_backoff=now)
        except Exception:
            log.exception("scheduling job %s failed; the reconciler will retry it", job_id)
        finally:
            self._busy.discard(job_id)

    async def _schedule(self, job_id: str, *, ignore_backoff: bool = False) -> None:
        job = await self.store.get_job(job_id)
        if job is None or job.state is not JobState.PENDING:
            return
        now = time.time()
        if job.deadline_at is not None and now >= job.deadline_at:
            await self.execution.time_out(job, "the job's deadline passed before it could run")
            return
        if not ignore_backoff and job.next_attempt_at is not None and job.next_attempt_at > now:
            self._arm(job.next_attempt_at, "schedule", job_id)
            return
        tenant = job.tenant_id
        pool = self.directory.pool_for(job.topic, tenant)
        if pool is None or not self.directory.candidates(pool, job.topic, tenant_id=tenant):
            # the bus notice of a new worker may not have arrived yet: ask the store
            await self._refresh_directory()
            pool = self.directory.pool_for(job.topic, tenant)
        if pool is None and self.directory.static_pools:
            # an explicit routing table is authoritative: a topic outside it never routes
            message = (
                f"no pool serves topic {job.topic!r}: add it to the routing table"
                " (CORDUM_POOLS), then retry the job from the DLQ"
            )
            await self.execution.fail(job, DLQReason.NO_POOL_MAPPING, message)
            return
        if pool is None:  # workers declare their topics: one may connect any moment
            await self._defer(
                job, DLQReason.NO_POOL_MAPPING, f"no worker has registered for {job.topic!r}"
            )
            return
        if not self.directory.candidates(pool, job.topic, tenant_id=tenant):
            # A worker of another tenant is no worker for this job: it waits the same way.
            detail = f"no live worker in pool {pool!r}"
            if self.directory.candidates(pool, job.topic, tenant_id=None):
                detail += f" serves tenant {tenant!r}"
            await self._defer(job, DLQReason.NO_WORKERS, detail)
            return
        limit = _budget(job, "max_concurrent_jobs")
        active = self._tenant_active[(job.tenant_id, job.topic)]
        if limit is not None and len(active) >= limit:
            await self._defer(
                job,
                DLQReason.TENANT_LIMIT,
                f"tenant {job.tenant_id} already runs {len(active)} of at most {limit}"
                f" {job.topic} jobs",
            )
            return
        worker = self.directory.pick(pool, job.topic, tenant_id=tenant)
        if worker is None:
            await self._park(pool, job)
            return
        await self._gate_and_dispatch(job, worker)

    async def _refresh_directory(self) -> None:
        for record in await self.store.list_workers():
            known = self.directory.workers.get(record.worker_id)
            if known is None or known.record.last_heartbeat < record.last_heartbeat:
                self.directory.apply("heartbeat", record)

    async def _gate_and_dispatch(self, job: JobRecord, worker: LiveWorker) -> None:
        self.directory.reserve(worker, job.id)
        dispatched = False
        try:
            dispatched = await self._decide_and_dispatch(job, worker)
        finally:
            if not dispatched:
                self.directory.release(job.id)

    async def _decide_and_dispatch(self, job: JobRecord, worker: LiveWorker) -> bool:
        try:
            verdict = await self.gate_b.check(job.spec)
        except SafetyUnavailableError as exc:
            await self._defer(job, DLQReason.SAFETY_UNKNOWN, str(exc))
            return False
        except InvalidJobError as exc:
            await self.execution.fail(job, DLQReason.SAFETY_UNKNOWN, f"gate B: {exc}")
            return False
        record = verdict.record
        now = time.time()
        entry = decision_entry(job.id, Gate.DISPATCH, record, verdict.bypassed, now)
        approved = job.approval is not None and job.approval.approved
        if record.decision is Decision.DENY:
            await self._deny(job, record.reason, entry)
            return False
        if record.decision is Decision.THROTTLE:
            delay = record.retry_after_seconds or self.settings.throttle_requeue_s
            await self._defer(job, "throttled", record.reason, delay=delay, decision=entry)
            return False
        if record.decision is Decision.REQUIRE_APPROVAL and not approved:
            approval = self.approvals.request(job, Gate.DISPATCH, record, now)
            waiting = await self.store.transition(
                job.id,
                JobState.APPROVAL_REQUIRED,
                expect={JobState.PENDING},
                changes=safety_fields(record, job.labels, verdict.bypassed),
                reason=record.reason,
                decision=entry,
                approval=approval,
            )
            if waiting.changed:
                self.approvals.requested(approval, waiting.job)
            return False
        changes = safety_fields(record, job.labels, verdict.bypassed)
        worker_id = worker.record.worker_id
        changes.update(
            next_attempt_at=None,
            waiting_reason=None,
            worker_id=worker_id,
            pool=worker.record.pool,
            attempts=job.attempts + 1,
            dispatched_at=now,
        )
        try:
            dispatched = await self.store.transition(
                job.id,
                JobState.DISPATCHED,
                via=JobState.SCHEDULED,
                via_reason=f"gate B: {record.decision.value}",
                expect={JobState.PENDING},
                changes=changes,
                reason=f"dispatched to worker {worker_id}",
                decision=entry,
            )
        except ConflictError:
            return False  # cancelled (or timed out) while we were deciding
        if not dispatched.changed:
            return False
        self._tenant_active[(job.tenant_id, job.topic)].add(job.id)
        try:
            subject = (
                job.topic  # CAP pool dispatch: the topic is the pool's subject
                if subjects.dispatched_to_pool(worker_id)
                else subjects.worker_jobs(worker_id)
            )
            await self.bus.publish(subject, assignment_of(dispatched.job).model_dump(mode="json"))
        except Exception as exc:
            log.warning("dispatch of %s to %s failed: %s", job.id, worker_id, exc)
            self._tenant_active[(job.tenant_id, job.topic)].discard(job.id)
            await self.execution.requeue(job.id, reason=f"dispatch failed: {exc}", delay_attempt=1)
            return False
        self.metrics.dispatches.inc()
        self._arm_runtime(dispatched.job)
        return True

    async def _deny(self, job: JobRecord, reason: str, entry: DecisionEntry) -> None:
        message = f"denied at dispatch (gate B): {reason}"
        await self.store.transition(
            job.id,
            JobState.DENIED,
            expect={JobState.PENDING},
            changes={
                **_safety_changes_from_entry(entry),
                "error": JobError(code="policy_denied", message=reason),
            },
            reason=message,
            decision=entry,
            dlq=dlq_entry(job, DLQReason.SAFETY_DENIED, message),
        )
        self.metrics.finished.labels(JobState.DENIED.value).inc()

    async def _defer(
        self,
        job: JobRecord,
        cause: str,
        detail: str,
        *,
        delay: float | None = None,
        decision: DecisionEntry | None = None,
    ) -> None:
        attempts = job.scheduling_attempts + 1
        if attempts >= self.settings.max_scheduling_attempts:
            await self.execution.fail(
                job,
                DLQReason.MAX_SCHEDULING_RETRIES,
                f"gave up after {attempts} scheduling attempts; last cause: {cause} ({detail})",
            )
            return
        if delay is None:
            delay = backoff(attempts - 1, self.settings.backoff_base_s, self.settings.backoff_max_s)
        due = time.time() + delay
        try:
            await self.store.update_job(
                job.id,
                expect={JobState.PENDING},
                changes={
                    "scheduling_attempts": attempts,
                    "next_attempt_at": due,
                    "waiting_reason": f"{cause}: {detail}",
                },
                decision=decision,
            )
        except ConflictError:
            return
        self.metrics.deferrals.labels(str(cause)).inc()
        if cause in (DLQReason.NO_WORKERS, DLQReason.NO_POOL_MAPPING):
            self._want_workers.add(job.id)
        self._arm(due, "schedule", job.id)

    async def _park(self, pool: str, job: JobRecord) -> None:
        if job.id in self._waiting_ids:
            return
        queue = self._waiting[pool]
        if len(queue) >= self.settings.pool_queue_limit:
            await self.execution.fail(
                job,
                DLQReason.POOL_OVERLOADED,
                f"pool {pool!r} already has {len(queue)} jobs waiting for a free worker",
            )
            return
        rank = PRIORITY_RANK.get(job.spec.priority, 1)
        heapq.heappush(queue, (rank, next(self._order), job.id, job.topic, job.tenant_id))
        self._waiting_ids.add(job.id)

    async def _wake_pool(self, pool: str) -> None:
        """Dispatch parked jobs, highest priority first, while the pool has free slots.

        Jobs are taken in batches as large as the free slots and scheduled concurrently,
        so their store writes share commits. ``_waking`` counts jobs taken off the queue
        but not yet settled, so concurrent wakes do not take the same slot twice; a job
        that still finds no worker parks again.
        """
        queue = self._waiting.get(pool)
        while queue:
            batch: list[str] = []
            while queue:
                _, _, job_id, topic, tenant_id = queue[0]
                # What the job was parked with is enough to count slots; schedule()
                # reads the job and skips it if it is no longer PENDING.
                free = self.directory.free_slots(pool, topic, tenant_id=tenant_id)
                if free <= self._waking[pool]:
                    break
                heapq.heappop(queue)
                self._waiting_ids.discard(job_id)
                self._waking[pool] += 1
                batch.append(job_id)
            if not batch:
                return
            try:
                await asyncio.gather(*(self.schedule(job_id) for job_id in batch))
            finally:
                self._waking[pool] -= len(batch)

    # --- timers ---------------------------------------------------------------------------

    def _arm(self, due: float, kind: str, job_id: str) -> None:
        heapq.heappush(self._timers, (due, next(self._order), kind, job_id))
        self._timer_wake.set()

    def _arm_runtime(self, job: JobRecord) -> None:
        limit_ms = _budget(job, "max_runtime_ms")
        if limit_ms is not None and job.dispatched_at is not None:
            self._arm(job.dispatched_at + limit_ms / 1000, "runtime", job.id)

    async def _timer_loop(self) -> None:
        while True:
            if not self._timers:
                await self._timer_wake.wait()
                self._timer_wake.clear()
                continue
            due, _, kind, job_id = self._timers[0]
            delay = due - time.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._timer_wake.wait(), delay)
                self._timer_wake.clear()
                continue
            heapq.heappop(self._timers)
            try:
                await self._fire(kind, job_id)
            except Exception:
                log.exception("timer %s for job %s failed", kind, job_id)

    async def _fire(self, kind: str, job_id: str) -> None:
        if kind == "schedule":
            await self.schedule(job_id)
            return
        job = await self.store.get_job(job_id)
        if job is None or job.state not in (JobState.DISPATCHED, JobState.RUNNING):
            return
        limit_ms = _budget(job, "max_runtime_ms")
        if limit_ms is None or job.dispatched_at is None:
            return
        if time.time() >= job.dispatched_at + limit_ms / 1000:
            await self.execution.time_out(
                job, f"the job ran longer than its max_runtime_ms of {limit_ms} ms"
            )

    def waiting_count(self) -> int:
        """Jobs parked for a free slot."""
        return len(self._waiting_ids)

    def is_busy(self, job_id: str) -> bool:
        """Whether the scheduler is deciding or dispatching the job at this moment."""
        return job_id in self._busy

    def is_tracked(self, job_id: str) -> bool:
        """Whether the scheduler already holds the job (scheduling, parked or timed)."""
        return job_id in self._busy or job_id in self._waiting_ids

    def timers_for(self) -> set[str]:
        """Job ids with an armed schedule timer."""
        return {job_id for _, _, kind, job_id in self._timers if kind == "schedule"}


def _budget(job: JobRecord, name: str) -> int | None:
    budgets = job.constraints.get("budgets") or {}
    value = budgets.get(name)
    return value if isinstance(value, int) else None


def _safety_changes_from_entry(entry: DecisionEntry) -> dict[str, object]:
    return {
        "safety_decision": entry.decision,
        "safety_reason": entry.reason,
        "safety_rule_id": entry.rule_id,
        "safety_snapshot": entry.policy_snapshot,
        "remediations": entry.remediations,
    }
