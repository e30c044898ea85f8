"""SDK workers over NATS (``Worker(..., nats_url=...)``), speaking CAP to the control plane.

There is no distributed control plane to serve them here, so a fake one, written with
nats-py, answers claims, dispatches CAP job requests (input in ``ctx:<job_id>``) and
checks every packet the worker publishes. Each fake and its worker namespace their
subjects (``subject_prefix``), as isolated test clusters do, so a control plane on the
bare CAP subjects elsewhere in the run cannot answer their claims. Pinned against the
real NATS and Redis:
- a job is claimed before its handler runs, runs once, its progress and CAP result
  arrive, and the output is at ``res:<job_id>`` (kept a week);
- a claim answered null, or never answered within the retry window, means the handler
  never runs; one whose answer was lost is asked again and runs once;
- a burst of results larger than redis-py's default connection pool is delivered at
  the first attempt (calls queue for a connection);
- a failing handler gives FAILED_RETRYABLE, ``FatalError`` FAILED_FATAL, with no output;
- a cancel for this worker reaches its running handler (async: cancelled, sync:
  ``ctx.cancelled``) and no result is sent; a cancel for another worker is ignored;
- the handshake and every heartbeat carry the worker's topics, pool and capacity;
- every packet the worker publishes passes ``cap.validate.validate_bus_packet``;
- NATS or Redis out of reach is ``CordumUnavailable`` naming the URL (credentials left
  out), a bad worker id a refusal;
- a result made while NATS is down arrives once it is back, and the worker re-registers;
- ``Worker`` picks the NATS transport from ``nats_url`` or ``transport="nats"`` and
  takes the URLs from the environment; ``cordum.sdk.natslink`` loads no server module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from cap.pb.cordum.agent.v1 import buspacket_pb2, job_pb2
from cap.validate import validate_bus_packet
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from cordum.models import cap_packets as cap
from cordum.models.pipeline import JobAssignment
from cordum.sdk import CordumAPIError, CordumUnavailable, FatalError, JobContext, Worker
from cordum.sdk.natslink import CLAIM, RESULT_TTL_S, NatsLink, redacted
from tests import backing
from tests.sdk.test_import_isolation import SERVER_MODULES, run_python

pytestmark = pytest.mark.anyio

TOPICS = ["job.nl.*"]
WAIT_S = 10.0
WORKER_SUBJECTS = (cap.HANDSHAKE, cap.HEARTBEAT, cap.PROGRESS, cap.RESULT)
"""Every CAP subject a worker publishes on (claims are JSON on ``sys.job.claim``)."""


async def until(condition: Callable[[], bool], seconds: float = WAIT_S) -> None:
    """Wait for ``condition`` to hold."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


