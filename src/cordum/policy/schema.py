"""The safety policy document: what a policy YAML may contain.

Pydantic models validate the document and export its JSON Schema for editors. Values
that are compared case-insensitively are stored trimmed and lower-cased, and set-like
lists are stored sorted and de-duplicated, so the validated document is already the
canonical form the snapshot id is computed from.

Dialects of the original are accepted here and nowhere else: ``name`` for ``id``,
``when`` for ``match``, singular match fields (``topic``, ``capability``, ...), decision
spellings in any case, ``constraints.max_runtime_sec``. Plain ``risk_tags`` lists mean
"all of" unless the loader is told the document was written for the original.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cordum.models import Constraints, Decision, OutputDecision, Remediation
from cordum.policy.errors import allowed_hint, did_you_mean
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
VELOCITY_FIELDS = ("tenant", "topic", "actor_id", "actor_type", "capability", "pack_id")
MCP_DIMENSIONS = ("server", "tool", "resource", "action")
UNVERSIONED = "unversioned"

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
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


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
LabelValues = Annotated[
    tuple[LabelValue, ...], BeforeValidator(_one_or_many), AfterValidator(_sorted_unique)
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


# --- building blocks -----------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RiskTagsCondition(_Strict):
    """``risk_tags`` as a mapping: ``all`` tags present and at least one of ``any``."""

    all: NameSet = Field(default=(), description="The job must carry every one of these tags.")
    any: NameSet = Field(default=(), description="The job must carry at least one of these.")


class McpFilter(_Strict):
    """Allow/deny lists for MCP calls (job labels ``mcp.server``, ``mcp.tool``, ...).

    The condition holds when the call passes the filter: a value on a deny list fails,
    and a non-empty allow list admits only its members.
    """

    allow_servers: NameSet = ()
    deny_servers: NameSet = ()
    allow_tools: NameSet = ()
    deny_tools: NameSet = ()
    allow_resources: NameSet = ()
    deny_resources: NameSet = ()
    allow_actions: NameSet = ()
    deny_actions: NameSet = ()

    def lists(self, dimension: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(allow, deny) for one of :data:`MCP_DIMENSIONS`."""
        allow: tuple[str, ...] = getattr(self, f"allow_{dimension}s")
        deny: tuple[str, ...] = getattr(self, f"deny_{dimension}s")
        return allow, deny


class Velocity(_Strict):
    """Rate condition: the rule fires only above ``max_requests`` per sliding window."""

    max_requests: PositiveInt = Field(description="Jobs allowed per window before it fires.")
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


# --- match ---------------------------------------------------------------------------

_MATCH_ALIASES = {
    "topic": "topics",
    "tenant": "tenants",
    "capability": "capabilities",
    "pack_id": "pack_ids",
    "actor_id": "actor_ids",
    "actor_type": "actor_types",
}
LABEL_DIALECT_KEYS = ("env", "environment")


