"""Workers over the network: register, heartbeat, long-poll or WebSocket, results.

An external worker gets its jobs exactly like an in-process one: from its connection's
inbox, fed by ``worker.<id>.jobs`` on the bus; a job is claimed (RUNNING) just before it
is handed over.

Workers are shared infrastructure, not objects of a tenant: any key that may read sees
the list. A worker belongs to the key that registered it, and only that key may act as
it (heartbeat, poll, socket, reports); anyone else gets the answer an unknown worker
gets. It is sent jobs of that key's tenants only, whatever pool and topics it claims
(a key of every tenant: any job). Draining or removing another key's worker takes an
operator key of every tenant. A revoked key stops its workers: HTTP requests are
authenticated one by one, a WebSocket is closed (4401) at its next frame or within
:data:`KEY_RECHECK_S` seconds, and revoking a key removes its workers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import HTTPConnection

from cordum.api.auth import (
    Authenticated,
    CanRead,
    CanWork,
    authorize,
    forbid,
    presented_key,
    record_failure,
)
from cordum.api.body import read_object
from cordum.api.deps import plane_of
from cordum.api.errors import ApiError, invalid
from cordum.api.views import worker_view
from cordum.models.keys import Permission, Principal
from cordum.models.pipeline import JobAssignment, JobError, JobRecord, WorkerRecord
from cordum.ports import JobNotFoundError
from cordum.services.connections import Connection
from cordum.services.execution import JobStateError
from cordum.services.workers import InvalidWorkerError, UnknownWorkerError
from cordum.wiring import ControlPlane

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["workers"])

MAX_POLL_WAIT_S = 30.0
MAX_CLOSE_REASON = 123
_M = TypeVar("_M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Registration(_Strict):
    """Body of ``POST /workers``."""

    worker_id: str | None = None
    pool: str = Field(min_length=1, max_length=128)
    topics: list[str] = Field(min_length=1, max_length=256)
    capacity: int = Field(default=1, ge=1, le=10_000)
    transport: Literal["http", "websocket"] = "http"
    labels: dict[str, str] = Field(default_factory=dict, max_length=128)


class Heartbeat(_Strict):
    """Body of a heartbeat."""

    active_jobs: int = Field(default=0, ge=0)
    job_ids: list[str] | None = Field(
        default=None, description="Jobs the worker holds (running or result not yet delivered)."
    )


class Poll(_Strict):
    """Body of a long-poll."""

    max_jobs: int = Field(default=1, ge=1, le=1000)
    wait_s: float = Field(default=25.0, ge=0, le=MAX_POLL_WAIT_S)


class Progress(_Strict):
    """Body of a progress report."""

    message: str | None = Field(default=None, max_length=4096)
    percent: float | None = Field(default=None, ge=0, le=100)
    data: dict[str, Any] = Field(default_factory=dict)


class Result(_Strict):
    """Body of a result."""

    status: Literal["succeeded", "failed"]
    result: Any = None
    error: JobError | None = None
    retryable: bool = True


async def _body(request: Request, model: type[_M], optional: bool = False) -> _M:
    data = await read_object(request, plane_of(request).settings.max_body_bytes, optional=optional)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from None


def _unknown(exc: UnknownWorkerError) -> ApiError:
    return ApiError(404, "unknown_worker", str(exc), worker_id=exc.worker_id)


def _acts_as(plane: ControlPlane, principal: Principal, record: WorkerRecord) -> bool:
    """Whether ``principal`` is the key the worker registered with (always, with auth off)."""
    return not plane.settings.auth or record.owner_key == principal.key_id


async def _own_worker(connection: HTTPConnection, principal: Principal, worker_id: str) -> None:
    """404 ``unknown_worker`` unless the worker is registered by the caller's key.

    Someone else's worker gets the very answer an unknown one does: a worker id is no
    secret, but acting as another key's worker would mean taking its jobs. That attempt
    is an ``auth.failure``; an unknown id is not (a worker the server forgot is told to
    register again this way).
    """
    plane = plane_of(connection)
    record = await plane.workers.find(worker_id)
    if record is not None and not _acts_as(plane, principal, record):
        await record_failure(connection, principal, "not_visible", f"worker {worker_id}")
        record = None
    if record is None:
        raise _unknown(UnknownWorkerError(worker_id))


async def _reported_job(
    request: Request, principal: Principal, worker_id: str, job_id: str
) -> JobRecord:
    """The job a report is about; 404 when there is none, or when it is neither this
    worker's job nor in a tenant of the key (so job states never leak across tenants;
    the latter is an ``auth.failure``)."""
    job = await plane_of(request).store.get_job(job_id)
    if job is not None and job.worker_id != worker_id and not principal.sees(job.tenant_id):
        await record_failure(request, principal, "not_visible", f"job {job_id}")
        job = None
    if job is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    return job


@router.get("/workers")
async def list_workers(request: Request, principal: CanRead) -> dict[str, Any]:
    """Every registered worker, whether it is live, and its current load.

    ``owner_key`` (the key that registered it) and ``tenants`` (whose jobs it is sent,
    ``["*"]`` for all) are shown to that key and to keys of every tenant only (null for
    others): another tenant's key ids and names are none of the caller's business.
    """
    plane = plane_of(request)
    directory = plane.directory
    views = []
    now = time.time()
    for worker in await plane.store.list_workers():
        live = directory.workers.get(worker.worker_id)
        if live is None:
            # A gateway replica runs no scheduler: judge by the stored heartbeat and load.
            is_live = now - worker.last_heartbeat <= plane.settings.worker_lost_after_s
            view = worker_view(worker, live=is_live, active=worker.active_jobs)
        else:
            view = worker_view(
                worker,
                live=directory.is_live(live) and not live.draining,
                active=len(live.active),
            )
        if not principal.all_tenants and worker.owner_key != principal.key_id:
            view["owner_key"] = view["tenants"] = None
        views.append(view)
    return {"workers": views}


@router.post("/workers")
async def register_worker(request: Request, principal: CanWork) -> dict[str, Any]:
    """Register (or re-register under the same id) and open the worker's inbox."""
    plane = plane_of(request)
    body = await _body(request, Registration)
    if body.worker_id is not None:
        existing = await plane.workers.find(body.worker_id)
        if existing is not None and not _acts_as(plane, principal, existing):
            await record_failure(request, principal, "worker_id_taken", f"worker {body.worker_id}")
            raise ApiError(
                403,
                "worker_id_taken",
                f"worker id {body.worker_id!r} is registered by another key;"
                " choose another worker_id (or leave it out to get a fresh one)",
            )
    try:
        record = await plane.workers.register(
            pool=body.pool,
            topics=body.topics,
            capacity=body.capacity,
            transport=body.transport,
            worker_id=body.worker_id,
            labels=body.labels,
            owner_key=principal.key_id,
            tenants=None if principal.all_tenants else principal.tenants,
        )
    except InvalidWorkerError as exc:
        raise ApiError(422, "invalid_worker", str(exc)) from None
    await plane.connections.connect(record.worker_id)
    return {
        "worker_id": record.worker_id,
        "heartbeat_interval_s": plane.settings.heartbeat_interval_s,
        "lost_after_s": plane.settings.worker_lost_after_s,
    }


