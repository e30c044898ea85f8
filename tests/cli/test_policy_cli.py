"""``cordum policy ...`` end to end: exit codes, human output, ``--json`` and error reports.

Exit codes: 0 ok, 1 findings or failing tests, 2 unusable input (policy, job, fixture,
usage); ``simulate --exit-code`` adds 3 DENY, 4 REQUIRE_APPROVAL, 5 THROTTLE.
"""

from __future__ import annotations

import json
import re

import pytest

import cordum
import cordum.policy

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text: str) -> str:
    """Output without terminal escape codes (should any sneak in)."""
    return _ANSI.sub("", text)


POLICY = """
version: "2026.1"
default_decision: deny
rules:
  - id: no-prod-deletes
    match:
      topics: [job.k8s.delete-*]
      risk_tags: [prod]
    decision: deny
    reason: deleting production resources is not allowed
    remediations:
      - id: use-staging
        title: Run it against staging
        replacement_topic: job.k8s.delete-staging
  - id: db-writes-need-approval
    match:
      topics: [job.db.write]
    decision: require_approval
    reason: database writes need a human
  - id: api-flood
    match:
      topics: [job.api.flood]
    decision: throttle
    reason: slow down
  - id: sandboxed-shell
    match:
      topics: [job.shell.*]
    decision: allow
    reason: shell runs sandboxed
    constraints:
      budgets: {max_runtime_ms: 30000}
  - id: reads-ok
    match:
      topics: [job.*.read]
    decision: allow
    reason: reads are fine
"""
RULE_IDS = [
    "no-prod-deletes",
    "db-writes-need-approval",
    "api-flood",
    "sandboxed-shell",
    "reads-ok",
]

# The same policy, reformatted: keys reordered, flow style, other spellings and quoting.
POLICY_REFORMATTED = """
# comments do not count
rules:
- {decision: DENY, id: no-prod-deletes, reason: "deleting production resources is not allowed",
   match: {risk_tags: [PROD], topics: ['job.k8s.delete-*']},
   remediations: [{title: Run it against staging, replacement_topic: job.k8s.delete-staging,
                   id: use-staging}]}
- id: db-writes-need-approval
  decision: Require_Approval
  reason: database writes need a human
  when: {topic: job.db.write}
- {id: api-flood, match: {topics: job.api.flood}, decision: THROTTLE, reason: slow down}
- id: sandboxed-shell
  reason: shell runs sandboxed
  decision: allow_with_constraints
  constraints: {max_runtime_sec: 30}
  match: {topics: [job.shell.*]}
- reason: reads are fine
  decision: permit
  name: reads-ok
  match: {topics: ["job.*.read"]}
default_decision: DENY
version: '2026.1'
"""

FLAGS_POLICY = """
version: flags
default_decision: deny
rules:
  - id: fully-specified
    match:
      topics: [job.deploy.*]
      tenants: [acme]
      capabilities: [deploy]
      risk_tags: [prod, write]
      labels: {env: prod, region: eu}
      actor_ids: [bot-7]
      actor_types: [agent]
      pack_ids: [ops-pack]
    decision: allow
    reason: a fully described deploy may run
input_rules:
  - id: no-drop-table
    match:
      keywords: [drop table]
    decision: require_approval
    reason: destructive SQL needs a human
"""
FULL_FLAGS = [
    ("--topic", "job.deploy.web"),
    ("--tenant", "acme"),
    ("--capability", "deploy"),
    ("--risk-tag", "prod"),
    ("--risk-tag", "write"),
    ("--label", "env=prod"),
    ("--label", "region=eu"),
    ("--actor-id", "bot-7"),
    ("--actor-type", "agent"),
    ("--pack-id", "ops-pack"),
]

THROTTLE_POLICY = """
rules:
  - id: slack-rate
    match: {topics: [job.slack.post]}
    decision: throttle
    reason: too many messages
    velocity: {max_requests: 3, window_seconds: 60, key: tenant}
  - id: slack-ok
    match: {topics: [job.slack.post]}
    decision: allow
    reason: posting is fine
"""

SHADOW_POLICY = """
rules:
  - id: allow-all-k8s
    match: {topics: ["job.k8s.*"]}
    decision: allow
    reason: k8s is fine
  - id: deny-prod-delete
    match: {topics: [job.k8s.delete], risk_tags: [prod]}
    decision: deny
    reason: never delete production
"""

IMPLICIT_LABEL_POLICY = """
rules:
  - id: eu-only
    match:
      topics: [job.x]
      region: eu
    decision: deny
    reason: not in the eu
"""

PASSING_TESTS = """
tests:
  - name: prod deletes are denied
    job: {topic: job.k8s.delete-ns, risk_tags: [prod]}
    expect: {decision: DENY, rule_id: no-prod-deletes, reason_contains: production}
  - name: db writes need approval
    job: {topic: job.db.write}
    expect: {decision: require_approval, approval_required: true}
  - name: unknown topics get the default
    job: {topic: job.nothing}
    expect: {decision: DENY, rule_id: null}
"""
ALL_RULES_TESTS = (
    PASSING_TESTS
    + """
  - name: flooding is throttled
    job: {topic: job.api.flood}
    expect: {decision: THROTTLE, rule_id: api-flood}
  - name: shell is sandboxed
    job: {topic: job.shell.run}
    expect: {decision: ALLOW_WITH_CONSTRAINTS, rule_id: sandboxed-shell}
  - name: reads are allowed
    job: {topic: job.db.read}
    expect: {decision: ALLOW, rule_id: reads-ok}
"""
)


def _snapshot(path) -> str:
    return cordum.policy.load(path).snapshot_id


# --- version and help ----------------------------------------------------------------


def test_version_prints_the_package_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"cordum {cordum.__version__}\n"


def test_policy_without_a_command_shows_the_commands(cli):
    result = cli("policy", "--help")
    assert result.exit_code == 0
    for command in ("check", "lint", "test", "simulate", "explain", "hash", "schema"):
        assert command in plain(result.stdout)


# --- check ---------------------------------------------------------------------------


