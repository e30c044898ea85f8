"""Workers: registration and heartbeats (WorkerService), and the scheduler's live view.

The store keeps every registration; the bus carries ``sys.worker.event`` notices so each
scheduler's :class:`WorkerDirectory` sees workers join, beat, drain and leave. A worker
is live while its last heartbeat is younger than ``lost_after`` seconds. A worker is sent
only jobs of the tenants it serves (those of the key that registered it), whatever pool
and topics it claims: a job no live worker serves waits as if its pool had none.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cordum.models.pipeline import WorkerRecord
from cordum.models.subjects import subject_matches, valid_subject
from cordum.ports import Bus, Store
from cordum.services import subjects


class UnknownWorkerError(LookupError):
    """The worker is not registered (any more); it should register again."""

    def __init__(self, worker_id: str) -> None:
        super().__init__(f"worker {worker_id!r} is not registered; register it again")
        self.worker_id = worker_id


class InvalidWorkerError(ValueError):
    """A registration that cannot be accepted (bad id, pool or topic pattern)."""


class WorkerService:
    """What workers (in-process or remote) call to join, beat and leave."""

    def __init__(self, store: Store, bus: Bus, *, lost_after: float) -> None:
        self.store = store
        self.bus = bus
        self.lost_after = lost_after

    async def register(
        self,
        *,
        pool: str,
        topics: list[str],
        capacity: int,
        transport: str,
        worker_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        owner_key: str | None = None,
        tenants: Iterable[str] | None = None,
    ) -> WorkerRecord:
        """Register (or re-register) a worker; returns its record with its id.

        ``owner_key`` is the id of the API key registering it (see :attr:`WorkerRecord.
        owner_key`); the caller checks that a re-registration comes from the same key.
        ``tenants`` are the tenants whose jobs it may be sent (None: every tenant).
        """
        worker_id = worker_id or f"w-{uuid.uuid4().hex[:12]}"
        if not subjects.WORKER_ID.match(worker_id):
            raise InvalidWorkerError(
                f"worker_id {worker_id!r}: use 1-128 letters, digits, '-' or '_'"
            )
        if not pool.strip():
            raise InvalidWorkerError("pool must not be empty")
        if not topics:
            raise InvalidWorkerError("a worker needs at least one topic pattern")
        for topic in topics:
            if not valid_subject(topic, pattern=True):
                raise InvalidWorkerError(
                    f"topic pattern {topic!r}: dot-separated tokens, '*' for one token,"
                    " a final '>' for the rest"
                )
        if capacity < 1:
            raise InvalidWorkerError("capacity must be at least 1")
        now = time.time()
        record = WorkerRecord(
            worker_id=worker_id,
            pool=pool,
            topics=tuple(topics),
            capacity=capacity,
            transport=transport,
            labels=dict(labels or {}),
            registered_at=now,
            last_heartbeat=now,
            owner_key=owner_key,
            tenants=None if tenants is None else tuple(sorted(set(tenants))),
        )
        await self.store.upsert_worker(record)
        await self._announce(record, "register")
        return record

    async def heartbeat(
        self,
        worker_id: str,
        active_jobs: int,
        job_ids: list[str] | None = None,
        sent_at: float | None = None,
    ) -> WorkerRecord:
        """Record that a worker is alive; raises :class:`UnknownWorkerError`.

        ``job_ids`` (the jobs the worker holds: running, or finished with the result not
        yet delivered) lets the scheduler find jobs claimed for it that never reached it.
        ``sent_at`` is when the worker made that list (default: now), for a heartbeat that
        took a while to arrive: only jobs claimed well before it can be missing from it.
        """
        now = time.time()
        record = await self._known(worker_id)
        record = record.model_copy(
            update={"last_heartbeat": now, "active_jobs": max(0, active_jobs)}
        )
        await self.store.upsert_worker(record)
        await self._announce(record, "heartbeat", job_ids, min(now, sent_at or now))
        return record

    async def drain(self, worker_id: str) -> None:
        """Stop dispatching to a worker; its running jobs finish."""
        record = await self._known(worker_id)
        await self._announce(record, "drain")

    async def deregister(self, worker_id: str) -> None:
        """Forget a worker (after a drain, or when it shuts down)."""
        record = await self._known(worker_id)
        await self.store.remove_worker(worker_id)
        await self._announce(record, "leave")

    async def find(self, worker_id: str) -> WorkerRecord | None:
        """The worker's registration, or None."""
        for record in await self.store.list_workers():
            if record.worker_id == worker_id:
                return record
        return None

    async def _known(self, worker_id: str) -> WorkerRecord:
        record = await self.find(worker_id)
        if record is None:
            raise UnknownWorkerError(worker_id)
        return record

    async def _announce(
        self,
        record: WorkerRecord,
        event: str,
        job_ids: list[str] | None = None,
        listed_at: float | None = None,
    ) -> None:
        notice: dict[str, object] = {"event": event, "worker": record.model_dump(mode="json")}
        if job_ids is not None:
            notice["job_ids"] = job_ids
            notice["listed_at"] = listed_at
        await self.bus.publish(subjects.WORKER_EVENTS, notice)