async def _registered(plane: ControlPlane, worker_id: str) -> bool:
    """Whether the worker is registered: known to this process, or (on a gateway replica,
    which runs no scheduler and so keeps no directory) in the store."""
    if worker_id in plane.directory.workers or worker_id in plane.connections.connections:
        return True
    return await plane.workers.find(worker_id) is not None


async def _connection(plane: ControlPlane, worker_id: str) -> Connection:
    if not await _registered(plane, worker_id):
        raise _unknown(UnknownWorkerError(worker_id))
    return await plane.connections.connect(worker_id)


@router.post("/workers/{worker_id}/heartbeat")
async def heartbeat(request: Request, principal: CanWork, worker_id: str) -> dict[str, Any]:
    """I'm alive; the answer lists jobs to cancel."""
    plane = plane_of(request)
    await _own_worker(request, principal, worker_id)
    body = await _body(request, Heartbeat, optional=True)
    try:
        await plane.workers.heartbeat(worker_id, body.active_jobs, body.job_ids)
    except UnknownWorkerError as exc:
        raise _unknown(exc) from None
    connection = await plane.connections.connect(worker_id)
    return {"cancel": connection.pending_cancels()}


@router.post("/workers/{worker_id}/poll")
async def poll(request: Request, principal: CanWork, worker_id: str) -> dict[str, Any]:
    """Long-poll for jobs: answers as soon as there is one, or after ``wait_s``."""
    plane = plane_of(request)
    await _own_worker(request, principal, worker_id)
    body = await _body(request, Poll, optional=True)
    connection = await _connection(plane, worker_id)
    items = await connection.take(body.max_jobs, body.wait_s)
    jobs = [i.model_dump(mode="json") for i in items if isinstance(i, JobAssignment)]
    return {"jobs": jobs, "cancel": [i for i in items if isinstance(i, str)]}


