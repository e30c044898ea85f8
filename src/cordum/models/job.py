"""The job: one action an agent wants to take.

These are the fields of ``POST /api/v1/jobs`` that describe the action; the pipeline adds
identity and state around them. Unknown fields are refused, because a misspelt
``risk_tag`` silently dropped would let a job slip past the rule meant for it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_TOPIC_LENGTH = 255
MAX_DEADLINE_MS = 366 * 24 * 3600 * 1000


class Priority(StrEnum):
    """Scheduling priority of a job."""

    INTERACTIVE = "interactive"
    BATCH = "batch"
    CRITICAL = "critical"


class Job(BaseModel):
    """An action submitted for a policy decision and, if allowed, execution."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    topic: str = Field(min_length=1, max_length=MAX_TOPIC_LENGTH, examples=["job.k8s.scale"])
    tenant_id: str | None = Field(
        default=None, validation_alias=AliasChoices("tenant_id", "tenant")
    )
    capability: str | None = None
    risk_tags: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)
    context: Any = Field(default=None, description="The job's input, any JSON value.")
    prompt: str | None = None
    actor_id: str | None = None
    actor_type: str | None = None
    pack_id: str | None = None
    principal_id: str | None = None
    idempotency_key: str | None = None
    priority: Priority | None = None
    deadline_ms: int | None = Field(default=None, gt=0, le=MAX_DEADLINE_MS, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _one_tenant_spelling(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tenant" in data and "tenant_id" in data:
            raise ValueError("give `tenant_id` or its other spelling `tenant`, not both")
        return data

    @field_validator("labels", mode="before")
    @classmethod
    def _scalar_labels_as_text(cls, value: Any) -> Any:
        """Labels are text on the wire; accept JSON numbers and booleans as their text."""
        if not isinstance(value, dict):
            return value
        seen: dict[str, str] = {}
        for key in value:
            folded = str(key).strip().lower()
            if folded in seen:
                raise ValueError(
                    f"label keys `{seen[folded]}` and `{key}` are the same key"
                    " (label keys are compared case-insensitively)"
                )
            seen[folded] = str(key)
        return {k: text if (text := label_text(v)) is not None else v for k, v in value.items()}


def label_text(value: Any) -> str | None:
    """The text of a label value: text as is, numbers and booleans as JSON writes them.

    None for anything else (lists, mappings, null), which is not a label value.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return None