class FakePlane:
    """The bus side of a control plane, for one worker id.

    Answers that worker's claims as the control plane does, one answer per request: the
    first claim of a job wins, a later one gets no unless it is asked ``again`` (its first
    answer was lost). No for ``refused`` jobs; no answer at all to a request naming a
    ``silent`` job, nor the first time to one naming a ``lost_once`` job (committed, the
    answer lost); an error for one naming a ``garbled`` job; a request naming a ``held``
    job is answered once its event is set.
    dispatches jobs to it, and keeps (and validates) every packet it publishes.
    """

    def __init__(self, nats_url: str, redis_url: str) -> None:
        self.nats_url = nats_url
        self.redis_url = redis_url
        self.worker_id = backing.unique_prefix("natslink")
        self.prefix = self.worker_id
        self.nc = NatsClient()
        pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=16)
        self.blobs = aioredis.Redis.from_pool(pool)
        self.assignments: dict[str, dict[str, Any]] = {}
        self.refused: set[str] = set()
        self.silent: set[str] = set()
        self.lost_once: set[str] = set()
        self.claimed: set[str] = set()
        self.claim_batches: list[list[str]] = []
        self.held: dict[str, asyncio.Event] = {}
        self.garbled: set[str] = set()
        self.events: list[tuple[str, str]] = []
        self.packets: list[tuple[str, buspacket_pb2.BusPacket]] = []
        self.invalid: list[str] = []

    async def start(self) -> None:
        await self.nc.connect(
            self.nats_url,
            reconnect_time_wait=0.2,
            max_reconnect_attempts=-1,
            error_cb=self._on_error,
        )
        await self.nc.subscribe(self.on(CLAIM), cb=self._on_claim)
        for subject in WORKER_SUBJECTS:
            await self.nc.subscribe(self.on(subject), cb=self._on_packet)
        await self.nc.flush()

    async def close(self) -> None:
        await self.nc.drain()
        keys = [k for j in self.assignments for k in (cap.context_key(j), cap.result_key(j))]
        if keys:
            await self.blobs.delete(*keys)
        await self.blobs.aclose()

    async def _on_error(self, exc: Exception) -> None:
        """Connection trouble is expected in the restart test; nats-py would log a trace."""

    def on(self, subject: str) -> str:
        """``subject`` in this fake's namespace."""
        return f"{self.prefix}.{subject}"

    def link(self, timeout: float, claim_retry_s: float = 3.0) -> NatsLink:
        """A worker's link to this fake."""
        return NatsLink(
            self.nats_url,
            self.redis_url,
            timeout=timeout,
            claim_retry_s=claim_retry_s,
            subject_prefix=self.prefix,
        )

    def job_id(self, name: str) -> str:
        return f"{self.worker_id}-{name}"

    async def _on_claim(self, msg: Msg) -> None:
        body = json.loads(msg.data)
        if body["worker_id"] != self.worker_id:
            return  # another test's worker
        job_ids, again = body["job_ids"], body.get("again") is True
        self.claim_batches.append(list(job_ids))
        answers = []
        for job_id in job_ids:
            self.events.append(("claim again" if again else "claim", job_id))
            first = job_id not in self.claimed and job_id not in self.refused
            if first and job_id not in self.silent:
                self.claimed.add(job_id)
            answers.append(first or (again and job_id in self.claimed))
        for job_id in job_ids:
            if job_id in self.held:
                await self.held[job_id].wait()
        if self.silent.intersection(job_ids):
            return
        if self.garbled.intersection(job_ids):
            await self.nc.publish(msg.reply, json.dumps({"error": "garbled"}).encode())
            return
        if self.lost_once.intersection(job_ids):
            self.lost_once.difference_update(job_ids)
            return
        await self.nc.publish(msg.reply, json.dumps({"claimed": answers}).encode())

    async def _on_packet(self, msg: Msg) -> None:
        packet = buspacket_pb2.BusPacket()
        packet.ParseFromString(msg.data)
        if packet.sender_id != self.worker_id:
            return
        problems = validate_bus_packet(packet)
        if problems:
            self.invalid.append(f"{msg.subject}: {problems}")
        self.packets.append((msg.subject.removeprefix(f"{self.prefix}."), packet))

    def published(self, subject: str) -> list[buspacket_pb2.BusPacket]:
        """What the worker published on ``subject`` so far."""
        return [packet for on, packet in self.packets if on == subject]

    def result_of(self, job_id: str) -> Any:
        """The result packet's ``job_result`` for ``job_id``, or None."""
        for packet in self.published(cap.RESULT):
            if packet.job_result.job_id == job_id:
                return packet.job_result
        return None

    async def result(self, job_id: str) -> Any:
        await until(lambda: self.result_of(job_id) is not None)
        return self.result_of(job_id)

    async def dispatch(self, job_id: str, topic: str, job_input: Any) -> JobAssignment:
        """Send a job to the worker as the scheduler does: input to Redis, then the request."""
        assignment = JobAssignment(
            job_id=job_id,
            trace_id=secrets.token_hex(16),
            topic=topic,
            tenant_id="acme",
            input=job_input,
            prompt="do it",
            labels={"team": "infra"},
            constraints={"budgets": {"max_runtime_ms": 1000}},
            attempt=2,
        )
        self.assignments[job_id] = assignment.model_dump(mode="json")
        key = cap.context_key(job_id)
        await self.blobs.set(key, json.dumps(job_input), ex=600)
        packet = cap.request_packet(
            {**self.assignments[job_id], "worker_id": self.worker_id},
            context_ptr=cap.pointer(key),
            sender_id="fake-plane",
        )
        await self.nc.publish(self.on(f"worker.{self.worker_id}.jobs"), packet.SerializeToString())
        return assignment

    async def cancel(self, job_id: str, worker_id: str) -> None:
        packet = cap.cancel_packet({"job_id": job_id, "worker_id": worker_id}, "fake-plane")
        await self.nc.publish(self.on(cap.CANCEL), packet.SerializeToString())

    async def settle(self) -> None:
        """Let what the worker already published reach this fake."""
        await self.nc.flush()
        await asyncio.sleep(0.1)


