"""The SQLite store's tables beside the jobs: approvals, policy history, API keys, audit.

A mixin of :class:`~cordum.ports.sqlite_store.SqliteStore`: it shares the store's
connection, its group-committed transactions (``_tx``) and its audit chains.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from cordum.models.approval import ApprovalRecord, closed_by_transition
from cordum.models.audit import AuditCheckpoint, AuditDraft, AuditEvent, AuditRow
from cordum.models.audit_events import approval_event
from cordum.models.keys import ApiKeyRecord
from cordum.models.policy_records import PolicyBundleRecord, PolicySnapshotRecord
from cordum.models.state import JobState
from cordum.ports.sqlite_audit import EVENT_COLUMNS, AuditChains, event_from_row
from cordum.ports.sqlite_pages import in_clause, newest_first
from cordum.ports.store import ApprovalFilter, ApprovalPage, AuditFilter, with_snapshot_version

RECORD_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    seq INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    status TEXT NOT NULL,
    expires_at REAL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, expires_at);
CREATE TABLE IF NOT EXISTS policy_bundles (
    bundle_id TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_snapshots (
    version INTEGER PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_active (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
"""


CHAINS_QUERY = """
WITH RECURSIVE chains(tenant_id) AS (
    SELECT MIN(tenant_id) FROM audit_events
    UNION ALL
    SELECT (SELECT MIN(tenant_id) FROM audit_events WHERE tenant_id > chains.tenant_id)
    FROM chains WHERE chains.tenant_id IS NOT NULL
)
SELECT tenant_id FROM chains WHERE tenant_id IS NOT NULL
"""
"""Every chain, in order: one index probe per chain (a skip scan), where ``SELECT
DISTINCT`` reads the whole index (80 ms at a million events, and the dashboard's live
feed asks every 0.4 s)."""


