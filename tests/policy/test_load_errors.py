"""Malformed policies and malformed jobs: every mistake is reported, precisely, and nothing else.

A policy that cannot be loaded must raise :class:`PolicyLoadError` (never another
exception type, never a crash), and every issue must say what is wrong (``code``), where
(1-based ``line`` and ``column``), in which rule and field, and how to fix it (``hint``).
"""

from __future__ import annotations

import codecs
import json
import pathlib
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

import cordum.policy
import cordum.policy.loader
from cordum.policy import InvalidJobError, PolicyIssue, PolicyLoadError, load, load_bundles
from cordum.policy.source import DEFAULT_MAX_BYTES, MAX_ALIAS_NODES, MAX_NESTING

NAME = "policy.yaml"


def _yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


@dataclass(frozen=True)
class Case:
    """One malformed policy and the single issue it must produce."""

    id: str
    text: str
    code: str
    line: int | None
    column: int | None = None
    rule_id: str | None = None
    field: str | None = None
    hint: str | None = None  # a substring the hint must contain
    message: str | None = None  # a substring the message must contain


BILLION_LAUGHS = _yaml(
    """
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
    """
)

TEXT_CASES = [
    Case(
        "yaml-syntax-error",
        _yaml(
            """
            rules:
              - id: a
                decision: deny
              reason: misindented
            """
        ),
        code="yaml_syntax",
        line=4,
        column=3,
        message="expected '-' indicator",
    ),
    Case(
        "unclosed-flow-list",
        "version: '1'\nrules: [\n",
        code="yaml_syntax",
        line=3,
        column=1,
    ),
    Case(
        "control-character",
        "rules: []\nversion: '\x07'\n",
        code="yaml_syntax",
        line=2,
        column=11,
        message="not allowed in YAML",
    ),
    Case("empty-file", "", code="empty_policy", line=None, hint="rules:"),
    Case("only-comments", "# nothing here yet\n", code="empty_policy", line=None),
    Case(
        "top-level-list",
        "- id: a\n  decision: deny\n",
        code="not_a_mapping",
        line=1,
        column=1,
        message="got a list",
        hint="rules:",
    ),
    Case(
        "top-level-scalar",
        "just some text\n",
        code="not_a_mapping",
        line=1,
        column=1,
        message="got text",
    ),
    Case(
        "duplicate-mapping-key",
        _yaml(
            """
            version: '1'
            rules:
              - id: a
                decision: deny
                decision: allow
            """
        ),
        code="duplicate_key",
        line=5,
        column=5,
        message="first on line 4",
        hint="remove one",
    ),
    Case(
        "duplicate-rule-id",
        _yaml(
            """
            rules:
              - id: same
                decision: deny
              - id: same
                decision: allow
            """
        ),
        code="duplicate_rule_id",
        line=4,
        column=5,
        rule_id="same",
        field="id",
        message="first on line 2",
    ),
    Case(
        "duplicate-rule-id-across-rule-lists",
        _yaml(
            """
            rules:
              - id: pii
                decision: deny
            input_rules:
              - name: pii
                match: {scanners: [pii]}
                decision: deny
            """
        ),
        code="duplicate_rule_id",
        line=5,
        column=5,
        rule_id="pii",
        field="id",
    ),
    Case(
        "unknown-decision",
        "rules:\n  - id: a\n    decision: dney\n",
        code="unknown_decision",
        line=3,
        column=5,
        rule_id="a",
        field="decision",
        hint="did you mean `deny`?",
    ),
    Case(
        "decision-not-text",
        "rules:\n  - id: a\n    decision: 1\n",
        code="bad_decision",
        line=3,
        column=5,
        rule_id="a",
        field="decision",
    ),
    Case(
        "unknown-top-level-field",
        "version: '1'\nrulez: []\n",
        code="unknown_field",
        line=2,
        column=1,
        field="rulez",
        hint="did you mean `rules`?",
    ),
    Case(
        "unknown-rule-field",
        "rules:\n  - id: a\n    decision: deny\n    reasons: too risky\n",
        code="unknown_field",
        line=4,
        column=5,
        rule_id="a",
        field="reasons",
        hint="did you mean `reason`?",
    ),
    Case(
        "match-field-typo",
        _yaml(
            """
            rules:
              - id: a
                match:
                  risk_tag: [prod]
                decision: deny
            """
        ),
        code="unknown_match_field",
        line=4,
        column=7,
        rule_id="a",
        field="match.risk_tag",
        hint="did you mean `risk_tags`?",
    ),
    Case(
        "list-where-mapping-expected",
        "rules:\n  - id: a\n    match: [prod]\n    decision: deny\n",
        code="wrong_type",
        line=3,
        column=5,
        rule_id="a",
        field="match",
        message="expected a mapping",
    ),
    Case(
        "mapping-where-list-expected",
        "rules: {}\n",
        code="wrong_type",
        line=1,
        column=1,
        field="rules",
        message="expected a list, got a mapping",
    ),
    Case(
        "number-where-text-expected",
        "rules:\n  - id: a\n    decision: deny\n    reason: 42\n",
        code="wrong_type",
        line=4,
        column=5,
        rule_id="a",
        field="reason",
        hint="quote it to use it as text: '42'",
    ),
    Case(
        "yaml-boolean-where-text-expected",
        "rules:\n  - id: a\n    decision: deny\n    reason: no\n",
        code="wrong_type",
        line=4,
        column=5,
        rule_id="a",
        field="reason",
        message="got a boolean (false)",
    ),
    Case(
        "invalid-rule-id",
        "rules:\n  - id: 'has spaces'\n    decision: deny\n",
        code="bad_rule_id",
        line=2,
        column=5,
        rule_id="has spaces",
        field="id",
    ),
    Case(
        "glob-unclosed-bracket",
        "rules:\n  - id: a\n    match:\n      topics: ['job.[abc']\n    decision: deny\n",
        code="bad_glob",
        line=4,
        column=16,
        rule_id="a",
        field="match.topics[0]",
        message="never closed",
        hint="close the character class",
    ),
    Case(
        "glob-nats-wildcard",
        "rules:\n  - id: a\n    match:\n      topics: [job.db.>]\n    decision: deny\n",
        code="bad_glob",
        line=4,
        column=16,
        rule_id="a",
        field="match.topics[0]",
        message="NATS wildcard",
        hint="write `job.db.*`",
    ),
    Case(
        "glob-empty",
        "rules:\n  - id: a\n    match:\n      topics: [job.a, '']\n    decision: deny\n",
        code="bad_glob",
        line=4,
        column=23,
        rule_id="a",
        field="match.topics[1]",
        message="empty topic pattern",
    ),
    Case(
        "glob-reversed-range",
        "rules:\n  - id: a\n    match:\n      topic: 'job.[z-a]'\n    decision: deny\n",
        code="bad_glob",
        line=4,
        column=7,
        rule_id="a",
        # A single value stands for a one-element list, hence the `[0]`.
        field="match.topic[0]",
        message="`z-a` is reversed",
    ),
    Case(
        "content-pattern-lookahead",
        "input_rules:\n  - id: a\n    match:\n      content_patterns: ['foo(?=bar)']\n"
        "    decision: deny\n",
        code="bad_pattern",
        line=4,
        column=26,
        rule_id="a",
        field="match.content_patterns[0]",
        hint="no lookaround",
    ),
    Case(
        "content-pattern-backreference",
        "input_rules:\n  - id: a\n    match:\n      content_patterns: ['(a)\\1']\n"
        "    decision: deny\n",
        code="bad_pattern",
        line=4,
        column=26,
        rule_id="a",
        field="match.content_patterns[0]",
        hint="no backreferences",
    ),
    Case(
        "velocity-max-requests-zero",
        _yaml(
            """
            rules:
              - id: a
                decision: throttle
                velocity:
                  max_requests: 0
                  window_seconds: 60
                  key: tenant
            """
        ),
        code="out_of_range",
        line=5,
        column=7,
        rule_id="a",
        field="velocity.max_requests",
        message="must be > 0, got 0",
    ),
    Case(
        "velocity-unknown-key",
        _yaml(
            """
            rules:
              - id: a
                decision: throttle
                velocity:
                  max_requests: 5
                  window_seconds: 60
                  key: tenant
                  burst: 3
            """
        ),
        code="unknown_field",
        line=8,
        column=7,
        rule_id="a",
        field="velocity.burst",
        hint="allowed here: key, max_requests, window_seconds",
    ),
    Case(
        "velocity-misspelt-counting-key",
        _yaml(
            """
            rules:
              - id: a
                decision: throttle
                velocity: {max_requests: 5, window_seconds: 60, key: tennant}
            """
        ),
        code="bad_velocity_key",
        line=4,
        column=53,
        rule_id="a",
        field="velocity.key",
        hint="did you mean `tenant`?",
    ),
    Case(
        "input-rule-decision-allow",
        "input_rules:\n  - id: a\n    match: {scanners: [pii]}\n    decision: allow\n",
        code="unknown_decision",
        line=4,
        column=5,
        rule_id="a",
        field="decision",
        message="unknown input rule decision `allow`",
        hint="allowed: deny, require_approval",
    ),
    Case(
        "input-rule-without-detectors",
        "input_rules:\n  - id: a\n    match: {topics: [job.*]}\n    decision: deny\n",
        code="no_detectors",
        line=2,
        column=5,
        rule_id="a",
        hint="scanners, content_patterns, keywords",
    ),
    Case(
        "unknown-scanner",
        "input_rules:\n  - id: a\n    match: {scanners: [secrts]}\n    decision: deny\n",
        code="unknown_decision",
        line=3,
        column=24,
        rule_id="a",
        field="match.scanners[0]",
        hint="did you mean `secrets`?",
    ),
    Case(
        "conflicting-id-and-name",
        "rules:\n  - id: a\n    name: b\n    decision: deny\n",
        code="conflicting_fields",
        line=2,
        column=5,
        rule_id="a",
        message="both `id` and `name` are set",
        hint="keep one",
    ),
    Case(
        "conflicting-topic-and-topics",
        _yaml(
            """
            rules:
              - id: a
                match:
                  topic: job.a
                  topics: [job.b]
                decision: deny
            """
        ),
        code="conflicting_fields",
        line=3,
        column=5,
        rule_id="a",
        field="match",
        message="both `topic` and `topics` are set",
    ),
    Case(
        "max-runtime-sec-with-budgets-max-runtime-ms",
        _yaml(
            """
            rules:
              - id: a
                decision: allow
                constraints:
                  max_runtime_sec: 5
                  budgets: {max_runtime_ms: 100}
            """
        ),
        code="conflicting_fields",
        line=2,
        column=5,
        rule_id="a",
        message="both `max_runtime_sec` and `budgets.max_runtime_ms` are set",
        hint="keep `budgets.max_runtime_ms`",
    ),
    Case(
        "python-object-tag",
        "rules:\n  - id: a\n    decision: !!python/object:os.system deny\n",
        code="yaml_tag",
        line=3,
        column=15,
        message="python/object",
        hint="plain YAML data",
    ),
    Case(
        "python-apply-tag",
        "version: !!python/object/apply:os.system ['echo pwned']\n",
        code="yaml_tag",
        line=1,
        column=10,
        message="python/object/apply",
    ),
    Case(
        "missing-decision",
        "rules:\n  - id: a\n    reason: forgot the decision\n",
        code="missing_field",
        line=2,
        column=5,
        rule_id="a",
        field="decision",
        message="missing required field `decision`",
    ),
    Case(
        "missing-remediation-title",
        _yaml(
            """
            rules:
              - id: a
                decision: deny
                remediations:
                  - id: use-staging
            """
        ),
        code="missing_field",
        line=5,
        column=9,
        rule_id="a",
        field="remediations[0].title",
        message="missing required field `title`",
    ),
    Case(
        "default-decision-maybe",
        "default_decision: maybe\nrules: []\n",
        code="unknown_decision",
        line=1,
        column=1,
        field="default_decision",
        hint="allowed: allow, deny",
    ),
    Case(
        "default-decision-throttle",
        "default_decision: throttle\n",
        code="unknown_decision",
        line=1,
        column=1,
        field="default_decision",
    ),
    Case(
        "merge-key-of-a-scalar",
        "rules:\n  - <<: 5\n    id: a\n    decision: deny\n",
        code="bad_merge",
        line=2,
        column=9,
    ),
    Case(
        "flow-nesting-100-levels",
        "rules: " + "[" * 100 + "]" * 100 + "\n",
        code="too_deep",
        line=1,
        # The top-level mapping is level 1, so the 64th `[` (column 8 + 63) is level 65.
        column=8 + MAX_NESTING - 1,
        message=f"more than {MAX_NESTING} levels",
    ),
    Case(
        "block-nesting-100-levels",
        "- " * 100 + "x\n",
        code="too_deep",
        line=1,
        column=2 * MAX_NESTING + 1,
    ),
    Case(
        "billion-laughs",
        BILLION_LAUGHS,
        code="alias_bomb",
        # Reported at the anchored node whose copies overflow the budget (`&e`, line 5).
        line=5,
        column=4,
        message=f"{MAX_ALIAS_NODES:,} nodes",
        hint="billion laughs",
    ),
    Case(
        "recursive-alias",
        "a: &a [*a]\n",
        code="recursive_alias",
        line=1,
        column=4,
    ),
    Case(
        "recursive-merge-key",
        "a: &a {<<: *a}\n",
        code="recursive_alias",
        line=1,
        column=4,
    ),
    Case(
        "non-text-mapping-key",
        "? [a, b]\n: c\n",
        code="bad_key",
        line=1,
        column=3,
    ),
]