def test_check_accepts_a_good_policy_and_prints_its_snapshot_id(cli):
    path = cli.write("policy.yaml", POLICY)
    result = cli("policy", "check", path)
    assert result.exit_code == 0, result.output
    out = plain(result.stdout)
    assert "policy.yaml: 5 rules, 0 input rules, 0 output rules, default DENY" in out
    assert f"snapshot {_snapshot(path)}" in out
    assert result.stderr == ""


def test_check_json_reports_ok_and_the_snapshot_id(cli):
    path = cli.write("policy.yaml", POLICY)
    code, data = cli.json("policy", "check", path)
    assert code == 0
    assert data == {
        "ok": True,
        "snapshot_id": _snapshot(path),
        "rules": 5,
        "input_rules": 0,
        "output_rules": 0,
        "bundles": ["policy.yaml"],
        "warnings": [],
        "notes": [],
    }
    assert data["snapshot_id"].startswith("2026.1:")


def test_check_shows_the_bundles_and_which_rules_a_fragment_replaced(cli):
    cli.write("policies/base.yaml", POLICY)
    cli.write(
        "policies/secops/freeze.yaml",
        """
        rules:
          - id: reads-ok
            decision: deny
            reason: frozen
        """,
    )
    result = cli("policy", "check", "policies")
    assert result.exit_code == 0
    text = plain(result.stdout)
    assert "bundles, in merge order: policies/base.yaml, policies/secops/freeze.yaml" in text
    assert "info[rule_replaced]: rule `reads-ok`: replaces the rule of the same id" in text
    code, data = cli.json("policy", "check", "policies")
    assert code == 0
    assert [note["code"] for note in data["notes"]] == ["rule_replaced"]


BAD_POLICIES = [
    pytest.param(
        "rules:\n  - id: a\n    decision: dney\n",
        "bad.yaml:3:5: error[unknown_decision]: rule `a` › decision",
        "did you mean `deny`?",
        id="unknown-decision",
    ),
    pytest.param(
        "rules:\n  - id: a\n    decision: deny\n  reason: x\n",
        "bad.yaml:4:3: error[yaml_syntax]",
        None,
        id="yaml-syntax",
    ),
    pytest.param(
        "rules:\n  - id: a\n    decision: deny\n    decision: allow\n",
        "bad.yaml:4:5: error[duplicate_key]",
        "remove one of them",
        id="duplicate-key",
    ),
    pytest.param(
        "- id: a\n  decision: deny\n",
        "bad.yaml:1:1: error[not_a_mapping]",
        "start with `version:`",
        id="top-level-list",
    ),
    pytest.param(
        "rules:\n  - id: a\n    match: {topics: ['job.[']}\n    decision: deny\n",
        "bad.yaml:3:22: error[bad_glob]: rule `a` › match.topics[0]",
        "close the character class",
        id="bad-glob",
    ),
    pytest.param(
        "rules:\n  - id: a\n    match: {risk_tag: [prod]}\n    decision: deny\n",
        "bad.yaml:3:13: error[unknown_match_field]: rule `a` › match.risk_tag",
        "did you mean `risk_tags`?",
        id="match-field-typo",
    ),
    pytest.param(
        "rules:\n  - id: a\n    reason: forgot\n",
        "bad.yaml:2:5: error[missing_field]: rule `a` › decision",
        None,
        id="missing-decision",
    ),
    pytest.param(
        "a: &a [*a]\n",
        "bad.yaml:1:4: error[recursive_alias]",
        None,
        id="recursive-alias",
    ),
]


@pytest.mark.parametrize(("text", "first_error", "hint"), BAD_POLICIES)
def test_check_refuses_a_bad_policy_naming_file_and_line(cli, text, first_error, hint):
    path = cli.write("bad.yaml", text)
    result = cli("policy", "check", path)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = plain(result.stderr).splitlines()
    assert lines[0] == "bad.yaml: policy not loaded"
    assert lines[1].startswith(first_error), result.stderr
    if hint is not None:
        assert lines[2].startswith("    hint: ")
        assert hint in lines[2]


@pytest.mark.parametrize(
    ("data", "first_error"),
    [
        pytest.param(
            b"rules: []\n\x00\x01\x02garbage", "bad.yaml:2:1: error[binary_file]", id="nul"
        ),
        pytest.param(b"rules: []\n# caf\xe9\n", "bad.yaml:2:6: error[bad_encoding]", id="latin1"),
        pytest.param("rules: []\n".encode("utf-16"), "bad.yaml: error[bad_encoding]", id="utf16"),
    ],
)
def test_check_refuses_a_file_that_is_not_utf8_text(cli, data, first_error):
    path = cli.write_bytes("bad.yaml", data)
    result = cli("policy", "check", path)
    assert result.exit_code == 2
    assert plain(result.stderr).splitlines()[1].startswith(first_error)


def test_check_json_on_a_bad_policy_lists_every_error(cli):
    path = cli.write(
        "bad.yaml",
        """
        rulez: []
        rules:
          - id: a
            decision: dney
        """,
    )
    code, data = cli.json("policy", "check", path)
    assert code == 2
    assert data["ok"] is False
    assert [(e["code"], e["file"], e["line"], e["column"]) for e in data["errors"]] == [
        ("unknown_field", "bad.yaml", 1, 1),
        ("unknown_decision", "bad.yaml", 4, 5),
    ]
    assert data["errors"][1]["rule_id"] == "a"
    assert data["errors"][1]["field"] == "decision"
    assert data["errors"][1]["hint"].startswith("did you mean `deny`?")
    assert set(data["errors"][0]) == {
        "code",
        "severity",
        "message",
        "file",
        "line",
        "column",
        "rule_id",
        "field",
        "hint",
    }


def test_check_shows_the_first_fifty_errors_and_counts_the_rest(cli):
    rules = "".join(f"  - id: r{i}\n    decision: dney\n" for i in range(60))
    path = cli.write("many.yaml", "rules:\n" + rules)
    result = cli("policy", "check", path)
    assert result.exit_code == 2
    err = plain(result.stderr)
    assert err.count("error[unknown_decision]") == 50
    assert "many.yaml:101:5: error[unknown_decision]: rule `r49`" in err
    assert "rule `r50`" not in err
    assert err.rstrip().endswith("… and 10 more (use --json to see all)")
    code, data = cli.json("policy", "check", path)
    assert (code, len(data["errors"])) == (2, 60)