@pytest.fixture
async def plane() -> AsyncIterator[FakePlane]:
    fake = FakePlane(backing.nats().require(), backing.redis().require())
    await fake.start()
    try:
        yield fake
        await fake.settle()
        assert fake.invalid == [], "the worker published packets strict CAP receivers drop"
    finally:
        await fake.close()


def worker_for(plane: FakePlane, **options: Any) -> Worker:
    settings: dict[str, Any] = {
        "concurrency": 4,
        "heartbeat_interval": 0.2,
        "drain_timeout": 2.0,
        "timeout": 2.0,
        **options,
    }
    return Worker(
        pool="natslink",
        topics=TOPICS,
        worker_id=plane.worker_id,
        nats_url=plane.nats_url,
        redis_url=plane.redis_url,
        labels={"zone": "a"},
        **settings,
    )


def worker_recording_runs(plane: FakePlane, **options: Any) -> tuple[Worker, list[str]]:
    """A worker for ``plane`` whose ``job.nl.run`` handler lists the jobs it ran."""
    worker = worker_for(plane, **options)
    ran: list[str] = []

    @worker.handle("job.nl.run")
    def run(ctx: JobContext) -> str:
        ran.append(ctx.job_id)
        return "ran"

    return worker, ran


@contextlib.asynccontextmanager
async def serving(worker: Worker, plane: FakePlane) -> AsyncIterator[None]:
    """Serve ``worker`` on a link to ``plane`` until the block ends.

    Jobs may be dispatched once the worker said hello.
    """
    task = asyncio.create_task(worker.serve(plane.link(worker.settings.timeout)))
    try:
        await until(lambda: bool(plane.published(cap.HANDSHAKE)) or task.done())
        if task.done():
            task.result()
        yield
    finally:
        worker.stop()
        await asyncio.wait_for(task, WAIT_S)


async def test_a_job_is_claimed_then_run_once_and_its_output_is_in_redis(
    plane: FakePlane,
) -> None:
    worker = worker_for(plane)
    seen: list[JobContext] = []

    @worker.handle("job.nl.greet")
    async def greet(ctx: JobContext) -> dict[str, Any]:
        plane.events.append(("run", ctx.job_id))
        seen.append(ctx)
        ctx.progress("halfway", percent=50)
        return {"message": f"hello {ctx.input['name']}"}

    job_id = plane.job_id("greet")
    async with serving(worker, plane):
        sent = await plane.dispatch(job_id, "job.nl.greet", {"name": "Ada"})
        result = await plane.result(job_id)

    assert plane.events == [("claim", job_id), ("run", job_id)]
    (ctx,) = seen
    assert ctx.assignment == sent
    assert result.status == job_pb2.JOB_STATUS_SUCCEEDED
    assert result.worker_id == plane.worker_id
    assert result.result_ptr == f"redis://res:{job_id}"
    (packet,) = [p for p in plane.published(cap.RESULT) if p.job_result.job_id == job_id]
    assert packet.trace_id == sent.trace_id
    stored = await plane.blobs.get(cap.result_key(job_id))
    assert json.loads(stored) == {"message": "hello Ada"}
    assert RESULT_TTL_S - 60 < await plane.blobs.ttl(cap.result_key(job_id)) <= RESULT_TTL_S
    (progress,) = plane.published(cap.PROGRESS)
    assert progress.job_progress.job_id == job_id
    assert progress.job_progress.percent == 50
    assert progress.job_progress.message == "halfway"
    assert progress.job_progress.dispatch.assigned_worker_id == plane.worker_id


