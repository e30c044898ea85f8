"""``cordum policy lint``: mistakes that load fine but decide wrong.

Shadowing is the dangerous one: with first-match-wins, an allow rule placed above a
narrower deny rule silently turns that deny off. Lint proves shadowing field by field
(see :mod:`cordum.policy.coverage`), so it never reports a rule as dead when it is not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cordum.models import Decision
from cordum.policy.conditions import first_failure
from cordum.policy.coverage import covers, witness
from cordum.policy.engine import CompiledRule, Policy
from cordum.policy.errors import did_you_mean
from cordum.policy.index import RuleIndex
from cordum.policy.schema import DIALECT_ORIGINAL, LABEL_DIALECT_KEYS, MCP_DIMENSIONS, Rule
from cordum.policy.validate import SourceRef

SEVERITIES = ("error", "warning", "info")
WELL_KNOWN_LABELS = frozenset((*LABEL_DIALECT_KEYS, *(f"mcp.{d}" for d in MCP_DIMENSIONS)))
_RESTRICTIVE = (Decision.DENY, Decision.REQUIRE_APPROVAL, Decision.THROTTLE)


@dataclass(frozen=True)
class LintFinding:
    """One thing lint wants a human to look at."""

    code: str
    severity: str
    message: str
    rule_id: str | None = None
    source: SourceRef | None = None
    hint: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "rule_id": self.rule_id,
            "file": self.source.file if self.source else None,
            "line": self.source.line if self.source else None,
            "hint": self.hint,
        }


def lint(policy: Policy, *, label_keys: Iterable[str] = ()) -> list[LintFinding]:
    """Every finding for ``policy``, most severe first, then in file order."""
    findings: list[LintFinding] = []
    findings.extend(_load_notes(policy))
    findings.extend(_shadowing(policy))
    findings.extend(_rule_hygiene(policy))
    findings.extend(_label_keys(policy, set(label_keys)))
    if policy.dialect == DIALECT_ORIGINAL:
        findings.extend(_original_dialect(policy))
    return sorted(
        findings,
        key=lambda f: (
            SEVERITIES.index(f.severity),
            f.source.file if f.source else "",
            f.source.line if f.source else 0,
        ),
    )


def _load_notes(policy: Policy) -> list[LintFinding]:
    return [
        LintFinding(
            code=note.code.replace("_", "-"),
            severity=note.severity,
            message=note.message,
            rule_id=note.rule_id,
            source=SourceRef(note.file, note.line or 0),
            hint=note.hint,
        )
        for note in policy.merged.notes
        if note.code != "rule_replaced"
    ]


def _shadowing(policy: Policy) -> list[LintFinding]:
    findings = []
    rules = policy.rules
    index: RuleIndex[CompiledRule] = RuleIndex(rules)
    for later in rules:
        probe = witness(later.rule.match)
        if first_failure(later.conditions, probe) is None:
            candidates: Iterable[CompiledRule] = index.candidates_uncached(probe)
        else:
            candidates = rules
        for earlier in candidates:
            if earlier.position >= later.position:
                break
            if earlier.velocity is not None or not covers(earlier.rule.match, later.rule.match):
                continue
            findings.append(_shadow_finding(earlier, later))
            break
    return findings


def _shadow_finding(earlier: CompiledRule, later: CompiledRule) -> LintFinding:
    if earlier.rule.decision.allows and later.rule.decision in _RESTRICTIVE:
        return LintFinding(
            code="allow-shadows-deny",
            severity="error",
            message=(
                f"allow rule `{earlier.rule.id}` ({earlier.source}) is broader than this"
                f" {later.rule.decision.value} rule and comes first: this rule never fires"
            ),
            rule_id=later.rule.id,
            source=later.source,
            hint=f"move `{later.rule.id}` above `{earlier.rule.id}`, or narrow `{earlier.rule.id}`",
        )
    return LintFinding(
        code="unreachable-rule",
        severity="warning",
        message=(
            f"never fires: every job it matches is decided first by `{earlier.rule.id}`"
            f" ({earlier.source})"
        ),
        rule_id=later.rule.id,
        source=later.source,
        hint="remove it, or move it above the rule that shadows it",
    )


def _rule_hygiene(policy: Policy) -> list[LintFinding]:
    findings = []
    if not policy.rules:
        findings.append(
            LintFinding(
                code="no-rules",
                severity="warning",
                message=f"the policy has no rules: every job gets {policy.default_decision.value}",
            )
        )
    if policy.default_decision == Decision.ALLOW:
        findings.append(
            LintFinding(
                code="default-allow",
                severity="warning",
                message="default_decision is allow: any job no rule covers runs (fail open)",
                hint="prefer default_decision: deny and explicit allow rules",
            )
        )
    for compiled in policy.rules:
        findings.extend(_rule_findings(compiled.rule, compiled.source))
    return findings


def _rule_findings(rule: Rule, source: SourceRef) -> list[LintFinding]:
    out = []

    def add(code: str, severity: str, message: str, hint: str | None = None) -> None:
        out.append(LintFinding(code, severity, message, rule.id, source, hint))

    restrictive = rule.decision in _RESTRICTIVE
    if not rule.reason:
        add(
            "missing-reason",
            "warning" if restrictive else "info",
            f"{rule.decision.value} rule without a reason",
            "agents re-plan from the reason: say why, and what to do instead",
        )
    if rule.decision == Decision.DENY and not rule.remediations:
        add(
            "no-remediation",
            "info",
            "deny rule without remediations",
            "suggest a safer alternative",
        )
    if rule.decision == Decision.THROTTLE and rule.velocity is None:
        add(
            "throttle-without-velocity",
            "warning",
            "throttle rule without velocity: it throttles every matching job, forever",
            "add `velocity: {max_requests: N, window_seconds: S, key: tenant}`",
        )
    if rule.constraints is not None and rule.decision in (Decision.DENY, Decision.THROTTLE):
        add(
            "constraints-ignored",
            "warning",
            f"constraints on a {rule.decision.value} rule are never applied",
        )
    if rule.decision == Decision.ALLOW_WITH_CONSTRAINTS and rule.constraints is None:
        add("no-constraints", "warning", "allow_with_constraints rule without constraints")
    mcp = rule.match.mcp
    if restrictive and mcp is not None and not any(mcp.lists(d)[0] for d in MCP_DIMENSIONS):
        add(
            "mcp-deny-list-inverted",
            "warning",
            "the mcp condition holds for calls NOT on its deny lists, so this"
            f" {rule.decision.value} rule applies to every other MCP call",
            "to refuse specific tools, list them under allow_tools (the calls this rule catches)",
        )
    return out


def _label_keys(policy: Policy, extra_known: set[str]) -> list[LintFinding]:
    declared = set(policy.document.label_keys) | {key.strip().lower() for key in extra_known}
    known = WELL_KNOWN_LABELS | declared
    findings = []
    for compiled in policy.rules:
        for key in sorted(_used_label_keys(compiled.rule)):
            if key in known:
                continue
            suggestion = did_you_mean(key, known)
            if declared or suggestion:
                hint = f"did you mean `{suggestion}`?" if suggestion else None
                if declared:
                    vocabulary = ", ".join(sorted(declared))
                    hint = (hint + " " if hint else "") + f"declared label keys: {vocabulary}"
                findings.append(
                    LintFinding(
                        code="unknown-label-key",
                        severity="warning",
                        message=f"label key `{key}` is not a known label key",
                        rule_id=compiled.rule.id,
                        source=compiled.source,
                        hint=hint,
                    )
                )
    return findings


def _used_label_keys(rule: Rule) -> set[str]:
    match = rule.match
    keys = set(match.labels) | set(match.label_allowlist) | set(match.label_threshold)
    keys |= set(match.implicit_labels())
    if rule.velocity is not None:
        keys |= {
            part[len("labels.") :]
            for part in rule.velocity.key.split(":")
            if part.startswith("labels.")
        }
    return keys


def _original_dialect(policy: Policy) -> list[LintFinding]:
    findings = []
    for compiled in policy.rules:
        match = compiled.rule.match
        tags = match.risk_tags
        if tags is not None and len(tags.any) > 1 and not tags.all:
            listed = ", ".join(tags.any)
            findings.append(
                LintFinding(
                    code="dialect-risk-tags",
                    severity="warning",
                    message=(
                        f"`risk_tags: [{listed}]` means ANY of these in the original but ALL"
                        " of them in Cordum"
                    ),
                    rule_id=compiled.rule.id,
                    source=compiled.source,
                    hint=(
                        f"write `risk_tags: {{any: [{listed}]}}` to keep the original meaning,"
                        f" or `{{all: [{listed}]}}` if every tag was meant"
                    ),
                )
            )
        if match.mcp is not None and any(match.mcp.lists(d)[0] for d in MCP_DIMENSIONS):
            findings.append(
                LintFinding(
                    code="dialect-mcp",
                    severity="warning",
                    message=(
                        "in the original, jobs without MCP labels matched this mcp condition;"
                        " in Cordum, an allow list needs the job to name an allowed value"
                    ),
                    rule_id=compiled.rule.id,
                    source=compiled.source,
                )
            )
    return findings
