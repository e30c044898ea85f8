"""Constraints a policy attaches to an allowed job.

The scheduler enforces the budgets it can (``max_runtime_ms``, ``max_retries``,
``max_concurrent_jobs``); everything else travels with the job so the worker can apply it.
Models are frozen so one instance can be shared by every decision a rule produces.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(gt=0, strict=True)]
NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]
StrTuple = tuple[str, ...]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budgets(_Frozen):
    """Resource budgets: runtime, retries, artifact size, per-tenant concurrency."""

    max_runtime_ms: PositiveInt | None = Field(
        default=None, description="Deadline for one run; the scheduler times the job out after it."
    )
    max_retries: NonNegativeInt | None = Field(
        default=None, description="Retries after a failure before the job is FAILED."
    )
    max_artifact_bytes: PositiveInt | None = Field(
        default=None, description="Largest artifact the worker may produce."
    )
    max_concurrent_jobs: PositiveInt | None = Field(
        default=None, description="Jobs of this kind that may run at once, per tenant."
    )


class Sandbox(_Frozen):
    """Where the worker may reach while it runs the job."""

    isolated: bool | None = Field(default=None, description="Run in an isolated sandbox.")
    network_allowlist: StrTuple = Field(default=(), description="Hosts the job may connect to.")
    fs_read_only: StrTuple = Field(default=(), description="Paths mounted read-only.")
    fs_read_write: StrTuple = Field(default=(), description="Paths mounted read-write.")


class Toolchain(_Frozen):
    """Which tools and commands the worker may use for this job."""

    allowed_tools: StrTuple = Field(default=())
    allowed_commands: StrTuple = Field(default=())


class DiffLimits(_Frozen):
    """Bounds on a code change the job may produce."""

    max_files: PositiveInt | None = None
    max_lines: PositiveInt | None = None
    deny_path_globs: StrTuple = Field(default=())


class Constraints(_Frozen):
    """Everything an ALLOW_WITH_CONSTRAINTS decision attaches to a job."""

    budgets: Budgets | None = None
    sandbox: Sandbox | None = None
    toolchain: Toolchain | None = None
    diff: DiffLimits | None = None
    redaction_level: str | None = Field(
        default=None, description="How aggressively the worker redacts output."
    )
    max_output_bytes: PositiveInt | None = None
    allowed_destinations: StrTuple = Field(
        default=(), description="Where the job may send data (channels, buckets, hosts)."
    )
    approval_ttl_s: PositiveInt | None = Field(
        default=None,
        description="On a require_approval rule: seconds the approval may wait before it"
        " expires (the job then times out; silence is never consent).",
    )

    def is_empty(self) -> bool:
        """True when no constraint is set, so the decision stays a plain ALLOW."""
        return not self.to_dict()

    def to_dict(self) -> dict[str, object]:
        """The constraints that are set, as plain JSON-ready data."""
        return self.model_dump(mode="json", exclude_defaults=True)