def _issues(excinfo: pytest.ExceptionInfo[PolicyLoadError]) -> list[PolicyIssue]:
    assert type(excinfo.value) is PolicyLoadError
    issues = list(excinfo.value.issues)
    assert issues, "a PolicyLoadError must list at least one issue"
    return issues


def _check(issue: PolicyIssue, case: Case, file: str = NAME) -> None:
    assert issue.code == case.code, issue.format()
    assert issue.file == file
    assert issue.line == case.line, issue.format()
    if case.column is not None:
        assert issue.column == case.column, issue.format()
    assert issue.rule_id == case.rule_id, issue.format()
    assert issue.field == case.field, issue.format()
    assert issue.severity == "error"
    if case.hint is not None:
        assert issue.hint is not None, issue.format()
        assert case.hint in issue.hint
    if case.message is not None:
        assert case.message in issue.message


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in TEXT_CASES])
def test_malformed_policy_text_reports_one_precise_issue(case):
    with pytest.raises(PolicyLoadError) as excinfo:
        cordum.policy.load_text(case.text, name=NAME)
    issues = _issues(excinfo)
    assert [issue.code for issue in issues] == [case.code], str(excinfo.value)
    _check(issues[0], case)


def test_typo_in_a_merged_mapping_is_reported_for_every_rule_at_the_anchor():
    text = _yaml(
        """
        rules:
          - &base
            id: a
            decision: deny
            reasn: copied typo
          - <<: *base
            id: b
        """
    )
    with pytest.raises(PolicyLoadError) as excinfo:
        cordum.policy.load_text(text, name=NAME)
    found = [(i.code, i.line, i.column, i.rule_id, i.field) for i in excinfo.value.issues]
    assert found == [
        ("unknown_field", 5, 5, "a", "reasn"),
        ("unknown_field", 5, 5, "b", "reasn"),
    ]
    assert all("did you mean `reason`?" in (i.hint or "") for i in excinfo.value.issues)


