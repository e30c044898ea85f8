"""What each stored change says in the audit chain: one definition for every store adapter.

A store seals these in the same write as the change itself (invariant 2); keeping their
shape here means a second adapter records exactly the same events as the first.
"""

from __future__ import annotations

from typing import Any

from cordum.models.approval import ApprovalRecord
from cordum.models.audit import AuditDraft
from cordum.models.pipeline import DecisionEntry, JobRecord
from cordum.models.state import JobState


def transition_event(
    job: JobRecord, source: JobState | None, target: JobState, at: float, reason: str
) -> AuditDraft:
    """``job.transition``: a job changed state (``source`` None: it was created)."""
    data: dict[str, Any] = {
        "from": None if source is None else source.value,
        "to": target.value,
        "reason": reason,
    }
    if source is None:
        data["topic"] = job.topic
    return AuditDraft(
        tenant_id=job.tenant_id,
        kind="job.transition",
        subject=job.id,
        actor=job.submitter if source is None else None,
        data=data,
        at_ms=int(at * 1000),
    )


def decision_event(tenant_id: str, decision: DecisionEntry) -> AuditDraft:
    """``decision``: a gate or an approval decided a job, under a policy snapshot."""
    return AuditDraft(
        tenant_id=tenant_id,
        kind="decision",
        subject=decision.job_id,
        data={
            "gate": decision.gate.value,
            "decision": decision.decision.value,
            "rule_id": decision.rule_id,
            "policy_snapshot": decision.policy_snapshot,
            "reason": decision.reason,
            "safety_bypassed": decision.safety_bypassed,
        },
        at_ms=int(decision.at * 1000),
    )


def approval_event(approval: ApprovalRecord) -> AuditDraft:
    """``approval.<status>``: an approval was requested or reached its current status."""
    return AuditDraft(
        tenant_id=approval.tenant_id,
        kind=f"approval.{approval.status.value}",
        subject=approval.job_id,
        actor=approval.resolved_by if approval.status.resolved else approval.requested_by,
        data={
            "gate": approval.gate,
            "rule_id": approval.rule_id,
            "policy_snapshot": approval.policy_snapshot,
            "job_hash": approval.job_hash,
            "resolved_key": approval.resolved_key,
            "reason": approval.resolution_reason or approval.reason,
            "note": approval.note,
            "resolved_snapshot": approval.resolved_snapshot,
        },
    )
