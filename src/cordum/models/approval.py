"""Approvals as records: what a human is asked to allow, bound to a policy and a job.

An approval is created when gate A or gate B answers REQUIRE_APPROVAL. It names the policy
snapshot that asked and a hash of the job's meaningful content, so an approval given for
one request under one policy is never silently applied to another. Silence is never
consent: an approval that runs out of time is ``expired``, and the job times out.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from cordum.models.state import JobState


class ApprovalStatus(StrEnum):
    """Where an approval stands."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    INVALIDATED = "invalidated"
    """The policy changed while it waited and now denies the job."""
    CANCELLED = "cancelled"
    """The job was cancelled while it waited."""

    @property
    def resolved(self) -> bool:
        """Whether the approval is settled (nothing can change it any more)."""
        return self is not ApprovalStatus.PENDING


class ApprovalRecord(BaseModel):
    """One request for a human decision on one job (its id is the job's id)."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    tenant_id: str
    topic: str
    status: ApprovalStatus = ApprovalStatus.PENDING
    gate: str = Field(description="Which gate asked: A (submit) or B (dispatch).")
    rule_id: str | None = None
    reason: str = Field("", description="Why the policy asked for a human.")
    policy_snapshot: str | None = Field(None, description="The snapshot that asked.")
    job_hash: str = Field(description="sha256 of the job's canonical content; see job_hash().")
    requested_by: str | None = Field(None, description="The principal that submitted the job.")
    requested_key: str | None = Field(None, description="The API key that submitted the job.")
    created_at: float
    expires_at: float | None = None
    resolved_by: str | None = None
    resolved_key: str | None = None
    resolved_at: float | None = None
    resolution_reason: str = ""
    note: str = ""
    resolved_snapshot: str | None = Field(
        None, description="The snapshot in force when it was resolved (re-checked if changed)."
    )


CLOSING_STATUS = {
    JobState.CANCELLED: ApprovalStatus.CANCELLED,
    JobState.TIMEOUT: ApprovalStatus.EXPIRED,
    JobState.DENIED: ApprovalStatus.INVALIDATED,
}
"""What a pending approval becomes when its job leaves APPROVAL_REQUIRED without one."""


def closed_by_transition(
    approval: ApprovalRecord, target: JobState, at: float, reason: str
) -> ApprovalRecord | None:
    """The approval settled to match a job that left APPROVAL_REQUIRED for ``target``
    without a human's answer (cancel, deadline), so the two never disagree; None when
    it needs no change (already settled, or a target that settles nothing)."""
    status = CLOSING_STATUS.get(target)
    if status is None or approval.status.resolved:
        return None
    return approval.model_copy(
        update={"status": status, "resolved_at": at, "resolution_reason": reason}
    )