def test_at_least_twenty_distinct_kinds_of_mistake_are_covered():
    assert len({case.code for case in TEXT_CASES}) >= 20
    assert len(TEXT_CASES) >= 40


# --- files: bytes that are not a UTF-8 text policy ----------------------------------


@dataclass(frozen=True)
class FileCase:
    id: str
    data: bytes
    code: str
    line: int | None
    column: int | None = None
    hint: str | None = None
    message: str | None = None


FILE_CASES = [
    FileCase(
        "nul-bytes-in-a-policy",
        b"rules:\n  - id: a\x00\x01\x02\xff\n",
        code="binary_file",
        line=2,
        column=10,
        hint="YAML text file",
    ),
    FileCase(
        "binary-garbage",
        bytes(range(256)) * 16,
        code="binary_file",
        line=1,
        column=1,
        message="NUL bytes",
    ),
    FileCase(
        "invalid-utf8",
        b"version: '1'\nrules:\n  - id: a\n    reason: caf\xe9 au lait\n    decision: deny\n",
        code="bad_encoding",
        line=4,
        column=16,
        message="invalid UTF-8 byte 0xe9",
        hint="save the policy as UTF-8",
    ),
    FileCase(
        "truncated-utf8-sequence-at-end",
        b"rules: []\n# \xe2\x82",
        code="bad_encoding",
        line=2,
        column=3,
        message="0xe2",
    ),
    FileCase(
        "utf16-le-with-bom",
        "rules: []\n".encode("utf-16"),
        code="bad_encoding",
        line=None,
        message="UTF-16",
        hint="save the policy as UTF-8",
    ),
    FileCase(
        "utf16-be-with-bom",
        codecs.BOM_UTF16_BE + "rules: []\n".encode("utf-16-be"),
        code="bad_encoding",
        line=None,
        message="UTF-16",
    ),
    FileCase(
        "utf16-without-bom",
        "rules: []\n".encode("utf-16-le"),
        code="binary_file",
        line=1,
        column=2,
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in FILE_CASES])
def test_malformed_policy_file_is_refused_with_its_position(tmp_path, case):
    path = tmp_path / "policy.yaml"
    path.write_bytes(case.data)
    with pytest.raises(PolicyLoadError) as excinfo:
        load(path)
    issues = _issues(excinfo)
    assert len(issues) == 1
    issue = issues[0]
    assert issue.code == case.code
    assert issue.file == str(path)
    assert (issue.line, issue.column) == (case.line, case.column)
    if case.hint is not None:
        assert case.hint in (issue.hint or "")
    if case.message is not None:
        assert case.message in issue.message


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_bytes(codecs.BOM_UTF8 + b"rules:\n  - id: a\n    decision: deny\n")
    assert [rule.rule.id for rule in load(path).rules] == ["a"]