class RecordTables:
    """Approvals, policy bundles and snapshots, API keys and the audit chain on SQLite."""

    _db: sqlite3.Connection
    _audit: AuditChains

    def _tx(self) -> AbstractAsyncContextManager[sqlite3.Connection]:
        raise NotImplementedError  # provided by SqliteStore

    def _write_audit(self, db: sqlite3.Connection, drafts: Sequence[AuditDraft]) -> None:
        for draft in drafts:
            self._audit.append(db, draft)

    def _write_approval(self, db: sqlite3.Connection, approval: ApprovalRecord) -> None:
        db.execute(
            "INSERT INTO approvals (job_id, tenant_id, status, expires_at, data)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET"
            " status=excluded.status, expires_at=excluded.expires_at, data=excluded.data",
            (
                approval.job_id,
                approval.tenant_id,
                approval.status.value,
                approval.expires_at,
                approval.model_dump_json(),
            ),
        )
        self._audit.append(db, approval_event(approval))

    def _closed_approval(
        self, db: sqlite3.Connection, job_id: str, target: JobState, at: float, reason: str
    ) -> ApprovalRecord | None:
        """The pending approval of a job leaving APPROVAL_REQUIRED by another way than a
        human's answer (cancel, deadline), settled to match, so the two never disagree."""
        row = db.execute("SELECT data FROM approvals WHERE job_id=?", (job_id,)).fetchone()
        if row is None:
            return None
        return closed_by_transition(ApprovalRecord.model_validate_json(row[0]), target, at, reason)

    # --- approvals --------------------------------------------------------------------------

    async def get_approval(self, job_id: str) -> ApprovalRecord | None:
        """See :meth:`cordum.ports.store.Store.get_approval`."""
        row = self._db.execute("SELECT data FROM approvals WHERE job_id=?", (job_id,)).fetchone()
        return None if row is None else ApprovalRecord.model_validate_json(row[0])

    async def list_approvals(
        self, filters: ApprovalFilter, *, cursor: str | None = None, limit: int = 50
    ) -> ApprovalPage:
        """See :meth:`cordum.ports.store.Store.list_approvals`."""
        where: list[str] = []
        args: list[Any] = []
        if filters.tenant_ids is not None:
            clause, values = in_clause("tenant_id", filters.tenant_ids)
            where.append(clause)
            args.extend(values)
        if filters.statuses:
            clause, values = in_clause("status", (s.value for s in filters.statuses))
            where.append(clause)
            args.extend(values)
        if filters.expires_before is not None:
            where.append("expires_at IS NOT NULL AND expires_at <= ?")
            args.append(filters.expires_before)
        page, next_cursor = newest_first(
            self._db, "approvals", where, args, cursor=cursor, limit=limit
        )
        approvals = [ApprovalRecord.model_validate_json(data) for data in page]
        return ApprovalPage(approvals=approvals, next_cursor=next_cursor)

    # --- policy -----------------------------------------------------------------------------

    async def put_policy_bundle(
        self, bundle: PolicyBundleRecord, audit: Sequence[AuditDraft] = ()
    ) -> None:
        """See :meth:`cordum.ports.store.Store.put_policy_bundle`."""
        async with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO policy_bundles (bundle_id, data) VALUES (?, ?)",
                (bundle.bundle_id, bundle.model_dump_json()),
            )
            self._write_audit(db, audit)

    async def get_policy_bundle(self, bundle_id: str) -> PolicyBundleRecord | None:
        """See :meth:`cordum.ports.store.Store.get_policy_bundle`."""
        row = self._db.execute(
            "SELECT data FROM policy_bundles WHERE bundle_id=?", (bundle_id,)
        ).fetchone()
        return None if row is None else PolicyBundleRecord.model_validate_json(row[0])

    async def list_policy_bundles(self) -> list[PolicyBundleRecord]:
        """See :meth:`cordum.ports.store.Store.list_policy_bundles`."""
        rows = self._db.execute("SELECT data FROM policy_bundles ORDER BY bundle_id").fetchall()
        return [PolicyBundleRecord.model_validate_json(data) for (data,) in rows]

    async def delete_policy_bundle(self, bundle_id: str, audit: Sequence[AuditDraft] = ()) -> bool:
        """See :meth:`cordum.ports.store.Store.delete_policy_bundle`."""
        async with self._tx() as db:
            deleted = db.execute(
                "DELETE FROM policy_bundles WHERE bundle_id=?", (bundle_id,)
            ).rowcount
            if deleted:
                self._write_audit(db, audit)
        return bool(deleted)

    async def add_policy_snapshot(
        self,
        snapshot: PolicySnapshotRecord,
        audit: Sequence[AuditDraft] = (),
        bundles: Sequence[PolicyBundleRecord] | None = None,
    ) -> PolicySnapshotRecord:
        """See :meth:`cordum.ports.store.Store.add_policy_snapshot`."""
        async with self._tx() as db:
            (last,) = db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM policy_snapshots"
            ).fetchone()
            stored = snapshot.model_copy(update={"version": int(last) + 1})
            db.execute(
                "INSERT INTO policy_snapshots (version, data) VALUES (?, ?)",
                (stored.version, stored.model_dump_json()),
            )
            self._set_active(db, stored.version)
            if bundles is not None:
                self._replace_bundles(db, bundles)
            self._write_audit(db, with_snapshot_version(audit, stored.version))
        return stored

    async def activate_policy_snapshot(
        self,
        version: int,
        audit: Sequence[AuditDraft] = (),
        bundles: Sequence[PolicyBundleRecord] | None = None,
    ) -> PolicySnapshotRecord:
        """See :meth:`cordum.ports.store.Store.activate_policy_snapshot`."""
        snapshot = await self.get_policy_snapshot(version)
        if snapshot is None:
            raise LookupError(f"no policy snapshot with version {version}")
        async with self._tx() as db:
            self._set_active(db, version)
            if bundles is not None:
                self._replace_bundles(db, bundles)
            self._write_audit(db, audit)
        return snapshot

    @staticmethod
    def _set_active(db: sqlite3.Connection, version: int) -> None:
        db.execute("INSERT OR REPLACE INTO policy_active (one, version) VALUES (1, ?)", (version,))

    @staticmethod
    def _replace_bundles(db: sqlite3.Connection, bundles: Sequence[PolicyBundleRecord]) -> None:
        """Make the drafts exactly ``bundles``, inside the caller's transaction."""
        db.execute("DELETE FROM policy_bundles")
        for bundle in bundles:
            db.execute(
                "INSERT OR REPLACE INTO policy_bundles (bundle_id, data) VALUES (?, ?)",
                (bundle.bundle_id, bundle.model_dump_json()),
            )

    async def list_policy_snapshots(self) -> list[PolicySnapshotRecord]:
        """See :meth:`cordum.ports.store.Store.list_policy_snapshots`."""
        rows = self._db.execute(
            "SELECT data FROM policy_snapshots ORDER BY version DESC"
        ).fetchall()
        return [PolicySnapshotRecord.model_validate_json(data) for (data,) in rows]

    async def get_policy_snapshot(self, version: int) -> PolicySnapshotRecord | None:
        """See :meth:`cordum.ports.store.Store.get_policy_snapshot`."""
        row = self._db.execute(
            "SELECT data FROM policy_snapshots WHERE version=?", (version,)
        ).fetchone()
        return None if row is None else PolicySnapshotRecord.model_validate_json(row[0])

    async def active_policy_snapshot(self) -> PolicySnapshotRecord | None:
        """See :meth:`cordum.ports.store.Store.active_policy_snapshot`."""
        row = self._db.execute("SELECT version FROM policy_active WHERE one=1").fetchone()
        return None if row is None else await self.get_policy_snapshot(int(row[0]))

    # --- API keys ---------------------------------------------------------------------------

    async def put_api_key(self, key: ApiKeyRecord, audit: Sequence[AuditDraft] = ()) -> None:
        """See :meth:`cordum.ports.store.Store.put_api_key`."""
        async with self._tx() as db:
            db.execute(
                "INSERT INTO api_keys (key_id, data) VALUES (?, ?)"
                " ON CONFLICT (key_id) DO UPDATE SET data=excluded.data",
                (key.key_id, key.model_dump_json()),
            )
            self._write_audit(db, audit)

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """See :meth:`cordum.ports.store.Store.get_api_key`."""
        row = self._db.execute("SELECT data FROM api_keys WHERE key_id=?", (key_id,)).fetchone()
        return None if row is None else ApiKeyRecord.model_validate_json(row[0])

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """See :meth:`cordum.ports.store.Store.list_api_keys`."""
        rows = self._db.execute("SELECT data FROM api_keys ORDER BY rowid").fetchall()
        return [ApiKeyRecord.model_validate_json(data) for (data,) in rows]

    # --- audit ------------------------------------------------------------------------------

    async def append_audit(self, drafts: Sequence[AuditDraft]) -> list[AuditEvent]:
        """See :meth:`cordum.ports.store.Store.append_audit`."""
        placed: list[tuple[str, int]] = []
        async with self._tx() as db:
            for draft in drafts:
                seq, _ = self._audit.append(db, draft)
                placed.append((draft.tenant_id, seq))
        events = []
        for tenant_id, seq in placed:
            row = self._db.execute(
                f"SELECT {EVENT_COLUMNS} FROM audit_events WHERE tenant_id=? AND seq=?",
                (tenant_id, seq),
            ).fetchone()
            events.append(event_from_row(row))
        return events

    async def list_audit(self, filters: AuditFilter, *, limit: int = 1000) -> list[AuditEvent]:
        """See :meth:`cordum.ports.store.Store.list_audit`."""
        where = ["tenant_id = ?", "seq > ?"]
        args: list[Any] = [filters.tenant_id, filters.after_seq]
        if filters.kinds:
            clause, values = in_clause("kind", filters.kinds)
            where.append(clause)
            args.extend(values)
        if filters.kind_prefix is not None:
            where.append("substr(kind, 1, ?) = ?")
            args.extend((len(filters.kind_prefix), filters.kind_prefix))
        for column, value in (("subject", filters.subject), ("actor", filters.actor)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if filters.since_ms is not None:
            where.append("at_ms >= ?")
            args.append(filters.since_ms)
        if filters.until_ms is not None:
            where.append("at_ms < ?")
            args.append(filters.until_ms)
        rows = self._db.execute(
            f"SELECT {EVENT_COLUMNS} FROM audit_events WHERE {' AND '.join(where)}"
            " ORDER BY seq LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [event_from_row(row) for row in rows]

    async def audit_rows(
        self, tenant_id: str, *, after_seq: int = 0, limit: int = 10_000
    ) -> list[AuditRow]:
        """See :meth:`cordum.ports.store.Store.audit_rows`."""
        rows = self._db.execute(
            f"SELECT {EVENT_COLUMNS} FROM audit_events WHERE tenant_id = ? AND seq > ?"
            " ORDER BY seq LIMIT ?",
            (tenant_id, after_seq, limit),
        ).fetchall()
        return list(map(AuditRow._make, rows))

    async def audit_chains(self) -> list[str]:
        """See :meth:`cordum.ports.store.Store.audit_chains`."""
        rows = self._db.execute(CHAINS_QUERY).fetchall()
        return [tenant for (tenant,) in rows]

    async def audit_head(self, tenant_id: str) -> tuple[int, str]:
        """See :meth:`cordum.ports.store.Store.audit_head`."""
        return self._audit.head(self._db, tenant_id)

    async def add_audit_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        """See :meth:`cordum.ports.store.Store.add_audit_checkpoint`."""
        async with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO audit_checkpoints (tenant_id, seq, data) VALUES (?, ?, ?)",
                (checkpoint.tenant_id, checkpoint.seq, checkpoint.model_dump_json()),
            )

    async def list_audit_checkpoints(self, tenant_id: str) -> list[AuditCheckpoint]:
        """See :meth:`cordum.ports.store.Store.list_audit_checkpoints`."""
        rows = self._db.execute(
            "SELECT data FROM audit_checkpoints WHERE tenant_id=? ORDER BY seq", (tenant_id,)
        ).fetchall()
        return [AuditCheckpoint.model_validate_json(data) for (data,) in rows]