async def test_a_job_whose_claim_is_refused_or_never_answered_never_runs(
    plane: FakePlane,
) -> None:
    worker, ran = worker_recording_runs(plane, timeout=0.5)
    refused, unanswered, fine = (plane.job_id(n) for n in ("refused", "unanswered", "fine"))
    plane.refused.add(refused)
    plane.silent.add(unanswered)
    async with serving(worker, plane):
        await plane.dispatch(refused, "job.nl.run", None)
        await until(lambda: ("claim", refused) in plane.events)  # claimed on its own
        await plane.dispatch(unanswered, "job.nl.run", None)
        await until(lambda: ("claim again", unanswered) in plane.events)
        await plane.dispatch(fine, "job.nl.run", None)
        await plane.result(fine)  # claimed once the unanswered claim was given up

    assert ran == [fine]
    assert ("claim", refused) in plane.events
    assert ("claim again", refused) not in plane.events  # an answer, even a no, is final
    assert plane.result_of(refused) is None
    assert plane.result_of(unanswered) is None
    held = [cap.heartbeat_notice(beat)["job_ids"] or [] for beat in plane.published(cap.HEARTBEAT)]
    assert any(unanswered in jobs for jobs in held), "a job being claimed is listed as held"


async def test_a_claim_whose_answer_was_lost_is_asked_again_and_runs_once(
    plane: FakePlane,
) -> None:
    worker, ran = worker_recording_runs(plane, timeout=0.5)
    job_id = plane.job_id("lost-answer")
    plane.lost_once.add(job_id)
    async with serving(worker, plane):
        await plane.dispatch(job_id, "job.nl.run", None)
        await plane.dispatch(job_id, "job.nl.run", None)  # re-driven meanwhile: no second run
        result = await plane.result(job_id)

    assert ran == [job_id]
    assert result.status == job_pb2.JOB_STATUS_SUCCEEDED
    assert [event for event in plane.events if event[1] == job_id][:2] == [
        ("claim", job_id),
        ("claim again", job_id),
    ]


async def test_jobs_that_arrive_together_are_claimed_in_one_request(plane: FakePlane) -> None:
    worker, ran = worker_recording_runs(plane)
    first, *together = (plane.job_id(n) for n in ("first", "b", "c", "d"))
    plane.held[first] = release = asyncio.Event()
    async with serving(worker, plane):
        await plane.dispatch(first, "job.nl.run", None)
        await until(lambda: ("claim", first) in plane.events)
        for job_id in together:  # they arrive while the worker waits for the first answer
            await plane.dispatch(job_id, "job.nl.run", None)
        await asyncio.sleep(0.5)
        release.set()
        for job_id in (first, *together):
            await plane.result(job_id)

    assert plane.claim_batches == [[first], together]
    assert sorted(ran) == sorted([first, *together])


async def test_a_claim_answered_with_an_error_is_not_run(plane: FakePlane) -> None:
    worker, ran = worker_recording_runs(plane)
    garbled, fine = plane.job_id("garbled"), plane.job_id("fine")
    plane.garbled.add(garbled)
    async with serving(worker, plane):
        await plane.dispatch(garbled, "job.nl.run", None)
        await until(lambda: ("claim", garbled) in plane.events)
        await plane.dispatch(fine, "job.nl.run", None)
        await plane.result(fine)

    assert ran == [fine]
    assert ("claim again", garbled) not in plane.events
    assert plane.result_of(garbled) is None


