"""Value types of the policy document: names, globs, patterns, decisions and their spellings.

Values compared case-insensitively are stored trimmed and lower-cased, and set-like lists
sorted and de-duplicated, so a validated document is already in canonical form. Every
validation error raised here carries a message and a hint for :class:`PolicyIssue`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from cordum.models import Decision, OutputDecision, label_text
from cordum.policy.errors import did_you_mean
from cordum.policy.globs import GlobError, normalize_glob
from cordum.policy.patterns import PatternError, compile_pattern

DIALECT_CORDUM = "cordum"
DIALECT_ORIGINAL = "original"
DIALECTS = (DIALECT_CORDUM, DIALECT_ORIGINAL)

RULE_DECISIONS: dict[str, Decision] = {
    "allow": Decision.ALLOW,
    "permit": Decision.ALLOW,
    "deny": Decision.DENY,
    "block": Decision.DENY,
    "require_approval": Decision.REQUIRE_APPROVAL,
    "require-approval": Decision.REQUIRE_APPROVAL,
    "require_human": Decision.REQUIRE_APPROVAL,
    "allow_with_constraints": Decision.ALLOW_WITH_CONSTRAINTS,
    "allow-with-constraints": Decision.ALLOW_WITH_CONSTRAINTS,
    "constrain": Decision.ALLOW_WITH_CONSTRAINTS,
    "throttle": Decision.THROTTLE,
}
DEFAULT_DECISIONS = {
    k: v for k, v in RULE_DECISIONS.items() if v in (Decision.ALLOW, Decision.DENY)
}
INPUT_DECISIONS = {
    k: v for k, v in RULE_DECISIONS.items() if v in (Decision.DENY, Decision.REQUIRE_APPROVAL)
}
OUTPUT_DECISIONS = {
    "quarantine": OutputDecision.QUARANTINE,
    "deny": OutputDecision.QUARANTINE,
    "block": OutputDecision.QUARANTINE,
    "redact": OutputDecision.REDACT,
}
# Match fields that test one single-valued job field, and that field.
MEMBERSHIP_FIELDS = {
    "tenants": "tenant",
    "capabilities": "capability",
    "pack_ids": "pack_id",
    "actor_ids": "actor_id",
    "actor_types": "actor_type",
}
SINGLE_VALUED_FIELDS = ("topic", *MEMBERSHIP_FIELDS.values())
VELOCITY_FIELDS = SINGLE_VALUED_FIELDS
MCP_DIMENSIONS = ("server", "tool", "resource", "action")
UNVERSIONED = "unversioned"
MAX_VELOCITY_REQUESTS = 1_000_000

_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
_LABEL_KEY = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,127}$")


def policy_error(code: str, message: str, hint: str | None = None) -> PydanticCustomError:
    """A validation error whose message and hint survive into :class:`PolicyIssue`."""
    return PydanticCustomError(code, "{message}", {"message": message, "hint": hint})


# --- value types ---------------------------------------------------------------------


def _one_or_many(value: Any) -> Any:
    """Let a single value stand for a one-element list (``tenants: acme``)."""
    if isinstance(value, str | int | float | bool):
        return [value]
    return value


def _scalar_text(value: Any) -> Any:
    """Label values are text; accept YAML numbers and booleans as their text."""
    text = label_text(value)
    return text if text is not None else value


def _name(value: str) -> str:
    name = value.strip().lower()
    if not name:
        raise policy_error("empty_value", "empty value in a list", "remove it")
    return name


def _sorted_unique(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


def _distinct_keys(value: Any) -> Any:
    """Keys compared case-insensitively must differ case-insensitively.

    Otherwise `Acme:` and `acme:` would silently collapse into one entry and drop the
    other's conditions, which for a deny list means jobs it should stop get through.
    """
    if isinstance(value, dict):
        seen: dict[str, Any] = {}
        for key in value:
            folded = key.strip().lower() if isinstance(key, str) else key
            if folded in seen:
                raise policy_error(
                    "duplicate_key",
                    f"`{seen[folded]}` and `{key}` are the same key (compared case-insensitively)",
                    "merge their entries into one",
                )
            seen[folded] = key
    return value


def _glob(value: str) -> str:
    try:
        return normalize_glob(value)
    except GlobError as exc:
        raise policy_error("bad_glob", f"topic pattern `{value}`: {exc}", exc.hint) from None


def _pattern(value: str) -> str:
    try:
        compile_pattern(value)
    except PatternError as exc:
        raise policy_error("bad_pattern", f"pattern `{value}`: {exc}", exc.hint) from None
    return value


def _label_key(value: str) -> str:
    key = value.strip().lower()
    if not _LABEL_KEY.match(key):
        raise policy_error(
            "bad_label_key",
            f"`{value}` is not a valid label key",
            "label keys are letters, digits and . _ / - (for example `env` or `mcp.tool`)",
        )
    return key


Name = Annotated[str, AfterValidator(_name)]
NameSet = Annotated[tuple[Name, ...], BeforeValidator(_one_or_many), AfterValidator(_sorted_unique)]
LabelValue = Annotated[str, BeforeValidator(_scalar_text), AfterValidator(_name)]


def _some_values(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        raise policy_error(
            "empty_value",
            "no values listed: the condition could never hold",
            "list at least one value, or remove the key",
        )
    return values


LabelValues = Annotated[
    tuple[LabelValue, ...],
    BeforeValidator(_one_or_many),
    AfterValidator(_sorted_unique),
    AfterValidator(_some_values),
]
LabelKey = Annotated[str, AfterValidator(_label_key)]
TopicGlob = Annotated[str, AfterValidator(_glob)]
TopicGlobs = Annotated[
    tuple[TopicGlob, ...], BeforeValidator(_one_or_many), AfterValidator(_sorted_unique)
]
OrderedTopicGlobs = Annotated[tuple[TopicGlob, ...], BeforeValidator(_one_or_many)]
Pattern = Annotated[str, AfterValidator(_pattern)]
Patterns = Annotated[
    tuple[Pattern, ...], BeforeValidator(_one_or_many), AfterValidator(_sorted_unique)
]
PositiveInt = Annotated[int, Field(gt=0, strict=True)]


def _rule_id(value: str) -> str:
    rule_id = value.strip()
    if not _RULE_ID.match(rule_id):
        raise policy_error(
            "bad_rule_id",
            f"`{value}` is not a valid rule id",
            "ids start with a letter or digit and use letters, digits and . _ : / @ + -",
        )
    return rule_id


def _int_as_text(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


RuleId = Annotated[str, BeforeValidator(_int_as_text), AfterValidator(_rule_id)]


def _decision_parser(table: dict[str, Any], what: str) -> Callable[[Any], Any]:
    """A validator mapping every accepted spelling (any case) onto its canonical value."""

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            raise policy_error("bad_decision", f"{what} must be text, got {value!r}")
        spelled = value.strip().lower()
        if spelled in table:
            return table[spelled]
        raise policy_error(
            "unknown_decision", f"unknown {what} `{value}`", _spellings_hint(table, spelled)
        )

    return parse


def _spellings_hint(table: dict[str, Any], spelled: str) -> str:
    canonical = {str(value).lower(): value for value in table.values()}
    names = [name for name in table if name in canonical]
    others = [name for name in table if name not in canonical]
    suggestion = did_you_mean(spelled, table)
    text = f"did you mean `{suggestion}`? " if suggestion else ""
    text += "allowed: " + ", ".join(names)
    if others:
        text += " (also spelled " + ", ".join(others) + ")"
    return text


RuleDecision = Annotated[Decision, BeforeValidator(_decision_parser(RULE_DECISIONS, "decision"))]
DefaultDecision = Annotated[
    Decision, BeforeValidator(_decision_parser(DEFAULT_DECISIONS, "default_decision"))
]
InputDecision = Annotated[
    Decision, BeforeValidator(_decision_parser(INPUT_DECISIONS, "input rule decision"))
]
OutputRuleDecision = Annotated[
    OutputDecision, BeforeValidator(_decision_parser(OUTPUT_DECISIONS, "output rule decision"))
]


class Scanner(StrEnum):
    """Built-in content scanners."""

    PROMPT_INJECTION = "prompt_injection"
    PII = "pii"
    SECRET = "secret"


SCANNER_SPELLINGS = {
    "prompt_injection": Scanner.PROMPT_INJECTION,
    "prompt-injection": Scanner.PROMPT_INJECTION,
    "injection": Scanner.PROMPT_INJECTION,
    "pii": Scanner.PII,
    "secret": Scanner.SECRET,
    "secrets": Scanner.SECRET,
    "secret_leak": Scanner.SECRET,
}
ScannerName = Annotated[Scanner, BeforeValidator(_decision_parser(SCANNER_SPELLINGS, "scanner"))]


class Severity(StrEnum):
    """How serious a content finding is (informational; shown in explanations)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def finite_number(value: Any) -> bool:
    """True for an int or float (not a bool) that is neither infinite nor NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False
