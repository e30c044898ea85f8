"""What happens to a job once it is dispatched: claim, progress, result, cancel, requeue.

Claiming moves a job to RUNNING *before* its handler is called. That commit is the line
between "never ran" and "may have run": a DISPATCHED job can be re-driven safely, a
RUNNING one whose worker vanished is never run again if it carries an idempotency key
(invariant 5) - it fails with ``worker_lost`` for an operator to decide.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Collection
from typing import Any

from cordum.models import OutputDecision
from cordum.models.pipeline import DLQEntry, DLQReason, JobAssignment, JobError, JobRecord
from cordum.models.state import JobState
from cordum.ports import Bus, ConflictError, JobNotFoundError, Store
from cordum.services import subjects
from cordum.services.approvals import ApprovalListener
from cordum.services.kernel import Kernel
from cordum.services.metrics import Metrics

log = logging.getLogger(__name__)

LIVE_STATES = frozenset({JobState.DISPATCHED, JobState.RUNNING})
CANCELLABLE = frozenset(
    {
        JobState.PENDING,
        JobState.APPROVAL_REQUIRED,
        JobState.SCHEDULED,
        JobState.DISPATCHED,
        JobState.RUNNING,
    }
)


class JobStateError(RuntimeError):
    """The job is not in a state that allows the request (e.g. cancel a finished job)."""

    def __init__(self, job: JobRecord, action: str) -> None:
        super().__init__(f"cannot {action} job {job.id}: it is {job.state.value}")
        self.job = job
        self.action = action


def backoff(attempt: int, base: float, cap: float) -> float:
    """min(base * 2^attempt + jitter, cap): spreads retries so they don't arrive together."""
    delay: float = base * 2.0 ** min(attempt, 30)
    return min(delay + random.uniform(0, base), cap)


def assignment_of(job: JobRecord) -> JobAssignment:
    """What a worker gets for ``job``."""
    return JobAssignment(
        job_id=job.id,
        trace_id=job.trace_id,
        topic=job.topic,
        tenant_id=job.tenant_id,
        input=job.spec.context,
        prompt=job.spec.prompt,
        labels=job.labels,
        constraints=job.constraints,
        attempt=job.attempts,
        deadline_at=job.deadline_at,
    )


def _on(job: JobRecord, worker_id: str) -> bool:
    """Whether ``worker_id`` may act for ``job``: the worker it went to, or any worker of
    the pool subject it was published to."""
    return job.worker_id == worker_id or subjects.dispatched_to_pool(job.worker_id)


def dlq_entry(job: JobRecord, code: DLQReason, message: str) -> DLQEntry:
    """The DLQ entry for a job that gives up now."""
    return DLQEntry(
        job_id=job.id,
        tenant_id=job.tenant_id,
        topic=job.topic,
        reason_code=code,
        message=message,
        attempts=job.attempts,
        at=time.time(),
    )


