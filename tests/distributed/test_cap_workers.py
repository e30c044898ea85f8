"""Unmodified CAP workers from the ``cap-sdk-python`` package run our jobs.

Both of the package's worker runtimes run as subprocesses against a distributed control
plane (gateway + scheduler on Redis and NATS JetStream), on the bare CAP subjects:

- ``cap.worker.run_worker`` sends no heartbeat: its topic is configured as a pool
  subject, so the scheduler publishes its jobs to ``job.<topic>``;
- ``cap.runtime.Agent`` announces itself (handshake, heartbeats): it is registered as a
  worker and gets its jobs on ``worker.<id>.jobs``.

Each job's input reaches the worker through ``ctx:<job_id>``, its output comes back
through ``result_ptr``, every job completes with the worker's answer, and each handler
runs exactly once per job.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests import backing
from tests.distributed.harness import Cluster, running_cluster

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent
CAP_POLICY = """
version: "cap-1"
default_decision: deny
rules:
  - id: allow-cap
    match: {topics: ["job.cap.*"]}
    decision: allow
    reason: CAP test jobs are allowed
"""


def start(script: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """Run one of the CAP worker scripts next to this file."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, str(HERE / script), *args], stdout=out, stderr=out)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def invocations(path: Path) -> Counter[str]:
    return Counter(path.read_text().split()) if path.exists() else Counter()


async def until_logged(log: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise AssertionError(f"worker exited: {log.read_text()}")
        if log.exists() and text in log.read_text():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"worker never logged {text!r}: {log.read_text()}")


async def until_registered(cluster: Cluster, worker_id: str) -> None:
    for _ in range(300):
        workers = (await cluster.http.get("/api/v1/workers")).json()
        listed = workers.get("workers", workers) if isinstance(workers, dict) else workers
        if any(w.get("worker_id") == worker_id for w in listed):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{worker_id} never registered")


async def submit_all(cluster: Cluster, topic: str, inputs: list[object]) -> list[str]:
    job_ids = []
    for data in inputs:
        answer = await cluster.submit(topic, context=data)
        assert answer.status_code == 200, answer.text
        job_ids.append(answer.json()["job_id"])
    return job_ids


async def test_run_worker_gets_jobs_on_the_pool_subject(tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:10]
    topic, worker_id = f"job.cap.{uid}.echo", f"cap-run-{uid}"
    calls = tmp_path / "invocations.txt"
    async with running_cluster(
        isolated_bus=False, policy_text=CAP_POLICY, pool_subjects=topic, dispatch_timeout_s=5
    ) as cluster:
        log = tmp_path / "run_worker.log"
        process = start(
            "cap_run_worker.py",
            backing.nats().require(),
            backing.redis().require(),
            topic,
            worker_id,
            str(calls),
            log=log,
        )
        try:
            await until_logged(log, "ready", process)
            await asyncio.sleep(0.5)  # run_worker subscribes after it starts: no signal
            inputs: list[object] = [{"n": n} for n in range(20)]
            job_ids = await submit_all(cluster, topic, inputs)
            for job_id, data in zip(job_ids, inputs, strict=True):
                job = await cluster.wait_state(job_id, "SUCCEEDED", timeout=20)
                assert job.result == {"echo": data, "by": worker_id}
            [failing] = await submit_all(cluster, topic, [{"fail": True}])
            job = await cluster.wait_state(failing, "FAILED", timeout=20)
            assert job.error is not None
            assert (job.error.code, job.error.message) == ("refused", "asked to fail")
        finally:
            stop(process)
    counted = invocations(calls)
    assert set(counted) == {*job_ids, failing}
    assert set(counted.values()) == {1}, counted


async def test_agent_runtime_is_registered_and_gets_direct_dispatch(tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:10]
    topic, worker_id = f"job.cap.{uid}.add", f"cap-agent-{uid}"
    calls = tmp_path / "invocations.txt"
    async with running_cluster(isolated_bus=False, policy_text=CAP_POLICY) as cluster:
        process = start(
            "cap_agent.py",
            backing.nats().require(),
            backing.redis().require(),
            topic,
            worker_id,
            str(calls),
            log=tmp_path / "agent.log",
        )
        try:
            await until_registered(cluster, worker_id)
            inputs: list[object] = [{"a": n, "b": 100} for n in range(20)]
            job_ids = await submit_all(cluster, topic, inputs)
            for job_id, n in zip(job_ids, range(20), strict=True):
                job = await cluster.wait_state(job_id, "SUCCEEDED", timeout=20)
                assert job.result == {"total": n + 100}
                assert job.worker_id == worker_id
            [failing] = await submit_all(cluster, topic, [{"a": -1, "b": 0}])
            job = await cluster.wait_state(failing, "FAILED", timeout=20)
            assert job.error is not None
            assert job.error.message == "handler failed"
        finally:
            stop(process)
    counted = invocations(calls)
    assert set(counted) == {*job_ids, failing}
    assert set(counted.values()) == {1}, counted
