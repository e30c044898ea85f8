"""Approvals: asking a human, and holding everyone to what the human actually approved.

An approval is created with the job whenever gate A or gate B answers REQUIRE_APPROVAL
(:func:`new_approval`). It is bound to the snapshot that asked and to :func:`job_hash`,
so the answer applies to exactly that request under that policy:

- the requester (same principal or same API key) cannot approve their own job;
- approving twice answers the first approval again; approve racing reject: the store's
  state check lets exactly one through, the other is ``already resolved``;
- a policy published since the request is asked again: still allow or approval -> go
  ahead under the new snapshot; deny -> the job is DENIED and the approver is told why;
- a job whose content no longer hashes to the bound value cannot be approved;
- an approval that waits past its TTL expires and the job times out: silence is never
  consent. An approved job goes back to the scheduler at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from cordum.models import Decision, DecisionRecord
from cordum.models.approval import ApprovalRecord, ApprovalStatus
from cordum.models.keys import Principal
from cordum.models.pipeline import Approval, DecisionEntry, Gate, JobError, JobRecord
from cordum.models.state import JobState
from cordum.ports import (
    ApprovalFilter,
    Bus,
    ConflictError,
    JobNotFoundError,
    Store,
    TransitionOutcome,
)
from cordum.services import subjects
from cordum.services.kernel import Kernel, KernelUnavailableError
from cordum.services.lease import Lease, SoleProcess
from cordum.services.metrics import Metrics
from cordum.services.safety import SafetyClient, SafetyUnavailableError

log = logging.getLogger(__name__)

HASHED_FIELDS = (
    "topic",
    "context",
    "prompt",
    "labels",
    "risk_tags",
    "requires",
    "capability",
    "actor_id",
    "actor_type",
    "principal_id",
    "pack_id",
)
"""What an approver approves: the action and who asks for it, not ids, times or priority."""

EXPIRY_BATCH = 500


def job_hash(job: JobRecord) -> str:
    """sha256 of the job's meaningful content (:data:`HASHED_FIELDS` and its tenant)."""
    spec = job.spec.model_dump(mode="json", include=set(HASHED_FIELDS))
    spec["tenant_id"] = job.tenant_id
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def new_approval(
    job: JobRecord, gate: Gate, record: DecisionRecord, now: float, default_ttl_s: float
) -> ApprovalRecord:
    """The approval request for ``job``; the rule's ``approval_ttl_s`` beats the default."""
    ttl = record.constraints.approval_ttl_s or default_ttl_s
    return ApprovalRecord(
        job_id=job.id,
        tenant_id=job.tenant_id,
        topic=job.topic,
        gate=gate.value,
        rule_id=record.rule_id,
        reason=record.reason,
        policy_snapshot=record.policy_snapshot,
        job_hash=job_hash(job),
        requested_by=job.submitter,
        requested_key=job.submitter_key,
        created_at=now,
        expires_at=now + ttl if ttl > 0 else None,
    )


class ApprovalListener(Protocol):
    """Told about approvals as they are requested and resolved (notifications)."""

    def approval_requested(self, approval: ApprovalRecord, job: JobRecord) -> None:
        """A job now waits for a human. Must return at once."""
        ...

    def approval_resolved(self, approval: ApprovalRecord, job: JobRecord) -> None:
        """An approval was settled (approved, rejected, expired, invalidated, cancelled)."""
        ...


class ApprovalError(RuntimeError):
    """An approval cannot be resolved as asked; ``code`` names the rule that stops it."""

    code = "approval_error"

    def __init__(self, message: str, approval: ApprovalRecord | None = None) -> None:
        super().__init__(message)
        self.approval = approval


class ApprovalNotFoundError(ApprovalError):
    """The job never needed an approval."""

    code = "approval_not_found"


class SelfApprovalError(ApprovalError):
    """The requester tried to approve their own job."""

    code = "self_approval_denied"