@router.post("/workers/{worker_id}/jobs/{job_id}/progress")
async def progress(
    request: Request, principal: CanWork, worker_id: str, job_id: str
) -> dict[str, Any]:
    """A progress report for a running job."""
    plane = plane_of(request)
    await _own_worker(request, principal, worker_id)
    body = await _body(request, Progress)
    await _reported_job(request, principal, worker_id, job_id)
    try:
        job = await plane.execution.progress(worker_id, job_id, body.model_dump())
    except JobNotFoundError:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}") from None
    except JobStateError as exc:
        raise ApiError(409, "job_not_running", str(exc), state=exc.job.state.value) from None
    return {"state": job.state.value}


@router.post("/workers/{worker_id}/jobs/{job_id}/result")
async def result(
    request: Request, principal: CanWork, worker_id: str, job_id: str
) -> dict[str, Any]:
    """A job's outcome; a repeat or a late result is acknowledged and ignored."""
    plane = plane_of(request)
    await _own_worker(request, principal, worker_id)
    body = await _body(request, Result)
    await _reported_job(request, principal, worker_id, job_id)
    try:
        job, used = await plane.execution.complete(
            worker_id,
            job_id,
            succeeded=body.status == "succeeded",
            result=body.result,
            error=body.error,
            retryable=body.retryable,
        )
    except JobNotFoundError:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}") from None
    return {"state": job.state.value, "ignored": not used}


@router.post("/workers/{worker_id}/drain")
async def drain(request: Request, principal: Authenticated, worker_id: str) -> dict[str, Any]:
    """Stop dispatching to the worker; its running jobs finish."""
    plane = plane_of(request)
    await _may_manage(request, principal, worker_id)
    try:
        await plane.workers.drain(worker_id)
    except UnknownWorkerError as exc:
        raise _unknown(exc) from None
    return {"worker_id": worker_id, "draining": True}


@router.delete("/workers/{worker_id}", status_code=204)
async def deregister(request: Request, principal: Authenticated, worker_id: str) -> Response:
    """Leave; jobs dispatched but never taken go back to PENDING."""
    plane = plane_of(request)
    await _may_manage(request, principal, worker_id)
    await plane.connections.disconnect(worker_id)
    try:
        await plane.workers.deregister(worker_id)
    except UnknownWorkerError as exc:
        raise _unknown(exc) from None
    return Response(status_code=204)


async def _may_manage(request: Request, principal: Principal, worker_id: str) -> None:
    """Drain or remove: the worker's own key, or an operator key that spans every tenant
    (a shared worker serves them all). Others get 403 without either permission, else
    the unknown-worker 404."""
    if not principal.may(Permission.WORK) and not principal.may(Permission.OPERATE):
        await forbid(request, principal, Permission.OPERATE)
    if principal.may(Permission.OPERATE) and principal.all_tenants:
        return
    await _own_worker(request, principal, worker_id)


@router.websocket("/workers/{worker_id}/ws")
async def worker_socket(websocket: WebSocket, worker_id: str) -> None:
    """Push jobs and cancels; receive heartbeats, progress and results.

    Refusals close the socket with 4000 + the HTTP status the same request would get
    (4401 no or bad key, 4403 not a worker key, 4404 unknown or someone else's worker).
    The key is checked again before every frame and every :data:`KEY_RECHECK_S` seconds:
    once it is revoked the socket is closed with 4401 (as the next HTTP request would be
    refused). Removing the worker closes it with 4404.
    """
    plane: ControlPlane = websocket.app.state.plane
    await websocket.accept()
    try:
        principal = await authorize(websocket, Permission.WORK)
        await _own_worker(websocket, principal, worker_id)
    except ApiError as exc:
        await websocket.close(code=4000 + exc.status, reason=_close_reason(exc.message))
        return
    if not await _registered(plane, worker_id):
        await websocket.close(code=4404, reason="unknown worker; register it first")
        return
    key = presented_key(websocket)
    connection = await plane.connections.connect(worker_id)
    tasks = [
        asyncio.create_task(_read(websocket, plane, worker_id, key)),
        asyncio.create_task(_push(websocket, connection)),
    ]
    if plane.settings.auth:
        tasks.append(asyncio.create_task(_watch_key(plane, key)))
    close: tuple[int, str] | None = None
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        close = _ending(worker_id, done.pop())
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if plane.connections.connections.get(worker_id) is connection:
            await plane.connections.disconnect(worker_id)
    if close is None:
        return  # the worker hung up
    if close[0] != 4401 and await _revoked(plane, key):
        close = REVOKED  # the worker was removed because its key was revoked
    if close[0] == 4401:
        await record_failure(websocket, principal, "unauthenticated", "a revoked API key")
        # The key can no longer act as its worker: stop dispatching to it now rather
        # than when it counts as lost.
        with contextlib.suppress(UnknownWorkerError):
            await plane.workers.deregister(worker_id)
    with contextlib.suppress(Exception):  # it may be gone already
        await websocket.close(code=close[0], reason=close[1])