async def test_failures_are_retryable_unless_fatal(plane: FakePlane) -> None:
    worker = worker_for(plane)

    @worker.handle("job.nl.crash")
    async def crash(ctx: JobContext) -> None:
        raise RuntimeError("boom")

    @worker.handle("job.nl.refuse")
    def refuse(ctx: JobContext) -> None:
        raise FatalError("never again")

    crashed, refused = plane.job_id("crash"), plane.job_id("refuse")
    async with serving(worker, plane):
        await plane.dispatch(crashed, "job.nl.crash", {})
        await plane.dispatch(refused, "job.nl.refuse", {})
        retryable, fatal = await plane.result(crashed), await plane.result(refused)

    assert retryable.status == job_pb2.JOB_STATUS_FAILED_RETRYABLE
    assert (retryable.error_code, retryable.error_message) == ("RuntimeError", "boom")
    assert fatal.status == job_pb2.JOB_STATUS_FAILED_FATAL
    assert (fatal.error_code, fatal.error_message) == ("FatalError", "never again")
    assert not retryable.result_ptr
    assert not fatal.result_ptr
    assert await plane.blobs.exists(cap.result_key(crashed), cap.result_key(refused)) == 0


async def test_a_burst_of_results_beyond_the_redis_pool_is_delivered_first_time(
    plane: FakePlane, caplog: pytest.LogCaptureFixture
) -> None:
    """More results at once than redis-py's default pool has connections (100): each
    waits for a connection rather than fail as "too many connections" and be retried."""
    burst = 130
    worker = worker_for(plane, concurrency=burst, timeout=WAIT_S)
    started: set[str] = set()
    release = asyncio.Event()

    @worker.handle("job.nl.burst")
    async def hold(ctx: JobContext) -> dict[str, str]:
        started.add(ctx.job_id)
        if len(started) == burst:
            release.set()
        await release.wait()  # every handler returns in the same instant
        return {"job": ctx.job_id}

    job_ids = [plane.job_id(f"burst-{n}") for n in range(burst)]
    async with serving(worker, plane):
        await asyncio.gather(*(plane.dispatch(j, "job.nl.burst", {}) for j in job_ids))
        results = [await plane.result(job_id) for job_id in job_ids]

    assert all(r.status == job_pb2.JOB_STATUS_SUCCEEDED for r in results)
    assert len(plane.published(cap.RESULT)) == burst  # each sent once: none failed first
    stored = await plane.blobs.mget([cap.result_key(j) for j in job_ids])
    assert [json.loads(raw)["job"] for raw in stored] == job_ids
    assert not [r for r in caplog.records if "not delivered" in r.getMessage()]


async def test_a_cancel_for_this_worker_stops_its_handler_one_for_another_is_ignored(
    plane: FakePlane,
) -> None:
    worker = worker_for(plane)
    release = asyncio.Event()
    started: list[str] = []
    noticed: list[str] = []
    cancelled: list[str] = []

    @worker.handle("job.nl.wait")
    async def wait(ctx: JobContext) -> str:
        started.append(ctx.job_id)
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.append(ctx.job_id)
            raise
        return "released"

    @worker.handle("job.nl.poll")
    def poll(ctx: JobContext) -> str:
        started.append(ctx.job_id)
        while not ctx.cancelled:
            time.sleep(0.01)
        noticed.append(ctx.job_id)
        return "stopped"

    kept, stopped, stopped_async = (plane.job_id(n) for n in ("kept", "stopped", "stopped-a"))
    async with serving(worker, plane):
        await plane.dispatch(kept, "job.nl.wait", None)
        await plane.dispatch(stopped, "job.nl.poll", None)
        await plane.dispatch(stopped_async, "job.nl.wait", None)
        await until(lambda: len(started) == 3)
        await plane.cancel(kept, "w-someone-else")  # delivered first, in order
        await plane.cancel(stopped, plane.worker_id)
        await plane.cancel(stopped_async, plane.worker_id)
        await until(lambda: noticed == [stopped] and cancelled == [stopped_async])
        assert plane.result_of(kept) is None  # still running
        release.set()
        result = await plane.result(kept)

    assert result.status == job_pb2.JOB_STATUS_SUCCEEDED
    await plane.settle()
    assert plane.result_of(stopped) is None
    assert plane.result_of(stopped_async) is None


