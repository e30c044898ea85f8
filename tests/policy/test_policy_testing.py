"""The policy-test runner behind `cordum policy test`, and the shipped example."""

from __future__ import annotations

from pathlib import Path

import pytest

from cordum.policy import PolicyLoadError, load
from cordum.policy.testing import discover_test_files, load_test_cases, run_tests
from tests.policy.helpers import policy, rule

EXAMPLES = Path(__file__).parents[2] / "examples" / "policies"


def write(tmp_path, text, name="p_test.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_passing_and_failing_cases_and_coverage(tmp_path):
    loaded = policy(rule("deny-db", topics=["job.db.*"]), rule("never", topics=["job.none"]))
    fixture = write(
        tmp_path,
        """
tests:
  - name: db is denied
    job: {topic: job.db.x}
    expect: {decision: deny, rule_id: deny-db}
  - name: wrong expectation
    job: {topic: job.db.x}
    expect: {decision: ALLOW, rule_id: null, reason_contains: nope}
  - name: default applies
    job: {topic: job.k8s.x}
    expect: {decision: DENY, rule_id: null, approval_required: false}
""",
    )
    report = run_tests(loaded, load_test_cases([fixture]))
    assert [r.passed for r in report.results] == [True, False, True]
    assert report.failures[0].problems == (
        "decision DENY, expected ALLOW",
        "decided by deny-db, expected the default decision",
        "reason does not contain 'nope'",
    )
    assert report.uncovered == ("never",)
    assert report.coverage_percent == 50.0
    assert report.to_dict()["coverage"]["default_exercised"] is True
    assert report.results[1].source.line == 6


def test_repeat_runs_with_fresh_counters_per_case(tmp_path):
    throttle = {
        **rule("rate", "throttle"),
        "velocity": {"max_requests": 2, "window_seconds": 60, "key": "tenant"},
    }
    loaded = policy(throttle, rule("ok", "allow"))
    fixture = write(
        tmp_path,
        """
tests:
  - {name: third is throttled, repeat: 3, job: {topic: job.x}, expect: {decision: THROTTLE}}
  - {name: a new case starts from zero, job: {topic: job.x}, expect: {decision: ALLOW}}
""",
    )
    report = run_tests(loaded, load_test_cases([fixture]))
    assert report.passed
    assert report.uncovered == ()


def test_malformed_fixtures_are_load_errors_with_positions(tmp_path):
    fixture = write(
        tmp_path,
        """
tests:
  - name: typo
    job: {topic: job.x, risk_tag: [prod]}
    expect: {decision: DENY}
  - name: bad decision
    job: {topic: job.x}
    expect: {decision: MAYBE}
""",
    )
    with pytest.raises(PolicyLoadError) as caught:
        load_test_cases([fixture])
    issues = {(i.code, i.line) for i in caught.value.issues}
    assert ("unknown_field", 4) in issues
    assert ("unknown_decision", 8) in issues
    hints = " ".join(i.hint or "" for i in caught.value.issues)
    assert "risk_tags" in hints


def test_discovery_finds_test_files_under_directories(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "tests: []", "a_test.yaml")
    write(tmp_path, "tests: []", "b_test.yml")
    write(tmp_path, "rules: []", "policy.yaml")
    found = [p.name for p in discover_test_files([tmp_path])]
    assert found == ["b_test.yml", "a_test.yaml"]


def test_the_example_policy_passes_its_tests_with_full_coverage():
    loaded = load(EXAMPLES / "production.yaml")
    report = run_tests(loaded, load_test_cases(discover_test_files([EXAMPLES])))
    assert report.passed, [(f.name, f.problems) for f in report.failures]
    assert report.coverage_percent == 100.0
    assert len(report.results) >= 25


def test_the_bundles_example_applies_its_change_freeze_in_place():
    loaded = load(EXAMPLES.parent / "bundles")
    assert [r.rule.id for r in loaded.rules] == ["deploys-to-prod", "deploys-elsewhere"]
    assert loaded.source_of("deploys-to-prod").file.endswith("change-freeze.yaml")
    report = run_tests(loaded, load_test_cases(discover_test_files([EXAMPLES.parent / "bundles"])))
    assert report.passed
    assert report.coverage_percent == 100.0