def test_missing_file_is_a_load_error_not_an_os_error(tmp_path):
    with pytest.raises(PolicyLoadError) as excinfo:
        load(tmp_path / "nope.yaml")
    (issue,) = _issues(excinfo)
    assert issue.code == "file_not_found"
    assert issue.file == str(tmp_path / "nope.yaml")
    assert issue.hint == "check the path"


# --- size limit -------------------------------------------------------------------


def test_file_over_max_bytes_is_refused(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - id: a\n    decision: deny\n", encoding="utf-8")
    with pytest.raises(PolicyLoadError) as excinfo:
        load(path, max_bytes=10)
    (issue,) = _issues(excinfo)
    assert issue.code == "too_large"
    assert issue.line is None
    assert "36 bytes; the limit is 10 bytes" in issue.message
    assert "--max-bytes" in (issue.hint or "")


def test_text_over_max_bytes_is_refused_counting_utf8_bytes():
    text = "version: '1'\ndescription: 'ééééé'\n"  # 31 characters, 36 bytes
    with pytest.raises(PolicyLoadError) as excinfo:
        cordum.policy.load_text(text, max_bytes=len(text))
    (issue,) = _issues(excinfo)
    assert issue.code == "too_large"
    assert f"{len(text.encode())} bytes" in issue.message
    assert cordum.policy.load_text(text, max_bytes=len(text.encode())).version == "1"


def test_bundle_over_max_bytes_is_refused():
    with pytest.raises(PolicyLoadError) as excinfo:
        load_bundles({"base": "rules: []\n" + "#" * 100 + "\n"}, max_bytes=50)
    (issue,) = _issues(excinfo)
    assert (issue.code, issue.file) == ("too_large", "base")


def test_real_file_over_two_mib_is_refused_by_default_without_being_read(tmp_path, monkeypatch):
    path = tmp_path / "huge.yaml"
    valid = "rules:\n  - id: a\n    decision: deny\n"
    padding = "# padding\n" * (DEFAULT_MAX_BYTES // 10)
    path.write_text(valid + padding, encoding="utf-8")
    assert path.stat().st_size > DEFAULT_MAX_BYTES

    def must_not_run(*args, **kwargs):
        raise AssertionError("an oversized policy must be refused before it is read or parsed")

    monkeypatch.setattr(pathlib.Path, "read_bytes", must_not_run)
    monkeypatch.setattr(cordum.policy.loader, "parse_yaml", must_not_run)
    with pytest.raises(PolicyLoadError) as excinfo:
        load(path)
    (issue,) = _issues(excinfo)
    assert issue.code == "too_large"
    assert f"the limit is {DEFAULT_MAX_BYTES:,} bytes" in issue.message
    monkeypatch.undo()
    assert load(path, max_bytes=4 * DEFAULT_MAX_BYTES).rules[0].rule.id == "a"


# --- nesting: guards that keep libyaml from overflowing the C stack ----------------


def _load_in_subprocess(text_expression: str) -> subprocess.CompletedProcess[str]:
    """Load ``eval(text_expression)`` in a child interpreter, so a segfault fails one test."""
    code = textwrap.dedent(
        f"""
        import json, cordum.policy
        try:
            cordum.policy.load_text({text_expression})
        except cordum.policy.PolicyLoadError as exc:
            print(json.dumps([[i.code, i.line, i.column] for i in exc.issues]))
        else:
            print("loaded")
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_million_level_flow_nesting_is_refused_without_crashing_the_interpreter():
    result = _load_in_subprocess("'[' * 1_000_000 + ']' * 1_000_000 + '\\n'")
    assert result.returncode == 0, f"interpreter died: {result.returncode} {result.stderr}"
    assert json.loads(result.stdout) == [["too_deep", 1, MAX_NESTING + 1]]


def test_million_unclosed_brackets_are_refused_in_process():
    with pytest.raises(PolicyLoadError) as excinfo:
        cordum.policy.load_text("rules: " + "[" * 1_000_000 + "\n")
    (issue,) = _issues(excinfo)
    assert (issue.code, issue.line, issue.column) == ("too_deep", 1, 8 + MAX_NESTING - 1)


def test_brackets_inside_quoted_text_are_not_nesting():
    text = f"version: '1'\ndescription: '{'[' * 500}'\nrules: []\n"
    assert cordum.policy.load_text(text).document.description == "[" * 500


@pytest.mark.parametrize(
    "text_expression",
    [
        pytest.param("'- ' * 100_000 + 'x\\n'", id="compact-block-sequences"),
        pytest.param("'? ' * 100_000 + 'x\\n'", id="complex-mapping-keys"),
    ],
)
def test_deep_block_nesting_is_refused_without_crashing_the_interpreter(text_expression):
    # 200 KB, far under the 2 MiB limit, and no brackets: libyaml's recursive composer
    # overflowed the C stack (SIGSEGV) on this before the builder's depth check could run.
    result = _load_in_subprocess(text_expression)
    assert result.returncode == 0, f"interpreter died with exit code {result.returncode}"
    assert json.loads(result.stdout) == [["too_deep", 1, 2 * MAX_NESTING + 1]]


# --- text that is not valid Unicode -------------------------------------------------


def test_lone_surrogate_in_policy_text_is_a_load_error():
    # Reachable through the API: json.loads('"\\ud800"') yields a lone surrogate.
    text = json.loads("\"version: '\\ud800'\\nrules: []\\n\"")
    assert text == "version: '\ud800'\nrules: []\n"
    with pytest.raises(PolicyLoadError) as excinfo:
        cordum.policy.load_text(text, name=NAME)
    (issue,) = _issues(excinfo)
    assert (issue.code, issue.line, issue.column) == ("bad_encoding", 1, 11)
    assert "U+D800" in issue.message


# --- keys that collide once normalized ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "column", "rule_id", "field"),
    [
        pytest.param(
            _yaml(
                """
                default_decision: deny
                tenants:
                  Acme:
                    deny_topics: [job.db.drop]
                  acme:
                    allow_topics: [job.*]
                """
            ),
            2,
            1,
            None,
            "tenants",
            id="tenant-names",
        ),
        pytest.param(
            _yaml(
                """
                rules:
                  - id: a
                    match:
                      labels: {Env: prod, env: dev}
                    decision: deny
                """
            ),
            4,
            7,
            "a",
            "match.labels",
            id="label-keys",
        ),
    ],
)
def test_keys_that_differ_only_in_case_are_refused_not_silently_dropped(
    text, line, column, rule_id, field
):
    # Tenant names and label keys are compared case-insensitively, so `Acme` and `acme`
    # are the same key; keeping only the last one would silently drop the first one's
    # lists (for tenants, the deny list: job.db.drop for tenant acme would be ALLOWED).
    with pytest.raises(PolicyLoadError) as excinfo:
        cordum.policy.load_text(text, name=NAME)
    (issue,) = _issues(excinfo)
    assert issue.code == "duplicate_key"
    assert (issue.line, issue.column, issue.rule_id, issue.field) == (line, column, rule_id, field)
    assert "are the same key (compared case-insensitively)" in issue.message


def test_numeric_version_is_not_silently_changed():
    # YAML reads 2026.10 as the float 2026.1; the snapshot id must not then say "2026.1"
    # (the same id as a policy that really is version 2026.1). Either keep the text as
    # written or refuse it with a hint to quote it.
    try:
        policy = cordum.policy.load_text("version: 2026.10\nrules: []\n", name=NAME)
    except PolicyLoadError as exc:
        (issue,) = exc.issues
        assert (issue.field, issue.line) == ("version", 1)
        assert "'2026.10'" in (issue.hint or "")
    else:
        assert policy.version == "2026.10"
        assert policy.snapshot_id.startswith("2026.10:")


def test_one_line_string_is_a_path_not_yaml_text():
    with pytest.raises(PolicyLoadError) as excinfo:
        load("rules: []")
    (issue,) = _issues(excinfo)
    assert (issue.code, issue.file) == ("file_not_found", "rules: []")


# --- several issues, bundles and directories ----------------------------------------


def test_every_problem_in_one_document_is_reported_in_line_order():
    text = _yaml(
        """
        rulez: []
        rules:
          - id: a
            decision: dney
          - id: b
            match: {topics: ['job.[']}
            decision: deny
            reason: 7
        """
    )
    with pytest.raises(PolicyLoadError) as excinfo:
        cordum.policy.load_text(text, name=NAME)
    found = [(i.code, i.line, i.rule_id) for i in excinfo.value.issues]
    assert found == [
        ("unknown_field", 1, None),
        ("unknown_decision", 4, "a"),
        ("bad_glob", 6, "b"),
        ("wrong_type", 8, "b"),
    ]
    assert str(excinfo.value).startswith("policy not loaded: 4 problems\n")


GOOD_BASE = "default_decision: deny\nrules:\n  - id: base-rule\n    decision: deny\n"


def test_bundles_disagreeing_on_default_decision_are_refused():
    with pytest.raises(PolicyLoadError) as excinfo:
        load_bundles({"base": GOOD_BASE, "b": "default_decision: allow\nrules: []\n"})
    (issue,) = _issues(excinfo)
    assert issue.code == "conflicting_default_decision"
    assert (issue.file, issue.line, issue.column) == ("b", 1, 1)
    assert issue.field == "default_decision"
    assert "bundle `b` sets default_decision ALLOW, but `base` sets DENY" in issue.message
    assert "one bundle only" in (issue.hint or "")


def test_bundles_agreeing_on_default_decision_load():
    policy = load_bundles({"base": GOOD_BASE, "b": "default_decision: DENY\nrules: []\n"})
    assert policy.default_decision == cordum.policy.Decision.DENY


def test_load_bundles_reports_the_problems_of_every_bad_bundle_together():
    bundles = {
        "base": GOOD_BASE,
        "b-typo": "rules:\n  - id: x\n    decision: dney\n",
        "c-syntax": "rules: [\n",
        "d-list": "- id: y\n",
        "e-tag": "version: !!python/name:os.system\n",
    }
    with pytest.raises(PolicyLoadError) as excinfo:
        load_bundles(bundles)
    found = [(i.file, i.code, i.line) for i in excinfo.value.issues]
    assert found == [
        ("b-typo", "unknown_decision", 3),
        ("c-syntax", "yaml_syntax", 2),
        ("d-list", "not_a_mapping", 1),
        ("e-tag", "yaml_tag", 1),
    ]


def test_directory_with_one_bad_file_is_refused_as_a_whole(tmp_path):
    (tmp_path / "base.yaml").write_text(GOOD_BASE, encoding="utf-8")
    (tmp_path / "good.yaml").write_text(
        "rules:\n  - id: good\n    decision: allow\n", encoding="utf-8"
    )
    (tmp_path / "team").mkdir()
    bad = tmp_path / "team" / "bad.yml"
    bad.write_text("rules:\n  - id: q\n    decision: nope\n", encoding="utf-8")
    result = None
    with pytest.raises(PolicyLoadError) as excinfo:
        result = load(tmp_path)
    assert result is None
    (issue,) = _issues(excinfo)
    assert (issue.file, issue.code, issue.line, issue.rule_id) == (
        str(bad),
        "unknown_decision",
        3,
        "q",
    )


def test_directory_with_an_undecodable_file_names_that_file(tmp_path):
    (tmp_path / "base.yaml").write_text(GOOD_BASE, encoding="utf-8")
    (tmp_path / "binary.yaml").write_bytes(b"rules: []\n\x00\x01")
    with pytest.raises(PolicyLoadError) as excinfo:
        load(tmp_path)
    found = [(i.file, i.code, i.line, i.column) for i in excinfo.value.issues]
    assert found == [(str(tmp_path / "binary.yaml"), "binary_file", 2, 1)]


def test_directory_without_policy_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a policy", encoding="utf-8")
    (tmp_path / "only_test.yaml").write_text("tests: []\n", encoding="utf-8")
    with pytest.raises(PolicyLoadError) as excinfo:
        load(tmp_path)
    (issue,) = _issues(excinfo)
    assert (issue.code, issue.file) == ("no_bundles", str(tmp_path))


# --- how issues read ----------------------------------------------------------------


def _all_case_issues(tmp_path) -> list[PolicyIssue]:
    issues: list[PolicyIssue] = []
    for case in TEXT_CASES:
        with pytest.raises(PolicyLoadError) as excinfo:
            cordum.policy.load_text(case.text, name=NAME)
        issues.extend(excinfo.value.issues)
    for case in FILE_CASES:
        path = tmp_path / f"{case.id}.yaml"
        path.write_bytes(case.data)
        with pytest.raises(PolicyLoadError) as excinfo:
            load(path)
        issues.extend(excinfo.value.issues)
    return issues


def test_every_issue_format_starts_with_file_line_column(tmp_path):
    issues = _all_case_issues(tmp_path)
    positioned = [issue for issue in issues if issue.line is not None]
    assert len(positioned) >= 40
    for issue in positioned:
        prefix = f"{issue.file}:{issue.line}:"
        if issue.column is not None:
            prefix += f"{issue.column}:"
        assert issue.format().startswith(prefix + " error["), issue.format()
    for issue in issues:
        if issue.line is None:
            assert issue.format().startswith(f"{issue.file}: error[{issue.code}]: ")
        if issue.hint:
            assert issue.format().endswith(f"\n    hint: {issue.hint}")


def test_issue_format_names_the_rule_and_field():
    with pytest.raises(PolicyLoadError) as excinfo:
        cordum.policy.load_text("rules:\n  - id: a\n    decision: dney\n", name=NAME)
    (issue,) = excinfo.value.issues
    first_line = issue.format().splitlines()[0]
    assert first_line == (
        "policy.yaml:3:5: error[unknown_decision]: rule `a` › decision: unknown decision `dney`"
    )
    assert issue.to_dict()["line"] == 3
    assert issue.location == "policy.yaml:3:5"


# --- malformed jobs -----------------------------------------------------------------

POLICY = cordum.policy.load_text(
    "rules:\n  - id: a\n    match: {topics: [job.x]}\n    decision: deny\n", name=NAME
)


@pytest.mark.parametrize(
    ("job", "field"),
    [
        pytest.param({"topic": "job.x", "risk_tag": ["prod"]}, "risk_tag", id="unknown-field"),
        pytest.param({"tenant_id": "acme"}, "topic", id="missing-topic"),
        pytest.param({"topic": "   "}, "topic", id="blank-topic"),
        pytest.param({"topic": 42}, "topic", id="topic-not-text"),
        pytest.param({"topic": "job.x", "risk_tags": "prod"}, "risk_tags", id="tags-as-text"),
        pytest.param({"topic": "job.x", "risk_tags": ["prod", 1]}, "risk_tags", id="tag-number"),
        pytest.param({"topic": "job.x", "labels": ["env"]}, "labels", id="labels-a-list"),
        pytest.param({"topic": "job.x", "labels": "env=prod"}, "labels", id="labels-text"),
        pytest.param({"topic": "job.x", "labels": {"env": {"a": 1}}}, "labels.env", id="dict"),
        pytest.param({"topic": "job.x", "tenant_id": 7}, "tenant_id", id="tenant-number"),
        pytest.param({"topic": "job.x", "prompt": ["hi"]}, "prompt", id="prompt-a-list"),
        pytest.param(["job.x"], "job", id="job-a-list"),
        pytest.param("job.x", "job", id="job-a-string"),
        pytest.param(None, "job", id="job-none"),
    ],
)
def test_malformed_job_raises_invalid_job_error_naming_the_field(job, field):
    with pytest.raises(InvalidJobError) as excinfo:
        POLICY.evaluate(job)
    assert excinfo.value.field == field
    assert str(excinfo.value).startswith(f"job field `{field}`: ")
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize("method", ["evaluate", "simulate", "explain", "evaluate_output"])
def test_every_entry_point_refuses_a_misspelt_job_field(method):
    job = {"topic": "job.x", "risk_tag": ["prod"]}
    args = (job, {"out": 1}) if method == "evaluate_output" else (job,)
    with pytest.raises(InvalidJobError) as excinfo:
        getattr(POLICY, method)(*args)
    assert excinfo.value.field == "risk_tag"
    assert "misspelt" in str(excinfo.value)


def test_well_formed_job_is_decided():
    record = POLICY.evaluate({"topic": "JOB.X", "tenant": "Acme", "labels": {"n": 1}})
    assert (record.decision, record.rule_id) == (cordum.policy.Decision.DENY, "a")


@pytest.mark.parametrize("decision", ["allow", "deny", "throttle"])
def test_an_approval_ttl_outside_a_require_approval_rule_is_refused(decision):
    text = textwrap.dedent(
        f"""\
        version: "1"
        rules:
          - id: r
            match: {{topics: ["job.x"]}}
            decision: {decision}
            reason: because
            constraints: {{approval_ttl_s: 30}}
        """
    )
    with pytest.raises(PolicyLoadError) as caught:
        cordum.policy.load_text(text, name="p.yaml")
    (issue,) = caught.value.issues
    assert issue.code == "misplaced_field"
    assert issue.line == 3
    assert "require_approval" in issue.message