async def test_handshake_and_heartbeats_carry_the_topics(plane: FakePlane) -> None:
    worker = worker_for(plane, concurrency=3)

    @worker.handle("job.nl.x")
    def handler(ctx: JobContext) -> None:
        return None

    async with serving(worker, plane):
        await until(lambda: len(plane.published(cap.HEARTBEAT)) >= 3)

    (hello,) = plane.published(cap.HANDSHAKE)
    assert hello.handshake.component_id == plane.worker_id
    assert list(hello.handshake.ready_topics) == TOPICS
    assert cap.handshake_notice(hello)["role"] == "worker"
    for beat in plane.published(cap.HEARTBEAT):
        notice = cap.heartbeat_notice(beat)
        assert notice.pop("job_ids") in (None, [])  # none held (None: the first one)
        assert notice.pop("sent_at") > 0
        assert notice == {
            "worker_id": plane.worker_id,
            "pool": "natslink",
            "active_jobs": 0,
            "max_parallel": 3,
            "topics": TOPICS,
            "labels": {"zone": "a"},
        }


class PrivateNats:
    """A nats-server of the test's own, on a fixed port, that can be stopped and restarted."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = backing.free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self.binary, "-a", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + WAIT_S
        while not backing._reachable("127.0.0.1", self.port, 0.2):
            assert self.process.poll() is None, "nats-server exited"
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT_S)


@pytest.fixture
def private_nats() -> Iterator[PrivateNats]:
    binary = shutil.which("nats-server")
    if binary is None:
        pytest.skip("no nats-server on PATH to restart under a worker")
    server = PrivateNats(binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_result_made_while_nats_is_down_arrives_once_it_is_back(
    private_nats: PrivateNats,
) -> None:
    fake = FakePlane(private_nats.url, backing.redis().require())
    await fake.start()
    worker = worker_for(fake, timeout=1.0)
    release = asyncio.Event()

    @worker.handle("job.nl.slow")
    async def slow(ctx: JobContext) -> str:
        await release.wait()
        return "done"

    job_id, later = fake.job_id("slow"), fake.job_id("later")
    try:
        async with serving(worker, fake):
            await fake.dispatch(job_id, "job.nl.slow", None)
            await until(lambda: ("claim", job_id) in fake.events)
            private_nats.stop()
            release.set()  # the result is made while nobody can hear it
            await asyncio.sleep(1.5)
            private_nats.start()
            result = await fake.result(job_id)
            assert result.status == job_pb2.JOB_STATUS_SUCCEEDED
            await until(lambda: len(fake.published(cap.HANDSHAKE)) >= 2)  # re-registered
            await fake.dispatch(later, "job.nl.slow", None)
            assert (await fake.result(later)).status == job_pb2.JOB_STATUS_SUCCEEDED
        await fake.settle()
        assert fake.invalid == []
        assert json.loads(await fake.blobs.get(cap.result_key(job_id))) == "done"
    finally:
        await fake.close()


async def test_nats_out_of_reach_is_unavailable_naming_the_url() -> None:
    redis_url = backing.redis().require()
    port = backing.free_port()
    link = NatsLink(f"nats://worker:s3cret@127.0.0.1:{port}", redis_url, timeout=1.0)
    try:
        with pytest.raises(CordumUnavailable, match=f"NATS at nats://127.0.0.1:{port}") as caught:
            await link.register(None, "p", TOPICS, 1, {})
        assert "s3cret" not in str(caught.value)
        with pytest.raises(CordumUnavailable):
            await link.receive(1, 0.1)
    finally:
        await link.close()


async def test_redis_out_of_reach_is_unavailable_naming_the_url() -> None:
    nats_url = backing.nats().require()
    port = backing.free_port()
    link = NatsLink(nats_url, f"redis://:s3cret@127.0.0.1:{port}/0", timeout=1.0)
    try:
        with pytest.raises(CordumUnavailable, match=f"Redis at redis://127.0.0.1:{port}/0"):
            await link.register(None, "p", TOPICS, 1, {})
    finally:
        await link.close()


async def test_a_bad_worker_id_is_refused() -> None:
    link = NatsLink("nats://127.0.0.1:9", "redis://127.0.0.1:9/0", timeout=1.0)
    try:
        with pytest.raises(CordumAPIError) as caught:
            await link.register("not a valid id", "p", TOPICS, 1, {})
        assert (caught.value.status, caught.value.code) == (422, "invalid_worker")
    finally:
        await link.close()


def test_a_bad_subject_prefix_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="invalid subject prefix 'two words'"):
        NatsLink("nats://127.0.0.1:4222", "redis://127.0.0.1:6379/0", subject_prefix="two words")


def test_redacted_drops_only_credentials() -> None:
    assert redacted("nats://u:p@host:4222") == "nats://host:4222"
    assert redacted("redis://:p@host/0") == "redis://host/0"
    assert redacted("nats://host:4222") == "nats://host:4222"


def test_the_worker_picks_nats_from_nats_url_or_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("CORDUM_NATS_URL", "CORDUM_REDIS_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    given = Worker("p", TOPICS, nats_url="nats://bus:4222", redis_url="redis://blobs:6379/1")
    assert (given.transport, given.nats_url, given.redis_url) == (
        "nats",
        "nats://bus:4222",
        "redis://blobs:6379/1",
    )
    defaults = Worker("p", TOPICS, transport="nats")
    assert (defaults.nats_url, defaults.redis_url) == (
        "nats://127.0.0.1:4222",
        "redis://127.0.0.1:6379/0",
    )
    monkeypatch.setenv("REDIS_URL", "redis://generic:6379/0")
    assert Worker("p", TOPICS, transport="nats").redis_url == "redis://generic:6379/0"
    monkeypatch.setenv("CORDUM_REDIS_URL", "redis://cordum:6379/0")
    monkeypatch.setenv("CORDUM_NATS_URL", "nats://env:4222")
    from_env = Worker("p", TOPICS, transport="nats")
    assert (from_env.nats_url, from_env.redis_url) == ("nats://env:4222", "redis://cordum:6379/0")
    plain = Worker("p", TOPICS)
    assert (plain.transport, plain.nats_url, plain.redis_url) == ("websocket", None, None)
    with pytest.raises(ValueError, match="transport='nats'"):
        Worker("p", TOPICS, transport="http", nats_url="nats://bus:4222")
    with pytest.raises(ValueError, match="transport='nats'"):
        Worker("p", TOPICS, redis_url="redis://blobs:6379/0")


async def test_a_nats_worker_serves_on_a_nats_link() -> None:
    worker = Worker("p", TOPICS, nats_url="nats://a:4222,nats://b:4222", timeout=3.0)
    link = worker._link()
    try:
        assert isinstance(link, NatsLink)
        assert (link.servers, link.redis_url, link.timeout) == (
            ["nats://a:4222", "nats://b:4222"],
            worker.redis_url,
            3.0,
        )
    finally:
        await link.close()


def test_the_nats_link_loads_no_server_module() -> None:
    done = run_python(
        """
        import json, sys
        import cordum.sdk.natslink
        print(json.dumps(sorted(sys.modules)))
        """
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    leaked = sorted(
        name
        for name in loaded
        if any(name == banned or name.startswith(banned + ".") for banned in SERVER_MODULES)
    )
    assert leaked == []
