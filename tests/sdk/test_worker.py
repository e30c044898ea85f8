"""SDK workers over the network, on both transports (HTTP long-poll and WebSocket).

Pinned against a real server in the test's loop, each for ``transport="http"`` and
``transport="websocket"``:
- async handlers run on the loop, plain functions in a thread; both get ``ctx.input``,
  topic, job id, tenant, labels and the rule's ``ctx.constraints`` (budgets);
- ``ctx.progress(...)`` from either kind shows in ``GET /jobs/{id}`` as ``progress``;
- at most ``concurrency`` handlers run at once (2 of 6 slow jobs, mixed kinds);
- a topic the worker subscribes to but has no handler for fails the job with
  ``no_handler``, not retried;
- cancelling a running job cancels its async handler (with free slots, and when the
  worker is at full capacity), and the worker goes on taking jobs;
- ``stop()`` drains: no new job is taken, the in-flight one finishes and SUCCEEDS, then
  the worker deregisters (``GET /workers`` no longer lists it);
- a worker process in ``Worker.run()`` that gets SIGTERM mid-job lets the job SUCCEED and
  exits 0 within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cordum.sdk import AsyncClient, JobCancelled, JobContext, JobFailed, Worker
from cordum.services.connections import InProcessLink
from tests.pipeline.harness import Harness, running_plane
from tests.sdk.servers import clean_env

pytestmark = pytest.mark.anyio

POOL = "sdk-workers"
POLICY = """
version: "sdk-worker-1"
default_decision: deny
rules:
  - id: bounded-work
    match: {topics: [job.w.bounded]}
    decision: allow_with_constraints
    reason: bounded work
    constraints:
      budgets: {max_runtime_ms: 60000, max_retries: 0}
  - id: allow-w
    match: {topics: ["job.w.*"]}
    decision: allow
    reason: worker test jobs
"""
SETTINGS = {
    "pools": {"job.w.>": POOL},
    "backoff_base_s": 0.02,
    "backoff_max_s": 0.2,
    "default_max_retries": 1,
}
TRANSPORTS = pytest.mark.parametrize("transport", ["http", "websocket", "inprocess"])
"""Every way a worker connects; ``inprocess`` runs it inside the served plane."""


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """A plane whose ``job.w.*`` topics belong to the test worker's pool; no worker yet."""
    async with running_plane(tmp_path, policy_text=POLICY, **SETTINGS) as served:
        yield served


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(harness.url) as agent:
        yield agent


