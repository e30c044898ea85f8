"""Worker connections: how dispatched jobs reach a worker, in-process or over the network.

Every worker, wherever it runs, gets its jobs the same way: the scheduler publishes to
``worker.<id>.jobs``, a :class:`Connection` subscribed there queues the assignment, and
the worker's transport (in-process call, HTTP long-poll, WebSocket) takes it from the
queue, claiming it (RUNNING) just before handing it over. Cancels arrive the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from cordum.models.pipeline import JobAssignment, JobError
from cordum.ports import Bus, Message, Subscription
from cordum.services import subjects
from cordum.services.execution import Execution, JobStateError
from cordum.services.workers import WorkerService

log = logging.getLogger(__name__)

Item = JobAssignment | str
"""A job to run, or the id of a job to cancel."""


class Connection:
    """The inbox of one connected worker."""

    def __init__(self, worker_id: str, execution: Execution) -> None:
        self.worker_id = worker_id
        self.execution = execution
        self.inbox: asyncio.Queue[JobAssignment | str] = asyncio.Queue()
        self.subscription: Subscription | None = None
        self.closed = asyncio.Event()
        self.cancel_listener: Callable[[str], None] | None = None
        """Set by an in-process worker: cancels reach it even with every slot busy."""

    def cancel(self, job_id: str) -> None:
        """Pass a cancel on to the worker: pushed to its listener, else queued for a take."""
        if self.cancel_listener is not None:
            self.cancel_listener(job_id)
        else:
            self.inbox.put_nowait(job_id)

    async def on_job(self, message: Message) -> None:
        """A dispatched assignment arrived from the bus."""
        self.inbox.put_nowait(JobAssignment.model_validate(message.data))

    async def take(self, max_jobs: int, wait_s: float) -> list[Item]:
        """Up to ``max_jobs`` claimed assignments (plus any cancels), waiting up to ``wait_s``.

        Everything already queued is claimed at once, so the claims share one commit.
        Cancels come after the jobs taken with them: a cancel queued before a job was
        claimed already made the claim fail, so one listed here is for a job that runs.
        """
        jobs: list[Item] = []
        cancels: list[Item] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_s)
        while len(jobs) < max_jobs:
            pulled: list[Item] = []
            claims: list[Coroutine[Any, Any, JobAssignment | None]] = []
            if self.inbox.empty():
                remaining = deadline - loop.time()
                if jobs or cancels or remaining <= 0 or self.closed.is_set():
                    break
                first = await self._next(remaining)
                if first is None:
                    break
                pulled.append(first)
            while pulled or not self.inbox.empty():
                item = pulled.pop() if pulled else self.inbox.get_nowait()
                if isinstance(item, str):
                    cancels.append(item)
                else:
                    claims.append(self.execution.claim(self.worker_id, item.job_id))
                if len(jobs) + len(claims) >= max_jobs:
                    break
            jobs.extend(claimed for claimed in await asyncio.gather(*claims) if claimed is not None)
        return [*jobs, *cancels]

    async def _next(self, timeout: float) -> JobAssignment | str | None:
        """The next inbox item, or None when the wait ends or the connection closes."""
        getter = asyncio.ensure_future(self.inbox.get())
        closing = asyncio.ensure_future(self.closed.wait())
        done, _ = await asyncio.wait(
            {getter, closing}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        closing.cancel()
        if getter in done or (getter.done() and not getter.cancelled()):
            return getter.result()
        getter.cancel()
        return None

    def pending_cancels(self) -> list[str]:
        """Cancels waiting in the inbox (answered on a heartbeat), leaving jobs in place."""
        keep: list[JobAssignment | str] = []
        cancels: list[str] = []
        while not self.inbox.empty():
            item = self.inbox.get_nowait()
            if isinstance(item, str):
                cancels.append(item)
            else:
                keep.append(item)
        for item in keep:
            self.inbox.put_nowait(item)
        return cancels

    def unclaimed(self) -> list[str]:
        """Job ids dispatched to this worker but never taken."""
        ids: list[str] = []
        while not self.inbox.empty():
            item = self.inbox.get_nowait()
            if not isinstance(item, str):
                ids.append(item.job_id)
        return ids


class WorkerConnections:
    """Every worker connected to this process, and the bus subscriptions that feed them."""

    def __init__(self, bus: Bus, execution: Execution, workers: WorkerService) -> None:
        self.bus = bus
        self.execution = execution
        self.workers = workers
        self.connections: dict[str, Connection] = {}
        self._cancel_sub: Subscription | None = None

    async def start(self) -> None:
        """Listen for cancels."""
        self._cancel_sub = await self.bus.subscribe(subjects.CANCEL, self._on_cancel)

    async def stop(self) -> None:
        """Drop every connection (their unclaimed jobs are re-driven by the reconciler)."""
        for worker_id in list(self.connections):
            await self.disconnect(worker_id, requeue=False)
        if self._cancel_sub is not None:
            await self._cancel_sub.unsubscribe()
            self._cancel_sub = None

    async def connect(self, worker_id: str) -> Connection:
        """The connection of ``worker_id``, subscribing it to its direct subject if new."""
        connection = self.connections.get(worker_id)
        if connection is None:
            connection = Connection(worker_id, self.execution)
            connection.subscription = await self.bus.subscribe(
                subjects.worker_jobs(worker_id), connection.on_job
            )
            self.connections[worker_id] = connection
        return connection

    async def disconnect(self, worker_id: str, *, requeue: bool = True) -> None:
        """Forget a connection; jobs it never took go back to PENDING."""
        connection = self.connections.pop(worker_id, None)
        if connection is None:
            return
        connection.closed.set()
        if connection.subscription is not None:
            await connection.subscription.unsubscribe()
        if not requeue:
            return
        for job_id in connection.unclaimed():
            with contextlib.suppress(Exception):
                await self.execution.requeue(job_id, reason=f"worker {worker_id} left")
                await self.bus.publish(
                    subjects.FINISHED, {"job_id": job_id, "worker_id": worker_id}
                )

    async def _on_cancel(self, message: Message) -> None:
        connection = self.connections.get(str(message.data.get("worker_id")))
        if connection is not None:
            connection.cancel(str(message.data["job_id"]))


class InProcessLink:
    """The SDK's WorkerLink for a worker running inside the control plane's process."""

    def __init__(self, connections: WorkerConnections) -> None:
        self.connections = connections
        self._worker_id: str | None = None
        self._cancel_listener: Callable[[str], None] | None = None
        self.registered = asyncio.Event()

    def listen_for_cancels(self, listener: Callable[[str], None]) -> None:
        """Deliver cancels to ``listener`` directly (see ``WorkerLink``)."""
        self._cancel_listener = listener

    async def register(
        self,
        worker_id: str | None,
        pool: str,
        topics: list[str],
        capacity: int,
        labels: dict[str, str],
    ) -> str:
        """Register and connect."""
        record = await self.connections.workers.register(
            pool=pool,
            topics=topics,
            capacity=capacity,
            transport="inprocess",
            worker_id=worker_id,
            labels=labels,
        )
        connection = await self.connections.connect(record.worker_id)
        connection.cancel_listener = self._cancel_listener
        self._worker_id = record.worker_id
        self.registered.set()
        return record.worker_id

    async def receive(self, max_jobs: int, wait_s: float) -> list[Item]:
        """Claimed assignments and cancels for the single worker of this link."""
        connection = self.connections.connections.get(self._worker_id or "")
        if connection is None:
            raise RuntimeError("receive() before register()")
        return await connection.take(max_jobs, wait_s)

    async def heartbeat(self, worker_id: str, active_jobs: int, job_ids: list[str]) -> list[str]:
        """Refresh liveness."""
        await self.connections.workers.heartbeat(worker_id, active_jobs, job_ids)
        return []

    async def progress(
        self,
        worker_id: str,
        job_id: str,
        message: str | None,
        percent: float | None,
        data: dict[str, Any],
    ) -> bool:
        """Store progress; False when the job is no longer running."""
        report = {"message": message, "percent": percent, "data": data}
        try:
            await self.connections.execution.progress(worker_id, job_id, report)
        except JobStateError:
            return False
        return True

    async def result(
        self,
        worker_id: str,
        job_id: str,
        status: str,
        result: Any,
        error: dict[str, str] | None,
        retryable: bool,
    ) -> None:
        """Record the outcome."""
        await self.connections.execution.complete(
            worker_id,
            job_id,
            succeeded=status == "succeeded",
            result=result,
            error=None if error is None else JobError.model_validate(error),
            retryable=retryable,
        )

    async def drain(self, worker_id: str) -> None:
        """Stop dispatches to this worker."""
        await self.connections.workers.drain(worker_id)

    async def deregister(self, worker_id: str) -> None:
        """Leave."""
        await self.connections.disconnect(worker_id)
        await self.connections.workers.deregister(worker_id)

    async def close(self) -> None:
        """Nothing to close in-process."""
