"""Bundles (base + fragments), directories of bundles, and legacy tenant lists."""

from __future__ import annotations

import pytest

from cordum.models import Decision
from cordum.policy import PolicyLoadError, load, load_bundles
from tests.policy.helpers import decide, dump, policy, rule

BASE = dump(
    {
        "version": "5",
        "default_decision": "deny",
        "rules": [rule("a", "allow", topics=["job.a"]), rule("b", "deny", topics=["job.b"])],
    }
)


def test_fragments_append_rules_after_the_base():
    fragment = dump({"rules": [rule("c", "allow", topics=["job.c"])]})
    merged = load_bundles({"secops/extra": fragment, "base": BASE})
    assert [r.rule.id for r in merged.rules] == ["a", "b", "c"]
    assert merged.version == "5"


def test_a_fragment_rule_with_an_existing_id_replaces_it_in_place():
    fragment = dump({"rules": [rule("a", "deny", topics=["job.a"])]})
    merged = load_bundles({"base": BASE, "freeze": fragment})
    assert [r.rule.id for r in merged.rules] == ["a", "b"]
    assert decide(merged, topic="job.a") == ("DENY", "a")
    replaced = [n for n in merged.merged.notes if n.code == "rule_replaced"]
    assert replaced
    assert replaced[0].rule_id == "a"


def test_fragments_merge_in_key_order_with_base_first():
    first = dump({"rules": [rule("x", "allow", topics=["job.x"])]})
    second = dump({"rules": [rule("x", "deny", topics=["job.x"])]})
    merged = load_bundles({"z/second": second, "a/first": first, "base": BASE})
    assert decide(merged, topic="job.x") == ("DENY", "x")
    assert merged.merged.bundle_ids == ("base", "a/first", "z/second")


def test_conflicting_default_decisions_are_refused():
    fragment = dump({"default_decision": "allow", "rules": []})
    with pytest.raises(PolicyLoadError) as caught:
        load_bundles({"base": BASE, "loose": fragment})
    assert caught.value.issues[0].code == "conflicting_default_decision"
    assert caught.value.issues[0].file == "loose"


def test_scalars_keep_the_first_value_set():
    fragment = dump({"version": "99", "default_tenant": "globex", "rules": []})
    merged = load_bundles({"base": BASE, "f": fragment})
    assert merged.version == "5"
    assert merged.document.default_tenant == "globex"


def test_the_same_bundles_give_the_same_snapshot_in_any_dict_order():
    fragment = dump({"rules": [rule("c", "allow")]})
    one = load_bundles({"base": BASE, "f": fragment})
    two = load_bundles({"f": fragment, "base": BASE})
    assert one.snapshot_id == two.snapshot_id


def test_a_directory_loads_base_first_then_bundles_by_id(tmp_path):
    (tmp_path / "secops").mkdir()
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "secops" / "freeze.yml").write_text(
        dump({"rules": [rule("b", "allow", topics=["job.b"])]})
    )
    (tmp_path / "aaa.yaml").write_text(dump({"rules": [rule("early", "deny", topics=["job.e"])]}))
    (tmp_path / "base_test.yaml").write_text("tests: not a bundle")
    (tmp_path / ".hidden.yaml").write_text("not: [valid")
    (tmp_path / "notes.txt").write_text("ignored")
    loaded = load(tmp_path)
    assert [r.rule.id for r in loaded.rules] == ["a", "b", "early"]
    assert decide(loaded, topic="job.b") == ("ALLOW", "b")
    assert loaded.source_of("b").file.endswith("freeze.yml")


def test_a_directory_with_one_bad_bundle_is_refused_whole(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "bad.yaml").write_text("rules:\n  - id: x\n    decision: nope\n")
    (tmp_path / "worse.yaml").write_text("rules: [")
    with pytest.raises(PolicyLoadError) as caught:
        load(tmp_path)
    files = {issue.file.rsplit("/", 1)[-1] for issue in caught.value.issues}
    assert files == {"bad.yaml", "worse.yaml"}


def test_an_empty_directory_is_an_error(tmp_path):
    with pytest.raises(PolicyLoadError) as caught:
        load(tmp_path)
    assert caught.value.issues[0].code == "no_bundles"


def test_load_tells_text_from_paths():
    assert load("rules:\n  - {id: r, decision: allow}\n").rules[0].rule.id == "r"
    with pytest.raises(PolicyLoadError) as caught:
        load("policy.yaml")
    assert caught.value.issues[0].code == "file_not_found"


LEGACY = {
    "tenants": {
        "acme": {"deny_topics": ["job.db.drop*"], "allow_topics": ["job.db.*", "job.k8s.get"]},
        "globex": {"allow_topics": ["job.*"], "max_concurrent_jobs": 3},
    }
}


