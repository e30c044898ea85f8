"""The Store port: the source of truth for jobs, decisions, approvals, policy, keys, audit.

Every adapter must make :meth:`Store.transition` atomic: the state check against the
transition table, the new state, its event, any decision, approval or DLQ entry that goes
with it, and the audit events of all of these are written together or not at all. The
contract suite in ``tests/ports`` pins this.

The audit chain is written by the store itself, so no caller can forget it: every job
event (``job.transition``), decision (``decision``) and approval change
(``approval.<status>``) is sealed into its tenant's chain in the write that makes it;
other events (policy, keys, auth failures) come in as :class:`AuditDraft` s.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from cordum.models.approval import ApprovalRecord, ApprovalStatus
from cordum.models.audit import AuditCheckpoint, AuditDraft, AuditEvent, AuditRow
from cordum.models.decision import Decision
from cordum.models.keys import ApiKeyRecord
from cordum.models.pipeline import (
    DecisionEntry,
    DLQEntry,
    IdempotencyEntry,
    JobEvent,
    JobRecord,
    WorkerRecord,
)
from cordum.models.policy_records import PolicyBundleRecord, PolicySnapshotRecord
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
    tenant_ids: frozenset[str] | None = None
    """Any of these tenants (None: no such filter; empty: matches nothing)."""
    submitter_key: str | None = None
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


@dataclass(frozen=True)
class ApprovalFilter:
    """Which approvals to list. Empty fields do not filter."""

    tenant_ids: frozenset[str] | None = None
    """Any of these tenants (None: every tenant; empty: none)."""
    statuses: frozenset[ApprovalStatus] = field(default_factory=frozenset)
    expires_before: float | None = None


@dataclass(frozen=True)
class ApprovalPage:
    """One page of approvals, newest first, and the cursor of the next page."""

    approvals: list[ApprovalRecord]
    next_cursor: str | None


@dataclass(frozen=True)
class AuditFilter:
    """Which events of one chain to list, oldest first. Empty fields do not filter."""

    tenant_id: str
    after_seq: int = 0
    kinds: frozenset[str] = field(default_factory=frozenset)
    kind_prefix: str | None = None
    subject: str | None = None
    actor: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None


@dataclass(frozen=True)
class DecisionCount:
    """How many decisions of one type were taken in one minute (fail-open ones apart)."""

    minute: int
    """Start of the minute, epoch seconds, a multiple of 60."""
    decision: Decision
    fail_open: bool
    """The decisions' ``safety_bypassed``: the kernel was unavailable and the job passed."""
    count: int


TALLY_RETENTION_S: Final = 24 * 3600
"""How far back :meth:`Store.decision_counts` can count (Redis drops older tallies)."""


