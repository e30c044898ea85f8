"""Lint: findings that are real, and no findings for a clean policy."""

from __future__ import annotations

from cordum.policy.lint import lint
from tests.policy.helpers import dump, policy, rule


def codes(loaded, **kwargs):
    return {(f.code, f.rule_id) for f in lint(loaded, **kwargs)}


def test_an_allow_broader_than_a_later_deny_is_an_error():
    loaded = policy(
        rule("allow-db", "allow", topics=["job.db.*"]),
        rule("deny-drop", "deny", topics=["job.db.drop"], risk_tags=["prod"]),
    )
    findings = [f for f in lint(loaded) if f.code == "allow-shadows-deny"]
    assert len(findings) == 1
    assert findings[0].severity == "error"
    assert findings[0].rule_id == "deny-drop"
    assert "allow-db" in findings[0].message
    assert findings[0].source.line > 0


def test_a_rule_after_a_broader_rule_of_the_same_kind_is_unreachable():
    loaded = policy(
        rule("broad", "deny", topics=["job.*"]), rule("narrow", "deny", topics=["job.db.x"])
    )
    assert ("unreachable-rule", "narrow") in codes(loaded)


def test_overlap_without_full_cover_is_not_reported():
    loaded = policy(
        rule("allow-acme", "allow", topics=["job.db.*"], tenants=["acme"]),
        rule("deny-drop", "deny", topics=["job.db.drop"]),
    )
    assert not {c for c, _ in codes(loaded)} & {"allow-shadows-deny", "unreachable-rule"}


def test_a_velocity_rule_never_shadows():
    throttle = {
        **rule("rate", "throttle", topics=["job.*"]),
        "velocity": {"max_requests": 5, "window_seconds": 60, "key": "tenant"},
    }
    loaded = policy(throttle, rule("deny", "deny", topics=["job.x"]))
    assert not {c for c, _ in codes(loaded)} & {"allow-shadows-deny", "unreachable-rule"}


def test_rules_without_reasons():
    loaded = policy(
        {"id": "silent-deny", "decision": "deny"}, {"id": "silent-allow", "decision": "allow"}
    )
    by_rule = {f.rule_id: f.severity for f in lint(loaded) if f.code == "missing-reason"}
    assert by_rule == {"silent-deny": "warning", "silent-allow": "info"}


def test_label_keys_outside_the_declared_vocabulary_with_suggestions():
    loaded = policy(
        rule("r", labels={"enviroment": "prod"}, label_threshold={"rows": 5}),
        label_keys=["environment", "rows"],
    )
    findings = [f for f in lint(loaded) if f.code == "unknown-label-key"]
    assert [f.message for f in findings] == ["label key `enviroment` is not a known label key"]
    assert "did you mean `environment`" in findings[0].hint


def test_label_keys_given_on_the_command_line_count_as_known():
    loaded = policy(rule("r", labels={"squad": "a"}), label_keys=["env"])
    assert ("unknown-label-key", "r") in codes(loaded)
    assert ("unknown-label-key", "r") not in codes(loaded, label_keys=["squad"])


def test_implicit_label_keys_are_reported():
    loaded = policy(rule("r", region="eu"))
    assert ("implicit-label", "r") in codes(loaded)


def test_hygiene_checks():
    loaded = policy(
        {"id": "t", "decision": "throttle", "reason": "x", "match": {"topics": ["job.t"]}},
        {
            "id": "d",
            "decision": "deny",
            "reason": "x",
            "constraints": {"max_output_bytes": 1},
            "match": {"topics": ["job.d"]},
        },
        {
            "id": "c",
            "decision": "allow_with_constraints",
            "reason": "x",
            "match": {"topics": ["job.c"]},
        },
        {
            "id": "m",
            "decision": "deny",
            "reason": "x",
            "match": {"topics": ["job.m"], "mcp": {"deny_tools": ["shell"]}},
        },
        default_decision="allow",
    )
    found = codes(loaded)
    assert ("throttle-without-velocity", "t") in found
    assert ("constraints-ignored", "d") in found
    assert ("no-constraints", "c") in found
    assert ("mcp-deny-list-inverted", "m") in found
    assert ("default-allow", None) in found
    assert ("no-remediation", "d") in found


def test_original_dialect_points_at_rules_whose_meaning_changes():
    from cordum.policy import load_text

    text = dump(
        {
            "rules": [
                rule("two-tags", risk_tags=["prod", "write"]),
                rule("one-tag", risk_tags=["prod"]),
                rule("mcp", mcp={"allow_tools": ["read"]}),
            ]
        }
    )
    found = codes(load_text(text, dialect="original"))
    assert ("dialect-risk-tags", "two-tags") in found
    assert ("dialect-risk-tags", "one-tag") not in found
    assert ("dialect-mcp", "mcp") in found
    assert not {c for c, _ in codes(load_text(text))} & {"dialect-risk-tags", "dialect-mcp"}


def test_the_example_policy_is_lint_clean():
    from pathlib import Path

    from cordum.policy import load

    example = Path(__file__).parents[2] / "examples" / "policies" / "production.yaml"
    assert lint(load(example)) == []


def test_many_disjoint_rules_have_no_shadowing_findings():
    rules = [
        rule(f"r{i}", "deny", topics=[f"job.svc{i}.*"], tenants=["acme"]) for i in range(2_000)
    ]
    rules.append(rule("dead", "deny", topics=["job.svc7.delete"], tenants=["acme"]))
    findings = [f for f in lint(policy(*rules)) if f.code == "unreachable-rule"]
    assert [(f.rule_id, f.message.split("`")[1]) for f in findings] == [("dead", "r7")]
