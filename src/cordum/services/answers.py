"""The answers an agent gets for a submission, as transport-neutral documents.

A refusal carries everything needed to re-plan: the decision, the rule, the reason, the
policy snapshot and the remediations. The API turns ``status`` into an HTTP status code.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from cordum.models import Decision, DecisionRecord


class AnswerStatus(StrEnum):
    """What happened to a submission."""

    ACCEPTED = "accepted"
    APPROVAL_REQUIRED = "approval_required"
    BLOCKED = "blocked"
    THROTTLED = "throttled"


STATUS_OF_DECISION = {
    Decision.ALLOW: AnswerStatus.ACCEPTED,
    Decision.ALLOW_WITH_CONSTRAINTS: AnswerStatus.ACCEPTED,
    Decision.REQUIRE_APPROVAL: AnswerStatus.APPROVAL_REQUIRED,
    Decision.DENY: AnswerStatus.BLOCKED,
    Decision.THROTTLE: AnswerStatus.THROTTLED,
}


def answer_for(record: DecisionRecord, job_id: str, trace_id: str) -> dict[str, Any]:
    """The body of the answer to a submission decided by ``record``."""
    status = STATUS_OF_DECISION[record.decision]
    body: dict[str, Any] = {
        "job_id": job_id,
        "trace_id": trace_id,
        "status": status.value,
        "decision": record.decision.value,
        "reason": record.reason,
        "rule_id": record.rule_id,
        "policy_snapshot": record.policy_snapshot,
    }
    if status is AnswerStatus.ACCEPTED:
        body["constraints"] = record.constraints.to_dict()
        return body
    body["remediations"] = [r.model_dump(mode="json") for r in record.remediations]
    if record.findings:
        body["findings"] = list(record.findings)
    if status is AnswerStatus.THROTTLED:
        body["retry_after"] = record.retry_after_seconds
    if status is AnswerStatus.APPROVAL_REQUIRED:
        body["approval_ref"] = record.approval_ref or job_id  # an approval's id is its job's
    return body
