"""Listing and counting the Redis store's jobs through their indexes.

A mixin of :class:`~cordum.ports.redis_store.RedisStore`. Every job is in the sorted set
of all jobs, of its state and of its tenant, each scored by creation order; a listing
reads the narrowest of them (the reconciler's open states, an API key's tenants) and
checks the rest of the filter on the records, and counting states is a ``ZCARD`` each.
"""

from __future__ import annotations

from collections.abc import Collection

from redis.asyncio import Redis

from cordum.models.pipeline import JobRecord
from cordum.models.state import JobState
from cordum.ports.redis_keys import Keys
from cordum.ports.redis_pages import newest_first, page_bound
from cordum.ports.store import JobFilter, JobPage


class JobListings:
    """``list_jobs`` and ``count_jobs_by_state`` on Redis."""

    _keys: Keys

    async def _ready(self) -> Redis:
        raise NotImplementedError  # provided by RedisStore

    async def list_jobs(
        self, filters: JobFilter, *, cursor: str | None = None, limit: int = 50
    ) -> JobPage:
        """See :meth:`cordum.ports.store.Store.list_jobs`."""
        redis = await self._ready()
        page_bound(cursor)  # a bad cursor is an error even when nothing could match
        tenants = _tenants(filters)
        if tenants is not None and not tenants:
            return JobPage(jobs=[], next_cursor=None)
        indexes = await self._job_indexes(redis, filters.states, tenants)
        keys = self._keys

        async def load(ids: list[bytes]) -> list[JobRecord | None]:
            if not ids:
                return []
            raws = await redis.mget([keys.job(i.decode()) for i in ids])
            return [_kept(raw, filters, tenants) for raw in raws]

        jobs, next_cursor = await newest_first(redis, indexes, load, cursor=cursor, limit=limit)
        return JobPage(jobs=jobs, next_cursor=next_cursor)

    async def _job_indexes(
        self, redis: Redis, states: Collection[JobState], tenants: Collection[str] | None
    ) -> list[str]:
        """The indexes a listing reads: per state or per tenant, whichever holds fewer."""
        keys = self._keys
        by_state = [keys.jobs_in_state(s) for s in states]
        by_tenant = [keys.jobs_of_tenant(t) for t in tenants or ()]
        if not (by_state and by_tenant):
            return by_state or by_tenant or [keys.jobs]
        pipe = redis.pipeline(transaction=False)
        for index in by_state + by_tenant:
            pipe.zcard(index)
        sizes = await pipe.execute()
        return by_state if sum(sizes[: len(by_state)]) <= sum(sizes[len(by_state) :]) else by_tenant

    async def count_jobs_by_state(self) -> dict[JobState, int]:
        """See :meth:`cordum.ports.store.Store.count_jobs_by_state`."""
        redis = await self._ready()
        pipe = redis.pipeline(transaction=False)
        for state in JobState:
            pipe.zcard(self._keys.jobs_in_state(state))
        counts = await pipe.execute()
        return {state: int(n) for state, n in zip(JobState, counts, strict=True) if n}


def _tenants(filters: JobFilter) -> frozenset[str] | None:
    """The tenants a job filter allows (None: any)."""
    if filters.tenant_id is None:
        return filters.tenant_ids
    if filters.tenant_ids is None:
        return frozenset({filters.tenant_id})
    return filters.tenant_ids & {filters.tenant_id}


def _kept(
    raw: bytes | str | None, filters: JobFilter, tenants: frozenset[str] | None
) -> JobRecord | None:
    """The job if it passes ``filters`` (checked in full: indexes only narrow the scan)."""
    if raw is None:
        return None
    job = JobRecord.model_validate_json(raw)
    checks = (
        tenants is None or job.tenant_id in tenants,
        filters.submitter_key is None or job.submitter_key == filters.submitter_key,
        not filters.states or job.state in filters.states,
        filters.topic is None or job.topic == filters.topic,
        filters.updated_before is None or job.updated_at < filters.updated_before,
        filters.due_before is None
        or (job.next_attempt_at is not None and job.next_attempt_at <= filters.due_before),
    )
    return job if all(checks) else None
