"""What the pipeline stores about a job: the record, its events, decisions and DLQ entries.

These are plain data shared by the store adapters, the services, the API and the SDK.
Times are Unix seconds (floats) so every adapter stores them the same way.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cordum.models.decision import Decision
from cordum.models.job import Job
from cordum.models.keys import ALL_TENANTS
from cordum.models.state import JobState

DEFAULT_TENANT = "default"


class Gate(StrEnum):
    """Where a decision was taken."""

    SUBMIT = "A"
    DISPATCH = "B"
    APPROVAL = "approval"


class DLQReason(StrEnum):
    """Why a job landed in the dead-letter queue (reference section 4, plus ``worker_lost``)."""

    NO_POOL_MAPPING = "no_pool_mapping"
    NO_WORKERS = "no_workers"
    POOL_OVERLOADED = "pool_overloaded"
    TENANT_LIMIT = "tenant_limit"
    SAFETY_DENIED = "safety_denied"
    SAFETY_UNKNOWN = "safety_unknown"
    MAX_RETRIES_EXCEEDED = "max_retries_exceeded"
    MAX_SCHEDULING_RETRIES = "max_scheduling_retries"
    DISPATCH_FAILED = "dispatch_failed"
    WORKER_LOST = "worker_lost"


class JobError(BaseModel):
    """Why a job did not succeed, in a form a program can branch on."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str


class Approval(BaseModel):
    """Who moved a job out of APPROVAL_REQUIRED, and under which policy."""

    model_config = ConfigDict(frozen=True)

    approved: bool
    by: str
    at: float
    reason: str = ""
    policy_snapshot: str | None = None


class JobRecord(BaseModel):
    """A job as the store keeps it: the submitted spec plus identity, state and outcome."""

    model_config = ConfigDict(frozen=True)

    id: str
    trace_id: str
    tenant_id: str = DEFAULT_TENANT
    spec: Job
    state: JobState
    labels: dict[str, str] = Field(
        default_factory=dict, description="The job's labels plus system labels (safety_bypassed)."
    )
    safety_decision: Decision | None = None
    safety_reason: str | None = None
    safety_rule_id: str | None = None
    safety_snapshot: str | None = None
    constraints: dict[str, Any] = Field(default_factory=dict)
    remediations: list[dict[str, Any]] = Field(
        default_factory=list, description="What the latest refusal offered instead."
    )
    approval: Approval | None = None
    attempts: int = Field(default=0, description="How many times the job was handed to a worker.")
    scheduling_attempts: int = Field(default=0, description="Deferrals before dispatch.")
    next_attempt_at: float | None = None
    waiting_reason: str | None = Field(
        default=None, description="Why a PENDING job is waiting (no workers, throttled...)."
    )
    worker_id: str | None = None
    pool: str | None = None
    result: Any = None
    error: JobError | None = None
    progress: dict[str, Any] | None = None
    retry_of: str | None = None
    submitter: str | None = Field(
        default=None, description="The principal that submitted the job (never its approver)."
    )
    submitter_key: str | None = Field(
        default=None, description="The id of the API key that submitted the job."
    )
    created_at: float
    updated_at: float
    dispatched_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    deadline_at: float | None = None

    @property
    def topic(self) -> str:
        """The job's topic."""
        return self.spec.topic

    @property
    def idempotency_key(self) -> str | None:
        """The submitter's idempotency key, if any."""
        return self.spec.idempotency_key


class JobEvent(BaseModel):
    """One state change, written in the same transaction as the change itself."""

    model_config = ConfigDict(frozen=True)

    seq: int = 0
    job_id: str
    from_state: JobState | None
    to_state: JobState
    at: float
    reason: str = ""


class DecisionEntry(BaseModel):
    """A Safety Kernel decision taken on a job, at one gate, under one snapshot."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    gate: Gate
    decision: Decision
    reason: str
    rule_id: str | None = None
    policy_snapshot: str | None = None
    constraints: dict[str, Any] = Field(default_factory=dict)
    remediations: list[dict[str, Any]] = Field(default_factory=list)
    retry_after_seconds: float | None = None
    safety_bypassed: bool = Field(
        default=False, description="Fail-open: the kernel was unavailable and the job passed."
    )
    at: float


class DLQEntry(BaseModel):
    """A job that could not be completed, with a reason code an operator can act on."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    tenant_id: str = DEFAULT_TENANT
    topic: str
    reason_code: DLQReason
    message: str
    attempts: int = 0
    at: float


class IdempotencyEntry(BaseModel):
    """The first answer given for an idempotency key, replayed for every repeat."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    key: str
    request_hash: str
    job_id: str
    response: dict[str, Any] = Field(description="The answer's body; its `status` says which.")
    at: float


class WorkerRecord(BaseModel):
    """A worker the scheduler can dispatch to."""

    model_config = ConfigDict(frozen=True)

    worker_id: str
    pool: str
    topics: tuple[str, ...]
    capacity: int = Field(default=1, ge=1)
    active_jobs: int = 0
    transport: str = Field(default="inprocess", description="inprocess | http | websocket")
    labels: dict[str, str] = Field(default_factory=dict)
    registered_at: float
    last_heartbeat: float
    owner_key: str | None = Field(
        default=None,
        description="Id of the API key that registered it: only that key may act as it"
        " (None: registered in-process or with auth off).",
    )
    tenants: tuple[str, ...] | None = Field(
        default=None,
        description="Tenants whose jobs it may be sent: those of the key that registered it"
        " (None: every tenant, for a key of every tenant, in-process workers, or auth off).",
    )

    def serves(self, tenant_id: str) -> bool:
        """Whether a job of ``tenant_id`` may be dispatched to this worker."""
        return self.tenants is None or ALL_TENANTS in self.tenants or tenant_id in self.tenants


class JobAssignment(BaseModel):
    """What a worker receives: everything its handler needs, nothing of the server's state."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    trace_id: str
    topic: str
    tenant_id: str
    input: Any = None
    prompt: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    constraints: dict[str, Any] = Field(default_factory=dict)
    attempt: int = 1
    deadline_at: float | None = None