def make_worker(harness: Harness, transport: str, **options: Any) -> Worker:
    return Worker(
        pool=POOL,
        topics=["job.w.*"],
        url=harness.url,
        transport="http" if transport == "inprocess" else transport,
        heartbeat_interval=0.5,
        drain_timeout=10,
        **options,
    )


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    """Poll an async ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def workers(harness: Harness) -> list[dict[str, Any]]:
    response = await harness.http.get("/api/v1/workers")
    response.raise_for_status()
    listed: list[dict[str, Any]] = response.json()["workers"]
    return listed


async def live_worker(harness: Harness) -> dict[str, Any] | None:
    return next((w for w in await workers(harness) if w["pool"] == POOL and w["live"]), None)


@contextlib.asynccontextmanager
async def serving(
    harness: Harness, worker: Worker, transport: str
) -> AsyncIterator[asyncio.Task[None]]:
    """``worker.serve()`` in a task, registered before the block; stopped after it."""
    link = InProcessLink(harness.plane.connections) if transport == "inprocess" else None
    task = asyncio.create_task(worker.serve(link=link))
    try:
        await until(lambda: live_worker(harness))
        yield task
    finally:
        worker.stop()
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            worker.stop()  # a second stop gives running handlers back instead of waiting
        await asyncio.wait_for(task, 10)


async def job(client: AsyncClient, job_id: str) -> dict[str, Any]:
    return await client.get_job(job_id)


@TRANSPORTS
async def test_sync_and_async_handlers_get_the_job(
    harness: Harness, client: AsyncClient, transport: str
) -> None:
    worker = make_worker(harness, transport)

    @worker.handle("job.w.async")
    async def on_loop(ctx: JobContext) -> dict[str, Any]:
        return {
            "kind": "async",
            "input": ctx.input,
            "topic": ctx.topic,
            "job_id": ctx.job_id,
            "tenant": ctx.tenant_id,
            "labels": ctx.labels,
            "attempt": ctx.attempt,
        }

    @worker.handle("job.w.sync")
    def in_thread(ctx: JobContext) -> dict[str, Any]:
        return {
            "kind": "sync",
            "input": ctx.input,
            "in_thread": threading.current_thread() is not threading.main_thread(),
        }

    @worker.handle("job.w.bounded")
    async def bounded(ctx: JobContext) -> dict[str, Any]:
        return {"constraints": ctx.constraints}

    async with serving(harness, worker, transport):
        answer = await client.submit("job.w.async", {"n": [1, 2]}, labels={"team": "blue"})
        assert await client.wait(answer["job_id"], timeout=10) == {
            "kind": "async",
            "input": {"n": [1, 2]},
            "topic": "job.w.async",
            "job_id": answer["job_id"],
            "tenant": "default",
            "labels": {"team": "blue"},
            "attempt": 1,
        }
        assert await client.submit("job.w.sync", "text input", wait=True, timeout=10) == {
            "kind": "sync",
            "input": "text input",
            "in_thread": True,
        }
        bounded_answer = await client.submit("job.w.bounded")
        assert bounded_answer["decision"] == "ALLOW_WITH_CONSTRAINTS"
        result = await client.wait(bounded_answer["job_id"], timeout=10)
    assert result["constraints"]["budgets"]["max_runtime_ms"] == 60000
    assert result["constraints"] == (await job(client, bounded_answer["job_id"]))["constraints"]


@TRANSPORTS
async def test_progress_is_visible_on_the_job(
    harness: Harness, client: AsyncClient, transport: str
) -> None:
    worker = make_worker(harness, transport)
    release_loop = asyncio.Event()
    release_thread = threading.Event()

    @worker.handle("job.w.async")
    async def on_loop(ctx: JobContext) -> str:
        ctx.progress("halfway", 50, step=2)
        await release_loop.wait()
        return "loop done"

    @worker.handle("job.w.sync")
    def in_thread(ctx: JobContext) -> str:
        ctx.progress("in a thread", 25.5, rows=10)
        release_thread.wait(10)
        return "thread done"

    try:
        async with serving(harness, worker, transport):
            cases = [
                ("job.w.async", release_loop.set, "halfway", 50, {"step": 2}, "loop done"),
                (
                    "job.w.sync",
                    release_thread.set,
                    "in a thread",
                    25.5,
                    {"rows": 10},
                    "thread done",
                ),
            ]
            for topic, release, message, percent, data, result in cases:
                job_id = (await client.submit(topic))["job_id"]

                async def reported(job_id: str = job_id) -> dict[str, Any] | None:
                    progress: dict[str, Any] | None = (await job(client, job_id))["progress"]
                    return progress

                progress = await until(reported)
                assert progress["message"] == message
                assert progress["percent"] == percent
                assert progress["data"] == data
                assert (await job(client, job_id))["state"] == "RUNNING"
                release()
                assert await client.wait(job_id, timeout=10) == result
    finally:
        release_thread.set()


@TRANSPORTS
async def test_no_more_than_concurrency_handlers_run_at_once(
    harness: Harness, client: AsyncClient, transport: str
) -> None:
    worker = make_worker(harness, transport, concurrency=2)
    lock = threading.Lock()
    running = 0
    peak = 0
    ran = 0

    def enter() -> None:
        nonlocal running, peak, ran
        with lock:
            running += 1
            ran += 1
            peak = max(peak, running)

    def leave() -> None:
        nonlocal running
        with lock:
            running -= 1

    @worker.handle("job.w.async")
    async def on_loop(ctx: JobContext) -> None:
        enter()
        try:
            await asyncio.sleep(0.15)
        finally:
            leave()

    @worker.handle("job.w.sync")
    def in_thread(ctx: JobContext) -> None:
        enter()
        try:
            time.sleep(0.15)
        finally:
            leave()

    async with serving(harness, worker, transport):
        topics = ["job.w.async", "job.w.sync"] * 3
        answers = [await client.submit(topic) for topic in topics]
        for answer in answers:
            await client.wait(answer["job_id"], timeout=15)
    assert ran == 6
    assert peak == 2


@TRANSPORTS
async def test_a_topic_without_a_handler_fails_with_no_handler(
    harness: Harness, client: AsyncClient, transport: str
) -> None:
    worker = make_worker(harness, transport)

    @worker.handle("job.w.async")
    async def on_loop(ctx: JobContext) -> str:
        return "ok"

    async with serving(harness, worker, transport):
        with pytest.raises(JobFailed) as caught:
            await client.submit("job.w.unhandled", wait=True, timeout=10)
        assert await client.submit("job.w.async", wait=True, timeout=10) == "ok"
    assert caught.value.code == "no_handler"
    assert "job.w.unhandled" in caught.value.message
    assert caught.value.state == "FAILED"
    assert caught.value.job["attempts"] == 1, "not retried, though the budget allows one"


async def _cancel_a_running_handler(
    harness: Harness, client: AsyncClient, transport: str, concurrency: int
) -> None:
    worker = make_worker(harness, transport, concurrency=concurrency)
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @worker.handle("job.w.long")
    async def long_running(ctx: JobContext) -> str:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "finished anyway"

    @worker.handle("job.w.async")
    async def quick(ctx: JobContext) -> str:
        return "still serving"

    async with serving(harness, worker, transport):
        job_id = (await client.submit("job.w.long"))["job_id"]
        await asyncio.wait_for(started.wait(), 5)
        assert (await client.cancel(job_id))["state"] == "CANCELLED"
        try:
            await asyncio.wait_for(cancelled.wait(), 3)
        except TimeoutError:
            worker.stop()
            worker.stop()  # give the stuck handler back at once rather than drain it
            raise AssertionError(
                f"the handler of cancelled job {job_id} still runs 3 s after the cancel"
                f" ({transport}, concurrency={concurrency})"
            ) from None
        with pytest.raises(JobCancelled):
            await client.wait(job_id, timeout=5)
        assert await client.submit("job.w.async", wait=True, timeout=10) == "still serving"
    assert (await job(client, job_id))["state"] == "CANCELLED"


@TRANSPORTS
async def test_cancel_stops_a_running_async_handler(
    harness: Harness, client: AsyncClient, transport: str
) -> None:
    await _cancel_a_running_handler(harness, client, transport, concurrency=4)


@pytest.mark.parametrize("transport", ["http", "websocket", "inprocess"])
async def test_cancel_reaches_a_worker_at_full_capacity(
    harness: Harness, client: AsyncClient, transport: str
) -> None:
    """Every slot busy: the cancel must still reach the handler (here: the only slot)."""
    await _cancel_a_running_handler(harness, client, transport, concurrency=1)


@TRANSPORTS
async def test_stop_drains_the_running_job_then_deregisters(
    harness: Harness, client: AsyncClient, transport: str
) -> None:
    worker = make_worker(harness, transport)
    started = asyncio.Event()
    release = asyncio.Event()

    @worker.handle("job.w.hold")
    async def hold(ctx: JobContext) -> dict[str, bool]:
        started.set()
        await release.wait()
        return {"drained": True}

    async with serving(harness, worker, transport) as task:
        registered = await live_worker(harness)
        assert registered is not None
        worker_id = registered["worker_id"]
        in_flight = (await client.submit("job.w.hold"))["job_id"]
        await asyncio.wait_for(started.wait(), 5)

        worker.stop()

        async def draining() -> bool:
            listed = {w["worker_id"]: w for w in await workers(harness)}
            return worker_id in listed and not listed[worker_id]["live"]

        await until(draining)
        late = (await client.submit("job.w.hold"))["job_id"]
        await asyncio.sleep(0.3)
        assert not task.done(), "serve() returned while a handler was still running"
        release.set()
        await asyncio.wait_for(task, 10)

    assert worker.worker_id == worker_id
    finished = await job(client, in_flight)
    assert finished["state"] == "SUCCEEDED"
    assert finished["result"] == {"drained": True}
    assert worker_id not in [w["worker_id"] for w in await workers(harness)]
    waiting = await job(client, late)
    assert waiting["state"] == "PENDING", "a draining worker takes no new job"
    assert waiting["worker_id"] is None


WORKER_SCRIPT = """
import asyncio, sys, time
from pathlib import Path
from cordum.sdk import Worker