@dataclass
class LiveWorker:
    """The scheduler's view of one worker."""

    record: WorkerRecord
    active: set[str] = field(default_factory=set)
    draining: bool = False

    @property
    def free_slots(self) -> int:
        """How many more jobs it may take now."""
        return self.record.capacity - len(self.active)


class WorkerDirectory:
    """Live workers, their load, and which pool serves a topic."""

    def __init__(
        self,
        *,
        lost_after: float,
        static_pools: Mapping[str, str],
        pool_subjects: Iterable[str] = (),
        pool_subject_capacity: int = 64,
    ) -> None:
        """``pool_subjects``: topic patterns whose jobs, when no worker that announces
        itself serves them, are published to the topic's own subject (CAP pool dispatch)
        for workers that send no heartbeats; at most ``pool_subject_capacity`` at a time
        per pattern, their liveness left to the dispatch and running timeouts."""
        self.lost_after = lost_after
        self.static_pools = dict(static_pools)
        self.workers: dict[str, LiveWorker] = {}
        self._slot_of: dict[str, str] = {}
        for pattern in pool_subjects:
            holder = subjects.pool_holder(pattern)
            self.workers[holder] = LiveWorker(
                WorkerRecord(
                    worker_id=holder,
                    pool=holder,
                    topics=(pattern,),
                    capacity=pool_subject_capacity,
                    transport="cap-pool",
                    registered_at=time.time(),
                    last_heartbeat=math.inf,  # never lost: nothing beats for it
                )
            )

    def apply(self, event: str, record: WorkerRecord) -> None:
        """Take in a ``sys.worker.event`` notice."""
        if event == "leave":
            self.workers.pop(record.worker_id, None)
            return
        live = self.workers.get(record.worker_id)
        if live is None:
            live = self.workers[record.worker_id] = LiveWorker(record)
        else:
            live.record = record
        if event == "drain":
            live.draining = True
        elif event == "register":
            live.draining = False

    def is_live(self, worker: LiveWorker, now: float | None = None) -> bool:
        """Heartbeat recent enough."""
        now = time.time() if now is None else now
        return now - worker.record.last_heartbeat <= self.lost_after

    def pool_for(self, topic: str, tenant_id: str) -> str | None:
        """The pool that serves ``topic``: configured mapping first, then the topics of
        workers serving ``tenant_id``, then a pool subject, then the topics of any worker
        (whose pool then has no candidate for the job: it waits for one)."""
        for pattern, pool in self.static_pools.items():
            if subject_matches(pattern, topic):
                return pool
        fallback = pooled = None
        for live in self.workers.values():
            if any(subject_matches(p, topic) for p in live.record.topics):
                if subjects.dispatched_to_pool(live.record.worker_id):
                    pooled = pooled or live.record.pool  # only when no worker announced
                elif live.record.serves(tenant_id):
                    return live.record.pool
                else:
                    fallback = fallback or live.record.pool
        return pooled or fallback

    def candidates(self, pool: str, topic: str, *, tenant_id: str | None) -> list[LiveWorker]:
        """Live, non-draining workers of ``pool`` that handle ``topic`` for ``tenant_id``.

        ``tenant_id`` None: whatever tenants they serve (to explain a wait, never to
        dispatch).
        """
        now = time.time()
        return [
            w
            for w in self.workers.values()
            if w.record.pool == pool
            and not w.draining
            and (tenant_id is None or w.record.serves(tenant_id))
            and self.is_live(w, now)
            and any(subject_matches(p, topic) for p in w.record.topics)
        ]

    def free_slots(self, pool: str, topic: str, *, tenant_id: str) -> int:
        """Free slots across the candidates for ``topic`` in ``pool`` for ``tenant_id``."""
        candidates = self.candidates(pool, topic, tenant_id=tenant_id)
        return sum(max(0, worker.free_slots) for worker in candidates)

    def pick(self, pool: str, topic: str, *, tenant_id: str) -> LiveWorker | None:
        """The least-loaded candidate for a job of ``tenant_id`` with a free slot, or None."""
        best: LiveWorker | None = None
        best_load = 2.0
        for worker in self.candidates(pool, topic, tenant_id=tenant_id):
            if worker.free_slots <= 0:
                continue
            load = len(worker.active) / worker.record.capacity
            if load < best_load:
                best, best_load = worker, load
        return best

    def reserve(self, worker: LiveWorker, job_id: str) -> None:
        """Count ``job_id`` against ``worker``'s slots."""
        worker.active.add(job_id)
        self._slot_of[job_id] = worker.record.worker_id

    def release(self, job_id: str) -> LiveWorker | None:
        """Free the slot ``job_id`` held; returns the worker it was on, if known."""
        worker_id = self._slot_of.pop(job_id, None)
        worker = self.workers.get(worker_id) if worker_id else None
        if worker is not None:
            worker.active.discard(job_id)
        return worker

    def holder_of(self, job_id: str) -> str | None:
        """The worker a job's slot is on."""
        return self._slot_of.get(job_id)

    def lost(self, now: float | None = None) -> list[LiveWorker]:
        """Workers whose heartbeat is too old."""
        now = time.time() if now is None else now
        return [w for w in self.workers.values() if not self.is_live(w, now)]
