"""The Store port: the source of truth for jobs, their events, decisions, DLQ and workers.

Every adapter must make :meth:`Store.transition` atomic: the state check against the
transition table, the new state, its event, and any decision or DLQ entry that goes with
it are written together or not at all. The contract suite in ``tests/ports`` pins this.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cordum.models.pipeline import (
    DecisionEntry,
    DLQEntry,
    IdempotencyEntry,
    JobEvent,
    JobRecord,
    WorkerRecord,
)
from cordum.models.state import JobState


class JobNotFoundError(LookupError):
    """No job with that id (in that tenant)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class ConflictError(RuntimeError):
    """The job was not in a state the caller expected; nothing was written."""

    def __init__(self, job_id: str, current: JobState, expected: Collection[JobState]) -> None:
        wanted = ", ".join(sorted(s.value for s in expected))
        super().__init__(f"job {job_id} is {current.value}, expected one of: {wanted}")
        self.job_id = job_id
        self.current = current
        self.expected = frozenset(expected)


@dataclass(frozen=True)
class CreateOutcome:
    """What :meth:`Store.create_job` did: created the job, or found the idempotency key taken."""

    created: bool
    job: JobRecord | None = None
    existing: IdempotencyEntry | None = None


@dataclass(frozen=True)
class TransitionOutcome:
    """The job after a transition; ``changed`` is False for a repeat of the current state."""

    job: JobRecord
    changed: bool
    previous: JobState


@dataclass(frozen=True)
class JobFilter:
    """Which jobs to list. Empty fields do not filter."""

    tenant_id: str | None = None
    states: frozenset[JobState] = field(default_factory=frozenset)
    topic: str | None = None
    updated_before: float | None = None
    due_before: float | None = None


@dataclass(frozen=True)
class DLQPage:
    """One page of the DLQ, newest first; ``next_cursor`` is opaque (None at the end).

    The cursor stays valid when the entries of the page before it are deleted, so
    "retry every entry on this page, then fetch the next" never skips anything.
    """

    entries: list[DLQEntry]
    next_cursor: str | None


@dataclass(frozen=True)
class JobPage:
    """One page of a listing, newest first, and the cursor of the next page (None at the end)."""

    jobs: list[JobRecord]
    next_cursor: str | None


class Store(Protocol):
    """Durable state of the control plane."""

    async def create_job(
        self,
        job: JobRecord,
        decision: DecisionEntry,
        idempotency: IdempotencyEntry | None = None,
        event_reason: str = "",
    ) -> CreateOutcome:
        """Insert a new job with its first event and gate-A decision, in one transaction.

        When ``idempotency`` is given and its (tenant, key) is already taken, nothing is
        written and the outcome carries the existing entry instead.
        """
        ...

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job, or None."""
        ...

    async def list_jobs(
        self, filters: JobFilter, *, cursor: str | None = None, limit: int = 50
    ) -> JobPage:
        """Jobs matching ``filters``, newest first, ``limit`` at a time."""
        ...

    async def transition(
        self,
        job_id: str,
        target: JobState,
        *,
        expect: Collection[JobState] | None = None,
        changes: Mapping[str, Any] | None = None,
        reason: str = "",
        decision: DecisionEntry | None = None,
        dlq: DLQEntry | None = None,
        now: float | None = None,
        via: JobState | None = None,
        via_reason: str = "",
    ) -> TransitionOutcome:
        """Move a job to ``target`` atomically, with its event (and decision, DLQ entry).

        ``via`` passes through an intermediate state in the same write: both steps must
        be legal, and each gets its own event (``via_reason``, then ``reason``), so the
        history reads exactly as two transitions would, at the cost of one.

        A repeat of the current state changes nothing and reports ``changed=False``, even
        when ``expect`` does not include it (so concurrent callers that race to the same
        state all see success, and exactly one sees ``changed=True``).
        Raises :class:`JobNotFoundError`, :class:`ConflictError` when ``expect`` is given
        and the job is in another state, and
        :class:`~cordum.models.state.IllegalTransitionError` when the table forbids it.
        ``changes`` are JobRecord fields to set in the same write.
        """
        ...

    async def update_job(
        self,
        job_id: str,
        *,
        expect: Collection[JobState],
        changes: Mapping[str, Any],
        decision: DecisionEntry | None = None,
    ) -> JobRecord:
        """Change fields of a job without changing its state (progress, deferral, decision).

        Raises :class:`ConflictError` when the job is no longer in one of ``expect``.
        """
        ...

    async def job_events(self, job_id: str) -> list[JobEvent]:
        """Every state change of a job, oldest first."""
        ...

    async def job_decisions(self, job_id: str) -> list[DecisionEntry]:
        """Every decision taken on a job, oldest first."""
        ...

    async def get_idempotency(self, tenant_id: str, key: str) -> IdempotencyEntry | None:
        """The first answer given for ``key`` in ``tenant_id``, if any."""
        ...

    async def count_jobs_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state (states with none are omitted)."""
        ...

    async def list_dlq(self, *, cursor: str | None = None, limit: int = 50) -> DLQPage:
        """Dead-lettered jobs, newest first, ``limit`` at a time."""
        ...

    async def get_dlq(self, job_id: str) -> DLQEntry | None:
        """The DLQ entry of a job, if any."""
        ...

    async def delete_dlq(self, job_id: str) -> bool:
        """Remove a DLQ entry; False when there was none."""
        ...

    async def count_dlq(self) -> int:
        """How many entries the DLQ holds."""
        ...

    async def upsert_worker(self, worker: WorkerRecord) -> None:
        """Register a worker or refresh it (heartbeat)."""
        ...

    async def list_workers(self) -> list[WorkerRecord]:
        """Every known worker, live or not."""
        ...

    async def remove_worker(self, worker_id: str) -> bool:
        """Forget a worker; False when it was unknown."""
        ...

    async def close(self) -> None:
        """Release the store's resources; further calls are errors."""
        ...
