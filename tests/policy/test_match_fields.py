"""Every match field: when it holds and when it does not."""

from __future__ import annotations

import pytest

from tests.policy.helpers import decide, policy, rule


@pytest.mark.parametrize(
    ("glob", "topic", "matched"),
    [
        ("job.*", "job.db.migrate", True),  # `*` crosses dots, like the original's path.Match
        ("job.db.*", "job.db.migrate", True),
        ("job.db.*", "job.dbx.migrate", False),
        ("*.delete", "job.k8s.delete", True),
        ("job.*.read", "job.s3.read", True),
        ("job.*.read", "job.s3.write", False),
        ("job.d?.drop", "job.db.drop", True),
        ("job.d?.drop", "job.dbx.drop", False),
        ("job.[dk]b.*", "job.db.x", True),
        ("job.[!d]b.*", "job.db.x", False),
        ("job.[^d]b.*", "job.kb.x", True),
        ("job.db.migrate", "job.db.migrate", True),
        ("job.db.migrate", "job.db.migrate2", False),
        ("JOB.DB.*", "job.db.x", True),
    ],
)
def test_topic_globs(glob, topic, matched):
    loaded = policy(rule(topics=[glob]))
    assert (decide(loaded, topic=topic)[1] == "r") is matched


def test_topics_match_any_glob_and_job_topics_are_trimmed_and_case_insensitive():
    loaded = policy(rule(topics=["job.a", "job.b.*"]))
    assert decide(loaded, topic="  JOB.B.Run ")[1] == "r"
    assert decide(loaded, topic="job.a")[1] == "r"
    assert decide(loaded, topic="job.c")[1] is None


@pytest.mark.parametrize(
    ("field", "job_field"),
    [
        ("tenants", "tenant_id"),
        ("capabilities", "capability"),
        ("pack_ids", "pack_id"),
        ("actor_ids", "actor_id"),
        ("actor_types", "actor_type"),
    ],
)
def test_membership_fields_match_when_the_job_value_is_listed(field, job_field):
    loaded = policy(rule(**{field: ["Alpha", "beta"]}))
    assert decide(loaded, **{job_field: "alpha"})[1] == "r"
    assert decide(loaded, **{job_field: " BETA "})[1] == "r"
    assert decide(loaded, **{job_field: "gamma"})[1] is None
    assert decide(loaded)[1] is None  # an empty job value never matches a non-empty list


def test_the_tenant_alias_and_the_default_tenant():
    loaded = policy(rule(tenants=["acme"]), default_tenant="acme")
    assert decide(loaded)[1] == "r"
    assert decide(loaded, tenant="acme")[1] == "r"
    assert decide(loaded, tenant_id="globex")[1] is None


def test_risk_tags_list_means_all_of_them():
    loaded = policy(rule(risk_tags=["prod", "write"]))
    assert decide(loaded, risk_tags=["prod", "write", "pii"])[1] == "r"
    assert decide(loaded, risk_tags=["PROD", "Write"])[1] == "r"
    assert decide(loaded, risk_tags=["prod"])[1] is None
    assert decide(loaded, risk_tags=["write"])[1] is None


def test_risk_tags_any_means_overlap():
    loaded = policy(rule(risk_tags={"any": ["prod", "write"]}))
    assert decide(loaded, risk_tags=["write"])[1] == "r"
    assert decide(loaded, risk_tags=["pii"])[1] is None
    assert decide(loaded)[1] is None


def test_risk_tags_all_and_any_together():
    loaded = policy(rule(risk_tags={"all": ["prod"], "any": ["write", "delete"]}))
    assert decide(loaded, risk_tags=["prod", "delete"])[1] == "r"
    assert decide(loaded, risk_tags=["prod"])[1] is None
    assert decide(loaded, risk_tags=["write"])[1] is None


def test_original_dialect_reads_a_plain_risk_tags_list_as_overlap():
    from cordum.policy import load_text
    from tests.policy.helpers import dump

    text = dump({"rules": [rule(risk_tags=["prod", "write"])]})
    ours, theirs = load_text(text), load_text(text, dialect="original")
    job = {"topic": "job.x", "risk_tags": ["prod"]}
    assert ours.evaluate(job).rule_id is None
    assert theirs.evaluate(job).rule_id == "r"


def test_requires_means_all_items():
    loaded = policy(rule(requires=["net", "gpu"]))
    assert decide(loaded, requires=["gpu", "net", "disk"])[1] == "r"
    assert decide(loaded, requires=["net"])[1] is None


def test_labels_need_every_pair_and_accept_value_lists():
    loaded = policy(rule(labels={"env": ["prod", "staging"], "team": "Payments"}))
    assert decide(loaded, labels={"env": "staging", "team": "payments"})[1] == "r"
    assert decide(loaded, labels={"env": "PROD ", "team": "payments", "x": "y"})[1] == "r"
    assert decide(loaded, labels={"env": "dev", "team": "payments"})[1] is None
    assert decide(loaded, labels={"env": "prod"})[1] is None


def test_label_values_given_as_numbers_compare_as_text():
    loaded = policy(rule(labels={"replicas": 3}))
    assert decide(loaded, labels={"replicas": 3})[1] == "r"
    assert decide(loaded, labels={"replicas": "3"})[1] == "r"


def test_label_allowlist_matches_a_present_label_with_an_unlisted_value():
    loaded = policy(rule(label_allowlist={"channel": ["ops", "deploys"], "region": ["eu"]}))
    assert decide(loaded, labels={"channel": "general"})[1] == "r"
    assert decide(loaded, labels={"channel": "ops", "region": "us"})[1] == "r"
    assert decide(loaded, labels={"channel": "OPS"})[1] is None
    assert decide(loaded)[1] is None  # absent labels are not judged


