"""The Redis store's dead-letter queue and worker registry.

A mixin of :class:`~cordum.ports.redis_store.RedisStore`: the DLQ is a hash of entries
with a sorted set for its newest-first listing (a put-back entry takes a new place, as
the newest); workers are one hash. Claiming an entry (:meth:`QueueKeeping.delete_dlq`)
is a plan like any write, so of racing replicas exactly one sees it and wins.
"""

from __future__ import annotations

from redis.asyncio import Redis

from cordum.models.pipeline import DLQEntry, WorkerRecord
from cordum.ports.redis_commit import Committer, Tx
from cordum.ports.redis_keys import Keys
from cordum.ports.redis_pages import newest_first, page_bound
from cordum.ports.store import DLQPage


class QueueKeeping:
    """The DLQ and the workers on Redis."""

    _keys: Keys
    _commit: Committer

    async def _ready(self) -> Redis:
        raise NotImplementedError  # provided by RedisStore

    async def list_dlq(
        self,
        *,
        cursor: str | None = None,
        limit: int = 50,
        tenant_ids: frozenset[str] | None = None,
    ) -> DLQPage:
        """See :meth:`cordum.ports.store.Store.list_dlq`."""
        redis = await self._ready()
        page_bound(cursor)
        if tenant_ids is not None and not tenant_ids:
            return DLQPage(entries=[], next_cursor=None)
        dlq_key = self._keys.dlq

        async def load(ids: list[bytes]) -> list[DLQEntry | None]:
            if not ids:
                return []
            entries = [
                None if raw is None else DLQEntry.model_validate_json(raw)
                for raw in await redis.hmget(dlq_key, ids)
            ]
            # The DLQ is small and rarely listed: its tenant filter reads the entries.
            if tenant_ids is None:
                return entries
            return [e if e is not None and e.tenant_id in tenant_ids else None for e in entries]

        entries, next_cursor = await newest_first(
            redis, [self._keys.dlq_order], load, cursor=cursor, limit=limit
        )
        return DLQPage(entries=entries, next_cursor=next_cursor)

    async def get_dlq(self, job_id: str) -> DLQEntry | None:
        """See :meth:`cordum.ports.store.Store.get_dlq`."""
        redis = await self._ready()
        raw = await redis.hget(self._keys.dlq, job_id)
        return None if raw is None else DLQEntry.model_validate_json(raw)

    async def delete_dlq(self, job_id: str) -> bool:
        """See :meth:`cordum.ports.store.Store.delete_dlq`."""
        await self._ready()
        keys = self._keys

        def plan(tx: Tx) -> bool:
            if tx.hget(keys.dlq, job_id) is None:
                return False
            tx.hdel(keys.dlq, job_id)
            tx.call("ZREM", keys.dlq_order, job_id)
            return True

        return await self._commit.write(plan, [("HGET", keys.dlq, job_id)])

    async def put_dlq(self, entry: DLQEntry) -> None:
        """See :meth:`cordum.ports.store.Store.put_dlq`."""
        await self._ready()
        await self._commit.write(lambda tx: self._put_dlq(tx, entry))

    async def count_dlq(self) -> int:
        """See :meth:`cordum.ports.store.Store.count_dlq`."""
        redis = await self._ready()
        return int(await redis.hlen(self._keys.dlq))

    def _put_dlq(self, tx: Tx, entry: DLQEntry) -> None:
        """Write (or replace) an entry; it lists as the newest."""
        tx.hset(self._keys.dlq, entry.job_id, entry.model_dump_json())
        tx.index(self._keys.dlq_order, self._keys.dlq_seq, entry.job_id, fresh=True)

    # --- workers ------------------------------------------------------------------------

    async def upsert_worker(self, worker: WorkerRecord) -> None:
        """See :meth:`cordum.ports.store.Store.upsert_worker`."""
        await self._ready()
        data = worker.model_dump_json()
        await self._commit.write(lambda tx: tx.hset(self._keys.workers, worker.worker_id, data))

    async def list_workers(self) -> list[WorkerRecord]:
        """See :meth:`cordum.ports.store.Store.list_workers`."""
        redis = await self._ready()
        stored = await redis.hgetall(self._keys.workers)
        return [WorkerRecord.model_validate_json(stored[i]) for i in sorted(stored)]

    async def remove_worker(self, worker_id: str) -> bool:
        """See :meth:`cordum.ports.store.Store.remove_worker`."""
        await self._ready()
        key = self._keys.workers

        def plan(tx: Tx) -> bool:
            if tx.hget(key, worker_id) is None:
                return False
            tx.hdel(key, worker_id)
            return True

        return await self._commit.write(plan, [("HGET", key, worker_id)])