def test_check_missing_policy_file_exits_2(cli):
    result = cli("policy", "check", "nope.yaml")
    assert result.exit_code == 2
    assert "nope.yaml: error[file_not_found]: no such file" in plain(result.stderr)


def test_check_strict_refuses_an_implicit_label_key(cli):
    path = cli.write("policy.yaml", IMPLICIT_LABEL_POLICY)
    lenient = cli("policy", "check", path)
    assert lenient.exit_code == 0
    assert "policy.yaml:5:7: warning[implicit_label]: rule `eu-only` › match.region" in plain(
        lenient.stdout
    )
    strict = cli("policy", "check", "--strict", path)
    assert strict.exit_code == 2
    assert "policy.yaml:5:7: error[unknown_match_field]: rule `eu-only` › match.region" in (
        plain(strict.stderr)
    )
    assert "--strict refuses implicit label keys" in plain(strict.stderr)


def test_check_json_lists_warnings_of_a_policy_that_loads(cli):
    path = cli.write("policy.yaml", IMPLICIT_LABEL_POLICY)
    code, data = cli.json("policy", "check", path)
    assert code == 0
    assert [(w["code"], w["severity"], w["line"]) for w in data["warnings"]] == [
        ("implicit_label", "warning", 5)
    ]


def test_check_max_bytes_refuses_a_larger_policy(cli):
    path = cli.write("policy.yaml", POLICY)
    result = cli("policy", "check", "--max-bytes", "100", path)
    assert result.exit_code == 2
    assert "policy.yaml: error[too_large]: the policy is" in plain(result.stderr)
    assert cli("policy", "check", "--max-bytes", "100000", path).exit_code == 0


def test_check_unknown_dialect_is_a_usage_error(cli):
    path = cli.write("policy.yaml", POLICY)
    result = cli("policy", "check", "--dialect", "klingon", path)
    assert result.exit_code == 2
    assert "use one of: cordum, original" in plain(result.output)


# --- hash ----------------------------------------------------------------------------


def test_hash_prints_exactly_the_snapshot_id(cli):
    path = cli.write("policy.yaml", POLICY)
    result = cli("policy", "hash", path)
    assert result.exit_code == 0
    assert result.stdout == _snapshot(path) + "\n"
    assert re.fullmatch(r"2026\.1:[0-9a-f]{64}\n", result.stdout)


def test_hash_json_splits_version_and_digest(cli):
    path = cli.write("policy.yaml", POLICY)
    code, data = cli.json("policy", "hash", path)
    assert code == 0
    version, digest = _snapshot(path).split(":")
    assert data == {"snapshot_id": f"{version}:{digest}", "version": version, "sha256": digest}


def test_hash_is_unchanged_by_key_order_and_formatting(cli):
    original = cli.write("policy.yaml", POLICY)
    reformatted = cli.write("reformatted.yaml", POLICY_REFORMATTED)
    first = cli("policy", "hash", original)
    second = cli("policy", "hash", reformatted)
    assert (first.exit_code, second.exit_code) == (0, 0)
    assert first.stdout == second.stdout


def test_hash_changes_when_the_meaning_changes(cli):
    original = cli.write("policy.yaml", POLICY)
    changed = cli.write("changed.yaml", POLICY.replace("reads are fine", "reads are OK"))
    head, *rules = POLICY.split("  - id: ")
    reordered = cli.write("reordered.yaml", head + "  - id: ".join(["", rules[-1], *rules[:-1]]))
    assert cordum.policy.load(reordered).rules[0].rule.id == "reads-ok"
    hashes = {cli("policy", "hash", path).stdout for path in (original, changed, reordered)}
    assert len(hashes) == 3


def test_hash_of_a_bad_policy_exits_2_and_prints_no_id(cli):
    path = cli.write("bad.yaml", "rules: [\n")
    result = cli("policy", "hash", path)
    assert result.exit_code == 2
    assert result.stdout == ""


# --- schema --------------------------------------------------------------------------


