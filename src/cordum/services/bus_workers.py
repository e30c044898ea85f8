"""Workers that speak to the control plane over the bus (CAP workers, SDK workers on NATS).

HTTP/WebSocket workers call the services directly; bus workers publish instead, and this
service, run by every scheduler replica in one queue group, turns what they publish into
the same calls:

- ``sys.handshake`` / ``sys.heartbeat`` register and refresh the worker (its topics come
  from the handshake, or the heartbeat's capabilities);
- ``sys.job.claim`` (request/reply) moves jobs to RUNNING before the worker runs them,
  the line that keeps a job with an idempotency key from ever running twice. One request
  names every job the worker got at once, ``{worker_id, job_ids, again?}``, and is
  answered ``{claimed: [bool, ...]}`` in the same order (false: not this worker's);
- ``sys.job.progress`` claims a job a CAP worker started without asking, and records the
  report;
- ``sys.job.result`` completes the job (the bus keeps this subject durable: a result
  published while no scheduler is up waits for one).

Nothing here trusts the sender beyond what the job's record allows: a result or claim
from a worker the job was not sent to is ignored, as for every transport.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from cordum.models.pipeline import JobError
from cordum.ports import Bus, JobNotFoundError, Message, Subscription
from cordum.services import subjects
from cordum.services.execution import Execution, JobStateError
from cordum.services.workers import InvalidWorkerError, UnknownWorkerError, WorkerService

log = logging.getLogger(__name__)

CAP_TRANSPORT = "cap"
DEFAULT_POOL = "default"
MAX_CLAIMS = 1024
"""Jobs one claim request may name (a worker claims what arrived while it was busy)."""


class BusWorkers:
    """Registers bus workers and applies their claims, progress and results."""

    def __init__(
        self,
        bus: Bus,
        execution: Execution,
        workers: WorkerService,
        *,
        concurrency: int = 64,
        result_patience_s: float = 120.0,
    ) -> None:
        """``result_patience_s``: how long a result that cannot be recorded (store or
        kernel down) is retried before it is given up (and its job left to time out)."""
        self.bus = bus
        self.result_patience_s = result_patience_s
        self.execution = execution
        self.workers = workers
        self.concurrency = concurrency
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        """Subscribe (as one member of the scheduler queue group)."""
        for subject, handler, concurrency in (
            (subjects.RESULT, self._on_result, self.concurrency),
            (subjects.CLAIM, self._on_claim, self.concurrency),
            (subjects.PROGRESS, self._on_progress, self.concurrency),
            (subjects.HANDSHAKE, self._on_handshake, 1),
            (subjects.CAP_HEARTBEAT, self._on_heartbeat, 1),
        ):
            self._subscriptions.append(
                await self.bus.subscribe(
                    subject, handler, queue=subjects.SCHEDULER_QUEUE, concurrency=concurrency
                )
            )

    async def stop(self) -> None:
        """Stop taking messages; those being handled finish."""
        for subscription in self._subscriptions:
            await subscription.unsubscribe()
        self._subscriptions.clear()

    async def _on_result(self, message: Message) -> None:
        data = message.data
        job_id, worker_id = str(data["job_id"]), str(data["worker_id"])
        error = None
        if not data.get("succeeded"):
            raw = data.get("error") or {}
            error = JobError(
                code=str(raw.get("code") or "failed"), message=str(raw.get("message") or "")
            )
        deadline = time.monotonic() + self.result_patience_s
        delay = 0.1
        while True:
            try:
                await self.execution.complete(
                    worker_id,
                    job_id,
                    succeeded=bool(data.get("succeeded")),
                    result=data.get("result"),
                    error=error,
                    retryable=bool(data.get("retryable", True)),
                )
                return
            except JobNotFoundError:
                log.warning("result from %s for unknown job %s ignored", worker_id, job_id)
                return
            except Exception as exc:
                # The store or the kernel (output rules) is down. A result is the one thing
                # the control plane cannot re-drive: dropped, its job would time out and
                # run again. Keep it (the bus holds the message meanwhile) and retry.
                if time.monotonic() + delay > deadline:
                    log.error("could not record the result of job %s: %s", job_id, exc)
                    raise
                log.warning("recording the result of job %s failed (%s); retrying", job_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _on_claim(self, message: Message) -> None:
        data = message.data
        worker_id, job_ids = str(data.get("worker_id") or ""), _job_ids(data.get("job_ids"))
        if not worker_id or job_ids is None:
            problem = f"a claim names a worker_id and 1-{MAX_CLAIMS} job_ids (strings)"
            log.warning("claim from %r refused: %s", worker_id, problem)
            if message.reply:
                await self.bus.publish(message.reply, {"error": problem})
            return
        again = data.get("again") is True
        # Every claim of the batch is settled before any failure is raised: no reply then,
        # and the worker asks again for all of them, marked ``again``.
        outcomes = await asyncio.gather(
            *(self.execution.claim(worker_id, job_id, again=again) for job_id in job_ids),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        if message.reply:
            await self.bus.publish(message.reply, {"claimed": [o is not None for o in outcomes]})

    async def _on_progress(self, message: Message) -> None:
        data = message.data
        job_id, worker_id = str(data["job_id"]), str(data["worker_id"])
        # A CAP worker does not claim: its first progress report is the moment it started.
        await self.execution.claim(worker_id, job_id)
        report = {"percent": data.get("percent"), "message": data.get("message")}
        try:
            await self.execution.progress(worker_id, job_id, report)
        except (JobNotFoundError, JobStateError) as exc:
            log.info("progress from %s ignored: %s", worker_id, exc)

    async def _on_handshake(self, message: Message) -> None:
        data = message.data
        if data.get("role") not in (None, "worker", "unspecified") or not data.get("topics"):
            return
        await self._register(str(data["worker_id"]), list(data["topics"]), None, None)

    async def _on_heartbeat(self, message: Message) -> None:
        data = message.data
        worker_id = str(data["worker_id"])
        capacity = max(1, int(data.get("max_parallel") or 1))
        try:
            await self._register(
                worker_id, list(data.get("topics") or ()), data.get("pool"), capacity
            )
            held = data.get("job_ids")
            await self.workers.heartbeat(
                worker_id,
                int(data.get("active_jobs") or 0),
                None if held is None else [str(j) for j in held],
                sent_at=data.get("sent_at"),
            )
        except UnknownWorkerError:
            log.info("heartbeat from %s, which has not said which topics it serves", worker_id)

    async def _register(
        self, worker_id: str, topics: list[str], pool: Any, capacity: int | None
    ) -> None:
        """Register or update a bus worker; what a message does not say (a handshake has
        no pool or capacity, an Agent's heartbeat no topics) keeps its known value, so
        handshake and heartbeat may arrive in either order, at different replicas."""
        known = await self.workers.find(worker_id)
        topics = topics or (list(known.topics) if known else [])
        if not topics:
            return
        pool = str(pool or (known.pool if known else DEFAULT_POOL))
        capacity = capacity or (known.capacity if known else 1)
        if (
            known is not None
            and set(known.topics) == set(topics)
            and known.capacity == capacity
            and known.pool == pool
        ):
            return
        try:
            await self.workers.register(
                worker_id=worker_id,
                pool=pool,
                topics=topics,
                capacity=capacity,
                transport=CAP_TRANSPORT,
            )
        except InvalidWorkerError as exc:
            log.warning("bus worker %s not registered: %s", worker_id, exc)


def _job_ids(job_ids: Any) -> list[str] | None:
    """``job_ids`` if it is what a claim must name, 1 to MAX_CLAIMS job ids; else None."""
    if not isinstance(job_ids, list) or not 0 < len(job_ids) <= MAX_CLAIMS:
        return None
    if not all(isinstance(job_id, str) and job_id for job_id in job_ids):
        return None
    return job_ids
