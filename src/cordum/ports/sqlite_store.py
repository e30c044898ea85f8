"""The embedded Store: one SQLite file in WAL mode, owned by one process.

Why calls run on the event loop instead of a thread: every statement here touches a few
rows through an index and takes tens of microseconds, less than a hop to a worker thread
would cost. Running them inline also makes each method atomic with respect to other
coroutines, so there is no lock to forget.

Durability: WAL with ``synchronous=NORMAL`` survives a crash of the process (SIGKILL) at
any instruction; only a power loss can drop the last transactions. ``durable=True``
selects ``synchronous=FULL`` for deployments that need that too.

Group commit: every write runs in its own SAVEPOINT inside a transaction shared by all
writes issued in the same event-loop tick, committed once at the end of the tick. Each
write method returns only after that commit, so a caller never acts on (or answers with)
something that is not durable, yet a burst of writes pays for one commit instead of many.
WAL checkpoints run on a background thread so no request waits for one.

A write-through cache of recently touched jobs saves a read and a JSON parse on the hot
path; it is exact because this process is the only writer (an exclusive lock on
``<file>.lock`` enforces it), and it is dropped whenever a commit fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

from cordum.models.approval import ApprovalRecord
from cordum.models.audit import AuditDraft, ChainHasher
from cordum.models.audit_events import decision_event, transition_event
from cordum.models.decision import Decision
from cordum.models.pipeline import (
    DecisionEntry,
    DLQEntry,
    IdempotencyEntry,
    JobEvent,
    JobRecord,
    WorkerRecord,
)
from cordum.models.state import IllegalTransitionError, JobState, can_transition
from cordum.ports.job_changes import moved, transition_steps, updated
from cordum.ports.sqlite_audit import (
    AUDIT_SCHEMA,
    AuditChains,
    AuditKeyMismatchError,
    check_sealing,
)
from cordum.ports.sqlite_pages import in_clause, newest_first
from cordum.ports.sqlite_records import RECORD_SCHEMA, RecordTables
from cordum.ports.store import (
    CreateOutcome,
    DecisionCount,
    DLQPage,
    JobFilter,
    JobNotFoundError,
    JobPage,
    TransitionOutcome,
    decision_minute,
    tally_minutes,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL,
    next_attempt_at REAL,
    submitter_key TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, updated_at);
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant_id, seq);
CREATE INDEX IF NOT EXISTS jobs_submitter ON jobs (submitter_key, seq);
CREATE TABLE IF NOT EXISTS job_events (
    seq INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    at REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_events_job ON job_events (job_id, seq);
-- The columns after data copy the job's tenant and the decision's minute, type and
-- fail-open, so decision_counts is one scan of decisions_tally, never of data. They are
-- nullable and last because a store of an earlier version gets them by ALTER TABLE.
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    data TEXT NOT NULL,
    tenant_id TEXT,
    minute INTEGER,
    decision TEXT,
    fail_open INTEGER
);
CREATE INDEX IF NOT EXISTS decisions_job ON decisions (job_id, seq);
CREATE INDEX IF NOT EXISTS decisions_tally ON decisions (minute, decision, fail_open, tenant_id);
CREATE TABLE IF NOT EXISTS idempotency (
    tenant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE TABLE IF NOT EXISTS dlq (
    seq INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
"""

CACHE_SIZE = 20_000
CHECKPOINT_INTERVAL_S = 0.5


class StoreLockedError(RuntimeError):
    """Another process already owns this store file."""


