"""Rules: a match, a decision and what comes with it; input, output and legacy rules too."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, field_validator, model_validator

from cordum.models import Constraints, Decision, Remediation
from cordum.policy.errors import allowed_hint, did_you_mean
from cordum.policy.schema.match import InputMatch, Match, McpFilter, OutputMatch, _ContentMatch
from cordum.policy.schema.values import (
    _LABEL_KEY,
    MAX_VELOCITY_REQUESTS,
    VELOCITY_FIELDS,
    InputDecision,
    OrderedTopicGlobs,
    OutputRuleDecision,
    PositiveInt,
    RuleDecision,
    RuleId,
    Severity,
    _Strict,
    finite_number,
    policy_error,
)


class Velocity(_Strict):
    """Rate condition: the rule fires only above ``max_requests`` per sliding window."""

    max_requests: PositiveInt = Field(
        le=MAX_VELOCITY_REQUESTS, description="Jobs allowed per window before it fires."
    )
    window_seconds: float = Field(gt=0, le=31 * 86400, description="Sliding window length.")
    key: str = Field(
        description="What is counted together: tenant, topic, actor_id, actor_type,"
        " capability, pack_id, labels.<key>, or a compound such as tenant:topic."
    )

    @field_validator("window_seconds", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise policy_error("bad_number", f"window_seconds must be a number, got {value!r}")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        parts = [part.strip().lower() for part in value.split(":")]
        for part in parts:
            if part in VELOCITY_FIELDS:
                continue
            if part.startswith("labels.") and _LABEL_KEY.match(part[len("labels.") :]):
                continue
            raise policy_error(
                "bad_velocity_key",
                f"`{part or value}` is not a velocity key",
                allowed_hint(
                    (*VELOCITY_FIELDS, "labels.<key>"), did_you_mean(part, VELOCITY_FIELDS)
                ),
            )
        return ":".join(parts)


# --- rules ---------------------------------------------------------------------------


def _check_alias_pairs(data: dict[str, Any], pairs: tuple[tuple[str, str], ...]) -> None:
    for canonical, alias in pairs:
        if canonical in data and alias in data:
            raise policy_error(
                "conflicting_fields",
                f"both `{canonical}` and `{alias}` are set",
                f"`{alias}` is another spelling of `{canonical}`; keep one",
            )


class Rule(_Strict):
    """One policy rule. The first rule (in order) whose match holds decides."""

    id: RuleId = Field(validation_alias=AliasChoices("id", "name"))
    description: str = ""
    match: Match = Field(default_factory=Match, validation_alias=AliasChoices("match", "when"))
    decision: RuleDecision
    reason: str = Field(default="", description="Shown to the agent; say what to do instead.")
    constraints: Constraints | None = None
    remediations: tuple[Remediation, ...] = ()
    velocity: Velocity | None = None

    @model_validator(mode="before")
    @classmethod
    def _dialects(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        _check_alias_pairs(data, (("id", "name"), ("match", "when")))
        constraints = data.get("constraints")
        if isinstance(constraints, dict) and "max_runtime_sec" in constraints:
            data = {**data, "constraints": _runtime_seconds(constraints)}
        return data

    @field_validator("constraints")
    @classmethod
    def _empty_constraints(cls, value: Constraints | None) -> Constraints | None:
        return value if value is not None and not value.is_empty() else None

    @model_validator(mode="after")
    def _constrained_allow(self) -> Rule:
        # An allow rule that carries constraints is an ALLOW_WITH_CONSTRAINTS rule; storing
        # it that way keeps the two spellings of the same rule at the same snapshot id.
        has_constraints = self.constraints is not None and not self.constraints.is_empty()
        if (
            self.constraints is not None
            and self.constraints.approval_ttl_s is not None
            and self.decision != Decision.REQUIRE_APPROVAL
        ):
            raise policy_error(
                "misplaced_field",
                "constraints.approval_ttl_s only applies to a require_approval rule;"
                f" this rule decides {self.decision.value.lower()}",
            )
        if self.decision == Decision.ALLOW and has_constraints:
            return self.model_copy(update={"decision": Decision.ALLOW_WITH_CONSTRAINTS})
        return self


def _runtime_seconds(constraints: dict[str, Any]) -> dict[str, Any]:
    seconds = constraints["max_runtime_sec"]
    if not finite_number(seconds) or seconds <= 0:
        raise policy_error(
            "bad_number", f"max_runtime_sec must be a positive number, got {seconds!r}"
        )
    budgets = constraints.get("budgets") or {}
    if not isinstance(budgets, dict):
        return constraints
    if "max_runtime_ms" in budgets:
        raise policy_error(
            "conflicting_fields",
            "both `max_runtime_sec` and `budgets.max_runtime_ms` are set",
            "keep `budgets.max_runtime_ms`",
        )
    rest = {k: v for k, v in constraints.items() if k != "max_runtime_sec"}
    return {**rest, "budgets": {**budgets, "max_runtime_ms": round(seconds * 1000)}}


class _ContentRule(_Strict):
    id: RuleId = Field(validation_alias=AliasChoices("id", "name"))
    match: _ContentMatch = Field(validation_alias=AliasChoices("match", "when"))
    description: str = ""
    severity: Severity | None = None
    enabled: bool = True
    reason: str = ""

    @model_validator(mode="before")
    @classmethod
    def _dialects(cls, data: Any) -> Any:
        if isinstance(data, dict):
            _check_alias_pairs(data, (("id", "name"), ("match", "when")))
        return data

    @model_validator(mode="after")
    def _looks_at_content(self) -> _ContentRule:
        if not self.match.looks_at_content():
            raise policy_error(
                "no_detectors",
                "this rule looks at no content",
                "add at least one of scanners, content_patterns, keywords or a size limit",
            )
        return self


class InputRule(_ContentRule):
    """Scans an allowed job's input; can only escalate it (to approval or deny)."""

    match: InputMatch = Field(validation_alias=AliasChoices("match", "when"))
    decision: InputDecision
    remediations: tuple[Remediation, ...] = ()


class OutputRule(_ContentRule):
    """Scans a job's result; quarantines or redacts what it finds."""

    match: OutputMatch = Field(validation_alias=AliasChoices("match", "when"))
    decision: OutputRuleDecision


class LegacyTenant(_Strict):
    """Per-tenant topic lists of the original; they become rules when ``rules`` is empty."""

    allow_topics: OrderedTopicGlobs = ()
    deny_topics: OrderedTopicGlobs = ()
    max_concurrent_jobs: PositiveInt | None = None
    mcp: McpFilter | None = None
