"""Sealing audit events into per-tenant chains inside the SQLite store's own writes.

Appending happens on the caller's open transaction, so an event commits with the change
it records or not at all (invariant 2). The head of each chain (last seq and hash) is
cached; whoever rolls back a write must call :meth:`AuditChains.forget` so the next
append reads the true head again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from cordum.models.audit import GENESIS_HASH, AuditDraft, AuditEvent, ChainHasher

AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_events (
    tenant_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    actor TEXT,
    subject TEXT,
    prev_hash TEXT NOT NULL,
    event_hash TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX IF NOT EXISTS audit_subject ON audit_events (tenant_id, subject, seq);
CREATE TABLE IF NOT EXISTS audit_sealing (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    algorithm TEXT NOT NULL,
    fingerprint TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    tenant_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
"""

EVENT_COLUMNS = "tenant_id, seq, kind, at_ms, actor, subject, prev_hash, event_hash, body"


class AuditKeyMismatchError(RuntimeError):
    """The store's chains were sealed with another HMAC key (or none) than the one given."""


def check_sealing(db: sqlite3.Connection, hasher: ChainHasher) -> None:
    """Remember how this store's chains are sealed; refuse to continue them differently.

    Without this, a restart that forgot ``CORDUM_AUDIT_HMAC_KEY`` (or brought another)
    would seal new events with the wrong key and nothing would notice until a verify
    reported them all ``modified``.
    """
    row = db.execute("SELECT algorithm, fingerprint FROM audit_sealing WHERE one = 1").fetchone()
    if row is None:
        db.execute(
            "INSERT INTO audit_sealing (one, algorithm, fingerprint) VALUES (1, ?, ?)",
            (hasher.algorithm, hasher.fingerprint),
        )
        return
    if tuple(row) != (hasher.algorithm, hasher.fingerprint):
        had = "an HMAC key" if row[0] == "hmac-sha256" else "no HMAC key"
        given = "another key" if hasher.algorithm == "hmac-sha256" else "none"
        raise AuditKeyMismatchError(
            f"this store's audit chains are sealed with {had}, but {given} was given;"
            " set CORDUM_AUDIT_HMAC_KEY to the key the store was created with"
        )


class AuditChains:
    """Appends sealed events to the ``audit_events`` table of one connection."""

    def __init__(self, hasher: ChainHasher) -> None:
        self.hasher = hasher
        self._heads: dict[str, tuple[int, str]] = {}

    def head(self, db: sqlite3.Connection, tenant_id: str) -> tuple[int, str]:
        """The newest ``(seq, event_hash)`` of a chain, as this transaction sees it."""
        cached = self._heads.get(tenant_id)
        if cached is not None:
            return cached
        row = db.execute(
            "SELECT seq, event_hash FROM audit_events WHERE tenant_id=? ORDER BY seq DESC LIMIT 1",
            (tenant_id,),
        ).fetchone()
        head = (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))
        self._heads[tenant_id] = head
        return head

    def forget(self) -> None:
        """Drop the cached heads (after a rollback they may name events that are gone)."""
        self._heads.clear()

    def append(self, db: sqlite3.Connection, draft: AuditDraft) -> tuple[int, str]:
        """Seal ``draft`` after its chain's head; returns the event's ``(seq, event_hash)``."""
        tenant_id = draft.tenant_id
        seq, prev = self.head(db, tenant_id)
        seq += 1
        at = int(time.time() * 1000) if draft.at_ms is None else draft.at_ms
        fields = {
            "tenant_id": tenant_id,
            "seq": seq,
            "kind": draft.kind,
            "at_ms": at,
            "actor": draft.actor,
            "subject": draft.subject,
            "data": dict(draft.data),
            "prev_hash": prev,
        }
        body, event_hash = self.hasher.seal_fields(fields)
        db.execute(
            f"INSERT INTO audit_events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (tenant_id, seq, draft.kind, at, draft.actor, draft.subject, prev, event_hash, body),
        )
        self._heads[tenant_id] = (seq, event_hash)
        return seq, event_hash


def event_from_row(row: tuple[Any, ...]) -> AuditEvent:
    """An :class:`AuditEvent` from a row of :data:`EVENT_COLUMNS`, as stored.

    The row is taken as it is, unchecked: verifying it is the verifier's job, and a
    tampered row must reach the verifier rather than fail to load.
    """
    tenant_id, seq, kind, at_ms, actor, subject, prev_hash, event_hash, body = row
    try:
        sealed = json.loads(body)
        data = sealed.get("data", {}) if isinstance(sealed, dict) else {}
    except ValueError:
        data = {}
    return AuditEvent.model_construct(
        tenant_id=tenant_id,
        seq=seq,
        kind=kind,
        at_ms=at_ms,
        actor=actor,
        subject=subject,
        data=data if isinstance(data, dict) else {},
        prev_hash=prev_hash,
        event_hash=event_hash,
        body=body,
    )
