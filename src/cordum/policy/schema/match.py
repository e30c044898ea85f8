"""Match blocks: the conditions a job must meet for a rule to apply.

Dialects of the original are accepted here: singular fields (``topic``, ``capability``,
...), ``env``/``environment``, and plain ``risk_tags`` lists, which mean "all of" unless
the loader is told the document was written for the original (then "any of").
"""

from __future__ import annotations

import functools
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

from cordum.policy.patterns import PatternError, combine_patterns
from cordum.policy.schema.values import (
    DIALECT_ORIGINAL,
    MEMBERSHIP_FIELDS,
    LabelKey,
    LabelValues,
    Name,
    NameSet,
    Patterns,
    PositiveInt,
    Scanner,
    ScannerName,
    TopicGlobs,
    _distinct_keys,
    _one_or_many,
    _scalar_text,
    _sorted_unique,
    _Strict,
    finite_number,
    policy_error,
)


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


# --- match ---------------------------------------------------------------------------

_MATCH_ALIASES = {"topic": "topics", **{one: many for many, one in MEMBERSHIP_FIELDS.items()}}
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
                if not finite_number(threshold):
                    raise policy_error(
                        "bad_number",
                        f"threshold for `{key}` must be a finite number, got {threshold!r}",
                    )
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


@functools.cache
def match_field_names(model: type[BaseModel]) -> frozenset[str]:
    """Every key a match block of ``model`` understands (fields and their spellings)."""
    return frozenset(model.model_fields) | set(_MATCH_ALIASES) | set(LABEL_DIALECT_KEYS)


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

    @field_validator("content_patterns")
    @classmethod
    def _patterns_fit_together(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if value:
            try:
                combine_patterns(value)
            except PatternError as exc:
                raise policy_error(
                    "bad_pattern", f"these patterns together cannot be compiled: {exc}", exc.hint
                ) from None
        return value

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
