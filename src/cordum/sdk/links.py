"""How a worker talks to the control plane: the WorkerLink protocol and its HTTP form.

A :class:`~cordum.sdk.worker.Worker` only ever calls the methods of
:class:`WorkerLink`, so the same worker runs over HTTP long-poll (:class:`HttpLink`),
WebSocket (:class:`~cordum.sdk.wslink.WebSocketLink`) or inside the server process.
A link raises on failure (:class:`~cordum.sdk.errors.CordumUnavailable` when the server
cannot be reached); the worker decides whether to retry or re-register.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import httpx

from cordum.models.pipeline import JobAssignment
from cordum.sdk._jobs import MAX_WAIT_S
from cordum.sdk._wire import Call, Settings, error_for, path, send_async
from cordum.sdk.errors import CordumAPIError, CordumUnavailable

STALE_PROGRESS_CODES = frozenset({"job_not_running", "job_not_found"})


CancelListener = Callable[[str], None]
"""Called with a job id the server cancelled, on the worker's event loop."""


class WorkerLink(Protocol):
    """The worker's side of the wire, whatever carries it."""

    def listen_for_cancels(self, listener: CancelListener) -> None:
        """Have cancels the server pushes delivered to ``listener`` the moment they arrive.

        A worker with every slot busy does not call :meth:`receive`, yet its running jobs
        can still be cancelled. Links without a push channel deliver cancels from
        :meth:`receive` and :meth:`heartbeat` only.
        """

    async def register(
        self,
        worker_id: str | None,
        pool: str,
        topics: list[str],
        capacity: int,
        labels: dict[str, str],
    ) -> str:
        """Register (again, under the same id when given); returns the worker id."""

    async def receive(self, max_jobs: int, wait_s: float) -> list[JobAssignment | str]:
        """Up to ``max_jobs`` running jobs plus job ids to cancel; ``[]`` after ``wait_s``."""

    async def heartbeat(self, worker_id: str, active_jobs: int, job_ids: list[str]) -> list[str]:
        """Say the worker is alive; returns job ids to cancel.

        ``job_ids`` are the jobs the worker holds (running, or with a result not yet
        delivered): the server re-drives a job claimed for this worker that is missing.
        """

    async def progress(
        self,
        worker_id: str,
        job_id: str,
        message: str | None,
        percent: float | None,
        data: dict[str, Any],
    ) -> bool:
        """Report progress; False when the job is no longer running (treat as cancelled)."""

    async def result(
        self,
        worker_id: str,
        job_id: str,
        status: str,
        result: Any,
        error: dict[str, str] | None,
        retryable: bool,
    ) -> None:
        """Report a job's outcome; returns only once the server has it."""

    async def drain(self, worker_id: str) -> None:
        """Ask the server to stop dispatching to this worker."""

    async def deregister(self, worker_id: str) -> None:
        """Leave for good."""

    async def close(self) -> None:
        """Release connections."""


def result_body(
    status: str, result: Any, error: dict[str, str] | None, retryable: bool
) -> dict[str, Any]:
    """The body of a result report, as HTTP and WebSocket both send it."""
    body: dict[str, Any] = {"status": status, "retryable": retryable}
    if status == "succeeded":
        body["result"] = result
    if error is not None:
        body["error"] = error
    return body


def _progress_state(response: httpx.Response) -> bool:
    if response.is_success:
        return True
    failure = error_for(response)
    if isinstance(failure, CordumAPIError) and failure.code in STALE_PROGRESS_CODES:
        return False
    raise failure


class HttpLink:
    """A WorkerLink over plain HTTP: long-poll for jobs, one request per report."""

    def __init__(self, settings: Settings, *, transport: str = "http") -> None:
        self.settings = settings
        self.transport = transport
        self.worker_id: str | None = None
        self._http = settings.async_http()

    def listen_for_cancels(self, listener: CancelListener) -> None:
        """HTTP has no push channel: cancels come with polls and heartbeats."""

    async def call(self, call: Call) -> Any:
        """Perform one request on this link's connection pool."""
        return await send_async(self._http, call)

    async def register(
        self,
        worker_id: str | None,
        pool: str,
        topics: list[str],
        capacity: int,
        labels: dict[str, str],
    ) -> str:
        """``POST /workers``."""
        body: dict[str, Any] = {
            "pool": pool,
            "topics": topics,
            "capacity": capacity,
            "transport": self.transport,
            "labels": labels,
        }
        if worker_id:
            body["worker_id"] = worker_id
        answer = await self.call(Call("POST", path("workers"), json=body))
        self.worker_id = str(answer["worker_id"])
        return self.worker_id

    async def receive(self, max_jobs: int, wait_s: float) -> list[JobAssignment | str]:
        """Long-poll ``POST /workers/{id}/poll``."""
        if self.worker_id is None:
            raise CordumUnavailable("receive() before register()")
        wait_s = min(max(wait_s, 0.0), MAX_WAIT_S)
        body = {"max_jobs": max(1, max_jobs), "wait_s": wait_s}
        call = Call("POST", path("workers", self.worker_id, "poll"), json=body, hold_s=wait_s)
        answer = await self.call(call)
        items: list[JobAssignment | str] = [str(job_id) for job_id in answer.get("cancel", ())]
        items.extend(JobAssignment.model_validate(job) for job in answer.get("jobs", ()))
        return items

    async def heartbeat(self, worker_id: str, active_jobs: int, job_ids: list[str]) -> list[str]:
        """``POST /workers/{id}/heartbeat``; answers the jobs to cancel."""
        call = Call(
            "POST",
            path("workers", worker_id, "heartbeat"),
            json={"active_jobs": active_jobs, "job_ids": job_ids},
        )
        answer = await self.call(call)
        return [str(job_id) for job_id in answer.get("cancel", ())]

    async def progress(
        self,
        worker_id: str,
        job_id: str,
        message: str | None,
        percent: float | None,
        data: dict[str, Any],
    ) -> bool:
        """``POST /workers/{id}/jobs/{job}/progress``; False when the job stopped running."""
        body = {"message": message, "percent": percent, "data": data}
        where = path("workers", worker_id, "jobs", job_id, "progress")
        state: bool = await self.call(Call("POST", where, json=body, parse=_progress_state))
        return state

    async def result(
        self,
        worker_id: str,
        job_id: str,
        status: str,
        result: Any,
        error: dict[str, str] | None,
        retryable: bool,
    ) -> None:
        """``POST /workers/{id}/jobs/{job}/result`` (a repeat is acknowledged and ignored)."""
        await self.post_result(worker_id, job_id, result_body(status, result, error, retryable))

    async def post_result(self, worker_id: str, job_id: str, body: dict[str, Any]) -> None:
        """Send a result body built by :func:`result_body`."""
        where = path("workers", worker_id, "jobs", job_id, "result")
        await self.call(Call("POST", where, json=body))

    async def drain(self, worker_id: str) -> None:
        """``POST /workers/{id}/drain``."""
        await self.call(Call("POST", path("workers", worker_id, "drain"), json={}))

    async def deregister(self, worker_id: str) -> None:
        """``DELETE /workers/{id}``."""
        await self.call(Call("DELETE", path("workers", worker_id)))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