def decision_minute(at: float) -> int:
    """The start of the minute containing ``at`` (epoch seconds), as the tallies key it."""
    return int(at // 60) * 60


def tally_minutes(since: float, now: float) -> range:
    """The minutes :meth:`Store.decision_counts` covers: from the one containing ``since``
    (none earlier than :data:`TALLY_RETENTION_S` before ``now``) to the one containing ``now``.

    For adapters, so that every one of them counts the same window.
    """
    first = max(decision_minute(since), decision_minute(now - TALLY_RETENTION_S))
    return range(first, decision_minute(now) + 1, 60)


class _AssignedVersion:
    """The type of :data:`SNAPSHOT_VERSION` (one instance, compared by identity)."""

    def __repr__(self) -> str:
        return "SNAPSHOT_VERSION"


SNAPSHOT_VERSION: Final = _AssignedVersion()
"""Stands for the version a snapshot is about to be given, in audit drafts' ``data``.

The number is assigned inside :meth:`Store.add_policy_snapshot`'s transaction, so the
caller cannot know it when it builds the ``policy.publish`` event; it puts this value
where the number belongs (a top-level value of ``data``) and the store replaces it,
in the same write (see :func:`with_snapshot_version`). Left in place, it cannot be
sealed: a store that forgot it fails the write instead of recording no version.
"""


def with_snapshot_version(drafts: Sequence[AuditDraft], version: int) -> list[AuditDraft]:
    """``drafts`` with every :data:`SNAPSHOT_VERSION` value of their data set to ``version``.

    For adapters, in :meth:`Store.add_policy_snapshot`.
    """
    return [
        replace(
            draft,
            data={
                key: version if value is SNAPSHOT_VERSION else value
                for key, value in draft.data.items()
            },
        )
        if any(value is SNAPSHOT_VERSION for value in draft.data.values())
        else draft
        for draft in drafts
    ]


class Store(Protocol):
    """Durable state of the control plane."""

    async def create_job(
        self,
        job: JobRecord,
        decision: DecisionEntry,
        idempotency: IdempotencyEntry | None = None,
        event_reason: str = "",
        approval: ApprovalRecord | None = None,
    ) -> CreateOutcome:
        """Insert a new job with its first event and gate-A decision, in one transaction.

        ``approval`` is the approval request of a job created in APPROVAL_REQUIRED.

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
        approval: ApprovalRecord | None = None,
        audit: Sequence[AuditDraft] = (),
    ) -> TransitionOutcome:
        """Move a job to ``target`` atomically, with its event (and decision, DLQ entry).

        ``approval`` creates or replaces the job's approval record; ``audit`` appends
        further events. Neither is written when the transition is a repeat.

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

    async def decision_counts(
        self, since: float, *, tenant_ids: frozenset[str] | None = None
    ) -> list[DecisionCount]:
        """Decisions recorded at or after ``since``, by minute, type and fail-open.

        ``since`` is epoch seconds, taken in whole minutes: the minute containing it counts
        whole. A decision counts in the minute of its ``at``, for its job's tenant;
        ``tenant_ids`` keeps these tenants only (None: every tenant; empty: none). Sorted
        by minute, then decision value (then fail-open ones last); minutes and types
        without decisions are left out.

        The tally is kept for :data:`TALLY_RETENTION_S` (24 hours): Redis expires older
        minutes, and every adapter counts none earlier than the minute 24 hours before
        now, whatever ``since`` says. Nor does it count minutes after the current one
        (decisions stamped by a clock running ahead count once their minute comes).
        Every write that records a decision updates the tally in the same transaction,
        so the two never disagree.
        """
        ...

    async def get_idempotency(self, tenant_id: str, key: str) -> IdempotencyEntry | None:
        """The first answer given for ``key`` in ``tenant_id``, if any."""
        ...

    async def count_jobs_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state (states with none are omitted)."""
        ...

    async def list_dlq(
        self,
        *,
        cursor: str | None = None,
        limit: int = 50,
        tenant_ids: frozenset[str] | None = None,
    ) -> DLQPage:
        """Dead-lettered jobs, newest first, ``limit`` at a time.

        ``tenant_ids``: only entries of these tenants (None: every tenant; empty: none).
        """
        ...

    async def get_dlq(self, job_id: str) -> DLQEntry | None:
        """The DLQ entry of a job, if any."""
        ...

    async def delete_dlq(self, job_id: str) -> bool:
        """Remove a DLQ entry; False when there was none.

        Atomic: of concurrent callers for one entry, exactly one gets True (so it can
        claim the entry, e.g. for a retry).
        """
        ...

    async def put_dlq(self, entry: DLQEntry) -> None:
        """Write back an entry :meth:`delete_dlq` took (for a retry that then could not
        submit); it lists as the newest. A failing job's entry comes with its
        :meth:`transition`, not this way."""
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

    # --- approvals ------------------------------------------------------------------------

    async def get_approval(self, job_id: str) -> ApprovalRecord | None:
        """The approval record of a job, if it ever needed one."""
        ...

    async def list_approvals(
        self, filters: ApprovalFilter, *, cursor: str | None = None, limit: int = 50
    ) -> ApprovalPage:
        """Approvals matching ``filters``, newest request first."""
        ...

    # --- policy -----------------------------------------------------------------------------

    async def put_policy_bundle(
        self, bundle: PolicyBundleRecord, audit: Sequence[AuditDraft] = ()
    ) -> None:
        """Create or replace a bundle."""
        ...

    async def get_policy_bundle(self, bundle_id: str) -> PolicyBundleRecord | None:
        """One bundle, or None."""
        ...

    async def list_policy_bundles(self) -> list[PolicyBundleRecord]:
        """Every bundle, by id."""
        ...

    async def delete_policy_bundle(self, bundle_id: str, audit: Sequence[AuditDraft] = ()) -> bool:
        """Remove a bundle; False (and nothing written) when there was none."""
        ...

    async def add_policy_snapshot(
        self,
        snapshot: PolicySnapshotRecord,
        audit: Sequence[AuditDraft] = (),
        bundles: Sequence[PolicyBundleRecord] | None = None,
    ) -> PolicySnapshotRecord:
        """Store a published snapshot under the next version number and make it active.

        :data:`SNAPSHOT_VERSION` in the data of ``audit`` becomes that number. ``bundles``,
        when given, replace every bundle (ids absent from them are deleted), in the same
        transaction as the snapshot and the events: all of it is written or none.
        """
        ...

    async def activate_policy_snapshot(
        self,
        version: int,
        audit: Sequence[AuditDraft] = (),
        bundles: Sequence[PolicyBundleRecord] | None = None,
    ) -> PolicySnapshotRecord:
        """Make an existing snapshot the active one; :class:`LookupError` when unknown.

        ``bundles``, when given, replace every bundle in the same transaction, as in
        :meth:`add_policy_snapshot` (a rollback resets the drafts to the snapshot's).
        """
        ...

    async def list_policy_snapshots(self) -> list[PolicySnapshotRecord]:
        """Every snapshot, newest version first."""
        ...

    async def get_policy_snapshot(self, version: int) -> PolicySnapshotRecord | None:
        """One snapshot by version, or None."""
        ...

    async def active_policy_snapshot(self) -> PolicySnapshotRecord | None:
        """The snapshot in force, or None before the first publish."""
        ...

    # --- API keys ---------------------------------------------------------------------------

    async def put_api_key(self, key: ApiKeyRecord, audit: Sequence[AuditDraft] = ()) -> None:
        """Create or replace a key record (the secret itself is never stored)."""
        ...

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """One key record, or None."""
        ...

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key record, oldest first."""
        ...

    # --- audit ------------------------------------------------------------------------------

    async def append_audit(self, drafts: Sequence[AuditDraft]) -> list[AuditEvent]:
        """Seal ``drafts`` onto their tenants' chains, in order, in one write."""
        ...

    async def list_audit(self, filters: AuditFilter, *, limit: int = 1000) -> list[AuditEvent]:
        """Events of one chain after ``filters.after_seq``, oldest first (a cursor by seq)."""
        ...

    async def audit_rows(
        self, tenant_id: str, *, after_seq: int = 0, limit: int = 10_000
    ) -> list[AuditRow]:
        """Events of one chain after ``after_seq`` as stored (for verifying: no parsing)."""
        ...

    async def audit_chains(self) -> list[str]:
        """The tenants (and the system chain) that have audit events."""
        ...

    async def audit_head(self, tenant_id: str) -> tuple[int, str]:
        """The newest ``(seq, event_hash)`` of a chain; ``(0, GENESIS_HASH)`` when empty."""
        ...

    async def add_audit_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        """Keep a signed checkpoint."""
        ...

    async def list_audit_checkpoints(self, tenant_id: str) -> list[AuditCheckpoint]:
        """A chain's checkpoints, oldest first."""
        ...

    async def close(self) -> None:
        """Release the store's resources; further calls are errors."""
        ...
