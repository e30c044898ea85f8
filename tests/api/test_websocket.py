"""A worker over the WebSocket transport, driven by hand with the ``websockets`` client.

Pinned:

- a worker registered with ``transport: "websocket"`` that connects to
  ``/api/v1/workers/{id}/ws`` is pushed ``{"type": "job", "job": assignment}`` (the job is
  RUNNING once handed over); its ``progress`` and ``result`` frames are recorded and the job
  ends SUCCEEDED; a job dispatched before the socket opened is delivered when it opens;
- cancelling a running job pushes ``{"type": "cancel", "job_id": ...}``, and a result sent
  after that is ignored;
- a ``heartbeat`` frame refreshes the worker's liveness;
- a bad frame (not JSON, not an object) is refused without closing the socket: later
  frames still work; a binary frame is ignored or closed with 1003, never a crash;
- connecting for a worker that is not registered closes with code 4404.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from cordum.models.state import JobState
from tests.api.support import accepted, wait_until
from tests.pipeline.harness import AUTH, Harness

pytestmark = pytest.mark.anyio

ASSIGNMENT_KEYS = {
    "job_id",
    "trace_id",
    "topic",
    "tenant_id",
    "input",
    "prompt",
    "labels",
    "constraints",
    "attempt",
    "deadline_at",
}


def socket_url(harness: Harness, worker_id: str) -> str:
    """The worker's WebSocket address."""
    return harness.url.replace("http://", "ws://", 1) + f"/api/v1/workers/{worker_id}/ws"


async def register(harness: Harness, capacity: int = 4) -> str:
    """Register a WebSocket worker for ``job.test.>``; its id."""
    response = await harness.http.post(
        "/api/v1/workers",
        json={
            "pool": "p",
            "topics": ["job.test.>"],
            "capacity": capacity,
            "transport": "websocket",
        },
    )
    assert response.status_code == 200, response.text
    worker_id: str = response.json()["worker_id"]
    return worker_id


