"""explain: one trace line per rule, saying what matched and which field failed."""

from __future__ import annotations

from tests.policy.helpers import policy, rule


def test_every_rule_is_traced_with_the_failing_field():
    loaded = policy(
        rule("by-topic", topics=["job.k8s.*"]),
        rule("by-tenant", tenants=["globex"]),
        rule("by-tags", risk_tags=["prod", "destructive"]),
        rule("by-label", "require_approval", labels={"env": "prod"}),
        rule("later", "allow"),
    )
    explained = loaded.explain(
        {"topic": "job.db.x", "tenant_id": "acme", "risk_tags": ["prod"], "labels": {"env": "prod"}}
    )
    traces = {t.rule_id: t for t in explained.rules}
    assert [t.outcome for t in explained.rules] == [
        "no_match",
        "no_match",
        "no_match",
        "selected",
        "matched",
    ]
    assert traces["by-topic"].failed_field == "topics"
    assert "job.db.x" in traces["by-topic"].detail
    assert traces["by-tenant"].failed_field == "tenants"
    assert traces["by-tags"].failed_field == "risk_tags"
    assert "missing [destructive]" in traces["by-tags"].detail
    assert traces["by-label"].failed_field is None
    assert explained.record.rule_id == "by-label"
    assert not explained.default_applied
    lines = [int(t.source.rsplit(":", 1)[1]) for t in explained.rules]
    assert all(t.source.startswith("<policy>:") for t in explained.rules)
    assert lines == sorted(lines)
    assert len(set(lines)) == len(lines)


def test_default_applied_when_nothing_matches():
    explained = policy(rule("a", topics=["job.a"])).explain({"topic": "job.b"})
    assert explained.default_applied
    assert explained.record.rule_id is None
    assert explained.rules[0].outcome == "no_match"


def test_velocity_below_the_limit_is_its_own_outcome():
    throttle = {
        **rule("rate", "throttle"),
        "velocity": {"max_requests": 3, "window_seconds": 60, "key": "tenant"},
    }
    explained = policy(throttle, rule("ok", "allow")).explain({"topic": "job.x", "tenant_id": "a"})
    assert explained.rules[0].outcome == "below_velocity"
    assert explained.rules[0].failed_field == "velocity"
    assert "limit 3" in explained.rules[0].detail


def test_input_rule_traces():
    loaded = policy(
        rule("ok", "allow"),
        input_rules=[
            {
                "id": "scoped",
                "match": {"topics": ["job.slack.*"], "keywords": ["x"]},
                "decision": "deny",
            },
            {"id": "quiet", "match": {"keywords": ["nothing-here"]}, "decision": "deny"},
            {"id": "hit", "match": {"keywords": ["boom"]}, "decision": "require_approval"},
        ],
    )
    explained = loaded.explain({"topic": "job.a", "prompt": "boom"})
    outcomes = [(t.rule_id, t.outcome, t.failed_field) for t in explained.input_rules]
    assert outcomes == [
        ("scoped", "no_match", "topics"),
        ("quiet", "no_match", "content"),
        ("hit", "selected", None),
    ]
    assert explained.record.rule_id == "hit"


def test_explanation_json_has_the_record_and_the_trace():
    data = policy(rule("a", "allow")).explain({"topic": "job.x"}).to_dict()
    assert data["decision"] == "ALLOW"
    assert data["trace"][0]["rule_id"] == "a"
    assert data["trace"][0]["outcome"] == "selected"
    assert data["input_trace"] == []
