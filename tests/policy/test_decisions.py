"""Decision types, their spellings, defaults, first-match order and dialects."""

from __future__ import annotations

import pytest

from cordum.models import Decision
from cordum.policy import load_text
from cordum.policy.schema import RULE_DECISIONS
from tests.policy.helpers import decide, dump, policy, rule


@pytest.mark.parametrize(("spelling", "expected"), sorted(RULE_DECISIONS.items()))
def test_every_decision_spelling_is_accepted_in_any_case(spelling, expected):
    for written in (spelling, spelling.upper(), f"  {spelling.title()} "):
        loaded = policy({"id": "r", "decision": written})
        assert loaded.rules[0].rule.decision == expected


def test_allow_returns_allow_with_empty_constraints():
    record = policy(rule(decision="allow")).evaluate({"topic": "job.x"})
    assert record.decision is Decision.ALLOW
    assert record.rule_id == "r"
    assert record.constraints.to_dict() == {}
    assert record.approval_required is False


def test_deny_carries_reason_rule_snapshot_and_remediations():
    loaded = policy(
        {
            "id": "no-drops",
            "decision": "deny",
            "reason": "never drop tables",
            "remediations": [
                {"id": "snap", "title": "Snapshot first", "replacement_topic": "job.db.snap"}
            ],
        }
    )
    record = loaded.evaluate({"topic": "job.db.drop"})
    assert record.decision is Decision.DENY
    assert record.reason == "never drop tables"
    assert record.rule_id == "no-drops"
    assert record.policy_snapshot == loaded.snapshot_id
    assert [r.id for r in record.remediations] == ["snap"]
    assert record.remediations[0].replacement_topic == "job.db.snap"


def test_require_approval_sets_approval_required():
    record = policy(rule(decision="require_approval")).evaluate({"topic": "job.x"})
    assert record.decision is Decision.REQUIRE_APPROVAL
    assert record.approval_required is True


def test_throttle_without_velocity_always_throttles():
    assert decide(policy(rule(decision="throttle"))) == ("THROTTLE", "r")


def test_allow_with_constraints_returns_the_constraints():
    constraints = {"budgets": {"max_runtime_ms": 5000, "max_retries": 2, "max_concurrent_jobs": 3}}
    loaded = policy({"id": "r", "decision": "allow_with_constraints", "constraints": constraints})
    record = loaded.evaluate({"topic": "job.x"})
    assert record.decision is Decision.ALLOW_WITH_CONSTRAINTS
    assert record.constraints.to_dict() == constraints


def test_an_allow_rule_with_constraints_is_allow_with_constraints():
    plain = policy({"id": "r", "decision": "allow", "constraints": {"max_output_bytes": 10}})
    spelled = policy({"id": "r", "decision": "constrain", "constraints": {"max_output_bytes": 10}})
    assert plain.evaluate({"topic": "job.x"}).decision is Decision.ALLOW_WITH_CONSTRAINTS
    assert plain.snapshot_id == spelled.snapshot_id


def test_empty_constraints_keep_a_plain_allow():
    loaded = policy({"id": "r", "decision": "allow", "constraints": {}})
    assert loaded.evaluate({"topic": "job.x"}).decision is Decision.ALLOW
    assert loaded.snapshot_id == policy({"id": "r", "decision": "allow"}).snapshot_id


def test_every_constraint_travels_in_the_record():
    constraints = {
        "budgets": {
            "max_runtime_ms": 1,
            "max_retries": 0,
            "max_artifact_bytes": 2,
            "max_concurrent_jobs": 3,
        },
        "sandbox": {
            "isolated": True,
            "network_allowlist": ["a"],
            "fs_read_only": ["/r"],
            "fs_read_write": ["/w"],
        },
        "toolchain": {"allowed_tools": ["git"], "allowed_commands": ["ls"]},
        "diff": {"max_files": 4, "max_lines": 5, "deny_path_globs": ["*.key"]},
        "redaction_level": "strict",
        "max_output_bytes": 6,
        "allowed_destinations": ["s3://bucket"],
    }
    loaded = policy({"id": "r", "decision": "allow", "constraints": constraints})
    assert loaded.evaluate({"topic": "job.x"}).to_dict()["constraints"] == constraints


def test_missing_default_decision_denies():
    record = policy(rule(topics=["job.other"])).evaluate({"topic": "job.x"})
    assert record.decision is Decision.DENY
    assert record.rule_id is None
    assert "default" in record.reason


def test_default_decision_allow_applies_when_nothing_matches():
    loaded = policy(rule(topics=["job.other"]), default_decision="allow")
    assert decide(loaded, topic="job.x") == ("ALLOW", None)


def test_a_policy_without_rules_denies_everything():
    assert decide(load_text("version: '1'\n")) == ("DENY", None)


def test_first_matching_rule_wins():
    first = rule("first", "allow", topics=["job.db.*"])
    second = rule("second", "deny", topics=["job.db.drop"])
    assert decide(policy(first, second), topic="job.db.drop") == ("ALLOW", "first")
    assert decide(policy(second, first), topic="job.db.drop") == ("DENY", "second")
    assert decide(policy(second, first), topic="job.db.read") == ("ALLOW", "first")


def test_a_rule_without_match_matches_everything():
    assert decide(policy({"id": "all", "decision": "deny"}), topic="job.anything") == (
        "DENY",
        "all",
    )


def test_original_dialect_spellings_load_to_the_same_snapshot():
    canonical = {
        "version": "7",
        "rules": [
            {
                "id": "r",
                "match": {
                    "topics": ["job.db.*"],
                    "capabilities": ["db.write"],
                    "labels": {"env": "prod"},
                },
                "decision": "require_approval",
                "constraints": {"budgets": {"max_runtime_ms": 90000}},
            }
        ],
    }
    dialect = {
        "version": 7,
        "rules": [
            {
                "name": "r",
                "when": {"topic": "JOB.DB.*", "capability": "db.write", "env": "prod"},
                "decision": "REQUIRE-APPROVAL",
                "constraints": {"max_runtime_sec": 90},
            }
        ],
    }
    a, b = load_text(dump(canonical)), load_text(dump(dialect))
    job = {"topic": "job.db.migrate", "capability": "db.write", "labels": {"env": "prod"}}
    assert a.evaluate(job).decision is b.evaluate(job).decision is Decision.REQUIRE_APPROVAL
    assert a.evaluate(job).constraints == b.evaluate(job).constraints
    assert b.evaluate({**job, "labels": {"env": "dev"}}).rule_id is None


def test_singular_membership_spellings_are_accepted():
    loaded = policy(
        {
            "id": "r",
            "decision": "deny",
            "match": {"tenant": "acme", "pack_id": "ops", "actor_id": "bot", "actor_type": "agent"},
        }
    )
    job = {
        "topic": "job.x",
        "tenant_id": "acme",
        "pack_id": "ops",
        "actor_id": "bot",
        "actor_type": "agent",
    }
    assert loaded.evaluate(job).rule_id == "r"
    assert loaded.evaluate({**job, "actor_type": "human"}).rule_id is None


def test_numeric_version_and_missing_version_in_the_snapshot_id():
    assert load_text("version: 3\n").snapshot_id.startswith("3:")
    assert load_text("rules: []\n").snapshot_id.startswith("unversioned:")


def test_description_of_a_rule_does_not_change_decisions():
    record = policy(
        {"id": "r", "decision": "deny", "description": "why this rule exists"}
    ).evaluate({"topic": "job.x"})
    assert record.rule_id == "r"
