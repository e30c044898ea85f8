"""The shared Store: Redis, written by every scheduler and gateway replica at once.

Every write is a plan committed atomically by :mod:`cordum.ports.redis_commit`: the
plan reads the job (and the chain heads it appends to), checks the transition table
and ``expect``, and queues the new record, its index moves, its events, decisions,
approval, DLQ entry and sealed audit events; the commit applies all of it only if
nothing it read has changed meanwhile, else plans again on the fresh values. So a
write is all-or-nothing, and racing replicas get exactly the outcomes one process
would give them. Key layout: :mod:`cordum.ports.redis_keys`.

The methods are split by what they keep: jobs here, their listings in
:mod:`~cordum.ports.redis_job_lists`, DLQ and workers in
:mod:`~cordum.ports.redis_queues`, approvals, policy and keys in
:mod:`~cordum.ports.redis_records`, the audit chains in :mod:`~cordum.ports.redis_audit`,
the per-minute tally of decisions in :mod:`~cordum.ports.redis_tally`.

Durability is the server's: run it with ``appendonly yes`` (and ``noeviction``), or a
restart of Redis loses what a restart of SQLite would not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from cordum.models.approval import ApprovalRecord
from cordum.models.audit import AuditDraft, ChainHasher
from cordum.models.audit_events import decision_event, transition_event
from cordum.models.pipeline import (
    DecisionEntry,
    DLQEntry,
    IdempotencyEntry,
    JobEvent,
    JobRecord,
)
from cordum.models.state import IllegalTransitionError, JobState, can_transition
from cordum.ports.job_changes import moved, transition_steps, updated
from cordum.ports.redis_audit import AuditChains, AuditTrail, check_sealing
from cordum.ports.redis_commit import LINGER_S, Committer, Read, StoreClosedError, Tx
from cordum.ports.redis_job_lists import JobListings
from cordum.ports.redis_keys import Keys
from cordum.ports.redis_pool import MAX_CONNECTIONS, POOL_TIMEOUT_S, pooled_client
from cordum.ports.redis_queues import QueueKeeping
from cordum.ports.redis_reads import CoalescedGets
from cordum.ports.redis_records import RecordKeeping
from cordum.ports.redis_tally import TALLY_SCRIPT, DecisionTally, count_decision
from cordum.ports.store import (
    CreateOutcome,
    JobNotFoundError,
    TransitionOutcome,
)

log = logging.getLogger(__name__)

PARSED_JOBS = 4096
"""Job records kept parsed, by their stored bytes (least recently read go first)."""


class RedisStore(JobListings, QueueKeeping, RecordKeeping, AuditTrail, DecisionTally):
    """The Store port on Redis; every key starts with ``prefix``.

    ``hasher`` seals the audit chain (give it the HMAC key, when one is configured).
    Nothing is sent until the first call, which checks that the namespace's chains are
    sealed the same way (:class:`~cordum.ports.sqlite_audit.AuditKeyMismatchError`);
    :meth:`connect` does that check up front. Redis errors reach the caller as they are.

    Calls beyond ``max_connections`` at once wait for a connection (up to
    ``pool_timeout`` seconds) rather than fail: a burst of requests is queued, not refused.
    ``commit_linger_s``: how long a busy process's next commit waits for more writes to
    join it (see :mod:`cordum.ports.redis_commit`).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "cordum:",
        hasher: ChainHasher | None = None,
        max_connections: int = MAX_CONNECTIONS,
        pool_timeout: float = POOL_TIMEOUT_S,
        commit_linger_s: float = LINGER_S,
    ) -> None:
        self.prefix = prefix
        self._redis = pooled_client(url, max_connections=max_connections, pool_timeout=pool_timeout)
        self._keys = Keys(prefix)
        self._hasher = hasher or ChainHasher()
        self._chains = AuditChains(self._keys, self._hasher)
        self._commit = Committer(self._redis, linger_s=commit_linger_s)
        self._tally = self._redis.register_script(TALLY_SCRIPT)
        self._sealing_checked = False
        self._sealing_lock = asyncio.Lock()
        self._sealer: asyncio.Task[None] | None = None
        self._gets = CoalescedGets(self._redis.mget)
        self._api_key_gets = CoalescedGets(
            lambda key_ids: self._redis.hmget(self._keys.api_keys, key_ids)
        )
        self._parsed_jobs: dict[bytes, JobRecord] = {}
        self._sealer_stopping = False
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        prefix: str = "cordum:",
        hasher: ChainHasher | None = None,
        commit_linger_s: float = LINGER_S,
    ) -> RedisStore:
        """A store whose server is reachable and whose chains this hasher may continue."""
        store = cls(url, prefix=prefix, hasher=hasher, commit_linger_s=commit_linger_s)
        try:
            await store._ready()
        except BaseException:
            await store.close()
            raise
        return store

    async def _ready(self) -> Redis:
        if self._closed:
            raise StoreClosedError("the store is closed")
        if not self._sealing_checked:
            async with self._sealing_lock:
                if not self._sealing_checked:
                    await check_sealing(self._redis, self._keys, self._hasher)
                    self._sealing_checked = True
        if self._sealer is None:
            self._chains.wake = asyncio.Event()
            self._sealer = asyncio.create_task(self._seal_loop(), name="cordum-audit-sealer")
        return self._redis

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
        await self._ready()
        keys = self._keys
        job_key = keys.job(job.id)

        def plan(tx: Tx) -> CreateOutcome:
            if idempotency is not None:
                idem_key = keys.idempotency(idempotency.tenant_id)
                taken = tx.hget(idem_key, idempotency.key)
                if taken is not None:
                    return CreateOutcome(
                        created=False, existing=IdempotencyEntry.model_validate_json(taken)
                    )
                tx.hset(idem_key, idempotency.key, idempotency.model_dump_json())
            if tx.get(job_key) is not None:
                raise ValueError(f"a job with id {job.id!r} already exists")
            tx.set(job_key, job.model_dump_json())
            tx.index(
                keys.jobs,
                keys.jobs_seq,
                job.id,
                fresh=True,
                add=[keys.jobs_in_state(job.state), keys.jobs_of_tenant(job.tenant_id)],
            )
            self._add_event(tx, job, None, job.state, job.created_at, event_reason)
            self._add_decision(tx, job.tenant_id, decision)
            if approval is not None:
                self._write_approval(tx, approval)
            return CreateOutcome(created=True, job=job)

        reads: list[Read] = [("GET", job_key)]
        if idempotency is not None:
            reads.append(("HGET", keys.idempotency(idempotency.tenant_id), idempotency.key))
        return await self._commit.write(plan, reads)

    async def get_job(self, job_id: str) -> JobRecord | None:
        """See :meth:`cordum.ports.store.Store.get_job`."""
        await self._ready()
        raw = await self._gets.get(self._keys.job(job_id))
        if raw is None:
            return None
        return self._parsed(raw)

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
        await self._ready()
        keys = self._keys
        job_key = keys.job(job_id)
        at = time.time() if now is None else now

        def plan(tx: Tx) -> TransitionOutcome:
            current = self._require(tx, job_id)
            previous = current.state
            steps = transition_steps(
                current, target, expect=expect, reason=reason, via=via, via_reason=via_reason
            )
            if steps is None:
                return TransitionOutcome(job=current, changed=False, previous=previous)
            if approval is None and previous is JobState.APPROVAL_REQUIRED:
                tx.need([("GET", keys.approval(job_id))])
            job = moved(current, target, changes, at)
            tx.set(job_key, job.model_dump_json())
            tx.index(
                keys.jobs,
                keys.jobs_seq,
                job_id,
                fresh=False,
                add=[keys.jobs_in_state(target)],
                remove=[keys.jobs_in_state(previous)],
            )
            for source, destination, why in steps:
                self._add_event(tx, job, source, destination, at, why)
            if decision is not None:
                self._add_decision(tx, job.tenant_id, decision)
            settled = approval
            if settled is None and previous is JobState.APPROVAL_REQUIRED:
                settled = self._closed_approval(tx, job_id, target, at, reason)
            if settled is not None:
                self._write_approval(tx, settled)
            self._chains.seal_all(tx, audit)
            if dlq is not None:
                self._put_dlq(tx, dlq)
            return TransitionOutcome(job=job, changed=True, previous=previous)

        return await self._commit.write(plan, [("GET", job_key)])

    async def update_job(
        self,
        job_id: str,
        *,
        expect: Collection[JobState],
        changes: Mapping[str, Any],
        decision: DecisionEntry | None = None,
    ) -> JobRecord:
        """See :meth:`cordum.ports.store.Store.update_job`."""
        await self._ready()
        job_key = self._keys.job(job_id)
        stamp = time.time()

        def plan(tx: Tx) -> JobRecord:
            job = updated(self._require(tx, job_id), expect, changes, stamp)
            tx.set(job_key, job.model_dump_json())
            if decision is not None:
                self._add_decision(tx, job.tenant_id, decision)
            return job

        return await self._commit.write(plan, [("GET", job_key)])

    async def job_events(self, job_id: str) -> list[JobEvent]:
        """See :meth:`cordum.ports.store.Store.job_events`."""
        redis = await self._ready()
        events = []
        for position, raw in enumerate(await redis.lrange(self._keys.events(job_id), 0, -1)):
            source, target, at, reason = orjson.loads(raw)
            events.append(
                JobEvent(
                    seq=position + 1,
                    job_id=job_id,
                    from_state=None if source is None else JobState(source),
                    to_state=JobState(target),
                    at=at,
                    reason=reason,
                )
            )
        return events

    async def job_decisions(self, job_id: str) -> list[DecisionEntry]:
        """See :meth:`cordum.ports.store.Store.job_decisions`."""
        redis = await self._ready()
        raws = await redis.lrange(self._keys.decisions(job_id), 0, -1)
        return [DecisionEntry.model_validate_json(raw) for raw in raws]

    async def get_idempotency(self, tenant_id: str, key: str) -> IdempotencyEntry | None:
        """See :meth:`cordum.ports.store.Store.get_idempotency`."""
        redis = await self._ready()
        raw = await redis.hget(self._keys.idempotency(tenant_id), key)
        return None if raw is None else IdempotencyEntry.model_validate_json(raw)

    # --- lifetime -----------------------------------------------------------------------

    async def close(self) -> None:
        """See :meth:`cordum.ports.store.Store.close`; queued writes finish first, and
        their events are sealed."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._gets.idle()
            await self._api_key_gets.idle()
            await self._commit.close()
            if self._sealer is not None and self._chains.wake is not None:
                # Not cancelled: a Redis call cancelled midway can leave its connection
                # hanging. It finishes its round and stops.
                self._sealer_stopping = True
                self._chains.wake.set()
                await self._sealer
            await self.seal_touched(self._redis)
        finally:
            await self._redis.aclose()

    async def _seal_loop(self) -> None:
        """Seal what this process's writes recorded, in batches, as they commit."""
        wake = self._chains.wake
        assert wake is not None
        while not self._sealer_stopping:
            await wake.wait()
            wake.clear()
            try:
                await self.seal_touched(self._redis)
            except Exception as exc:  # the events wait in Redis; any later seal takes them
                log.warning("sealing audit events failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                wake.set()

    async def flush_namespace(self) -> int:
        """Delete every key under this store's prefix; how many. For tests and teardown.

        It walks the whole keyspace (``SCAN``), so it is no tool for a busy production
        server.
        """
        redis = await self._ready()
        pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix) + "*"
        deleted = 0
        batch: list[bytes] = []
        async for key in redis.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await redis.unlink(*batch)
                batch = []
        if batch:
            deleted += await redis.unlink(*batch)
        return deleted

    # --- internals ----------------------------------------------------------------------

    def _require(self, tx: Tx, job_id: str) -> JobRecord:
        """The job as ``tx`` sees it; JobNotFoundError when there is none."""
        raw = tx.get(self._keys.job(job_id))
        if raw is None:
            raise JobNotFoundError(job_id)
        return self._parsed(raw)

    def _parsed(self, raw: bytes) -> JobRecord:
        """The record ``raw`` encodes; the same bytes are parsed once (a job is read a few
        times between two writes: by the scheduler, then by each write's plan, and a
        record is frozen, so the parsed one can be shared)."""
        job = self._parsed_jobs.pop(raw, None)
        if job is None:
            job = JobRecord.model_validate_json(raw)
            if len(self._parsed_jobs) >= PARSED_JOBS:
                del self._parsed_jobs[next(iter(self._parsed_jobs))]
        self._parsed_jobs[raw] = job
        return job

    def _add_event(
        self,
        tx: Tx,
        job: JobRecord,
        source: JobState | None,
        target: JobState,
        at: float,
        reason: str,
    ) -> None:
        event = [None if source is None else source.value, target.value, at, reason]
        tx.call("RPUSH", self._keys.events(job.id), orjson.dumps(event).decode())
        self._chains.seal(tx, transition_event(job, source, target, at, reason))

    def _add_decision(self, tx: Tx, tenant_id: str, decision: DecisionEntry) -> None:
        tx.call("RPUSH", self._keys.decisions(decision.job_id), decision.model_dump_json())
        count_decision(tx, self._keys, tenant_id, decision)
        self._chains.seal(tx, decision_event(tenant_id, decision))