def test_schema_prints_json_schema_with_the_rules_property(cli):
    result = cli("policy", "schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "Cordum safety policy"
    assert {"rules", "input_rules", "output_rules", "default_decision"} <= set(schema["properties"])
    assert schema["properties"]["rules"]["type"] == "array"
    assert schema["additionalProperties"] is False


def test_schema_output_option_writes_the_same_schema_to_a_file(cli, tmp_path):
    printed = json.loads(cli("policy", "schema").stdout)
    result = cli("policy", "schema", "-o", "out/schema.json")
    assert result.exit_code == 2  # the directory does not exist
    result = cli("policy", "schema", "-o", "schema.json")
    assert result.exit_code == 0
    assert "wrote schema.json" in plain(result.stdout)
    assert json.loads((tmp_path / "schema.json").read_text(encoding="utf-8")) == printed
    long_form = cli("policy", "schema", "--output", "long.json")
    assert long_form.exit_code == 0
    assert (tmp_path / "long.json").read_text(encoding="utf-8") == (
        tmp_path / "schema.json"
    ).read_text(encoding="utf-8")


# --- simulate ------------------------------------------------------------------------

RECORD_KEYS = {
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
}


def _flags(pairs):
    return [item for pair in pairs for item in pair]


def test_simulate_with_every_job_flag_matches_a_fully_specified_rule(cli):
    path = cli.write("policy.yaml", FLAGS_POLICY)
    code, data = cli.json(
        "policy", "simulate", path, *_flags(FULL_FLAGS), "--context", '{"sql": "select 1"}'
    )
    assert code == 0
    assert (data["decision"], data["rule_id"]) == ("ALLOW", "fully-specified")
    assert data["findings"] == []


@pytest.mark.parametrize(
    "left_out", [pytest.param(i, id=f"{k}={v}") for i, (k, v) in enumerate(FULL_FLAGS)]
)
def test_simulate_without_any_one_flag_falls_to_the_default(cli, left_out):
    path = cli.write("policy.yaml", FLAGS_POLICY)
    pairs = [pair for i, pair in enumerate(FULL_FLAGS) if i != left_out]
    if FULL_FLAGS[left_out][0] == "--topic":
        pairs.append(("--topic", "job.other"))
    code, data = cli.json("policy", "simulate", path, *_flags(pairs))
    assert code == 0
    assert (data["decision"], data["rule_id"]) == ("DENY", None)


def test_simulate_context_flag_is_scanned_by_input_rules(cli):
    path = cli.write("policy.yaml", FLAGS_POLICY)
    context = json.dumps({"sql": "DROP TABLE users", "dry_run": False})
    code, data = cli.json("policy", "simulate", path, *_flags(FULL_FLAGS), "--context", context)
    assert code == 0
    assert (data["decision"], data["rule_id"]) == ("REQUIRE_APPROVAL", "no-drop-table")
    assert data["approval_required"] is True
    assert data["findings"] == ["keyword `drop table` in context.sql"]
    assert data["reason"] == "destructive SQL needs a human"


def test_simulate_json_prints_exactly_the_decision_record_keys(cli):
    path = cli.write("policy.yaml", POLICY)
    code, data = cli.json(
        "policy", "simulate", path, "--topic", "job.k8s.delete-ns", "--risk-tag", "prod"
    )
    assert code == 0
    assert set(data) == RECORD_KEYS
    assert data == {
        "decision": "DENY",
        "reason": "deleting production resources is not allowed",
        "rule_id": "no-prod-deletes",
        "policy_snapshot": _snapshot(path),
        "constraints": {},
        "remediations": [
            {
                "id": "use-staging",
                "title": "Run it against staging",
                "summary": "",
                "replacement_topic": "job.k8s.delete-staging",
                "replacement_capability": None,
                "add_labels": {},
                "remove_labels": [],
            }
        ],
        "approval_required": False,
        "approval_ref": None,
        "retry_after_seconds": None,
        "findings": [],
    }


def test_simulate_json_rule_id_is_null_when_the_default_applied(cli):
    path = cli.write("policy.yaml", POLICY)
    code, data = cli.json("policy", "simulate", path, "--topic", "job.unknown")
    assert code == 0
    assert data["rule_id"] is None
    assert data["decision"] == "DENY"
    assert data["reason"] == "no rule matched; the policy's default decision is DENY"


@pytest.mark.parametrize(
    ("flags", "decision", "rule_id", "exit_code"),
    [
        pytest.param(["--topic", "job.k8s.delete-ns", "--risk-tag", "prod"], "DENY",
                     "no-prod-deletes", 3, id="deny"),
        pytest.param(["--topic", "job.db.write"], "REQUIRE_APPROVAL",
                     "db-writes-need-approval", 4, id="require-approval"),
        pytest.param(["--topic", "job.api.flood"], "THROTTLE", "api-flood", 5, id="throttle"),
        pytest.param(["--topic", "job.shell.run"], "ALLOW_WITH_CONSTRAINTS", "sandboxed-shell",
                     0, id="allow-with-constraints"),
        pytest.param(["--topic", "job.db.read"], "ALLOW", "reads-ok", 0, id="allow"),
        pytest.param(["--topic", "job.k8s.delete-ns"], "DENY", None, 3, id="default-deny"),
    ],
)  # fmt: skip
def test_each_decision_is_reachable_and_exit_code_maps_it(cli, flags, decision, rule_id, exit_code):
    path = cli.write("policy.yaml", POLICY)
    result = cli("policy", "simulate", path, *flags, "--exit-code", "--json")
    assert result.exit_code == exit_code
    data = json.loads(result.stdout)
    assert (data["decision"], data["rule_id"]) == (decision, rule_id)
    assert data["approval_required"] is (decision == "REQUIRE_APPROVAL")
    without = cli("policy", "simulate", path, *flags)
    assert without.exit_code == 0
    assert f"decision  {decision}\n" in plain(without.stdout)


def test_simulate_shows_constraints_of_an_allow_with_constraints_decision(cli):
    path = cli.write("policy.yaml", POLICY)
    code, data = cli.json("policy", "simulate", path, "--topic", "job.shell.run")
    assert code == 0
    assert data["constraints"] == {"budgets": {"max_runtime_ms": 30000}}
    out = plain(cli("policy", "simulate", path, "--topic", "job.shell.run").stdout)
    assert "constraints\n  budgets.max_runtime_ms: 30000\n" in out


def test_simulate_human_output_is_a_short_report(cli):
    path = cli.write("policy.yaml", POLICY)
    result = cli("policy", "simulate", path, "--topic", "job.k8s.delete-ns", "--risk-tag", "prod")
    assert result.exit_code == 0
    assert plain(result.stdout).splitlines() == [
        "decision  DENY",
        "reason    deleting production resources is not allowed",
        "rule      no-prod-deletes",
        f"snapshot  {_snapshot(path)}",
        "remediations",
        "  • use-staging: Run it against staging → job.k8s.delete-staging",
    ]
    default = plain(cli("policy", "simulate", path, "--topic", "job.none").stdout)
    assert "rule      (default decision)\n" in default


JOB_FILES = [
    pytest.param(
        "job.json", '{"topic": "job.deploy.web", "tenant_id": "acme", "risk_tags": ["prod"]}',
        id="json",
    ),
    pytest.param("job.yaml", "topic: job.deploy.web\ntenant_id: acme\nrisk_tags: [prod]\n",
                 id="yaml"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text"), JOB_FILES)
def test_simulate_reads_a_job_file_and_flags_extend_it(cli, name, text):
    path = cli.write("policy.yaml", FLAGS_POLICY)
    job = cli.write(name, text)
    extra = [pair for pair in FULL_FLAGS if pair[0] not in ("--topic", "--tenant")]
    extra = [pair for pair in extra if pair != ("--risk-tag", "prod")]
    code, data = cli.json("policy", "simulate", path, job, *_flags(extra))
    assert code == 0
    assert (data["decision"], data["rule_id"]) == ("ALLOW", "fully-specified")
    # Without the flags the file alone does not satisfy the rule.
    code, data = cli.json("policy", "simulate", path, job)
    assert (code, data["rule_id"]) == (0, None)


def test_simulate_flags_override_scalar_fields_of_the_job_file(cli):
    path = cli.write("policy.yaml", POLICY)
    job = cli.write("job.json", '{"topic": "job.db.write"}')
    code, data = cli.json("policy", "simulate", path, job, "--topic", "job.db.read")
    assert (code, data["rule_id"]) == (0, "reads-ok")


def test_tenant_flag_overrides_a_job_file_that_spells_the_field_tenant(cli):
    # `tenant` is an accepted spelling of `tenant_id` in a job file, and flags override
    # the file's scalar fields; the flag must not turn the file's field into an error.
    path = cli.write("policy.yaml", FLAGS_POLICY)
    job = cli.write("job.json", '{"topic": "job.deploy.web", "tenant": "globex"}')
    assert cli("policy", "simulate", path, job).exit_code == 0
    extra = [pair for pair in FULL_FLAGS if pair[0] != "--topic"]
    code, data = cli.json("policy", "simulate", path, job, *_flags(extra))
    assert code == 0, data
    assert data["rule_id"] == "fully-specified"


@pytest.mark.parametrize(
    "stdin",
    [
        pytest.param('{"topic": "job.db.write"}', id="json"),
        pytest.param("topic: job.db.write\nlabels: {env: prod}\n", id="yaml"),
    ],
)
def test_simulate_reads_the_job_from_stdin(cli, stdin):
    path = cli.write("policy.yaml", POLICY)
    result = cli("policy", "simulate", path, "-", "--json", "--exit-code", stdin=stdin)
    assert result.exit_code == 4
    assert json.loads(result.stdout)["rule_id"] == "db-writes-need-approval"


# --- unusable jobs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "args", "code", "file", "line"),
    [
        pytest.param({"job.json": '{"topic": "job.db.write", "risk_tag": ["prod"]}'},
                     ["job.json"], "unknown_field", "job.json", 1, id="misspelt-field"),
        pytest.param({"job.yaml": "topic: [\n"}, ["job.yaml"], "yaml_syntax", "job.yaml", 2,
                     id="invalid-yaml"),
        pytest.param({"job.yaml": "tenant_id: acme\n"}, ["job.yaml"], "missing_topic",
                     "job.yaml", None, id="missing-topic"),
        pytest.param({"job.yaml": "- topic: job.a\n"}, ["job.yaml"], "not_a_mapping",
                     "job.yaml", None, id="job-a-list"),
        pytest.param({"job.yaml": "topic: job.a\nlabels: [env]\n"}, ["job.yaml"], "wrong_type",
                     "job.yaml", 2, id="labels-a-list"),
        pytest.param({}, ["missing.json"], "file_not_found", "missing.json", None,
                     id="missing-file"),
        pytest.param({}, [], "missing_topic", "<flags>", None, id="no-job-at-all"),
        pytest.param({}, ["--topic", "job.a", "--label", "envprod"], "bad_label", "--label",
                     None, id="label-without-equals"),
        pytest.param({}, ["--topic", "job.a", "--label", "=prod"], "bad_label", "--label",
                     None, id="label-without-key"),
        pytest.param({}, ["--topic", "job.a", "--context", "{bad"], "bad_json", "--context",
                     None, id="context-not-json"),
    ],
)  # fmt: skip
def test_unusable_job_exits_2_with_a_positioned_error(cli, files, args, code, file, line):
    path = cli.write("policy.yaml", POLICY)
    for name, text in files.items():
        cli.write(name, text)
    exit_code, data = cli.json("policy", "simulate", path, *args)
    assert exit_code == 2
    assert data["ok"] is False
    first = data["errors"][0]
    assert (first["code"], first["file"], first["line"]) == (code, file, line)


def test_misspelt_job_field_suggests_the_right_spelling(cli):
    path = cli.write("policy.yaml", POLICY)
    job = cli.write("job.json", '{"topic": "job.db.write", "risk_tag": ["prod"]}')
    result = cli("policy", "simulate", path, job)
    assert result.exit_code == 2
    lines = plain(result.stderr).splitlines()
    assert lines[0] == "job not usable"
    assert lines[1] == "job.json:1:27: error[unknown_field]: risk_tag: unknown field `risk_tag`"
    assert lines[2].startswith("    hint: did you mean `risk_tags`?")


def test_explain_also_refuses_an_unusable_job(cli):
    path = cli.write("policy.yaml", POLICY)
    result = cli("policy", "explain", path, "--topic", "job.a", "--context", "[1,")
    assert result.exit_code == 2
    assert "--context: error[bad_json]: not valid JSON" in plain(result.stderr)


# --- explain -------------------------------------------------------------------------


def test_explain_json_has_one_trace_entry_per_rule_in_order(cli):
    path = cli.write("policy.yaml", POLICY)
    code, data = cli.json("policy", "explain", path, "--topic", "job.db.write")
    assert code == 0
    assert (data["decision"], data["rule_id"]) == ("REQUIRE_APPROVAL", "db-writes-need-approval")
    assert data["default_applied"] is False
    assert [t["rule_id"] for t in data["trace"]] == RULE_IDS
    assert [t["position"] for t in data["trace"]] == [0, 1, 2, 3, 4]
    assert [t["outcome"] for t in data["trace"]] == [
        "no_match",
        "selected",
        "no_match",
        "no_match",
        "no_match",
    ]
    first = data["trace"][0]
    assert first["failed_field"] == "topics"
    assert first["detail"] == "topic `job.db.write` matches none of [job.k8s.delete-*]"
    assert first["source"] == "policy.yaml:4"
    assert data["trace"][1]["source"] == "policy.yaml:14"
    assert data["input_trace"] == []
    assert set(data) >= RECORD_KEYS


def test_explain_json_marks_later_matches_and_rates_below_the_limit(cli):
    path = cli.write("policy.yaml", THROTTLE_POLICY)
    code, data = cli.json("policy", "explain", path, "--topic", "job.slack.post")
    assert code == 0
    assert [(t["rule_id"], t["outcome"]) for t in data["trace"]] == [
        ("slack-rate", "below_velocity"),
        ("slack-ok", "selected"),
    ]
    assert data["trace"][0]["failed_field"] == "velocity"


def test_explain_json_when_no_rule_matches(cli):
    path = cli.write("policy.yaml", POLICY)
    code, data = cli.json("policy", "explain", path, "--topic", "job.nothing")
    assert code == 0
    assert data["default_applied"] is True
    assert data["rule_id"] is None
    assert {t["outcome"] for t in data["trace"]} == {"no_match"}
    assert len(data["trace"]) == len(RULE_IDS)


def _table_rows(out):
    return [line for line in out.splitlines() if line.startswith("│")]


def test_explain_human_output_shows_the_rules_for_the_jobs_topic(cli):
    path = cli.write("policy.yaml", POLICY)
    result = cli("policy", "explain", path, "--topic", "job.k8s.delete-ns")
    assert result.exit_code == 0
    out = plain(result.stdout)
    assert out.startswith("decision  DENY\n")
    assert "rule      (default decision)\n" in out
    (row,) = _table_rows(out)
    assert " no-prod-deletes " in row
    assert "✘ no match" in row
    assert "risk_tags: missing [prod] (job has [])" in row
    assert "4 rule(s) for other topics not shown (--all shows them)" in out
    assert "no rule matched: the default decision applied" in out


def test_explain_all_shows_every_rule_and_its_outcome(cli):
    path = cli.write("policy.yaml", POLICY)
    result = cli("policy", "explain", path, "--topic", "job.db.write", "--all")
    assert result.exit_code == 0
    out = plain(result.stdout)
    assert out.startswith("decision  REQUIRE_APPROVAL\n")
    assert "approval  required before the job may run" in out
    rows = _table_rows(out)
    assert len(rows) == len(RULE_IDS)
    for number, (row, rule_id) in enumerate(zip(rows, RULE_IDS, strict=True), start=1):
        assert row.startswith(f"│ {number} │ {rule_id} ")
    assert "✔ decides" in rows[1]
    assert all("✘ no match" in row for i, row in enumerate(rows) if i != 1)
    assert "topics: topic `job.db.write` matches none of [job.k8s.delete-*]" in rows[0]
    assert "not shown" not in out
    assert "no rule matched" not in out


# --- lint ----------------------------------------------------------------------------


def test_lint_reports_an_allow_rule_shadowing_a_later_deny(cli):
    path = cli.write("shadow.yaml", SHADOW_POLICY)
    result = cli("policy", "lint", path)
    assert result.exit_code == 1
    out = plain(result.stdout)
    assert out.startswith(
        "shadow.yaml:6: error[allow-shadows-deny]: rule `deny-prod-delete`: allow rule"
        " `allow-all-k8s` (shadow.yaml:2) is broader than this DENY rule"
    )
    assert "hint: move `deny-prod-delete` above `allow-all-k8s`" in out
    assert out.splitlines()[-1] == "1 error, 1 info"


def test_lint_fail_on_never_exits_0_with_the_same_findings(cli):
    path = cli.write("shadow.yaml", SHADOW_POLICY)
    failing = cli("policy", "lint", path)
    never = cli("policy", "lint", "--fail-on", "never", path)
    assert never.exit_code == 0
    assert never.stdout == failing.stdout


def test_lint_fail_on_threshold(cli):
    path = cli.write("policy.yaml", POLICY)  # api-flood: throttle without velocity (warning)
    assert cli("policy", "lint", path).exit_code == 1
    assert cli("policy", "lint", "--fail-on", "error", path).exit_code == 0
    assert cli("policy", "lint", "--fail-on", "sometimes", path).exit_code == 2


def test_lint_json_lists_findings_with_positions(cli):
    path = cli.write("shadow.yaml", SHADOW_POLICY)
    code, data = cli.json("policy", "lint", path)
    assert code == 1
    assert data["ok"] is True
    assert [(f["code"], f["severity"], f["rule_id"], f["line"]) for f in data["findings"]] == [
        ("allow-shadows-deny", "error", "deny-prod-delete", 6),
        ("no-remediation", "info", "deny-prod-delete", 6),
    ]
    assert data["findings"][0]["file"] == "shadow.yaml"


def test_lint_original_dialect_warns_about_plain_risk_tag_lists(cli):
    path = cli.write(
        "orig.yaml",
        """
        rules:
          - id: risky
            match: {topics: ["job.*"], risk_tags: [prod, write]}
            decision: deny
            reason: refused
            remediations: [{id: r, title: ask a human}]
        """,
    )
    code, data = cli.json("policy", "lint", "--dialect", "original", path)
    assert code == 1
    assert [(f["code"], f["rule_id"], f["line"]) for f in data["findings"]] == [
        ("dialect-risk-tags", "risky", 2)
    ]
    assert (
        "means ANY of these in the original but ALL of them in Cordum"
        in (data["findings"][0]["message"])
    )
    assert cli.json("policy", "lint", path) == (0, {"ok": True, "findings": []})


def test_lint_clean_policy_has_no_findings(cli):
    path = cli.write(
        "clean.yaml",
        """
        rules:
          - id: reads
            match: {topics: [job.db.read]}
            decision: allow
            reason: reads are fine
        """,
    )
    result = cli("policy", "lint", path)
    assert result.exit_code == 0
    assert plain(result.stdout) == "✔ no findings\n"


def test_lint_of_an_invalid_policy_exits_2(cli):
    path = cli.write("bad.yaml", "rules: {}\n")
    result = cli("policy", "lint", path)
    assert result.exit_code == 2
    assert "bad.yaml:1:1: error[wrong_type]" in plain(result.stderr)


# --- test ----------------------------------------------------------------------------


def test_policy_test_passes_and_shows_rule_coverage(cli):
    path = cli.write("p/policy.yaml", POLICY)
    tests = cli.write("p/policy_test.yaml", PASSING_TESTS)
    result = cli("policy", "test", path, tests)
    assert result.exit_code == 0, result.output
    out = plain(result.stdout)
    assert "PASSED: 3/3 tests passed" in out
    assert "rule coverage: 40.0% (2/5 rules)" in out
    assert "not exercised: api-flood  p/policy.yaml:19" in out
    assert "FAIL" not in out


def test_policy_test_json_report(cli):
    path = cli.write("p/policy.yaml", POLICY)
    tests = cli.write("p/policy_test.yaml", PASSING_TESTS)
    code, data = cli.json("policy", "test", path, tests)
    assert code == 0
    assert (data["ok"], data["passed"], data["total"], data["failed"]) == (True, True, 3, 0)
    assert [r["line"] for r in data["results"]] == [2, 5, 8]
    assert data["coverage"]["percent"] == 40.0
    assert data["coverage"]["default_exercised"] is True
    assert [u["rule_id"] for u in data["coverage"]["uncovered"]] == [
        "api-flood",
        "sandboxed-shell",
        "reads-ok",
    ]


def test_policy_test_with_a_failing_fixture_exits_1_with_a_fail_line(cli):
    path = cli.write("p/policy.yaml", POLICY)
    tests = cli.write(
        "p/wrong_test.yaml",
        """
        tests:
          - name: reads are allowed
            job: {topic: job.db.read}
            expect: {decision: ALLOW}
          - name: db writes are allowed
            job: {topic: job.db.write}
            expect: {decision: ALLOW, rule_id: reads-ok}
        """,
    )
    result = cli("policy", "test", path, tests)
    assert result.exit_code == 1
    out = plain(result.stdout)
    assert "FAIL db writes are allowed  p/wrong_test.yaml:5\n" in out
    assert "    decision REQUIRE_APPROVAL, expected ALLOW\n" in out
    assert "    decided by db-writes-need-approval, expected reads-ok\n" in out
    assert "FAIL reads are allowed" not in out
    assert "FAILED: 1/2 tests passed" in out


@pytest.mark.parametrize(
    ("fixture", "error"),
    [
        pytest.param(
            "tests:\n  - name: x\n    jb: {topic: a}\n    expect: {decision: DENY}\n",
            "p/bad_test.yaml:3:5: error[unknown_field]",
            id="unknown-field",
        ),
        pytest.param(
            "tests:\n  - name: x\n    job: {topic: a, risk_tag: [prod]}\n"
            "    expect: {decision: DENY}\n",
            "p/bad_test.yaml:3:21: error[unknown_field]",
            id="unknown-job-field",
        ),
        pytest.param("tests: [\n", "p/bad_test.yaml:2:1: error[yaml_syntax]", id="yaml"),
        pytest.param("- name: x\n", "p/bad_test.yaml:1:1: error[not_a_mapping]", id="a-list"),
    ],
)
def test_policy_test_with_a_malformed_fixture_exits_2(cli, fixture, error):
    path = cli.write("p/policy.yaml", POLICY)
    tests = cli.write("p/bad_test.yaml", fixture)
    result = cli("policy", "test", path, tests)
    assert result.exit_code == 2
    err = plain(result.stderr)
    assert err.startswith("test fixtures not loaded\n")
    assert error in err
    assert result.stdout == ""


def test_malformed_fixture_reports_only_the_real_problems(cli):
    # The file holds one (broken) test; it must not also be told its test list is empty.
    path = cli.write("p/policy.yaml", POLICY)
    tests = cli.write(
        "p/bad_test.yaml",
        "tests:\n  - name: x\n    jb: {topic: a}\n    expect: {decision: DENY}\n",
    )
    code, data = cli.json("policy", "test", path, tests)
    assert code == 2
    assert [(e["code"], e["field"], e["line"], e["column"]) for e in data["errors"]] == [
        ("missing_field", "tests[0].job", 2, 5),
        ("unknown_field", "tests[0].jb", 3, 5),
    ]


def test_policy_test_min_coverage_fails_when_a_rule_is_not_exercised(cli):
    path = cli.write("p/policy.yaml", POLICY)
    some = cli.write("p/some_test.yaml", PASSING_TESTS)
    result = cli("policy", "test", "--min-coverage", "100", path, some)
    assert result.exit_code == 1
    assert "PASSED: 3/3 tests passed" in plain(result.stdout)
    full = cli.write("all/all_test.yaml", ALL_RULES_TESTS)
    result = cli("policy", "test", "--min-coverage", "100", path, full)
    assert result.exit_code == 0, result.output
    assert "rule coverage: 100.0% (5/5 rules)" in plain(result.stdout)


def test_policy_test_discovers_fixtures_next_to_the_policy(cli):
    path = cli.write("p/policy.yaml", POLICY)
    cli.write("p/first_test.yaml", PASSING_TESTS)
    cli.write("p/nested/second_test.yml", ALL_RULES_TESTS)
    cli.write("p/not-a-fixture.yaml", "tests: this file is not a fixture\n")
    cli.write("elsewhere/ignored_test.yaml", "tests: [\n")
    code, data = cli.json("policy", "test", path)
    assert code == 0
    assert data["total"] == 3 + 6
    assert {r["file"] for r in data["results"]} == {
        "p/first_test.yaml",
        "p/nested/second_test.yml",
    }


def test_policy_test_without_any_fixture_exits_2(cli):
    path = cli.write("p/policy.yaml", POLICY)
    result = cli("policy", "test", path)
    assert result.exit_code == 2
    assert "no *_test.yaml files under p" in plain(result.stderr)


def test_policy_test_repeat_proves_throttling(cli):
    path = cli.write("t/policy.yaml", THROTTLE_POLICY)
    tests = cli.write(
        "t/rate_test.yaml",
        """
        tests:
          - name: three posts a minute are fine
            repeat: 3
            job: {topic: job.slack.post, tenant_id: acme}
            expect: {decision: ALLOW, rule_id: slack-ok}
          - name: the fourth post is throttled
            repeat: 4
            job: {topic: job.slack.post, tenant_id: acme}
            expect: {decision: THROTTLE, rule_id: slack-rate, reason_contains: too many}
        """,
    )
    code, data = cli.json("policy", "test", path, tests)
    assert code == 0, data
    assert [r["actual"]["decision"] for r in data["results"]] == ["ALLOW", "THROTTLE"]
    assert data["coverage"]["percent"] == 100.0
    # One repeat fewer and the limit is not reached: each test has its own counters.
    off_by_one = cli.write(
        "t/off_by_one_test.yaml",
        """
        tests:
          - name: the third post is throttled
            repeat: 3
            job: {topic: job.slack.post, tenant_id: acme}
            expect: {decision: THROTTLE}
        """,
    )
    result = cli("policy", "test", path, off_by_one)
    assert result.exit_code == 1
    assert "decision ALLOW, expected THROTTLE" in plain(result.stdout)


# --- directories of bundles ------------------------------------------------------------

BASE_BUNDLE = """
version: "7"
default_decision: deny
rules:
  - id: first
    match: {topics: [job.a]}
    decision: allow
    reason: a is fine
  - id: second
    match: {topics: [job.b]}
    decision: allow
    reason: b is fine
  - id: third
    match: {topics: [job.*]}
    decision: require_approval
    reason: everything else needs approval
"""
# Sorts before `base` by name, but the base bundle is always merged first.
FRAGMENT_BUNDLE = """
rules:
  - id: second
    match: {topics: [job.b]}
    decision: deny
    reason: b is denied now
  - id: extra
    match: {topics: [job.c]}
    decision: allow
    reason: c is fine
"""
DIRECTORY_TESTS = """
tests:
  - name: the fragment's rule replaced the base's
    job: {topic: job.b}
    expect: {decision: DENY, rule_id: second}
  - name: the base rule still decides first
    job: {topic: job.a}
    expect: {decision: ALLOW, rule_id: first}
"""


def _bundle_dir(cli):
    cli.write("policies/base.yaml", BASE_BUNDLE)
    cli.write("policies/aaa-fragment.yaml", FRAGMENT_BUNDLE)
    cli.write("policies/policies_test.yaml", DIRECTORY_TESTS)
    return "policies"


def test_directory_of_bundles_merges_base_first_and_replaces_rules_in_place(cli):
    directory = _bundle_dir(cli)
    code, data = cli.json("policy", "check", directory)
    assert code == 0
    assert data["bundles"] == ["policies/base.yaml", "policies/aaa-fragment.yaml"]
    assert data["rules"] == 4
    assert data["snapshot_id"].startswith("7:")
    code, data = cli.json("policy", "explain", directory, "--topic", "job.c")
    assert [(t["rule_id"], t["source"]) for t in data["trace"]] == [
        ("first", "policies/base.yaml:4"),
        ("second", "policies/aaa-fragment.yaml:2"),
        ("third", "policies/base.yaml:12"),
        ("extra", "policies/aaa-fragment.yaml:6"),
    ]
    # `third` (job.*) comes before the fragment's new rule, so it decides job.c.
    assert [t["outcome"] for t in data["trace"]] == ["no_match", "no_match", "selected", "matched"]
    code, data = cli.json("policy", "simulate", directory, "--topic", "job.b")
    assert (data["decision"], data["reason"]) == ("DENY", "b is denied now")


def test_test_files_in_a_policy_directory_are_fixtures_not_bundles(cli):
    directory = _bundle_dir(cli)
    check = cli("policy", "check", directory)
    assert check.exit_code == 0, check.output  # `tests:` would be an unknown policy field
    result = cli("policy", "test", directory)
    assert result.exit_code == 0, result.output
    assert "PASSED: 2/2 tests passed" in plain(result.stdout)


def test_directory_with_one_bad_bundle_is_refused(cli):
    directory = _bundle_dir(cli)
    cli.write("policies/zz-broken.yaml", "rules:\n  - id: z\n    decision: nope\n")
    result = cli("policy", "check", directory)
    assert result.exit_code == 2
    assert "policies/zz-broken.yaml:3:5: error[unknown_decision]" in plain(result.stderr)
    assert cli("policy", "hash", directory).stdout == ""


# --- the real console script: no tracebacks, real exit codes ---------------------------


def _assert_clean_failure(process, expected):
    assert process.returncode == 2, process.stderr
    assert "Traceback" not in process.stderr
    assert "internal error" not in process.stderr
    assert process.stdout == ""
    assert expected in plain(process.stderr)


def test_process_malformed_policy_exits_2_without_a_traceback(run_cordum, tmp_path):
    (tmp_path / "bad.yaml").write_text("rules:\n  - id: a\n    decision: dney\n", encoding="utf-8")
    process = run_cordum("policy", "check", "bad.yaml")
    _assert_clean_failure(process, "bad.yaml:3:5: error[unknown_decision]")


def test_process_missing_policy_file_exits_2_without_a_traceback(run_cordum):
    process = run_cordum("policy", "simulate", "missing.yaml", "--topic", "job.a")
    _assert_clean_failure(process, "missing.yaml: error[file_not_found]: no such file")


def test_process_binary_policy_file_exits_2_without_a_traceback(run_cordum, tmp_path):
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)) * 64)
    process = run_cordum("policy", "lint", "binary.yaml")
    _assert_clean_failure(process, "binary.yaml:1:1: error[binary_file]")