class Match(BaseModel):
    """Conditions a job must meet for a rule to apply; AND across fields.

    A key that is none of the fields below is compared with the job label of that name
    (then with the top-level input field of that name); ``cordum policy check`` lists
    such keys so a typo is visible, and ``--strict`` refuses them.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    topics: TopicGlobs = Field(
        default=(),
        validation_alias=AliasChoices("topics", "topic"),
        description="Globs; the job topic matches any of them (`*` crosses dots).",
    )
    tenants: NameSet = Field(default=(), validation_alias=AliasChoices("tenants", "tenant"))
    capabilities: NameSet = Field(
        default=(), validation_alias=AliasChoices("capabilities", "capability")
    )
    risk_tags: RiskTagsCondition | None = Field(
        default=None,
        description="A list means the job carries ALL the tags; {any: [...]} for overlap.",
    )
    requires: NameSet = Field(default=(), description="Every item is in the job's requires.")
    pack_ids: NameSet = Field(default=(), validation_alias=AliasChoices("pack_ids", "pack_id"))
    actor_ids: NameSet = Field(default=(), validation_alias=AliasChoices("actor_ids", "actor_id"))
    actor_types: NameSet = Field(
        default=(), validation_alias=AliasChoices("actor_types", "actor_type")
    )
    labels: Annotated[dict[LabelKey, LabelValues], BeforeValidator(_distinct_keys)] = Field(
        default_factory=dict, description="Every key has one of the listed values."
    )
    label_allowlist: Annotated[dict[LabelKey, NameSet], BeforeValidator(_distinct_keys)] = Field(
        default_factory=dict,
        description="Holds when the job has one of these labels with a value NOT listed.",
    )
    label_threshold: Annotated[dict[LabelKey, float], BeforeValidator(_distinct_keys)] = Field(
        default_factory=dict,
        description="Holds when one of these labels has a numeric value above the threshold.",
    )
    secrets_present: bool | None = Field(
        default=None, description="The job carries secret:// references or the secrets tag."
    )
    mcp: McpFilter | None = None

    @model_validator(mode="before")
    @classmethod
    def _dialects(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        for singular, plural in _MATCH_ALIASES.items():
            if singular in data and plural in data:
                raise policy_error(
                    "conflicting_fields",
                    f"both `{singular}` and `{plural}` are set",
                    f"`{singular}` is another spelling of `{plural}`; keep one",
                )
        data = _normalize_implicit_labels(cls, data)
        tags = data.get("risk_tags")
        if isinstance(tags, str | list | tuple):
            reading = "any" if (info.context or {}).get("dialect") == DIALECT_ORIGINAL else "all"
            data = {**data, "risk_tags": {reading: tags}}
        return data

    @field_validator("risk_tags")
    @classmethod
    def _empty_tags(cls, value: RiskTagsCondition | None) -> RiskTagsCondition | None:
        # `risk_tags: []` is no condition at all; store it that way so it hashes the same.
        return value if value is not None and (value.all or value.any) else None

    @field_validator("mcp")
    @classmethod
    def _empty_mcp(cls, value: McpFilter | None) -> McpFilter | None:
        return value if value is not None and value.model_dump(exclude_defaults=True) else None

    @field_validator("label_threshold", mode="before")
    @classmethod
    def _thresholds(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key, threshold in value.items():
                if isinstance(threshold, bool) or not isinstance(threshold, int | float):
                    raise policy_error(
                        "bad_number", f"threshold for `{key}` must be a number, got {threshold!r}"
                    )
                if math.isnan(threshold):
                    raise policy_error("bad_number", f"threshold for `{key}` is NaN")
        return value

    def implicit_labels(self) -> dict[str, Any]:
        """Keys that are not match fields: compared with the job label of that name."""
        return dict(self.model_extra or {})


def _normalize_implicit_labels(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """Store implicit label keys lower-case and their plain values as sorted text sets.

    Values that are not text, numbers or lists of them are left alone; the loader reports
    them with their position.
    """
    known = _accepted_keys(model)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in known or not isinstance(key, str):
            out[key] = value
            continue
        normalized_key = key.strip().lower()
        if normalized_key in out:
            raise policy_error(
                "conflicting_fields",
                f"`{key}` is given twice (keys are compared case-insensitively)",
                "keep one",
            )
        out[normalized_key] = _implicit_values(value)
    return out


@functools.cache
def _accepted_keys(model: type[BaseModel]) -> frozenset[str]:
    """Field names and every alias a model accepts as input."""
    known = set(model.model_fields)
    for field in model.model_fields.values():
        if isinstance(field.validation_alias, AliasChoices):
            known.update(str(choice) for choice in field.validation_alias.choices)
    return frozenset(known)


def _implicit_values(value: Any) -> Any:
    values = _one_or_many(value)
    if not isinstance(values, list) or not values:
        return value
    texts = [_scalar_text(item) for item in values]
    if not all(isinstance(text, str) and text.strip() for text in texts):
        return value
    return sorted({text.strip().lower() for text in texts})


def match_field_names(model: type[BaseModel]) -> tuple[str, ...]:
    """Every key a match block of ``model`` understands (fields and their spellings)."""
    names = set(model.model_fields) | set(_MATCH_ALIASES) | set(LABEL_DIALECT_KEYS)
    return tuple(sorted(names))


class _ContentMatch(Match):
    """Scope fields of :class:`Match` plus what to look for in the content."""

    scanners: tuple[ScannerName, ...] = Field(
        default=(), description="Built-in scanners: prompt_injection, pii, secret."
    )
    content_patterns: Patterns = Field(default=(), description="RE2 regular expressions.")
    keywords: Annotated[
        tuple[Name, ...], BeforeValidator(_one_or_many), AfterValidator(_sorted_unique)
    ] = Field(default=(), description="Case-insensitive substrings.")

    @field_validator("scanners", mode="before")
    @classmethod
    def _scanner_list(cls, value: Any) -> Any:
        return _one_or_many(value)

    @field_validator("scanners")
    @classmethod
    def _scanner_set(cls, value: tuple[Scanner, ...]) -> tuple[Scanner, ...]:
        return tuple(sorted(set(value)))

    def looks_at_content(self) -> bool:
        """True when the rule has something to look for; a rule without it is a mistake."""
        return bool(self.scanners or self.content_patterns or self.keywords)


class InputMatch(_ContentMatch):
    """Scope and content conditions of an input rule."""

    input_size_gt: PositiveInt | None = Field(
        default=None, description="Also fires when the input is larger than this many bytes."
    )

    def looks_at_content(self) -> bool:
        """Content detectors or a size limit."""
        return super().looks_at_content() or self.input_size_gt is not None


class OutputMatch(_ContentMatch):
    """Scope and content conditions of an output rule."""

    output_size_gt: PositiveInt | None = None
    has_error: bool | None = Field(
        default=None, description="Holds when the job did (true) or did not (false) fail."
    )

    def looks_at_content(self) -> bool:
        """Content detectors, a size limit or an error condition."""
        return (
            super().looks_at_content()
            or self.output_size_gt is not None
            or (self.has_error is not None)
        )


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
        if self.decision == Decision.ALLOW and has_constraints:
            return self.model_copy(update={"decision": Decision.ALLOW_WITH_CONSTRAINTS})
        return self


def _runtime_seconds(constraints: dict[str, Any]) -> dict[str, Any]:
    seconds = constraints["max_runtime_sec"]
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
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


def _version(value: Any) -> Any:
    if isinstance(value, bool):
        raise policy_error("bad_version", f"version must be text, got {value!r}")
    if isinstance(value, int | float):
        value = str(value)
    if isinstance(value, str) and value.strip() and not _VERSION.match(value.strip()):
        raise policy_error(
            "bad_version",
            f"`{value}` is not a valid version",
            "use letters, digits and . _ + - (no spaces or colons): `2026.11` or `v3`",
        )
    return value.strip() if isinstance(value, str) else value


class PolicyDocument(_Strict):
    """A whole safety policy (one file, or the merge of a directory of bundles)."""

    version: Annotated[str, BeforeValidator(_version)] = Field(
        default="", description="Part of the snapshot id; bump it when you publish."
    )
    description: str = ""
    default_decision: DefaultDecision = Field(
        default=Decision.DENY, description="What applies when no rule matches: deny or allow."
    )
    default_tenant: Annotated[str, AfterValidator(lambda v: v.strip().lower())] = Field(
        default="", description="Tenant assumed for jobs that carry none."
    )
    label_keys: Annotated[
        tuple[LabelKey, ...], BeforeValidator(_one_or_many), AfterValidator(_sorted_unique)
    ] = Field(default=(), description="The label vocabulary; lint flags keys outside it.")
    rules: tuple[Rule, ...] = ()
    input_rules: tuple[InputRule, ...] = ()
    output_rules: tuple[OutputRule, ...] = ()
    tenants: Annotated[dict[Name, LegacyTenant], BeforeValidator(_distinct_keys)] = Field(
        default_factory=dict
    )

    @property
    def snapshot_version(self) -> str:
        """The version part of the snapshot id."""
        return self.version or UNVERSIONED


def document_json_schema() -> dict[str, Any]:
    """JSON Schema of the policy document, for editors (``cordum policy schema``)."""
    schema = PolicyDocument.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://cordum.dev/schemas/safety-policy.json"
    schema["title"] = "Cordum safety policy"
    return schema
