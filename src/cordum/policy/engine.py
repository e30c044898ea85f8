"""The compiled policy: evaluate, simulate, explain.

Evaluation is first-match-wins over the rules in order, but only over the candidates
the index leaves, and each candidate runs only the tests the index does not already
guarantee. Every rule's decision record is built once at compile time and shared, so
the common path allocates nothing but the normalized job.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from cordum.models import (
    Constraints,
    Decision,
    DecisionRecord,
    Explanation,
    Job,
    OutputDecision,
    OutputVerdict,
    RuleOutcome,
    RuleTrace,
)
from cordum.policy.bundles import MergedPolicy
from cordum.policy.conditions import Condition, compile_match, first_failure, residual_tests
from cordum.policy.content import CompiledInputRule, CompiledOutputRule
from cordum.policy.index import RuleIndex
from cordum.policy.job_input import PolicyInput, to_policy_input
from cordum.policy.legacy import legacy_rules
from cordum.policy.schema import (
    DIALECT_CORDUM,
    SINGLE_VALUED_FIELDS,
    PolicyDocument,
    Rule,
    Velocity,
)
from cordum.policy.snapshot import snapshot_id
from cordum.policy.validate import SourceRef
from cordum.policy.velocity import InMemoryVelocityStore, VelocityCount, VelocityStore

_FIELD_GETTERS: dict[str, Callable[[PolicyInput], str]] = {
    name: attrgetter(name) for name in SINGLE_VALUED_FIELDS
}
_PART_SEPARATOR = "\x1f"
_NO_CONSTRAINTS = Constraints()


class VelocityGate:
    """The velocity condition of one rule, bound to a counter store."""

    __slots__ = ("_getters", "_prefix", "limit", "velocity")

    def __init__(self, rule_id: str, velocity: Velocity) -> None:
        self.velocity = velocity
        self.limit = velocity.max_requests
        self._prefix = rule_id + _PART_SEPARATOR
        self._getters = tuple(_key_getter(part) for part in velocity.key.split(":"))

    def bucket(self, job: PolicyInput) -> str:
        """Counter key for the job: the rule plus the values of the velocity key.

        A job without a value for the key is counted in the bucket of the empty value:
        leaving out ``actor_id`` must not be a way around an ``actor_id`` rate limit.
        """
        return self._prefix + _PART_SEPARATOR.join(get(job) for get in self._getters)

    def count(self, job: PolicyInput, store: VelocityStore, record: bool) -> VelocityCount:
        """Count this job's arrival in ``store`` (or only look, when ``record`` is False)."""
        method = store.hit if record else store.peek
        return method(self.bucket(job), self.limit, self.velocity.window_seconds)


def _key_getter(part: str) -> Callable[[PolicyInput], str]:
    if part.startswith("labels."):
        label = part[len("labels.") :]
        return lambda job: job.labels.get(label, "")
    return _FIELD_GETTERS[part]


class CompiledRule:
    """A rule ready for evaluation."""

    __slots__ = ("conditions", "position", "record", "rule", "source", "tests", "velocity")

    def __init__(
        self,
        position: int,
        rule: Rule,
        source: SourceRef,
        snapshot: str,
    ) -> None:
        self.position = position
        self.rule = rule
        self.source = source
        self.conditions: tuple[Condition, ...] = compile_match(rule.match)
        self.tests = residual_tests(self.conditions)
        self.velocity = None if rule.velocity is None else VelocityGate(rule.id, rule.velocity)
        # Built from parts validated at load time, so no second validation (1,000s of rules).
        self.record = DecisionRecord.model_construct(
            decision=rule.decision,
            reason=rule.reason or f"{rule.decision.value} by rule `{rule.id}` (it gives no reason)",
            rule_id=rule.id,
            policy_snapshot=snapshot,
            constraints=rule.constraints or _NO_CONSTRAINTS,
            remediations=rule.remediations,
            approval_required=rule.decision == Decision.REQUIRE_APPROVAL,
        )


