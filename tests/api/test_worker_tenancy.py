"""Workers get the jobs of their key's tenants only, and a revoked key stops its workers.

Pinned, over real HTTP and WebSocket:

- a worker registered with a key of tenant ``acme`` is never sent a ``globex`` job, even
  on globex's pool and topics: the job waits (PENDING, ``no_workers``) exactly as if no
  worker served its pool, and goes to a worker of globex as soon as one registers; the
  acme worker still gets acme's jobs, a worker of a ``*`` key gets every tenant's;
- ``GET /workers`` shows whose jobs a worker gets (``tenants``) to its own key and to keys
  of every tenant only;
- a revoked worker key stops receiving jobs: its WebSocket is closed with 4401 at the
  next frame, or within ``KEY_RECHECK_S`` when the worker says nothing; revoking it over
  the API removes its workers at once (a job submitted later waits); an HTTP worker is
  refused (401) from the next request on;
- an operator removing a worker whose socket is open closes that socket (4404), and the
  server goes on answering.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from cordum.api import routes_workers
from cordum.models.audit import SYSTEM_CHAIN
from cordum.models.state import JobState
from cordum.ports import AuditFilter
from cordum.services.keys import key_id_of
from tests.api.support import assert_error, served, wait_until
from tests.pipeline.harness import Harness, auth
from tests.pipeline.workers import BareWorker

pytestmark = pytest.mark.anyio

JOBS = "/api/v1/jobs"


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Harness]:
    """A fresh plane (auth on, ``job.test.>`` routed to pool ``p``) per test."""
    async with served(tmp_path) as harness:
        yield harness


async def submitted(harness: Harness, tenant: str, topic: str = "job.test.run") -> str:
    """A job of ``tenant``, submitted by the admin of every tenant; its id."""
    response = await harness.http.post(JOBS, json={"topic": topic}, headers={"X-Tenant-ID": tenant})
    assert response.status_code == 200, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def worker_client(harness: Harness, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=harness.url, headers=auth(key), timeout=10)


async def waits_for_a_worker(harness: Harness, job_id: str) -> None:
    """The job is PENDING, deferred for lack of a worker (as with no worker at all)."""

    async def deferred() -> bool:
        job = await harness.job(job_id)
        return job.state is JobState.PENDING and (job.waiting_reason or "").startswith("no_workers")

    await wait_until(deferred, what=f"job {job_id} to wait for a worker")


# --- dispatch follows the key's tenants -----------------------------------------------------


async def test_a_worker_of_acme_never_gets_a_job_of_globex(plane: Harness) -> None:
    acme_key = await plane.new_key("worker", "acme")
    globex_key = await plane.new_key("worker", "globex")
    async with worker_client(plane, acme_key) as as_acme:
        # globex's pool and topics: all the worker can claim, yet not globex's jobs
        acme = await BareWorker.register(as_acme, pool="p", topics=("job.test.>",))
        hidden = await submitted(plane, "globex")
        assert await acme.poll(wait_s=1.0) == []
        await waits_for_a_worker(plane, hidden)
        job = await plane.job(hidden)
        assert job.worker_id is None
        assert "serves tenant 'globex'" in (job.waiting_reason or "")

        own = await submitted(plane, "acme")
        assert [j["job_id"] for j in await acme.poll(wait_s=3)] == [own]
        assert await acme.poll(wait_s=0.3) == []

        async with worker_client(plane, globex_key) as as_globex:
            globex = await BareWorker.register(as_globex, pool="p", topics=("job.test.>",))
            claimed = await globex.poll(wait_s=5)
        assert [(j["job_id"], j["tenant_id"]) for j in claimed] == [(hidden, "globex")]
        assert await acme.poll(wait_s=0.3) == []
    assert (await plane.job(hidden)).worker_id == globex.worker_id


async def test_a_worker_of_a_key_of_several_tenants_gets_theirs_only(plane: Harness) -> None:
    key = await plane.new_key("worker", "acme", "initech")
    async with worker_client(plane, key) as http:
        worker = await BareWorker.register(http)
        hidden = await submitted(plane, "globex")
        wanted = {await submitted(plane, "acme"), await submitted(plane, "initech")}
        claimed: set[str] = set()
        for _ in range(3):
            claimed |= {j["job_id"] for j in await worker.poll(wait_s=1)}
    assert claimed == wanted
    await waits_for_a_worker(plane, hidden)


async def test_a_worker_of_every_tenant_gets_every_tenants_jobs(plane: Harness) -> None:
    key = await plane.new_key("worker", "*")
    async with worker_client(plane, key) as http:
        worker = await BareWorker.register(http)
        wanted = {await submitted(plane, tenant) for tenant in ("acme", "globex", "default")}
        claimed: set[str] = set()
        for _ in range(3):
            claimed |= {j["job_id"] for j in await worker.poll(wait_s=1)}
    assert claimed == wanted


async def test_the_listing_shows_whose_jobs_a_worker_gets_to_its_own_key(plane: Harness) -> None:
    key = await plane.new_key("worker", "acme")
    async with worker_client(plane, key) as http:
        worker = await BareWorker.register(http)
    admin_worker = await BareWorker.register(plane.http)
    viewer_of_globex = await plane.new_key("viewer", "globex")

    def tenants(listing: httpx.Response) -> dict[str, Any]:
        return {w["worker_id"]: w["tenants"] for w in listing.json()["workers"]}

    everywhere = tenants(await plane.http.get("/api/v1/workers"))
    assert everywhere == {worker.worker_id: ["acme"], admin_worker.worker_id: ["*"]}
    other = tenants(await plane.http.get("/api/v1/workers", headers=auth(viewer_of_globex)))
    assert other == {worker.worker_id: None, admin_worker.worker_id: None}


# --- revocation -----------------------------------------------------------------------------


def socket_url(harness: Harness, worker_id: str) -> str:
    return harness.url.replace("http://", "ws://", 1) + f"/api/v1/workers/{worker_id}/ws"


async def websocket_worker(harness: Harness, key: str) -> str:
    """A WebSocket worker of ``key`` for ``job.test.>``; its id."""
    async with worker_client(harness, key) as http:
        response = await http.post(
            "/api/v1/workers",
            json={"pool": "p", "topics": ["job.test.>"], "transport": "websocket"},
        )
    assert response.status_code == 200, response.text
    worker_id: str = response.json()["worker_id"]
    return worker_id


async def close_code(socket: ClientConnection, timeout: float = 5.0) -> int:
    """Read until the server closes the socket; its close code. Fails on a job frame."""
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(_frames_until_closed(socket), timeout)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code


async def _frames_until_closed(socket: ClientConnection) -> None:
    while True:
        frame = json.loads(await socket.recv())
        assert frame["type"] != "job", f"a job reached a revoked or removed worker: {frame}"


async def test_a_revoked_keys_socket_is_closed_at_its_next_frame(plane: Harness) -> None:
    key = await plane.new_key("worker")
    worker_id = await websocket_worker(plane, key)
    async with connect(socket_url(plane, worker_id), additional_headers=auth(key)) as socket:
        await socket.send(json.dumps({"type": "heartbeat", "active_jobs": 0}))
        await plane.plane.keys.revoke(key_id_of(key))  # not over the API: the key alone
        await socket.send(json.dumps({"type": "heartbeat", "active_jobs": 0}))
        assert await close_code(socket) == 4401


async def test_a_silent_socket_of_a_revoked_key_is_closed_within_the_recheck(
    plane: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes_workers, "KEY_RECHECK_S", 0.1)
    key = await plane.new_key("worker")
    worker_id = await websocket_worker(plane, key)
    async with connect(socket_url(plane, worker_id), additional_headers=auth(key)) as socket:
        await asyncio.sleep(0.3)  # still valid: the socket stays open
        await plane.plane.keys.revoke(key_id_of(key))
        assert await close_code(socket, timeout=3) == 4401
    filters = AuditFilter(tenant_id=SYSTEM_CHAIN, kinds=frozenset({"auth.failure"}))
    (failure,) = await plane.plane.store.list_audit(filters)
    assert (failure.actor, failure.subject, failure.data["code"]) == (
        key_id_of(key),
        f"WEBSOCKET /api/v1/workers/{worker_id}/ws",
        "unauthenticated",
    )


async def test_revoking_a_worker_key_over_the_api_stops_its_workers(plane: Harness) -> None:
    key = await plane.new_key("worker")
    ws_worker = await websocket_worker(plane, key)
    async with worker_client(plane, key) as http:
        poller = await BareWorker.register(http)
        async with connect(socket_url(plane, ws_worker), additional_headers=auth(key)) as socket:
            revoked = await plane.http.delete(f"/api/v1/keys/{key_id_of(key)}")
            assert revoked.status_code == 200, revoked.text
            job_id = await submitted(plane, "default")
            assert await close_code(socket) == 4401
        refused = await http.post(f"/api/v1/workers/{poller.worker_id}/poll", json={"wait_s": 0})
        assert_error(refused, 401, "unauthenticated")
    listed = (await plane.http.get("/api/v1/workers")).json()["workers"]
    assert [w["worker_id"] for w in listed] == [], "the key's workers are gone"
    await waits_for_a_worker(plane, job_id)
    assert (await plane.job(job_id)).worker_id is None


async def test_an_http_worker_of_a_revoked_key_is_refused_at_once(plane: Harness) -> None:
    key = await plane.new_key("worker")
    async with worker_client(plane, key) as http:
        worker = await BareWorker.register(http)
        await plane.plane.keys.revoke(key_id_of(key))  # the key alone: the worker stays
        job_id = await submitted(plane, "default")
        for path, body in (
            ("poll", {"wait_s": 0}),
            ("heartbeat", {}),
            (f"jobs/{job_id}/result", {"status": "succeeded"}),
        ):
            response = await http.post(f"/api/v1/workers/{worker.worker_id}/{path}", json=body)
            assert_error(response, 401, "unauthenticated")
    assert (await plane.job(job_id)).state is not JobState.RUNNING


# --- removal --------------------------------------------------------------------------------


async def test_removing_a_worker_closes_its_socket(plane: Harness) -> None:
    key = await plane.new_key("worker")
    worker_id = await websocket_worker(plane, key)
    async with connect(socket_url(plane, worker_id), additional_headers=auth(key)) as socket:
        await socket.send(json.dumps({"type": "heartbeat", "active_jobs": 0}))
        removed = await plane.http.delete(f"/api/v1/workers/{worker_id}")
        assert removed.status_code == 204, removed.text
        assert await close_code(socket) == 4404
    # the server still answers (the socket's pusher does not spin on a closed connection)
    async with asyncio.timeout(5):
        assert (await plane.http.get("/healthz")).status_code == 200
