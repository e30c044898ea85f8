"""The shared data models: jobs and decision records."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cordum.models import Decision, DecisionRecord, Job, Remediation


def test_job_accepts_tenant_as_an_alias_and_labels_as_numbers():
    job = Job.model_validate({"topic": "job.x", "tenant": "acme", "labels": {"n": 3, "ok": True}})
    assert job.tenant_id == "acme"
    assert job.labels == {"n": "3", "ok": "true"}


def test_job_refuses_unknown_fields_and_empty_topics():
    with pytest.raises(ValidationError):
        Job.model_validate({"topic": "job.x", "risk_tag": ["prod"]})
    with pytest.raises(ValidationError):
        Job.model_validate({"topic": ""})


def test_decision_allows():
    assert {d for d in Decision if d.allows} == {Decision.ALLOW, Decision.ALLOW_WITH_CONSTRAINTS}


def test_decision_record_json_shape():
    record = DecisionRecord(
        decision=Decision.DENY,
        reason="no",
        rule_id="r",
        policy_snapshot="1:abc",
        remediations=(Remediation(id="x", title="Do y"),),
    )
    data = record.to_dict()
    assert list(data) == [
        "decision",
        "reason",
        "rule_id",
        "policy_snapshot",
        "constraints",
        "remediations",
        "approval_required",
        "approval_ref",
        "retry_after_seconds",
        "findings",
    ]
    assert data["decision"] == "DENY"
    assert data["constraints"] == {}
    assert data["remediations"][0]["id"] == "x"


def test_decision_records_are_immutable():
    record = DecisionRecord(
        decision=Decision.ALLOW, reason="ok", rule_id=None, policy_snapshot="1:a"
    )
    with pytest.raises(ValidationError):
        record.reason = "changed"  # type: ignore[misc]


def test_roles_are_no_ladder_as_the_role_docstring_says():
    from cordum.models.keys import ROLE_PERMISSIONS, Permission, Role

    def holds(role: Role) -> frozenset[Permission]:
        return ROLE_PERMISSIONS[role]

    assert holds(Role.ADMIN) == frozenset(Permission)
    assert holds(Role.VIEWER) | holds(Role.AGENT) <= holds(Role.OPERATOR)
    assert not holds(Role.AGENT) <= holds(Role.VIEWER), "an agent submits, a viewer does not"
    assert holds(Role.WORKER) == {Permission.WORK}
    assert [r for r in Role if Permission.WORK in holds(r)] == [Role.ADMIN, Role.WORKER]
