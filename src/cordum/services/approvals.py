"""Moving a job out of APPROVAL_REQUIRED: approve (back to PENDING) or reject (DENIED).

This is the minimal admin path. Gate B still runs on an approved job: an approval lets a
REQUIRE_APPROVAL decision through, never a DENY, so a policy tightened after the approval
still stops the job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cordum.models import Decision
from cordum.models.pipeline import Approval, DecisionEntry, Gate, JobError, JobRecord
from cordum.models.state import JobState
from cordum.ports import Bus, ConflictError, JobNotFoundError, Store
from cordum.services import subjects
from cordum.services.kernel import Kernel
from cordum.services.metrics import Metrics


class ApprovalConflictError(RuntimeError):
    """The job is not waiting for approval (any more)."""

    def __init__(self, job: JobRecord) -> None:
        super().__init__(f"job {job.id} is {job.state.value}, not waiting for approval")
        self.job = job


@dataclass(frozen=True)
class ApprovalOutcome:
    """The job after the decision, and whether this call made it (False = repeat)."""

    job: JobRecord
    changed: bool


class Approvals:
    """Approve or reject jobs that wait for a human."""

    def __init__(self, store: Store, bus: Bus, kernel: Kernel, metrics: Metrics) -> None:
        self.store = store
        self.bus = bus
        self.kernel = kernel
        self.metrics = metrics

    async def resolve(
        self, job_id: str, *, approve: bool, by: str, reason: str = "", note: str = ""
    ) -> ApprovalOutcome:
        """Approve or reject; a repeat of the same resolution is answered, not redone."""
        job = await self.store.get_job(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        if job.state is not JobState.APPROVAL_REQUIRED:
            if job.approval is not None and job.approval.approved == approve:
                return ApprovalOutcome(job, changed=False)
            raise ApprovalConflictError(job)
        now = time.time()
        snapshot = self.kernel.snapshot_id()
        approval = Approval(
            approved=approve, by=by, at=now, reason=reason or note, policy_snapshot=snapshot
        )
        verdict = "approved" if approve else "rejected"
        entry = DecisionEntry(
            job_id=job_id,
            gate=Gate.APPROVAL,
            decision=Decision.ALLOW if approve else Decision.DENY,
            reason=f"{verdict} by {by}" + (f": {reason}" if reason else ""),
            rule_id=job.safety_rule_id,
            policy_snapshot=snapshot,
            at=now,
        )
        target = JobState.PENDING if approve else JobState.DENIED
        changes: dict[str, object] = {"approval": approval}
        if not approve:
            changes["error"] = JobError(code="approval_rejected", message=entry.reason)
        try:
            outcome = await self.store.transition(
                job_id,
                target,
                expect={JobState.APPROVAL_REQUIRED},
                changes=changes,
                reason=entry.reason,
                decision=entry,
            )
        except ConflictError as exc:
            current = await self.store.get_job(job_id)
            raise ApprovalConflictError(current or job) from exc
        if approve:
            await self.bus.publish(subjects.SUBMIT, {"job_id": job_id})
        else:
            self.metrics.finished.labels(JobState.DENIED.value).inc()
        return ApprovalOutcome(outcome.job, changed=True)