def test_legacy_tenant_lists_become_rules_denies_first():
    loaded = policy(**LEGACY)
    assert [r.rule.id for r in loaded.rules] == [
        "legacy:acme:deny:1",
        "legacy:acme:allow:1",
        "legacy:acme:allow:2",
        "legacy:globex:allow:1",
    ]
    assert decide(loaded, topic="job.db.drop-table", tenant_id="acme") == (
        "DENY",
        "legacy:acme:deny:1",
    )
    assert decide(loaded, topic="job.db.query", tenant_id="acme") == (
        "ALLOW",
        "legacy:acme:allow:1",
    )
    assert decide(loaded, topic="job.slack.post", tenant_id="acme") == ("DENY", None)
    record = loaded.evaluate({"topic": "job.slack.post", "tenant_id": "globex"})
    assert record.decision is Decision.ALLOW_WITH_CONSTRAINTS
    assert record.constraints.budgets.max_concurrent_jobs == 3


def test_legacy_allow_lists_next_to_rules_are_ignored_with_a_warning():
    allow_only = {"tenants": {"acme": {"allow_topics": ["job.*"]}}}
    loaded = policy(rule("r", "allow", topics=["job.other"]), **allow_only)
    assert [r.rule.id for r in loaded.rules] == ["r"]
    assert [(n.code, n.severity) for n in loaded.merged.notes] == [
        ("legacy_tenants_ignored", "warning")
    ]


def test_legacy_deny_lists_next_to_rules_are_refused_not_silently_dropped():
    with pytest.raises(PolicyLoadError) as caught:
        policy(rule("r", "allow", topics=["job.other"]), **LEGACY)
    assert caught.value.issues[0].code == "legacy_tenants_ignored"
    assert "acme" in caught.value.issues[0].message


def test_legacy_deny_lists_in_a_fragment_are_refused_when_the_base_has_rules():
    base = dump({"default_decision": "allow", "rules": [rule("r", "allow", topics=["job.x"])]})
    fragment = dump({"tenants": {"acme": {"deny_topics": ["job.db.drop*"]}}})
    with pytest.raises(PolicyLoadError) as caught:
        load_bundles({"base": base, "secops/freeze": fragment})
    assert caught.value.issues[0].file == "secops/freeze"


def test_a_legacy_mcp_filter_never_switches_a_topic_deny_off():
    tenants = {
        "tenants": {
            "acme": {
                "deny_topics": ["job.db.drop*"],
                "allow_topics": ["job.db.*"],
                "mcp": {"allow_tools": ["read_file"], "deny_servers": ["prod"]},
            }
        }
    }
    loaded = policy(default_decision="allow", **tenants)
    for labels in ({}, {"mcp.tool": "shell"}, {"mcp.tool": "read_file"}):
        job = {"topic": "job.db.drop-table", "tenant_id": "acme", "labels": labels}
        assert decide(loaded, **job) == ("DENY", "legacy:acme:deny:1"), labels
    shell = {"topic": "job.db.query", "tenant_id": "acme", "labels": {"mcp.tool": "shell"}}
    assert decide(loaded, **shell) == ("DENY", "legacy:acme:mcp-allow:tool")
    prod = {"topic": "job.db.query", "tenant_id": "acme", "labels": {"mcp.server": "prod"}}
    assert decide(loaded, **prod) == ("DENY", "legacy:acme:mcp-deny:server")
    assert decide(loaded, topic="job.db.query", tenant_id="acme") == (
        "ALLOW",
        "legacy:acme:allow:1",
    )


def test_two_files_with_the_same_bundle_id_are_refused(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "freeze.yaml").write_text(dump({"rules": [rule("f1", topics=["job.deploy.*"])]}))
    (tmp_path / "freeze.yml").write_text(dump({"rules": [rule("f2", topics=["job.db.*"])]}))
    with pytest.raises(PolicyLoadError) as caught:
        load(tmp_path)
    assert caught.value.issues[0].code == "duplicate_bundle_id"


def test_legacy_tenants_merge_across_bundles():
    first = dump({"tenants": {"acme": {"allow_topics": ["job.a"], "max_concurrent_jobs": 5}}})
    second = dump({"tenants": {"acme": {"allow_topics": ["job.b"], "max_concurrent_jobs": 2}}})
    merged = load_bundles({"base": first, "more": second})
    assert decide(merged, topic="job.b", tenant_id="acme")[1] == "legacy:acme:allow:2"
    assert merged.document.tenants["acme"].max_concurrent_jobs == 2
