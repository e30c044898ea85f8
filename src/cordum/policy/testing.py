"""``cordum policy test``: jobs with the decision the policy must give them.

A fixture file is YAML::

    tests:
      - name: deleting a production namespace is denied
        job: {topic: job.k8s.delete-namespace, risk_tags: [prod, destructive]}
        expect: {decision: DENY, rule_id: k8s-no-prod-deletes}
      - name: the 31st Slack message in a minute is throttled
        repeat: 31
        job: {topic: job.slack.post, tenant_id: acme}
        expect: {decision: THROTTLE}

Every test runs against its own velocity counters with the clock stopped, so ``repeat``
tests are exact and independent of each other. The report says which rules no test
exercised (rule coverage), like ``opa test --coverage``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cordum.models import DecisionRecord, Job
from cordum.policy.engine import Policy
from cordum.policy.errors import PolicyIssue, PolicyLoadError
from cordum.policy.loader import TEST_FILE_SUFFIXES
from cordum.policy.schema import RuleDecision
from cordum.policy.source import decode_policy_bytes, parse_yaml, read_policy_bytes
from cordum.policy.validate import SourceRef, translate_errors
from cordum.policy.velocity import InMemoryVelocityStore

DEFAULT_RULE = "(default)"
MAX_REPEAT = 100_000


class Expectation(BaseModel):
    """What the policy must answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: RuleDecision
    rule_id: str | None = Field(
        default="",
        description="The deciding rule; null means the default decision; omit to not check.",
    )
    reason_contains: str | None = None
    approval_required: bool | None = None


class PolicyTestCase(BaseModel):
    """One named job and its expected decision."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    job: Job
    expect: Expectation
    repeat: int = Field(
        default=1, ge=1, le=MAX_REPEAT, description="Evaluate N times; check the last."
    )


class PolicyTestFile(BaseModel):
    """A fixture file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tests: tuple[PolicyTestCase, ...]


@dataclass(frozen=True)
class LocatedCase:
    """A test case and where it was written."""

    case: PolicyTestCase
    source: SourceRef


@dataclass(frozen=True)
class PolicyTestResult:
    """The outcome of one test case."""

    name: str
    source: SourceRef
    passed: bool
    expected: Expectation
    actual: DecisionRecord
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "file": self.source.file,
            "line": self.source.line,
            "passed": self.passed,
            "expected": self.expected.model_dump(mode="json"),
            "actual": {
                "decision": self.actual.decision.value,
                "rule_id": self.actual.rule_id,
                "reason": self.actual.reason,
            },
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class PolicyTestReport:
    """All results plus rule coverage."""

    results: tuple[PolicyTestResult, ...]
    rule_ids: tuple[str, ...]
    exercised: frozenset[str] = field(default_factory=frozenset)
    sources: dict[str, SourceRef] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every test passed."""
        return all(result.passed for result in self.results)

    @property
    def failures(self) -> tuple[PolicyTestResult, ...]:
        """The tests that failed."""
        return tuple(result for result in self.results if not result.passed)

    @property
    def uncovered(self) -> tuple[str, ...]:
        """Rule ids no test decided with, in policy order."""
        return tuple(rule_id for rule_id in self.rule_ids if rule_id not in self.exercised)

    @property
    def coverage_percent(self) -> float:
        """Share of rules some test was decided by."""
        if not self.rule_ids:
            return 100.0
        return 100.0 * (len(self.rule_ids) - len(self.uncovered)) / len(self.rule_ids)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "passed": self.passed,
            "total": len(self.results),
            "failed": len(self.failures),
            "results": [result.to_dict() for result in self.results],
            "coverage": {
                "percent": round(self.coverage_percent, 1),
                "rules": len(self.rule_ids),
                "uncovered": [
                    {"rule_id": rule_id, "source": str(self.sources.get(rule_id, ""))}
                    for rule_id in self.uncovered
                ],
                "default_exercised": DEFAULT_RULE in self.exercised,
            },
        }


def discover_test_files(paths: Iterable[Path]) -> list[Path]:
    """Fixture files: the given files, plus ``*_test.yaml`` files under given directories."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and p.name.endswith(TEST_FILE_SUFFIXES)
                )
            )
        else:
            found.append(path)
    return found


def load_test_cases(files: Iterable[Path]) -> list[LocatedCase]:
    """Read and validate fixture files; raise :class:`PolicyLoadError` listing every problem."""
    cases: list[LocatedCase] = []
    issues: list[PolicyIssue] = []
    for file in files:
        try:
            parsed = parse_yaml(decode_policy_bytes(read_policy_bytes(file), str(file)), str(file))
            if not isinstance(parsed.data, dict):
                raise PolicyLoadError(
                    [
                        PolicyIssue(
                            "not_a_mapping",
                            "a test file is a mapping with `tests:`",
                            str(file),
                            1,
                            1,
                        )
                    ]
                )
            loaded = PolicyTestFile.model_validate(parsed.data)
            if not loaded.tests:
                raise PolicyLoadError(
                    [PolicyIssue("no_tests", "the file lists no tests", str(file), 1, 1)]
                )
        except PolicyLoadError as exc:
            issues.extend(exc.issues)
            continue
        except ValidationError as exc:
            issues.extend(translate_errors(exc, parsed, PolicyTestFile))
            continue
        for index, case in enumerate(loaded.tests):
            cases.append(
                LocatedCase(case, SourceRef(str(file), parsed.node_line(("tests", index))))
            )
    if issues:
        raise PolicyLoadError(issues)
    return cases


def run_tests(policy: Policy, cases: Iterable[LocatedCase]) -> PolicyTestReport:
    """Run every case against ``policy``; never stops at the first failure."""
    results = []
    exercised: set[str] = set()
    for located in cases:
        case = located.case
        isolated = policy.with_velocity_store(InMemoryVelocityStore(clock=lambda: 0.0))
        record = isolated.evaluate(case.job)
        exercised.add(record.rule_id or DEFAULT_RULE)
        for _ in range(case.repeat - 1):
            record = isolated.evaluate(case.job)
            exercised.add(record.rule_id or DEFAULT_RULE)
        problems = _compare(case.expect, record)
        results.append(
            PolicyTestResult(
                case.name, located.source, not problems, case.expect, record, tuple(problems)
            )
        )
    rule_ids = tuple(rule.rule.id for rule in policy.rules) + tuple(
        compiled.rule.id for compiled in policy.input_rules
    )
    sources = {rule_id: source for rule_id in rule_ids if (source := policy.source_of(rule_id))}
    return PolicyTestReport(tuple(results), rule_ids, frozenset(exercised), sources)


def _compare(expect: Expectation, record: DecisionRecord) -> list[str]:
    problems = []
    if record.decision != expect.decision:
        problems.append(f"decision {record.decision.value}, expected {expect.decision.value}")
    if expect.rule_id != "" and record.rule_id != expect.rule_id:
        wanted = expect.rule_id or "the default decision"
        problems.append(f"decided by {record.rule_id or 'the default decision'}, expected {wanted}")
    if expect.reason_contains is not None and expect.reason_contains not in record.reason:
        problems.append(f"reason does not contain {expect.reason_contains!r}")
    if (
        expect.approval_required is not None
        and record.approval_required != expect.approval_required
    ):
        problems.append(f"approval_required is {record.approval_required}")
    return problems
