"""Two gateways and two schedulers, each its own process, share 20,000 jobs.

The replicas run as ``cordum gateway`` / ``cordum scheduler`` processes on Redis and
NATS JetStream, with two SDK worker processes over NATS. A client submits 20,000 jobs,
alternating gateways. Pinned: every job succeeds, each job's handler ran exactly once
(each worker logs every call), and every replica is still up at the end.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from cordum.ports.redis_store import RedisStore
from cordum.ports.store import JobFilter
from tests import backing
from tests.distributed.harness import RoleProcess, cluster_env, forget, forget_stream
from tests.pipeline.harness import AUTH, POLICY

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent
sys.path.append(str(HERE.parents[1] / "bench"))
from httpload import closed_loop  # noqa: E402 - the benchmarks' load generator

JOBS = 20_000
CONCURRENCY = 48


async def submit_all(urls: list[str], jobs: int) -> None:
    """Submit ``jobs`` allowed jobs, half through each gateway, ``CONCURRENCY`` connections
    in all (the benchmarks' raw HTTP client: httpx would cost more CPU than a gateway)."""
    body = {"topic": "job.test.echo", "context": {"n": 1}}
    share = jobs // len(urls)
    await asyncio.gather(
        *(
            closed_loop(url, body, jobs=share, concurrency=CONCURRENCY // len(urls), headers=AUTH)
            for url in urls
        )
    )


async def all_job_ids(store: RedisStore) -> list[str]:
    """Every job in the store."""
    job_ids: list[str] = []
    cursor = None
    while True:
        page = await store.list_jobs(JobFilter(), cursor=cursor, limit=1000)
        job_ids += [job.id for job in page.jobs]
        if page.next_cursor is None:
            return job_ids
        cursor = page.next_cursor


async def until_all_succeeded(store: RedisStore, jobs: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        counts = await store.count_jobs_by_state()
        done = sum(n for state, n in counts.items() if state.terminal)
        if done >= jobs:
            return
        assert time.monotonic() < deadline, f"not all jobs finished: {counts}"
        await asyncio.sleep(0.5)


async def test_two_gateways_and_two_schedulers_run_each_job_once(tmp_path: Path) -> None:
    prefix = backing.unique_prefix("replicas")
    env = cluster_env(prefix, dispatch_timeout_s=60, running_timeout_s=120)
    (tmp_path / "policy.yaml").write_text(POLICY)
    ports = [backing.free_port(), backing.free_port()]
    roles = [
        RoleProcess(
            "gateway",
            env,
            "--port",
            str(port),
            "--policy",
            str(tmp_path / "policy.yaml"),
            log=tmp_path / f"gateway{n}.log",
        )
        for n, port in enumerate(ports)
    ]
    roles += [RoleProcess("scheduler", env, log=tmp_path / f"scheduler{n}.log") for n in range(2)]
    calls = tmp_path / "invocations.txt"
    workers: list[subprocess.Popen[bytes]] = []
    store = RedisStore(env["CORDUM_STORE_URL"], prefix=env["CORDUM_REDIS_PREFIX"])
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        roles[0].start(f"{urls[0]}/readyz")
        for role, url in zip(roles[1:], [urls[1], None, None], strict=True):
            role.start(None if url is None else f"{url}/readyz")
        for n in range(2):
            with (tmp_path / f"worker{n}.log").open("ab") as out:
                workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(HERE / "sdk_worker.py"),
                            env["CORDUM_BUS_URL"],
                            env["CORDUM_STORE_URL"],
                            prefix,
                            f"replica-worker-{n}",
                            str(calls),
                        ],
                        stdout=out,
                        stderr=out,
                    )
                )
        for _ in range(300):
            if len(await store.list_workers()) == 2:
                break
            await asyncio.sleep(0.1)
        await submit_all(urls, JOBS)
        await until_all_succeeded(store, JOBS, timeout=240)
        job_ids = await all_job_ids(store)
        counts = await store.count_jobs_by_state()
        assert {state.value: n for state, n in counts.items()} == {"SUCCEEDED": JOBS}
        assert all(role.process and role.process.poll() is None for role in roles)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        for role in roles:
            role.stop()
        await store.close()
        client = aioredis.from_url(env["CORDUM_STORE_URL"])
        await forget(client, prefix)
        await client.aclose()
        await forget_stream(env)
    invoked = Counter(calls.read_text().split())
    assert len(job_ids) == len(set(job_ids)) == JOBS
    assert set(invoked) == set(job_ids)
    assert set(invoked.values()) == {1}, [j for j, n in invoked.items() if n > 1][:10]
