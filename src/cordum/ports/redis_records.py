"""The Redis store's records beside the jobs: approvals, policy history, API keys.

A mixin of :class:`~cordum.ports.redis_store.RedisStore`, as
:mod:`cordum.ports.sqlite_records` is of the SQLite store: it shares the store's client,
its committer (every write an atomic plan) and its audit chains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from redis.asyncio import Redis

from cordum.models.approval import ApprovalRecord, ApprovalStatus, closed_by_transition
from cordum.models.audit import AuditDraft
from cordum.models.audit_events import approval_event
from cordum.models.keys import ApiKeyRecord
from cordum.models.policy_records import PolicyBundleRecord, PolicySnapshotRecord
from cordum.models.state import JobState
from cordum.ports.redis_audit import AuditChains
from cordum.ports.redis_commit import Committer, Tx
from cordum.ports.redis_keys import Keys
from cordum.ports.redis_pages import newest_first, page_bound
from cordum.ports.redis_reads import CoalescedGets
from cordum.ports.store import ApprovalFilter, ApprovalPage, with_snapshot_version


class RecordKeeping:
    """Approvals, policy bundles and snapshots, and API keys on Redis."""

    _keys: Keys
    _chains: AuditChains
    _commit: Committer
    _api_key_gets: CoalescedGets
    """Every request looks its key up: concurrent lookups share one HMGET."""

    async def _ready(self) -> Redis:
        raise NotImplementedError  # provided by RedisStore

    def _write_approval(self, tx: Tx, approval: ApprovalRecord) -> None:
        """Create or replace a job's approval (it keeps its place in the listing)."""
        keys = self._keys
        tx.set(keys.approval(approval.job_id), approval.model_dump_json())
        tx.index(
            keys.approvals,
            keys.approvals_seq,
            approval.job_id,
            fresh=False,
            add=[keys.approvals_in(approval.status)],
            remove=[keys.approvals_in(s) for s in ApprovalStatus if s is not approval.status],
        )
        self._chains.seal(tx, approval_event(approval))

    def _closed_approval(
        self, tx: Tx, job_id: str, target: JobState, at: float, reason: str
    ) -> ApprovalRecord | None:
        """The pending approval of a job leaving APPROVAL_REQUIRED by another way than a
        human's answer (cancel, deadline), settled to match, so the two never disagree."""
        raw = tx.get(self._keys.approval(job_id))
        if raw is None:
            return None
        return closed_by_transition(ApprovalRecord.model_validate_json(raw), target, at, reason)

    # --- approvals --------------------------------------------------------------------------

    async def get_approval(self, job_id: str) -> ApprovalRecord | None:
        """See :meth:`cordum.ports.store.Store.get_approval`."""
        redis = await self._ready()
        raw = await redis.get(self._keys.approval(job_id))
        return None if raw is None else ApprovalRecord.model_validate_json(raw)

    async def list_approvals(
        self, filters: ApprovalFilter, *, cursor: str | None = None, limit: int = 50
    ) -> ApprovalPage:
        """See :meth:`cordum.ports.store.Store.list_approvals`."""
        redis = await self._ready()
        page_bound(cursor)  # a bad cursor is an error even when nothing could match
        keys = self._keys
        if filters.tenant_ids is not None and not filters.tenant_ids:
            return ApprovalPage(approvals=[], next_cursor=None)
        # Per-status indexes keep the expiry sweep (pending ones) off settled history.
        indexes = (
            [keys.approvals_in(status) for status in filters.statuses]
            if filters.statuses
            else [keys.approvals]
        )

        async def load(ids: list[bytes]) -> list[ApprovalRecord | None]:
            if not ids:
                return []
            raws = await redis.mget([keys.approval(i.decode()) for i in ids])
            return [_kept(raw, filters) for raw in raws]

        approvals, next_cursor = await newest_first(
            redis, indexes, load, cursor=cursor, limit=limit
        )
        return ApprovalPage(approvals=approvals, next_cursor=next_cursor)

    # --- policy -----------------------------------------------------------------------------

    async def put_policy_bundle(
        self, bundle: PolicyBundleRecord, audit: Sequence[AuditDraft] = ()
    ) -> None:
        """See :meth:`cordum.ports.store.Store.put_policy_bundle`."""
        await self._ready()
        data = bundle.model_dump_json()

        def plan(tx: Tx) -> None:
            tx.hset(self._keys.bundles, bundle.bundle_id, data)
            self._chains.seal_all(tx, audit)

        await self._commit.write(plan)

    async def get_policy_bundle(self, bundle_id: str) -> PolicyBundleRecord | None:
        """See :meth:`cordum.ports.store.Store.get_policy_bundle`."""
        redis = await self._ready()
        raw = await redis.hget(self._keys.bundles, bundle_id)
        return None if raw is None else PolicyBundleRecord.model_validate_json(raw)

    async def list_policy_bundles(self) -> list[PolicyBundleRecord]:
        """See :meth:`cordum.ports.store.Store.list_policy_bundles`."""
        redis = await self._ready()
        stored = await redis.hgetall(self._keys.bundles)
        # By id in byte order, as SQLite's BINARY collation sorts the UTF-8 ids.
        return [PolicyBundleRecord.model_validate_json(stored[i]) for i in sorted(stored)]

    async def delete_policy_bundle(self, bundle_id: str, audit: Sequence[AuditDraft] = ()) -> bool:
        """See :meth:`cordum.ports.store.Store.delete_policy_bundle`."""
        await self._ready()
        key = self._keys.bundles

        def plan(tx: Tx) -> bool:
            if tx.hget(key, bundle_id) is None:
                return False
            tx.hdel(key, bundle_id)
            self._chains.seal_all(tx, audit)
            return True

        return await self._commit.write(plan, [("HGET", key, bundle_id)])

    async def add_policy_snapshot(
        self,
        snapshot: PolicySnapshotRecord,
        audit: Sequence[AuditDraft] = (),
        bundles: Sequence[PolicyBundleRecord] | None = None,
    ) -> PolicySnapshotRecord:
        """See :meth:`cordum.ports.store.Store.add_policy_snapshot`."""
        await self._ready()
        keys = self._keys

        def plan(tx: Tx) -> PolicySnapshotRecord:
            last = tx.get(keys.policy_version)
            stored = snapshot.model_copy(update={"version": int(last or 0) + 1})
            tx.set(keys.policy_version, str(stored.version))
            tx.hset(keys.snapshots, str(stored.version), stored.model_dump_json())
            tx.set(keys.policy_active, str(stored.version))
            if bundles is not None:
                self._replace_bundles(tx, bundles)
            self._chains.seal_all(tx, with_snapshot_version(audit, stored.version))
            return stored

        return await self._commit.write(plan, [("GET", keys.policy_version)])

    async def activate_policy_snapshot(
        self,
        version: int,
        audit: Sequence[AuditDraft] = (),
        bundles: Sequence[PolicyBundleRecord] | None = None,
    ) -> PolicySnapshotRecord:
        """See :meth:`cordum.ports.store.Store.activate_policy_snapshot`."""
        await self._ready()
        keys = self._keys

        def plan(tx: Tx) -> PolicySnapshotRecord:
            raw = tx.hget(keys.snapshots, str(version))
            if raw is None:
                raise LookupError(f"no policy snapshot with version {version}")
            tx.set(keys.policy_active, str(version))
            if bundles is not None:
                self._replace_bundles(tx, bundles)
            self._chains.seal_all(tx, audit)
            return PolicySnapshotRecord.model_validate_json(raw)

        return await self._commit.write(plan, [("HGET", keys.snapshots, str(version))])

    def _replace_bundles(self, tx: Tx, bundles: Sequence[PolicyBundleRecord]) -> None:
        """Make the drafts exactly ``bundles``, inside the caller's write."""
        tx.delete_hash(self._keys.bundles)
        for bundle in bundles:
            tx.hset(self._keys.bundles, bundle.bundle_id, bundle.model_dump_json())

    async def list_policy_snapshots(self) -> list[PolicySnapshotRecord]:
        """See :meth:`cordum.ports.store.Store.list_policy_snapshots`."""
        redis = await self._ready()
        stored = await redis.hgetall(self._keys.snapshots)
        newest_first = sorted(stored, key=int, reverse=True)
        return [PolicySnapshotRecord.model_validate_json(stored[v]) for v in newest_first]

    async def get_policy_snapshot(self, version: int) -> PolicySnapshotRecord | None:
        """See :meth:`cordum.ports.store.Store.get_policy_snapshot`."""
        redis = await self._ready()
        raw = await redis.hget(self._keys.snapshots, str(version))
        return None if raw is None else PolicySnapshotRecord.model_validate_json(raw)

    async def active_policy_snapshot(self) -> PolicySnapshotRecord | None:
        """See :meth:`cordum.ports.store.Store.active_policy_snapshot`."""
        redis = await self._ready()
        version = await redis.get(self._keys.policy_active)
        return None if version is None else await self.get_policy_snapshot(int(version))

    # --- API keys ---------------------------------------------------------------------------

    async def put_api_key(self, key: ApiKeyRecord, audit: Sequence[AuditDraft] = ()) -> None:
        """See :meth:`cordum.ports.store.Store.put_api_key`."""
        await self._ready()
        keys = self._keys
        data = key.model_dump_json()

        def plan(tx: Tx) -> None:
            tx.hset(keys.api_keys, key.key_id, data)
            # A replaced (revoked) key keeps its place in the oldest-first listing.
            tx.index(keys.api_keys_order, keys.api_keys_seq, key.key_id, fresh=False)
            self._chains.seal_all(tx, audit)

        await self._commit.write(plan)

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """See :meth:`cordum.ports.store.Store.get_api_key`."""
        await self._ready()
        raw = await self._api_key_gets.get(key_id)
        return None if raw is None else ApiKeyRecord.model_validate_json(raw)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """See :meth:`cordum.ports.store.Store.list_api_keys`."""
        redis = await self._ready()
        ids = cast("list[bytes]", await redis.zrange(self._keys.api_keys_order, 0, -1))
        if not ids:
            return []
        raws = await redis.hmget(self._keys.api_keys, ids)
        return [ApiKeyRecord.model_validate_json(raw) for raw in raws if raw is not None]


def _kept(raw: bytes | str | None, filters: ApprovalFilter) -> ApprovalRecord | None:
    """The approval if it passes ``filters`` (statuses are the indexes' job)."""
    if raw is None:
        return None
    approval = ApprovalRecord.model_validate_json(raw)
    if filters.tenant_ids is not None and approval.tenant_id not in filters.tenant_ids:
        return None
    if filters.expires_before is not None and (
        approval.expires_at is None or approval.expires_at > filters.expires_before
    ):
        return None
    return approval