class Execution:
    """Job operations called by workers and operators."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        kernel: Kernel,
        metrics: Metrics,
        *,
        default_max_retries: int,
        backoff_base_s: float,
        backoff_max_s: float,
        approval_listener: ApprovalListener | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.kernel = kernel
        self.metrics = metrics
        self.approval_listener = approval_listener
        self.default_max_retries = default_max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s

    async def claim(
        self, worker_id: str, job_id: str, *, again: bool = False
    ) -> JobAssignment | None:
        """Mark a dispatched job RUNNING on ``worker_id``; None if it is no longer its to run.

        ``again``: the worker asks once more because the answer to its first claim never
        reached it (a scheduler died after committing it, a reply was lost). A job already
        RUNNING on exactly this worker is then answered as claimed: the worker has not run
        it, and nobody else may. Pool-dispatched jobs are never answered this way, since
        their record cannot tell which worker of the pool claimed them.
        """
        job = await self.store.get_job(job_id)
        if job is None:
            return None
        if again and job.state is JobState.RUNNING and job.worker_id == worker_id:
            return assignment_of(job)
        if job.state is not JobState.DISPATCHED or not _on(job, worker_id):
            return None
        try:
            outcome = await self.store.transition(
                job_id,
                JobState.RUNNING,
                expect={JobState.DISPATCHED},
                # A pool-dispatched job keeps its pool holder: the worker that took it
                # from the pool subject sends no heartbeats the reconciler could check.
                changes={"started_at": time.time()},
                reason=f"claimed by worker {worker_id}",
            )
        except ConflictError:
            return None
        return assignment_of(outcome.job)

    async def progress(self, worker_id: str, job_id: str, report: dict[str, Any]) -> JobRecord:
        """Store a progress report; raises :class:`JobStateError` if the job isn't running."""
        job = await self._require(job_id)
        if job.state not in LIVE_STATES or not _on(job, worker_id):
            raise JobStateError(job, "report progress on")
        return await self.store.update_job(
            job_id, expect=LIVE_STATES, changes={"progress": {**report, "at": time.time()}}
        )

    async def complete(
        self,
        worker_id: str,
        job_id: str,
        *,
        succeeded: bool,
        result: Any = None,
        error: JobError | None = None,
        retryable: bool = True,
    ) -> tuple[JobRecord, bool]:
        """Record a worker's result. Returns the job and whether the result was used.

        A result for a finished job, or from a worker the job is no longer on, is
        logged and ignored (reference section 3).
        """
        job = await self._require(job_id)
        if job.state not in LIVE_STATES or not _on(job, worker_id):
            log.info("ignoring result for job %s (%s) from %s", job_id, job.state, worker_id)
            return job, False
        if succeeded:
            job = await self._succeed(job, result)
        else:
            job = await self._fail(
                job, error or JobError(code="failed", message="failed"), retryable
            )
        await self.bus.publish(subjects.FINISHED, {"job_id": job_id, "worker_id": worker_id})
        return job, True

    async def _succeed(self, job: JobRecord, result: Any) -> JobRecord:
        verdict = await self.kernel.evaluate_output(job.spec, result, failed=False)
        if verdict.decision is OutputDecision.QUARANTINE:
            message = f"output quarantined by rule {verdict.rule_id}: {verdict.reason}"
            return await self._finish(
                job,
                JobState.OUTPUT_QUARANTINED,
                {"error": JobError(code="output_quarantined", message=message)},
                message,
            )
        if verdict.decision is OutputDecision.REDACT:
            result = verdict.output
        return await self._finish(job, JobState.SUCCEEDED, {"result": result}, "succeeded")

    def max_retries(self, job: JobRecord) -> int:
        """Retries the job may have: its policy budget, else the configured default."""
        budgets = job.constraints.get("budgets") or {}
        retries: int = budgets.get("max_retries", self.default_max_retries)
        return retries

    async def _fail(self, job: JobRecord, error: JobError, retryable: bool) -> JobRecord:
        max_retries = self.max_retries(job)
        if retryable and job.attempts <= max_retries:
            return await self.requeue(
                job.id,
                reason="retry after failure",
                why=f"attempt {job.attempts} failed: {error.message}",
                error=error,
                delay_attempt=job.attempts,
            )
        message = (
            f"{error.code}: {error.message} (attempt {job.attempts}, {max_retries} retries allowed)"
        )
        return await self._finish(
            job,
            JobState.FAILED,
            {"error": error},
            message,
            dlq=dlq_entry(job, DLQReason.MAX_RETRIES_EXCEEDED, message),
        )

    async def requeue(
        self,
        job_id: str,
        *,
        reason: str,
        why: str | None = None,
        error: JobError | None = None,
        delay_attempt: int | None = None,
        expect: Collection[JobState] | None = None,
    ) -> JobRecord:
        """Send a job back to PENDING and notify the scheduler.

        A job still on a worker (DISPATCHED or RUNNING) goes through RETRYING first, with
        ``why`` (default ``reason``) on that event and ``error`` recorded. ``expect``: the
        states the caller saw the job in and decided on; a job found in another state
        (say RUNNING: claimed since, its handler may be running) is left alone. Raises
        :class:`~cordum.ports.ConflictError` if the job moved on meanwhile.
        """
        job = await self._require(job_id)
        if expect is not None and job.state not in expect:
            raise ConflictError(job_id, job.state, expect)
        if job.state in LIVE_STATES:
            await self.store.transition(
                job_id,
                JobState.RETRYING,
                expect={job.state},
                changes=None if error is None else {"error": error},
                reason=why or reason,
            )
        due = None
        if delay_attempt is not None:
            due = time.time() + backoff(delay_attempt - 1, self.backoff_base_s, self.backoff_max_s)
        outcome = await self.store.transition(
            job_id,
            JobState.PENDING,
            expect={JobState.RETRYING},
            changes={"worker_id": None, "next_attempt_at": due},
            reason=reason,
        )
        await self.bus.publish(subjects.SUBMIT, {"job_id": job_id, "topic": outcome.job.topic})
        return outcome.job

    async def cancel(self, job_id: str, *, reason: str = "cancelled by request") -> JobRecord:
        """Cancel a job that has not finished; tell its worker if it has one."""
        job = await self._require(job_id)
        if job.state is JobState.CANCELLED:
            return job
        if job.state not in CANCELLABLE:
            raise JobStateError(job, "cancel")
        try:
            outcome = await self.store.transition(
                job_id,
                JobState.CANCELLED,
                expect=CANCELLABLE,
                changes={"error": JobError(code="cancelled", message=reason)},
                reason=reason,
            )
        except ConflictError as exc:
            raise JobStateError(await self._require(job_id), "cancel") from exc
        self.metrics.finished.labels(JobState.CANCELLED.value).inc()
        await self._settled_approval(outcome.job, outcome.previous)
        await self._stop_worker(job, outcome.previous)
        return outcome.job

    async def time_out(self, job: JobRecord, message: str) -> JobRecord | None:
        """Move a job that ran out of time to TIMEOUT (and stop its worker); None if it moved on."""
        try:
            outcome = await self.store.transition(
                job.id,
                JobState.TIMEOUT,
                expect={job.state},
                changes={"error": JobError(code="timeout", message=message)},
                reason=message,
            )
        except ConflictError:
            return None
        self.metrics.finished.labels(JobState.TIMEOUT.value).inc()
        await self._settled_approval(outcome.job, outcome.previous)
        await self._stop_worker(job, outcome.previous)
        return outcome.job

    async def _settled_approval(self, job: JobRecord, previous: JobState) -> None:
        """Tell the listener about an approval the store settled with its job (cancel,
        deadline): people who were asked to approve should hear it is moot."""
        if previous is not JobState.APPROVAL_REQUIRED or self.approval_listener is None:
            return
        approval = await self.store.get_approval(job.id)
        if approval is not None and approval.status.resolved:
            self.approval_listener.approval_resolved(approval, job)

    async def _stop_worker(self, job: JobRecord, previous: JobState) -> None:
        """Tell the worker of a job that was on it to stop, and free its slot."""
        if previous in LIVE_STATES and job.worker_id:
            note = {"job_id": job.id, "worker_id": job.worker_id}
            await self.bus.publish(subjects.CANCEL, note)
            await self.bus.publish(subjects.FINISHED, note)

    async def fail(self, job: JobRecord, code: DLQReason, message: str) -> JobRecord | None:
        """FAILED with a DLQ entry (the scheduler's and reconciler's way to give up)."""
        try:
            return await self._finish(
                job,
                JobState.FAILED,
                {"error": JobError(code=code.value, message=message)},
                message,
                dlq=dlq_entry(job, code, message),
            )
        except ConflictError:
            return None

    async def _finish(
        self,
        job: JobRecord,
        state: JobState,
        changes: dict[str, Any],
        reason: str,
        dlq: DLQEntry | None = None,
    ) -> JobRecord:
        outcome = await self.store.transition(
            job.id, state, expect={job.state}, changes=changes, reason=reason, dlq=dlq
        )
        if outcome.changed:
            self.metrics.finished.labels(state.value).inc()
        return outcome.job

    async def _require(self, job_id: str) -> JobRecord:
        job = await self.store.get_job(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        return job