class ApprovalResolvedError(ApprovalError):
    """Someone (or the clock) already settled this approval the other way."""

    code = "approval_already_resolved"


class StaleSnapshotError(ApprovalError):
    """The policy changed since the request and now denies the job (which is now DENIED)."""

    code = "approval_stale_snapshot"


class StaleRequestError(ApprovalError):
    """The job is not the request the approval was asked for."""

    code = "approval_stale_request"


@dataclass(frozen=True)
class ApprovalOutcome:
    """The settled approval, its job, and whether this call settled it (False = repeat)."""

    approval: ApprovalRecord
    job: JobRecord
    changed: bool


class Approvals:
    """Resolves approvals by the rules above and expires the ones nobody answered."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        kernel: Kernel,
        metrics: Metrics,
        *,
        recheck: SafetyClient,
        default_ttl_s: float,
        sweep_interval_s: float = 0.5,
        listener: ApprovalListener | None = None,
        lease: Lease | None = None,
    ) -> None:
        """``lease``: with several replicas, only its holder sweeps expired approvals."""
        self.store = store
        self.bus = bus
        self.kernel = kernel
        self.safety = recheck
        self.lease: Lease = lease if lease is not None else SoleProcess("approval-expiry")
        self.metrics = metrics
        self.default_ttl_s = default_ttl_s
        self.sweep_interval_s = sweep_interval_s
        self.listener = listener
        self._sweeper: asyncio.Task[None] | None = None

    def request(
        self, job: JobRecord, gate: Gate, record: DecisionRecord, now: float
    ) -> ApprovalRecord:
        """The approval to store with a job that just got REQUIRE_APPROVAL at ``gate``."""
        return new_approval(job, gate, record, now, self.default_ttl_s)

    def requested(self, approval: ApprovalRecord, job: JobRecord) -> None:
        """Call once the approval is stored: tells the listener (notifications)."""
        if self.listener is not None:
            self.listener.approval_requested(approval, job)

    async def resolve(
        self,
        job_id: str,
        *,
        approve: bool,
        principal: Principal,
        reason: str = "",
        note: str = "",
        reviewed_hash: str | None = None,
    ) -> ApprovalOutcome:
        """Approve or reject by the rules of this module.

        ``reviewed_hash`` is the job hash the approver saw; when given it must still
        match. Raises the :class:`ApprovalError` subclasses, :class:`JobNotFoundError`,
        and :class:`~cordum.services.kernel.KernelUnavailableError` (nothing changes).
        """
        job = await self.store.get_job(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        approval = await self.store.get_approval(job_id)
        if approval is None:
            raise ApprovalNotFoundError(f"job {job_id} never needed an approval")
        if approve and _is_requester(principal, approval):
            raise SelfApprovalError(
                f"{principal.name} submitted job {job_id} and cannot approve it;"
                " another operator must",
                approval,
            )
        if approval.status.resolved:
            return self._repeat(approval, job, approve)
        now = time.time()
        if approval.expires_at is not None and now >= approval.expires_at:
            expired = await self.expire(approval)
            raise ApprovalResolvedError(
                f"the approval of job {job_id} expired before it was answered", expired
            )
        self._check_request(job, approval, reviewed_hash)
        snapshot = self.kernel.snapshot_id()
        # A remote kernel's snapshot id is the one of its last answer, perhaps older than
        # a publish by another replica: ask it again rather than trust that.
        if approve and (self.kernel.remote or snapshot != approval.policy_snapshot):
            snapshot = await self._recheck(job, approval, principal)
        settled = approval.model_copy(
            update={
                "status": ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED,
                "resolved_by": principal.name,
                "resolved_key": principal.key_id,
                "resolved_at": now,
                "resolution_reason": reason,
                "note": note,
                "resolved_snapshot": snapshot,
            }
        )
        return await self._settle(job, settled, approve)

    def _repeat(self, approval: ApprovalRecord, job: JobRecord, approve: bool) -> ApprovalOutcome:
        wanted = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
        if approval.status is wanted:
            return ApprovalOutcome(approval, job, changed=False)
        raise ApprovalResolvedError(
            f"the approval of job {job.id} is already {approval.status.value}"
            + (f" by {approval.resolved_by}" if approval.resolved_by else ""),
            approval,
        )

    @staticmethod
    def _check_request(job: JobRecord, approval: ApprovalRecord, reviewed_hash: str | None) -> None:
        if job_hash(job) != approval.job_hash:
            raise StaleRequestError(
                f"job {job.id} changed since its approval was requested; it cannot be approved",
                approval,
            )
        if reviewed_hash is not None and reviewed_hash != approval.job_hash:
            raise StaleRequestError(
                f"the request you reviewed (job_hash {reviewed_hash[:12]}...) is not the one"
                f" waiting ({approval.job_hash[:12]}...); reload it and review again",
                approval,
            )

    async def _recheck(self, job: JobRecord, approval: ApprovalRecord, principal: Principal) -> str:
        """Decide the job under the policy published since the request, through gate B's
        client (timeout, breaker). Returns the snapshot that decided; a job it now denies
        is DENIED. Fails closed: without an answer from the kernel nothing is approved."""
        try:
            verdict = await self.safety.check(job.spec)
        except SafetyUnavailableError as exc:
            raise KernelUnavailableError(str(exc)) from None
        if verdict.bypassed:
            raise KernelUnavailableError("the kernel is unavailable (fail-open does not approve)")
        record = verdict.record
        snapshot = record.policy_snapshot or self.kernel.snapshot_id()
        if record.decision is not Decision.DENY:
            return snapshot
        now = time.time()
        why = (
            f"the policy changed since approval was requested ({approval.policy_snapshot} ->"
            f" {record.policy_snapshot}) and now denies the job: {record.reason}"
        )
        entry = DecisionEntry(
            job_id=job.id,
            gate=Gate.APPROVAL,
            decision=Decision.DENY,
            reason=why,
            rule_id=record.rule_id,
            policy_snapshot=record.policy_snapshot,
            at=now,
        )
        invalidated = approval.model_copy(
            update={
                "status": ApprovalStatus.INVALIDATED,
                "resolved_by": principal.name,
                "resolved_key": principal.key_id,
                "resolved_at": now,
                "resolution_reason": why,
                "resolved_snapshot": snapshot,
            }
        )
        outcome: TransitionOutcome | None
        try:
            outcome = await self.store.transition(
                job.id,
                JobState.DENIED,
                expect={JobState.APPROVAL_REQUIRED},
                changes={"error": JobError(code="approval_stale_snapshot", message=why)},
                reason=why,
                decision=entry,
                approval=invalidated,
            )
        except ConflictError:
            outcome = None
        if outcome is None or not outcome.changed:
            # Someone answered while the kernel was asked: theirs is the resolution.
            current = await self.store.get_approval(job.id)
            raise ApprovalResolvedError(
                f"the approval of job {job.id} was resolved meanwhile", current
            )
        self.metrics.finished.labels(JobState.DENIED.value).inc()
        self._resolved(invalidated, outcome.job)
        raise StaleSnapshotError(why, invalidated)

    async def _settle(
        self, job: JobRecord, settled: ApprovalRecord, approve: bool
    ) -> ApprovalOutcome:
        verdict = "approved" if approve else "rejected"
        why = f"{verdict} by {settled.resolved_by}" + (
            f": {settled.resolution_reason}" if settled.resolution_reason else ""
        )
        entry = DecisionEntry(
            job_id=job.id,
            gate=Gate.APPROVAL,
            decision=Decision.ALLOW if approve else Decision.DENY,
            reason=why,
            rule_id=settled.rule_id,
            policy_snapshot=settled.resolved_snapshot,
            at=settled.resolved_at or time.time(),
        )
        changes: dict[str, object] = {
            "approval": Approval(
                approved=approve,
                by=settled.resolved_by or "",
                at=entry.at,
                reason=settled.resolution_reason or settled.note,
                policy_snapshot=settled.resolved_snapshot,
            )
        }
        if not approve:
            changes["error"] = JobError(code="approval_rejected", message=why)
        try:
            outcome = await self.store.transition(
                job.id,
                JobState.PENDING if approve else JobState.DENIED,
                expect={JobState.APPROVAL_REQUIRED},
                changes=changes,
                reason=why,
                decision=entry,
                approval=settled,
            )
        except ConflictError:
            current = await self.store.get_approval(job.id)
            if current is None or not current.status.resolved:
                raise ApprovalResolvedError(
                    f"job {job.id} left APPROVAL_REQUIRED meanwhile", current
                ) from None
            return self._repeat(current, await self._job(job.id), approve)
        if not outcome.changed:
            current = await self.store.get_approval(job.id)
            assert current is not None
            return self._repeat(current, outcome.job, approve)
        if approve:
            await self.bus.publish(subjects.SUBMIT, {"job_id": job.id, "topic": job.topic})
        else:
            self.metrics.finished.labels(JobState.DENIED.value).inc()
        self._resolved(settled, outcome.job)
        return ApprovalOutcome(settled, outcome.job, changed=True)

    async def _job(self, job_id: str) -> JobRecord:
        job = await self.store.get_job(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    def _resolved(self, approval: ApprovalRecord, job: JobRecord) -> None:
        if self.listener is not None:
            self.listener.approval_resolved(approval, job)

    # --- expiry -----------------------------------------------------------------------------

    async def expire(self, approval: ApprovalRecord) -> ApprovalRecord:
        """Time out a job whose approval ran out; returns the approval as it now stands."""
        now = time.time()
        why = "no one approved or rejected the job before its approval expired"
        expired = approval.model_copy(
            update={
                "status": ApprovalStatus.EXPIRED,
                "resolved_at": now,
                "resolution_reason": why,
            }
        )
        try:
            outcome = await self.store.transition(
                approval.job_id,
                JobState.TIMEOUT,
                expect={JobState.APPROVAL_REQUIRED},
                changes={"error": JobError(code="approval_expired", message=why)},
                reason=why,
                approval=expired,
            )
        except (ConflictError, JobNotFoundError):
            current = await self.store.get_approval(approval.job_id)
            return current or approval
        if outcome.changed:
            self.metrics.finished.labels(JobState.TIMEOUT.value).inc()
            self._resolved(expired, outcome.job)
        return expired

    async def expire_due(self, now: float | None = None) -> int:
        """Expire every pending approval whose time is up; returns how many."""
        due = ApprovalFilter(
            statuses=frozenset({ApprovalStatus.PENDING}),
            expires_before=time.time() if now is None else now,
        )
        expired = 0
        while True:
            page = await self.store.list_approvals(due, limit=EXPIRY_BATCH)
            for approval in page.approvals:
                if (await self.expire(approval)).status is ApprovalStatus.EXPIRED:
                    expired += 1
            if len(page.approvals) < EXPIRY_BATCH:
                return expired

    def start(self) -> None:
        """Expire overdue approvals every ``sweep_interval_s`` (and once right away)."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="cordum-approval-expiry")

    async def stop(self) -> None:
        """Stop expiring."""
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sweep(self) -> None:
        while True:
            try:
                if await self.lease.held():
                    await self.expire_due()
            except Exception:
                log.exception("expiring approvals failed; trying again")
            await asyncio.sleep(self.sweep_interval_s)


def _is_requester(principal: Principal, approval: ApprovalRecord) -> bool:
    """Same API key, or same principal name: either makes the approver the requester."""
    if principal.key_id is not None and principal.key_id == approval.requested_key:
        return True
    return approval.requested_by is not None and principal.name == approval.requested_by
