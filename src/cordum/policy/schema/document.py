"""The whole document: settings, rules, input and output rules, legacy tenants."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from cordum.models import Decision
from cordum.policy.schema.rules import InputRule, LegacyTenant, OutputRule, Rule
from cordum.policy.schema.values import (
    _VERSION,
    UNVERSIONED,
    DefaultDecision,
    LabelKey,
    Name,
    _distinct_keys,
    _one_or_many,
    _sorted_unique,
    _Strict,
    policy_error,
)


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