async def receive(socket: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame, as JSON."""
    frame = await asyncio.wait_for(socket.recv(), timeout)
    data: dict[str, Any] = json.loads(frame)
    return data


async def send(socket: ClientConnection, **frame: Any) -> None:
    """Send one JSON frame."""
    await socket.send(json.dumps(frame))


@pytest.fixture
async def worker(harness: Harness) -> AsyncIterator[tuple[str, ClientConnection]]:
    """A registered WebSocket worker with its socket open."""
    worker_id = await register(harness)
    async with connect(socket_url(harness, worker_id), additional_headers=AUTH) as socket:
        yield worker_id, socket


async def test_a_websocket_worker_runs_a_job(
    harness: Harness, worker: tuple[str, ClientConnection]
) -> None:
    worker_id, socket = worker
    job_id = await accepted(harness, context={"n": 21}, labels={"env": "dev"})

    frame = await receive(socket)
    assert frame["type"] == "job"
    assignment = frame["job"]
    assert set(assignment) == ASSIGNMENT_KEYS
    assert assignment["job_id"] == job_id
    assert assignment["topic"] == "job.test.run"
    assert assignment["tenant_id"] == "default"
    assert assignment["input"] == {"n": 21}
    assert assignment["labels"] == {"env": "dev"}
    assert assignment["attempt"] == 1
    job = await harness.job(job_id)
    assert job.state is JobState.RUNNING
    assert job.worker_id == worker_id

    await send(socket, type="progress", job_id=job_id, message="half", percent=50)

    async def progressed() -> bool:
        return (await harness.job(job_id)).progress is not None

    await wait_until(progressed, what="progress recorded")
    progress = (await harness.job(job_id)).progress
    assert progress is not None
    assert progress["message"] == "half"
    assert progress["percent"] == 50

    await send(socket, type="result", job_id=job_id, status="succeeded", result={"n": 42})
    job = await harness.wait_state(job_id, "SUCCEEDED")
    assert job.result == {"n": 42}
    listed = (await harness.http.get("/api/v1/workers")).json()["workers"]
    assert [(w["worker_id"], w["transport"]) for w in listed] == [(worker_id, "websocket")]


async def test_a_failed_result_frame_fails_the_job(
    harness: Harness, worker: tuple[str, ClientConnection]
) -> None:
    _, socket = worker
    job_id = await accepted(harness)
    assert (await receive(socket))["job"]["job_id"] == job_id
    await send(
        socket,
        type="result",
        job_id=job_id,
        status="failed",
        error={"code": "Boom", "message": "it broke"},
        retryable=False,
    )
    job = await harness.wait_state(job_id, "FAILED")
    assert job.error is not None
    assert job.error.message == "it broke"
    dlq = await harness.plane.store.get_dlq(job_id)
    assert dlq is not None
    assert dlq.reason_code == "max_retries_exceeded"


async def test_a_job_dispatched_before_the_socket_opens_is_delivered_on_connect(
    harness: Harness,
) -> None:
    worker_id = await register(harness)
    job_id = await accepted(harness)
    await harness.wait_state(job_id, "DISPATCHED")
    async with connect(socket_url(harness, worker_id), additional_headers=AUTH) as socket:
        frame = await receive(socket)
        assert frame["type"] == "job"
        assert frame["job"]["job_id"] == job_id
        await send(socket, type="result", job_id=job_id, status="succeeded", result=None)
        await harness.wait_state(job_id, "SUCCEEDED")


async def test_cancel_is_pushed_and_a_late_result_is_ignored(
    harness: Harness, worker: tuple[str, ClientConnection]
) -> None:
    _, socket = worker
    job_id = await accepted(harness)
    assert (await receive(socket))["job"]["job_id"] == job_id
    response = await harness.http.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text

    assert await receive(socket) == {"type": "cancel", "job_id": job_id}

    await send(socket, type="result", job_id=job_id, status="succeeded", result="late")
    # frames are handled in order: once a later job's result is in, the late one was seen
    other = await accepted(harness)
    assert (await receive(socket))["job"]["job_id"] == other
    await send(socket, type="result", job_id=other, status="succeeded", result="ok")
    await harness.wait_state(other, "SUCCEEDED")
    job = await harness.job(job_id)
    assert job.state is JobState.CANCELLED
    assert job.result is None


async def test_a_heartbeat_frame_refreshes_liveness(
    harness: Harness, worker: tuple[str, ClientConnection]
) -> None:
    worker_id, socket = worker
    (before,) = await harness.plane.store.list_workers()
    await asyncio.sleep(0.02)  # a heartbeat must land at a later time than registration
    await send(socket, type="heartbeat", active_jobs=0, job_ids=[])

    async def refreshed() -> bool:
        (record,) = await harness.plane.store.list_workers()
        return record.last_heartbeat > before.last_heartbeat

    await wait_until(refreshed, what="heartbeat recorded")
    assert harness.plane.directory.workers[worker_id].record.last_heartbeat > before.last_heartbeat


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        '{"type": "teleport"}',
        '{"type": "result", "status": "succeeded"}',
        '{"type": "result", "job_id": "nope", "status": "succeeded"}',
        '{"type": "progress", "job_id": "nope", "percent": "lots"}',
        "[]",
        "null",
        '"result"',
        "42",
    ],
    ids=[
        "not-json",
        "unknown-type",
        "result-without-job",
        "result-unknown-job",
        "bad-progress",
        "array",
        "null",
        "string",
        "number",
    ],
)
async def test_a_bad_frame_is_refused_and_the_socket_stays_open(
    harness: Harness, worker: tuple[str, ClientConnection], frame: str
) -> None:
    _, socket = worker
    await socket.send(frame)
    job_id = await accepted(harness)
    try:
        assignment = await receive(socket)
        await send(socket, type="result", job_id=job_id, status="succeeded", result="ok")
    except ConnectionClosed as exc:
        pytest.fail(f"the server closed the socket after the frame {frame!r}: {exc}")
    assert assignment["job"]["job_id"] == job_id
    await harness.wait_state(job_id, "SUCCEEDED")


async def test_a_binary_frame_is_ignored_or_closed_cleanly(
    harness: Harness, worker: tuple[str, ClientConnection]
) -> None:
    """Frames are JSON text: a binary one may be refused with 1003, but not crash the socket."""
    _, socket = worker
    await socket.send(b'{"type": "heartbeat"}')
    job_id = await accepted(harness)
    closed: ConnectionClosed | None = None
    frame: dict[str, Any] = {}
    try:
        frame = await receive(socket)
    except ConnectionClosed as exc:
        closed = exc
    if closed is None:
        assert frame["job"]["job_id"] == job_id
        return
    assert closed.rcvd is not None, f"no close frame: the server handler crashed ({closed})"
    assert closed.rcvd.code == 1003


async def test_an_unknown_worker_is_closed_with_4404(harness: Harness) -> None:
    try:
        async with connect(socket_url(harness, "ghost"), additional_headers=AUTH) as socket:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
    except InvalidStatus as exc:
        pytest.fail(
            f"the handshake was refused with HTTP {exc.response.status_code}, so the client"
            " never sees close code 4404 or its reason"
        )
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4404
    assert "register" in closed.value.rcvd.reason
