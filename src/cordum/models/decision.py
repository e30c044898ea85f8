"""What the Safety Kernel answers: decisions, decision records and explanations.

A decision record is everything an agent needs to re-plan after a refusal: the rule that
decided, why, under which policy snapshot, and which remediations would be accepted.
Records are frozen so the kernel can hand out one precomputed instance per rule.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, NoReturn, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from cordum.models.constraints import Constraints


class Decision(StrEnum):
    """The five answers of the Safety Kernel."""

    ALLOW = "ALLOW"
    DENY = "DENY"
    REQUIRE_APPROVAL = "REQUIRE_APPROVAL"
    THROTTLE = "THROTTLE"
    ALLOW_WITH_CONSTRAINTS = "ALLOW_WITH_CONSTRAINTS"

    @property
    def allows(self) -> bool:
        """True for the decisions that let a job be dispatched."""
        return self in (Decision.ALLOW, Decision.ALLOW_WITH_CONSTRAINTS)


class OutputDecision(StrEnum):
    """What an output rule does with a result that matched it."""

    ALLOW = "ALLOW"
    QUARANTINE = "QUARANTINE"
    REDACT = "REDACT"


class FrozenLabels(dict[str, str]):
    """A label mapping that refuses changes.

    Decision records are shared by every job a rule decides; a caller editing one
    remediation's labels in place would change the answer for everyone after it.
    """

    def _refuse(self) -> NoReturn:
        raise TypeError("decision records are immutable; copy the labels to change them")

    def __setitem__(self, key: str, value: str) -> None:
        self._refuse()

    def __delitem__(self, key: str) -> None:
        self._refuse()

    def __ior__(self, other: Any) -> Self:  # type: ignore[override,misc]
        self._refuse()

    def clear(self) -> None:
        self._refuse()

    def pop(self, *args: Any) -> str:
        self._refuse()

    def popitem(self) -> tuple[str, str]:
        self._refuse()

    def setdefault(self, *args: Any) -> str:
        self._refuse()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._refuse()


class Remediation(BaseModel):
    """A safer alternative an agent may re-submit instead of the refused job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="Stable id, used to apply the remediation.")
    title: str = Field(min_length=1, description="One line an agent or a human can read.")
    summary: str = ""
    replacement_topic: str | None = None
    replacement_capability: str | None = None
    add_labels: Annotated[dict[str, str], AfterValidator(FrozenLabels)] = Field(
        default_factory=FrozenLabels
    )
    remove_labels: tuple[str, ...] = ()


class DecisionRecord(BaseModel):
    """The kernel's answer for one job."""

    model_config = ConfigDict(frozen=True)

    decision: Decision
    reason: str
    rule_id: str | None = Field(description="The deciding rule; null when the default applied.")
    policy_snapshot: str = Field(description='The policy that decided: "<version>:<sha256>".')
    constraints: Constraints = Field(default_factory=Constraints)
    remediations: tuple[Remediation, ...] = ()
    approval_required: bool = False
    approval_ref: str | None = None
    retry_after_seconds: float | None = Field(
        default=None, description="For THROTTLE from a velocity rule: when a retry may pass."
    )
    findings: tuple[str, ...] = Field(
        default=(), description="What an input rule found (kind and location, never the value)."
    )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``constraints`` lists only the constraints that are set."""
        data = self.model_dump(mode="json")
        data["constraints"] = self.constraints.to_dict()
        data["remediations"] = [r.model_dump(mode="json") for r in self.remediations]
        return data


class RuleOutcome(StrEnum):
    """How one rule fared in an explanation."""

    SELECTED = "selected"
    MATCHED = "matched"
    NO_MATCH = "no_match"
    BELOW_VELOCITY = "below_velocity"
    NOT_EVALUATED = "not_evaluated"


class RuleTrace(BaseModel):
    """One rule's line in an explanation (rules and input rules alike)."""

    model_config = ConfigDict(frozen=True)

    position: int = Field(description="0-based index in evaluation order.")
    rule_id: str
    decision: Decision
    outcome: RuleOutcome
    failed_field: str | None = None
    detail: str = ""
    source: str | None = Field(default=None, description="file:line the rule came from.")


class Explanation(BaseModel):
    """A decision record plus the per-rule trace that produced it."""

    model_config = ConfigDict(frozen=True)

    record: DecisionRecord
    rules: tuple[RuleTrace, ...]
    input_rules: tuple[RuleTrace, ...] = ()
    default_applied: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the record's keys plus ``trace`` and ``input_trace``."""
        data = self.record.to_dict()
        data["default_applied"] = self.default_applied
        data["trace"] = [t.model_dump(mode="json") for t in self.rules]
        data["input_trace"] = [t.model_dump(mode="json") for t in self.input_rules]
        return data


class OutputVerdict(BaseModel):
    """What the output rules say about a job's result."""

    model_config = ConfigDict(frozen=True)

    decision: OutputDecision
    rule_id: str | None = None
    reason: str = ""
    findings: tuple[str, ...] = ()
    output: Any = Field(default=None, description="The result, redacted when decision=REDACT.")