def test_process_huge_flow_nesting_exits_2_without_crashing(run_cordum, tmp_path):
    (tmp_path / "deep.yaml").write_text("rules: " + "[" * 500_000 + "\n", encoding="utf-8")
    process = run_cordum("policy", "check", "deep.yaml")
    _assert_clean_failure(process, "deep.yaml:1:71: error[too_deep]")


def test_process_simulate_exit_code_reaches_the_shell(run_cordum, tmp_path):
    (tmp_path / "policy.yaml").write_text(POLICY, encoding="utf-8")
    process = run_cordum(
        "policy", "simulate", "policy.yaml", "-", "--exit-code", "--json",
        stdin='{"topic": "job.k8s.delete-ns", "risk_tags": ["prod"]}',
    )  # fmt: skip
    assert process.returncode == 3, process.stderr
    assert json.loads(process.stdout)["rule_id"] == "no-prod-deletes"
    assert process.stderr == ""


def test_process_version(run_cordum):
    process = run_cordum("--version")
    assert (process.returncode, process.stdout) == (0, f"cordum {cordum.__version__}\n")


# --- every kind of malformed policy, through the command line --------------------------

from tests.policy.test_load_errors import FILE_CASES, TEXT_CASES  # noqa: E402

MALFORMED = [pytest.param(c.text.encode(), c.code, id=c.id) for c in TEXT_CASES] + [
    pytest.param(c.data, c.code, id=c.id) for c in FILE_CASES
]


@pytest.mark.parametrize(("data", "code"), MALFORMED)
def test_every_kind_of_malformed_policy_exits_2_with_its_error_and_no_traceback(cli, data, code):
    path = cli.write_bytes("bad.yaml", data)
    result = cli("policy", "check", path)
    assert result.exit_code == 2
    assert f"error[{code}]" in plain(result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