def test_label_threshold_matches_numbers_above_the_threshold():
    loaded = policy(rule(label_threshold={"rows": 1000}))
    assert decide(loaded, labels={"rows": "1001"})[1] == "r"
    assert decide(loaded, labels={"rows": "1_000_000"})[1] == "r"
    assert decide(loaded, labels={"rows": "1e6"})[1] == "r"
    assert decide(loaded, labels={"rows": "1000"})[1] is None
    assert decide(loaded, labels={"rows": "lots"})[1] is None
    assert decide(loaded, labels={"rows": "nan"})[1] is None
    assert decide(loaded)[1] is None


@pytest.mark.parametrize(
    ("job", "present"),
    [
        ({"context": {"db": {"password": "secret://vault/db"}}}, True),
        ({"context": ["x", {"y": "SECRET://vault/y"}]}, True),
        ({"labels": {"token": "secret://vault/t"}}, True),
        ({"risk_tags": ["secrets"]}, True),
        ({"prompt": "use secret://vault/key"}, True),
        ({"context": {"password": "hunter2"}}, False),
        ({}, False),
    ],
)
def test_secrets_present(job, present):
    with_secrets = policy(rule(secrets_present=True))
    without = policy(rule(secrets_present=False))
    assert (decide(with_secrets, **job)[1] == "r") is present
    assert (decide(without, **job)[1] == "r") is not present


def test_mcp_allow_lists_are_exclusive_and_deny_lists_win():
    loaded = policy(rule(mcp={"allow_tools": ["read_file", "search"], "deny_servers": ["prod-db"]}))
    assert decide(loaded, labels={"mcp.tool": "read_file"})[1] == "r"
    assert decide(loaded, labels={"mcp.tool": "shell"})[1] is None
    assert decide(loaded, labels={"mcp.tool": "search", "mcp.server": "prod-db"})[1] is None
    assert decide(loaded, labels={"mcp.tool": "search", "mcp.server": "dev"})[1] == "r"
    assert decide(loaded)[1] is None  # an allow list needs the job to name an allowed tool


def test_mcp_deny_only_filter_holds_for_every_other_call():
    loaded = policy(
        rule(mcp={"deny_tools": ["shell"], "allow_actions": [], "deny_resources": ["x"]})
    )
    assert decide(loaded, labels={"mcp.tool": "read_file"})[1] == "r"
    assert decide(loaded, labels={"mcp.tool": "shell"})[1] is None
    assert decide(loaded, labels={"mcp.resource": "x"})[1] is None
    assert decide(loaded)[1] == "r"


def test_env_and_environment_compare_with_the_job_label_of_that_name():
    loaded = policy(rule("a", env="prod"), rule("b", environment=["staging"]))
    assert decide(loaded, labels={"env": "prod"})[1] == "a"
    assert decide(loaded, labels={"environment": "staging"})[1] == "b"
    assert decide(loaded, labels={"environment": "prod"})[1] is None


def test_an_unknown_match_key_compares_the_label_then_the_input_field():
    loaded = policy(rule(region=["eu-west-1", "eu-central-1"]))
    assert decide(loaded, labels={"region": "eu-west-1"})[1] == "r"
    assert decide(loaded, context={"region": "EU-CENTRAL-1"})[1] == "r"
    assert (
        decide(loaded, labels={"region": "us-east-1"}, context={"region": "eu-west-1"})[1] is None
    )
    assert decide(loaded, context={"region": ["eu-west-1"]})[1] is None
    notes = [n.code for n in loaded.merged.notes]
    assert notes == ["implicit_label"]


def test_fields_combine_with_and():
    loaded = policy(
        rule(topics=["job.db.*"], tenants=["acme"], risk_tags=["prod"], labels={"env": "prod"})
    )
    full = {
        "topic": "job.db.x",
        "tenant_id": "acme",
        "risk_tags": ["prod"],
        "labels": {"env": "prod"},
    }
    assert decide(loaded, **full)[1] == "r"
    for field, value in (
        ("topic", "job.k8s.x"),
        ("tenant_id", "globex"),
        ("risk_tags", []),
        ("labels", {}),
    ):
        assert decide(loaded, **{**full, field: value})[1] is None, field


def test_a_job_model_is_accepted_as_well_as_a_mapping():
    from cordum.models import Job

    loaded = policy(rule(tenants=["acme"], risk_tags=["prod"], labels={"env": "prod"}))
    job = Job(topic="job.x", tenant="acme", risk_tags=("PROD",), labels={"env": "Prod"})
    assert loaded.evaluate(job).rule_id == "r"


def test_job_label_keys_that_differ_only_in_case_are_refused():
    from cordum.policy import InvalidJobError

    loaded = policy(rule(labels={"env": "prod"}))
    for labels in ({"env": "prod", "Env": "dev"}, {"mcp.tool": "shell", "MCP.TOOL": "read"}):
        with pytest.raises(InvalidJobError):
            loaded.evaluate({"topic": "job.x", "labels": labels})


def test_a_job_naming_its_tenant_twice_is_refused():
    from cordum.policy import InvalidJobError

    with pytest.raises(InvalidJobError, match="not both"):
        policy(rule()).evaluate({"topic": "job.x", "tenant_id": "globex", "tenant": "acme"})


def test_secret_references_count_however_large_the_input():
    loaded = policy(rule("deny", secrets_present=True), rule("ok", "allow", secrets_present=False))
    job = {"topic": "job.x", "context": {"pad": "x" * (3 * 1024 * 1024), "auth": "secret://v/k"}}
    assert decide(loaded, **job)[1] == "deny"


def test_input_field_fallback_compares_field_names_case_insensitively():
    loaded = policy(rule(region="eu"))
    assert decide(loaded, context={"Region": "EU"})[1] == "r"