url, transport, kind, marker = sys.argv[1:5]
worker = Worker(pool={pool!r}, topics=["job.w.*"], url=url, transport=transport,
                heartbeat_interval=0.5)

if kind == "async":
    @worker.handle("job.w.slow")
    async def slow(ctx):
        Path(marker).write_text(ctx.job_id)
        await asyncio.sleep(1.0)
        return {{"slept": True, "kind": kind}}
else:
    @worker.handle("job.w.slow")
    def slow(ctx):
        Path(marker).write_text(ctx.job_id)
        time.sleep(1.0)
        return {{"slept": True, "kind": kind}}

worker.run()
print("worker.run() returned", flush=True)
"""


@pytest.mark.parametrize(("transport", "kind"), [("websocket", "async"), ("http", "sync")])
async def test_sigterm_mid_job_lets_the_job_succeed_and_exits_zero(
    harness: Harness, client: AsyncClient, tmp_path: Path, transport: str, kind: str
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER_SCRIPT.format(pool=POOL)))
    marker = tmp_path / "started"
    log = tmp_path / "worker.log"
    job_id = (await client.submit("job.w.slow"))["job_id"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(script), harness.url, transport, kind, str(marker)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
    try:

        async def handler_started() -> bool:
            assert process.poll() is None, log.read_text()
            return marker.exists()

        await until(handler_started, timeout=20)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        async def exited() -> bool:
            return process.poll() is not None

        await until(exited, timeout=10)
        took = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)

    output = log.read_text()
    assert process.returncode == 0, output
    assert took < 5, output
    assert "worker.run() returned" in output
    assert "Traceback" not in output
    finished = await job(client, job_id)
    assert finished["state"] == "SUCCEEDED", output
    assert finished["result"] == {"slept": True, "kind": kind}
    assert finished["attempts"] == 1
    assert await workers(harness) == [], "the worker deregistered on the way out"