KEY_RECHECK_S = 5.0
"""How often a worker's WebSocket checks that its key is still valid (frames check too)."""
REVOKED = (4401, "the API key was revoked")
REMOVED = (4404, "the worker was removed; register it again")
UNSUPPORTED = (1003, "send JSON text frames")


def _ending(worker_id: str, task: asyncio.Task[tuple[int, str] | None]) -> tuple[int, str] | None:
    """How a socket ends after ``task``, the first of its tasks to end: a close code and
    reason, or None when the worker hung up."""
    try:
        return task.result()
    except (WebSocketDisconnect, OSError):  # the worker hung up while we sent
        return None
    except Exception:
        log.exception("the socket of worker %s failed; closing it", worker_id)
        return (1011, "internal error")


async def _revoked(plane: ControlPlane, key: str | None) -> bool:
    """Whether the socket's key stopped being valid (never, with auth off)."""
    if not plane.settings.auth:
        return False
    return key is None or await plane.keys.principal_for(key) is None


async def _watch_key(plane: ControlPlane, key: str | None) -> tuple[int, str]:
    """Ends when the key is revoked, checking every :data:`KEY_RECHECK_S` seconds."""
    while True:
        await asyncio.sleep(KEY_RECHECK_S)
        if await _revoked(plane, key):
            return REVOKED


async def _read(
    websocket: WebSocket, plane: ControlPlane, worker_id: str, key: str | None
) -> tuple[int, str] | None:
    """Take in the worker's frames, each only while its key is valid."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        if await _revoked(plane, key):
            return REVOKED
        if message.get("text") is None:
            return UNSUPPORTED
        await _on_frame(plane, worker_id, message["text"])


def _close_reason(message: str) -> str:
    """``message`` cut to the 123 bytes a close frame's reason may hold."""
    data = message.encode()
    if len(data) <= MAX_CLOSE_REASON:
        return message
    return data[: MAX_CLOSE_REASON - 3].decode(errors="ignore") + "..."


async def _push(websocket: WebSocket, connection: Connection) -> tuple[int, str]:
    """Send what the worker's inbox receives; ends when the connection is closed (the
    worker was removed), which :meth:`Connection.take` would otherwise answer at once."""
    while not connection.closed.is_set():
        for item in await connection.take(1_000, 3600):
            if isinstance(item, str):
                await websocket.send_text(json.dumps({"type": "cancel", "job_id": item}))
            else:
                frame = {"type": "job", "job": item.model_dump(mode="json")}
                await websocket.send_text(json.dumps(frame))
    return REMOVED


async def _on_frame(plane: ControlPlane, worker_id: str, frame: str) -> None:
    try:
        data = json.loads(frame)
        kind = data.get("type")
        if kind == "heartbeat":
            beat = Heartbeat.model_validate(
                {k: data[k] for k in ("active_jobs", "job_ids") if k in data}
            )
            await plane.workers.heartbeat(worker_id, beat.active_jobs, beat.job_ids)
        elif kind == "progress":
            report = Progress.model_validate({k: data.get(k) for k in ("message", "percent")})
            await plane.execution.progress(
                worker_id, str(data["job_id"]), {**report.model_dump(), "data": data.get("data")}
            )
        elif kind == "result":
            body = Result.model_validate(
                {k: data[k] for k in ("status", "result", "error", "retryable") if k in data}
            )
            await plane.execution.complete(
                worker_id,
                str(data["job_id"]),
                succeeded=body.status == "succeeded",
                result=body.result,
                error=body.error,
                retryable=body.retryable,
            )
        else:
            log.warning("worker %s sent an unknown frame type %r", worker_id, kind)
    except (
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        JobStateError,
        JobNotFoundError,
    ) as exc:
        log.warning("worker %s sent a frame that was refused: %s", worker_id, exc)
    except UnknownWorkerError:
        log.warning("worker %s is not registered; its frame was ignored", worker_id)