class SqliteStore(RecordTables):
    """The Store port on a SQLite file (``":memory:"`` for a throwaway store).

    ``hasher`` seals the audit chain (give it the HMAC key, when one is configured).
    """

    def __init__(
        self, path: str | Path, *, durable: bool = False, hasher: ChainHasher | None = None
    ) -> None:
        self.path = str(path)
        self._lock_file = self._take_lock(self.path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        _add_missing_columns(self._db)
        self._db.executescript(SCHEMA + AUDIT_SCHEMA + RECORD_SCHEMA)
        self._audit = AuditChains(hasher or ChainHasher())
        try:
            check_sealing(self._db, self._audit.hasher)
        except AuditKeyMismatchError:
            self._db.close()
            if self._lock_file is not None:
                self._lock_file.close()
            raise
        self._cache: OrderedDict[str, JobRecord] = OrderedDict()
        self._batch: asyncio.Future[None] | None = None
        self._stop_checkpoints = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if self.path != ":memory:":
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="cordum-wal-checkpoint", daemon=True
            )
            self._checkpointer.start()

    @staticmethod
    def _take_lock(path: str) -> IO[str] | None:
        if path == ":memory:":
            return None
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handle = open(f"{path}.lock", "w")  # noqa: SIM115 - held for the store's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreLockedError(
                f"{path} is in use by another Cordum process; stop it or choose another --data-dir"
            ) from None
        return handle

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[sqlite3.Connection]:
        """One atomic write; returns once the shared transaction holding it is committed."""
        db = self._db
        if self._batch is None:
            loop = asyncio.get_running_loop()
            db.execute("BEGIN IMMEDIATE")
            self._batch = loop.create_future()
            loop.call_soon(self._commit_batch)
        batch = self._batch
        db.execute("SAVEPOINT write")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK TO write")
            db.execute("RELEASE write")
            self._audit.forget()
            raise
        db.execute("RELEASE write")
        await asyncio.shield(batch)

    def _commit_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch is None:
            return
        try:
            self._db.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            self._cache.clear()  # it may hold writes that were just rolled back
            self._audit.forget()
            batch.set_exception(exc)
        else:
            batch.set_result(None)

    def _checkpoint_loop(self) -> None:
        checkpoints = sqlite3.connect(self.path, check_same_thread=False)
        try:
            while not self._stop_checkpoints.wait(CHECKPOINT_INTERVAL_S):
                with contextlib.suppress(sqlite3.Error):
                    checkpoints.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            checkpoints.close()

    # --- jobs ---------------------------------------------------------------------------

    async def create_job(
        self,
        job: JobRecord,
        decision: DecisionEntry,
        idempotency: IdempotencyEntry | None = None,
        event_reason: str = "",
        approval: ApprovalRecord | None = None,
    ) -> CreateOutcome:
        """See :meth:`cordum.ports.store.Store.create_job`."""
        if not can_transition(None, job.state):
            raise IllegalTransitionError(job.id, None, job.state)
        async with self._tx() as db:
            if idempotency is not None:
                row = db.execute(
                    "SELECT data FROM idempotency WHERE tenant_id=? AND key=?",
                    (idempotency.tenant_id, idempotency.key),
                ).fetchone()
                if row is not None:
                    return CreateOutcome(
                        created=False, existing=IdempotencyEntry.model_validate_json(row[0])
                    )
                db.execute(
                    "INSERT INTO idempotency (tenant_id, key, data) VALUES (?, ?, ?)",
                    (idempotency.tenant_id, idempotency.key, idempotency.model_dump_json()),
                )
            db.execute(
                "INSERT INTO jobs (id, tenant_id, topic, state, updated_at, next_attempt_at,"
                " submitter_key, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.tenant_id,
                    job.topic,
                    job.state.value,
                    job.updated_at,
                    job.next_attempt_at,
                    job.submitter_key,
                    job.model_dump_json(),
                ),
            )
            self._insert_event(db, job, None, job.state, job.created_at, event_reason)
            self._insert_decision(db, job.tenant_id, decision)
            if approval is not None:
                self._write_approval(db, approval)
            self._remember(job)
        return CreateOutcome(created=True, job=job)

    async def get_job(self, job_id: str) -> JobRecord | None:
        """See :meth:`cordum.ports.store.Store.get_job`."""
        return self._load(job_id)

    async def list_jobs(
        self, filters: JobFilter, *, cursor: str | None = None, limit: int = 50
    ) -> JobPage:
        """See :meth:`cordum.ports.store.Store.list_jobs`."""
        where, args = _job_filter_sql(filters)
        page, next_cursor = newest_first(self._db, "jobs", where, args, cursor=cursor, limit=limit)
        return JobPage(
            jobs=[JobRecord.model_validate_json(data) for data in page], next_cursor=next_cursor
        )

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
        """See :meth:`cordum.ports.store.Store.transition`."""
        current = self._require(job_id)
        previous = current.state
        steps = transition_steps(
            current, target, expect=expect, reason=reason, via=via, via_reason=via_reason
        )
        if steps is None:
            return TransitionOutcome(job=current, changed=False, previous=previous)
        at = time.time() if now is None else now
        job = moved(current, target, changes, at)
        async with self._tx() as db:
            self._write_job(db, job)
            for source, destination, why in steps:
                self._insert_event(db, job, source, destination, at, why)
            if decision is not None:
                self._insert_decision(db, job.tenant_id, decision)
            if approval is None and previous is JobState.APPROVAL_REQUIRED:
                approval = self._closed_approval(db, job_id, target, at, reason)
            if approval is not None:
                self._write_approval(db, approval)
            self._write_audit(db, audit)
            if dlq is not None:
                db.execute(
                    "INSERT OR REPLACE INTO dlq (job_id, data) VALUES (?, ?)",
                    (dlq.job_id, dlq.model_dump_json()),
                )
            self._remember(job)
        return TransitionOutcome(job=job, changed=True, previous=previous)

    async def update_job(
        self,
        job_id: str,
        *,
        expect: Collection[JobState],
        changes: Mapping[str, Any],
        decision: DecisionEntry | None = None,
    ) -> JobRecord:
        """See :meth:`cordum.ports.store.Store.update_job`."""
        job = updated(self._require(job_id), expect, changes, time.time())
        async with self._tx() as db:
            self._write_job(db, job)
            if decision is not None:
                self._insert_decision(db, job.tenant_id, decision)
            self._remember(job)
        return job

    async def job_events(self, job_id: str) -> list[JobEvent]:
        """See :meth:`cordum.ports.store.Store.job_events`."""
        rows = self._db.execute(
            "SELECT seq, job_id, from_state, to_state, at, reason FROM job_events"
            " WHERE job_id=? ORDER BY seq",
            (job_id,),
        ).fetchall()
        return [
            JobEvent(
                seq=seq,
                job_id=jid,
                from_state=JobState(src) if src is not None else None,
                to_state=JobState(dst),
                at=at,
                reason=reason,
            )
            for seq, jid, src, dst, at, reason in rows
        ]

    async def job_decisions(self, job_id: str) -> list[DecisionEntry]:
        """See :meth:`cordum.ports.store.Store.job_decisions`."""
        rows = self._db.execute(
            "SELECT data FROM decisions WHERE job_id=? ORDER BY seq", (job_id,)
        ).fetchall()
        return [DecisionEntry.model_validate_json(data) for (data,) in rows]

    async def decision_counts(
        self, since: float, *, tenant_ids: frozenset[str] | None = None
    ) -> list[DecisionCount]:
        """See :meth:`cordum.ports.store.Store.decision_counts`."""
        minutes = tally_minutes(since, time.time())
        if not minutes:
            return []
        where = "minute BETWEEN ? AND ?"
        args: list[Any] = [minutes[0], minutes[-1]]
        if tenant_ids is not None:
            clause, values = in_clause("tenant_id", tenant_ids)
            where += f" AND {clause}"
            args.extend(values)
        rows = self._db.execute(
            "SELECT minute, decision, fail_open, COUNT(*) FROM decisions"
            f" WHERE {where} GROUP BY minute, decision, fail_open"
            " ORDER BY minute, decision, fail_open",
            args,
        ).fetchall()
        return [
            DecisionCount(
                minute=minute, decision=Decision(value), fail_open=bool(fail_open), count=n
            )
            for minute, value, fail_open, n in rows
        ]

    async def get_idempotency(self, tenant_id: str, key: str) -> IdempotencyEntry | None:
        """See :meth:`cordum.ports.store.Store.get_idempotency`."""
        row = self._db.execute(
            "SELECT data FROM idempotency WHERE tenant_id=? AND key=?", (tenant_id, key)
        ).fetchone()
        return None if row is None else IdempotencyEntry.model_validate_json(row[0])

    async def count_jobs_by_state(self) -> dict[JobState, int]:
        """See :meth:`cordum.ports.store.Store.count_jobs_by_state`."""
        rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {JobState(state): count for state, count in rows}

    # --- DLQ ----------------------------------------------------------------------------

    async def list_dlq(
        self,
        *,
        cursor: str | None = None,
        limit: int = 50,
        tenant_ids: frozenset[str] | None = None,
    ) -> DLQPage:
        """See :meth:`cordum.ports.store.Store.list_dlq`."""
        where: list[str] = []
        args: list[Any] = []
        if tenant_ids is not None:
            # The DLQ is small and rarely listed: the tenant is read from the entry itself
            # rather than kept in a column of its own.
            clause, values = in_clause("json_extract(data, '$.tenant_id')", tenant_ids)
            where.append(clause)
            args.extend(values)
        page, next_cursor = newest_first(self._db, "dlq", where, args, cursor=cursor, limit=limit)
        entries = [DLQEntry.model_validate_json(data) for data in page]
        return DLQPage(entries=entries, next_cursor=next_cursor)

    async def get_dlq(self, job_id: str) -> DLQEntry | None:
        """See :meth:`cordum.ports.store.Store.get_dlq`."""
        row = self._db.execute("SELECT data FROM dlq WHERE job_id=?", (job_id,)).fetchone()
        return None if row is None else DLQEntry.model_validate_json(row[0])

    async def delete_dlq(self, job_id: str) -> bool:
        """See :meth:`cordum.ports.store.Store.delete_dlq`."""
        async with self._tx() as db:
            deleted = db.execute("DELETE FROM dlq WHERE job_id=?", (job_id,)).rowcount
        return bool(deleted)

    async def put_dlq(self, entry: DLQEntry) -> None:
        """See :meth:`cordum.ports.store.Store.put_dlq`."""
        async with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO dlq (job_id, data) VALUES (?, ?)",
                (entry.job_id, entry.model_dump_json()),
            )

    async def count_dlq(self) -> int:
        """See :meth:`cordum.ports.store.Store.count_dlq`."""
        (count,) = self._db.execute("SELECT COUNT(*) FROM dlq").fetchone()
        return int(count)

    # --- workers ------------------------------------------------------------------------

    async def upsert_worker(self, worker: WorkerRecord) -> None:
        """See :meth:`cordum.ports.store.Store.upsert_worker`."""
        async with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO workers (worker_id, data) VALUES (?, ?)",
                (worker.worker_id, worker.model_dump_json()),
            )

    async def list_workers(self) -> list[WorkerRecord]:
        """See :meth:`cordum.ports.store.Store.list_workers`."""
        rows = self._db.execute("SELECT data FROM workers ORDER BY worker_id").fetchall()
        return [WorkerRecord.model_validate_json(data) for (data,) in rows]

    async def remove_worker(self, worker_id: str) -> bool:
        """See :meth:`cordum.ports.store.Store.remove_worker`."""
        async with self._tx() as db:
            deleted = db.execute("DELETE FROM workers WHERE worker_id=?", (worker_id,)).rowcount
        return bool(deleted)

    async def close(self) -> None:
        """See :meth:`cordum.ports.store.Store.close`."""
        self._commit_batch()
        self._stop_checkpoints.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
        self._cache.clear()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # --- internals ----------------------------------------------------------------------

    def _load(self, job_id: str) -> JobRecord | None:
        cached = self._cache.get(job_id)
        if cached is not None:
            return cached
        row = self._db.execute("SELECT data FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            return None
        job = JobRecord.model_validate_json(row[0])
        self._remember(job)
        return job

    def _require(self, job_id: str) -> JobRecord:
        job = self._load(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    def _remember(self, job: JobRecord) -> None:
        self._cache[job.id] = job
        self._cache.move_to_end(job.id)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    @staticmethod
    def _write_job(db: sqlite3.Connection, job: JobRecord) -> None:
        db.execute(
            "UPDATE jobs SET state=?, updated_at=?, next_attempt_at=?, data=? WHERE id=?",
            (job.state.value, job.updated_at, job.next_attempt_at, job.model_dump_json(), job.id),
        )

    def _insert_event(
        self,
        db: sqlite3.Connection,
        job: JobRecord,
        source: JobState | None,
        target: JobState,
        at: float,
        reason: str,
    ) -> None:
        db.execute(
            "INSERT INTO job_events (job_id, from_state, to_state, at, reason)"
            " VALUES (?, ?, ?, ?, ?)",
            (job.id, None if source is None else source.value, target.value, at, reason),
        )
        self._audit.append(db, transition_event(job, source, target, at, reason))

    def _insert_decision(
        self, db: sqlite3.Connection, tenant_id: str, decision: DecisionEntry
    ) -> None:
        db.execute(
            "INSERT INTO decisions (job_id, data, tenant_id, minute, decision, fail_open)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                decision.job_id,
                decision.model_dump_json(),
                tenant_id,
                decision_minute(decision.at),
                decision.decision.value,
                int(decision.safety_bypassed),
            ),
        )
        self._audit.append(db, decision_event(tenant_id, decision))


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a store written by an earlier version up to this schema."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    if columns and "submitter_key" not in columns:
        db.execute("ALTER TABLE jobs ADD COLUMN submitter_key TEXT")
    columns = {row[1] for row in db.execute("PRAGMA table_info(decisions)")}
    if columns and "minute" not in columns:
        _add_tally_columns(db)


def _add_tally_columns(db: sqlite3.Connection) -> None:
    """Give the decisions of an earlier version their tally columns, filled from each row's
    data and its job (every row: the migration runs once, and leaves no half-filled column).

    One transaction: a crash halfway leaves the old schema, migrated again on the next open.
    """
    db.create_function("decision_minute", 1, decision_minute, deterministic=True)
    db.execute("BEGIN IMMEDIATE")
    try:
        for column in ("tenant_id TEXT", "minute INTEGER", "decision TEXT", "fail_open INTEGER"):
            db.execute(f"ALTER TABLE decisions ADD COLUMN {column}")
        db.execute(
            "UPDATE decisions SET"
            " tenant_id = (SELECT tenant_id FROM jobs WHERE jobs.id = decisions.job_id),"
            " minute = decision_minute(json_extract(data, '$.at')),"
            " decision = json_extract(data, '$.decision'),"
            " fail_open = coalesce(json_extract(data, '$.safety_bypassed'), 0)"
        )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _job_filter_sql(filters: JobFilter) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if filters.tenant_id is not None:
        where.append("tenant_id = ?")
        args.append(filters.tenant_id)
    if filters.tenant_ids is not None:
        clause, values = in_clause("tenant_id", filters.tenant_ids)
        where.append(clause)
        args.extend(values)
    if filters.submitter_key is not None:
        where.append("submitter_key = ?")
        args.append(filters.submitter_key)
    if filters.states:
        clause, values = in_clause("state", (s.value for s in filters.states))
        where.append(clause)
        args.extend(values)
    if filters.topic is not None:
        where.append("topic = ?")
        args.append(filters.topic)
    if filters.updated_before is not None:
        where.append("updated_at < ?")
        args.append(filters.updated_before)
    if filters.due_before is not None:
        where.append("next_attempt_at IS NOT NULL AND next_attempt_at <= ?")
        args.append(filters.due_before)
    return where, args