class Policy:
    """A loaded, validated and compiled safety policy.

    Build one with :func:`cordum.policy.load`. A Policy is immutable except for its
    velocity counters, which live in the :class:`VelocityStore` it was given.
    """

    def __init__(
        self,
        merged: MergedPolicy,
        *,
        velocity_store: VelocityStore | None = None,
        dialect: str = DIALECT_CORDUM,
    ) -> None:
        self.merged = merged
        self.document: PolicyDocument = merged.document
        self.dialect = dialect
        self.snapshot_id = snapshot_id(self.document)
        self.velocity_store: VelocityStore = (
            InMemoryVelocityStore() if velocity_store is None else velocity_store
        )
        rules, sources = self.document.rules, merged.rule_sources["rules"]
        if not rules:
            rules, sources = legacy_rules(self.document.tenants, merged.tenant_sources)
        self.rules = tuple(
            CompiledRule(i, rule, source, self.snapshot_id)
            for i, (rule, source) in enumerate(zip(rules, sources, strict=True))
        )
        self._index: RuleIndex[CompiledRule] = RuleIndex(self.rules)
        self._default_tenant = self.document.default_tenant
        default = self.document.default_decision
        self._default_record = DecisionRecord(
            decision=default,
            reason=f"no rule matched; the policy's default decision is {default.value}",
            rule_id=None,
            policy_snapshot=self.snapshot_id,
        )
        self.input_rule_sources = merged.rule_sources["input_rules"]
        self.all_input_rules = tuple(CompiledInputRule.build(r) for r in self.document.input_rules)
        self.input_rules = tuple(r for r in self.all_input_rules if r.rule.enabled)
        self.output_rules = tuple(
            CompiledOutputRule.build(r) for r in self.document.output_rules if r.enabled
        )
        self._input_records = {r.rule.id: self._input_record(r) for r in self.input_rules}

    # --- public API ---------------------------------------------------------------------

    @property
    def version(self) -> str:
        """The version part of the snapshot id."""
        return self.document.snapshot_version

    @property
    def default_decision(self) -> Decision:
        """What applies when no rule matches."""
        return self.document.default_decision

    def evaluate(self, job: Any) -> DecisionRecord:
        """Decide a job (a mapping of job fields, or a :class:`~cordum.models.Job`).

        Velocity rules count this job. Raises :class:`~cordum.policy.InvalidJobError` for
        a malformed job.
        """
        return self._decide(to_policy_input(job, self._default_tenant), True)

    def simulate(self, job: Any) -> DecisionRecord:
        """What :meth:`evaluate` would answer, with no side effects (velocity is only read)."""
        return self._decide(to_policy_input(job, self._default_tenant), False)

    def recheck(self, job: Any) -> DecisionRecord:
        """Decide a job again after it was admitted (gate B).

        Velocity rules are admission control: the job was counted when it was decided
        the first time, so here they neither count it again nor throttle it; every other
        rule applies as in :meth:`evaluate`.
        """
        return self._decide(to_policy_input(job, self._default_tenant), False, False)

    def explain(self, job: Any) -> Explanation:
        """The simulated decision plus, for every rule in order, whether it matched and why not."""
        normalized = to_policy_input(job, self._default_tenant)
        traces: list[RuleTrace] = []
        chosen: DecisionRecord | None = None
        for rule in self.rules:
            trace, record = self._trace_rule(rule, normalized, selected=chosen is None)
            traces.append(trace)
            if chosen is None and record is not None:
                chosen = record
        base = chosen if chosen is not None else self._default_record
        input_traces, record = self._trace_input_rules(normalized, base)
        return Explanation(
            record=record,
            rules=tuple(traces),
            input_rules=input_traces,
            default_applied=chosen is None,
        )

    def evaluate_output(self, job: Any, output: Any, *, failed: bool = False) -> OutputVerdict:
        """Check a job's result against the output rules (first match wins)."""
        if not self.output_rules and isinstance(job, Job | PolicyInput):
            # Nothing to check, and a validated job needs no normalising. A mapping
            # still goes through it: a misspelt field is refused at every entry point.
            return OutputVerdict(decision=OutputDecision.ALLOW, output=output)
        normalized = to_policy_input(job, self._default_tenant)
        for compiled in self.output_rules:
            finding = compiled.finding(normalized, output, failed)
            if finding is None:
                continue
            rule = compiled.rule
            redacted = rule.decision == OutputDecision.REDACT
            return OutputVerdict(
                decision=rule.decision,
                rule_id=rule.id,
                reason=rule.reason or f"output rule `{rule.id}` found {finding}",
                findings=(finding,),
                output=compiled.detectors.redact(output) if redacted else None,
            )
        return OutputVerdict(decision=OutputDecision.ALLOW, output=output)

    def with_velocity_store(self, store: VelocityStore) -> Policy:
        """The same compiled policy counting velocity in ``store`` (e.g. shared, or isolated)."""
        twin = copy.copy(self)
        twin.velocity_store = store
        return twin

    def source_of(self, rule_id: str) -> SourceRef | None:
        """Where a rule (or input rule) was written."""
        for rule in self.rules:
            if rule.rule.id == rule_id:
                return rule.source
        for compiled, source in zip(self.all_input_rules, self.input_rule_sources, strict=True):
            if compiled.rule.id == rule_id:
                return source
        return None

    # --- evaluation -----------------------------------------------------------------------

    def _decide(
        self, job: PolicyInput, record_velocity: bool, check_velocity: bool = True
    ) -> DecisionRecord:
        for rule in self._index.candidates(job):
            for test in rule.tests:
                if not test(job):
                    break
            else:
                gate = rule.velocity
                if gate is None:
                    return self._after_allow(job, rule.record)
                if not check_velocity:
                    continue
                counted = gate.count(job, self.velocity_store, record_velocity)
                if counted.exceeded:
                    return self._after_allow(job, _throttled(rule.record, counted))
        return self._after_allow(job, self._default_record)

    def _after_allow(self, job: PolicyInput, record: DecisionRecord) -> DecisionRecord:
        if not self.input_rules or not record.decision.allows:
            return record
        for compiled in self.input_rules:
            if first_failure(compiled.conditions, job) is not None:
                continue
            finding = compiled.finding(job)
            if finding is not None:
                return self._escalate(compiled, record, finding)
        return record

    def _escalate(
        self, compiled: CompiledInputRule, allowed: DecisionRecord, finding: str
    ) -> DecisionRecord:
        update: dict[str, Any] = {"findings": (finding,)}
        if compiled.rule.decision == Decision.REQUIRE_APPROVAL:
            # Once approved, the job runs under the constraints it was allowed with.
            update["constraints"] = allowed.constraints
        return self._input_records[compiled.rule.id].model_copy(update=update)

    def _input_record(self, compiled: CompiledInputRule) -> DecisionRecord:
        rule = compiled.rule
        return DecisionRecord(
            decision=rule.decision,
            reason=rule.reason or f"{rule.decision.value} by input rule `{rule.id}`",
            rule_id=rule.id,
            policy_snapshot=self.snapshot_id,
            remediations=rule.remediations,
            approval_required=rule.decision == Decision.REQUIRE_APPROVAL,
        )

    # --- explanation ----------------------------------------------------------------------

    def _trace_rule(
        self, rule: CompiledRule, job: PolicyInput, selected: bool
    ) -> tuple[RuleTrace, DecisionRecord | None]:
        base = {
            "position": rule.position,
            "rule_id": rule.rule.id,
            "decision": rule.rule.decision,
            "source": str(rule.source),
        }
        failed = first_failure(rule.conditions, job)
        if failed is not None:
            trace = RuleTrace(
                **base,
                outcome=RuleOutcome.NO_MATCH,
                failed_field=failed.field,
                detail=failed.why_not(job),
            )
            return trace, None
        outcome = RuleOutcome.SELECTED if selected else RuleOutcome.MATCHED
        if rule.velocity is None:
            detail = "all conditions hold" if selected else "matches, but an earlier rule decided"
            return RuleTrace(**base, outcome=outcome, detail=detail), rule.record
        counted = rule.velocity.count(job, self.velocity_store, record=False)
        velocity = rule.velocity.velocity
        window = f"{counted.count} job(s) with key `{velocity.key}` in {velocity.window_seconds:g}s"
        if not counted.exceeded:
            trace = RuleTrace(
                **base,
                outcome=RuleOutcome.BELOW_VELOCITY,
                failed_field="velocity",
                detail=f"{window}, limit {velocity.max_requests}: the rule does not fire",
            )
            return trace, None
        detail = f"{window} exceeds the limit of {velocity.max_requests}"
        return RuleTrace(**base, outcome=outcome, detail=detail), _throttled(rule.record, counted)

    def _trace_input_rules(
        self, job: PolicyInput, base: DecisionRecord
    ) -> tuple[tuple[RuleTrace, ...], DecisionRecord]:
        """The input-rule traces and the final record: ``base``, or the first escalation."""
        traces = []
        record = base
        found = False
        for position, (compiled, source) in enumerate(
            zip(self.all_input_rules, self.input_rule_sources, strict=True)
        ):
            rule = compiled.rule
            common = {
                "position": position,
                "rule_id": rule.id,
                "decision": rule.decision,
                "source": str(source),
            }
            if not rule.enabled:
                traces.append(
                    RuleTrace(**common, outcome=RuleOutcome.NOT_EVALUATED, detail="disabled")
                )
                continue
            if not base.decision.allows:
                detail = "input rules only run after an allowing decision"
                traces.append(RuleTrace(**common, outcome=RuleOutcome.NOT_EVALUATED, detail=detail))
                continue
            finding = (
                compiled.finding(job) if first_failure(compiled.conditions, job) is None else None
            )
            if finding is None:
                field, detail = compiled.why_not(job)
                traces.append(
                    RuleTrace(
                        **common, outcome=RuleOutcome.NO_MATCH, failed_field=field, detail=detail
                    )
                )
                continue
            outcome = RuleOutcome.MATCHED if found else RuleOutcome.SELECTED
            if not found:
                record = self._escalate(compiled, base, finding)
            found = True
            traces.append(RuleTrace(**common, outcome=outcome, detail=f"found {finding}"))
        return tuple(traces), record


def _throttled(record: DecisionRecord, counted: VelocityCount) -> DecisionRecord:
    return record.model_copy(update={"retry_after_seconds": counted.retry_after_seconds})
