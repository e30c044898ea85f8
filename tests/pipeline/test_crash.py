"""Crash safety (invariants 1 and 5): SIGKILL the embedded process during a burst.

1,000 jobs, each with its own idempotency key, are submitted by 8 clients that retry
every request until it is answered, faster than the worker runs them, so at the kill
jobs are queued, dispatched, running and reporting. Part-way through, the control plane
is killed with SIGKILL and started again on the same data directory. An external SDK worker process,
which survives the crash, runs the jobs and appends each key to a log.

Afterwards: exactly one job per key, every job SUCCEEDED, and every key's handler ran
exactly once - whatever the crash interrupted (a commit, a dispatch on the lost
in-process bus, a claim whose answer never reached the worker, a result in flight).
"""

from __future__ import annotations

import textwrap
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.pipeline.harness import AUTH, free_socket
from tests.pipeline.processes import ServerProcess, start_script

JOBS = 1_000
KILL_AFTER = 300

POLICY = """
version: "crash-1"
default_decision: deny
rules:
  - id: allow-crash
    match: {topics: ["job.crash.*"]}
    decision: allow
    reason: crash test jobs
"""

WORKER = """
import asyncio, os, sys
from cordum.sdk import Worker

url, log = sys.argv[1], sys.argv[2]
worker = Worker(pool="crash", topics=["job.crash.*"], url=url, transport="http",
                concurrency=8, heartbeat_interval=0.5, worker_id="crash-worker")
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

@worker.handle("job.crash.work")
async def work(ctx):
    os.write(fd, (ctx.input["key"] + "\\n").encode())
    await asyncio.sleep(0.04)  # slower than submissions: a backlog is in flight at the kill
    return {"key": ctx.input["key"]}

worker.run()
"""

SERVER_ENV = {
    "CORDUM_HEARTBEAT_INTERVAL_S": "0.5",
    "CORDUM_WORKER_LOST_AFTER_S": "5",
    "CORDUM_RECONCILE_INTERVAL_S": "0.5",
    "CORDUM_BACKOFF_BASE_S": "0.05",
    "CORDUM_BACKOFF_MAX_S": "0.5",
}


def free_port() -> int:
    with free_socket() as sock:
        port: int = sock.getsockname()[1]
        return port


CLIENTS = threading.local()
OPENED: list[httpx.Client] = []


def submit_until_answered(url: str, key: str) -> str:
    """What an agent does: retry the same request (same key) until it gets an answer."""
    if not hasattr(CLIENTS, "http"):
        CLIENTS.http = httpx.Client(base_url=url, timeout=5, headers=AUTH)
        OPENED.append(CLIENTS.http)
    body = {"topic": "job.crash.work", "context": {"key": key}, "idempotency_key": key}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            response = CLIENTS.http.post("/api/v1/jobs", json=body)
        except httpx.HTTPError:
            time.sleep(0.05)
            continue
        assert response.status_code == 200, response.text
        job_id: str = response.json()["job_id"]
        return job_id
    raise AssertionError(f"{key} was never answered")


def wait_all_terminal(url: str, job_ids: set[str], timeout: float = 90) -> dict[str, str]:
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=10, headers=AUTH) as http:
        while time.monotonic() < deadline:
            states = {}
            cursor = None
            while True:
                params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
                page = http.get("/api/v1/jobs", params=params).json()
                states.update({j["job_id"]: j["state"] for j in page["jobs"]})
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            open_jobs = [j for j in job_ids if states.get(j) not in TERMINAL]
            if not open_jobs:
                return states
            time.sleep(0.25)
    return states


TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "DENIED", "OUTPUT_QUARANTINED"}


def test_sigkill_during_a_burst_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(POLICY))
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    runs = tmp_path / "runs.log"
    server = ServerProcess(
        tmp_path / "data", free_port(), "--no-demo", "--policy", str(policy), env=SERVER_ENV
    )
    server.start()
    worker = start_script(script, server.url, str(runs), log=tmp_path / "worker.log")
    answered: dict[str, str] = {}
    lock = threading.Lock()

    def submit(key: str) -> None:
        job_id = submit_until_answered(server.url, key)
        with lock:
            answered[key] = job_id

    try:
        keys = [f"key-{i:04d}" for i in range(JOBS)]
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(submit, key) for key in keys]
            while len(answered) < KILL_AFTER:
                time.sleep(0.01)
            server.kill()
            killed_at = len(answered)
            server.start()
            for future in futures:
                future.result()
        states = wait_all_terminal(server.url, set(answered.values()))
    finally:
        worker.terminate()
        worker.wait(30)
        server.stop()
        for client in OPENED:
            client.close()
        OPENED.clear()

    assert KILL_AFTER <= killed_at < JOBS, "the crash must interrupt the burst"
    assert len(answered) == JOBS
    assert len(set(answered.values())) == JOBS, "one job per idempotency key"
    assert len(states) == JOBS, "no job was created twice for one key"
    not_done = Counter(states[j] for j in answered.values() if states.get(j) != "SUCCEEDED")
    assert not not_done, f"jobs not SUCCEEDED: {dict(not_done)}"
    ran = Counter(runs.read_text().split())
    twice = {key: n for key, n in ran.items() if n > 1}
    assert not twice, f"handlers ran more than once: {twice}"
    assert set(ran) == set(keys), "every job's handler ran"
