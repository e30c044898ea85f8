"""Distributed mode for bench/pipeline.py --distributed: roles as processes on NATS + Redis.

The cluster is what ``cordum up --distributed`` starts, with a configurable number of
scheduler replicas: one ``cordum kernel`` (gRPC), one ``cordum gateway``, N ``cordum
scheduler`` and one SDK worker process over NATS (bench/nats_worker.py), on the local
NATS (JetStream) and Redis. Every run has its own Redis key prefix and NATS subject
prefix, and deletes its keys afterwards.

Figures: end-to-end jobs/s (closed loop, first submit to last result stored) and p50/p99
submit-to-worker-start at a fixed offered load (open loop, from the moment each submit
was due to the moment the worker's claim was committed, ``started_at``). With the
throughput run comes where the CPU went: milliseconds of CPU per job for each role, Redis,
NATS and the load generator (read from ``/proc``, so on Linux only). On a machine whose
cores they all share, their sum bounds the throughput: 2 cores at 4 ms a job is at most
500 jobs/s, however the work is spread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from benchlib import (
    AUTH,
    BENCH_KEY,
    free_port,
    latency_figures,
    start_delays_ms,
    throughput_figures,
    wait_ready,
)
from cordum.cli.cluster import stop_processes
from httpload import closed_loop, warmed_open_loop

HERE = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("CORDUM_STORE_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("CORDUM_BUS_URL", "nats://127.0.0.1:4222")
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "DENIED", "OUTPUT_QUARANTINED")


@dataclass
class Cluster:
    """A running cluster: the gateway's URL, the run's Redis key prefix, and the pid of
    each role's process ("scheduler 1", "scheduler 2", ... for replicas)."""

    url: str
    prefix: str
    pids: dict[str, int]


def cpu_ticks(pid: int) -> int | None:
    """User + system CPU time of a process so far, in clock ticks (None: not readable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def service_pids() -> dict[str, int]:
    """Redis's pid (it says) and the NATS server's (when exactly one runs here)."""
    with redis.Redis.from_url(REDIS_URL) as client:
        pids = {"redis": int(client.info("server")["process_id"])}
    found = subprocess.run(["pgrep", "-x", "nats-server"], capture_output=True, text=True)
    nats = found.stdout.split()
    if len(nats) == 1:
        pids["nats"] = int(nats[0])
    return pids


class CpuMeter:
    """CPU used by each process of ``pids`` between ``start()`` and ``per_job(jobs)``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**pids, **service_pids(), "load generator": os.getpid()}
        self.before: dict[str, int | None] = {}

    def start(self) -> None:
        """Take the first reading."""
        self.before = {name: cpu_ticks(pid) for name, pid in self.pids.items()}

    def per_job(self, jobs: int) -> dict[str, float]:
        """Milliseconds of CPU per job, by process, and their total."""
        tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        figures = {}
        for name, pid in self.pids.items():
            now, before = cpu_ticks(pid), self.before.get(name)
            if now is not None and before is not None:
                figures[name] = round((now - before) * tick_ms / jobs, 3)
        figures["total"] = round(sum(figures.values()), 3)
        return figures


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=out)


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"a role exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.3):
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def cluster(schedulers: int, logs: Path, kernel: str = "remote") -> Iterator[Cluster]:
    """Kernel, gateway, ``schedulers`` schedulers and a NATS worker, as processes.

    ``kernel="local"``: no kernel service; gateway and schedulers decide in-process.
    """
    run = "bench" + secrets.token_hex(5)
    prefix = f"{run}:"
    kernel_port, port = free_port(), free_port()
    env = {
        **os.environ,
        "CORDUM_API_KEY": BENCH_KEY,
        "CORDUM_STORE_URL": REDIS_URL,
        "CORDUM_BUS_URL": NATS_URL,
        "CORDUM_REDIS_PREFIX": prefix,
        "CORDUM_BUS_SUBJECT_PREFIX": run,
        "CORDUM_BUS_STREAM": run.upper(),
        "CORDUM_KERNEL_LISTEN": f"127.0.0.1:{kernel_port}",
        "CORDUM_AUDIT_CHECKPOINT_S": "0",
    }
    env.pop("CORDUM_KERNEL_URL", None)
    if kernel == "remote":
        env["CORDUM_KERNEL_URL"] = env["CORDUM_KERNEL_LISTEN"]
    cordum = [sys.executable, "-m", "cordum.cli.main"]
    policy = str(HERE / "policies" / "pipeline.yaml")
    processes: list[subprocess.Popen[bytes]] = []
    pids: dict[str, int] = {}
    url = f"http://127.0.0.1:{port}"
    try:
        if kernel == "remote":
            kernel_log = logs / "kernel.log"
            processes.append(_spawn([*cordum, "kernel"], env, kernel_log))
            pids["kernel"] = processes[-1].pid
            _wait_port(kernel_port, processes[-1], kernel_log)
        gateway = _spawn(
            [*cordum, "gateway", "--port", str(port), "--policy", policy], env, logs / "gw.log"
        )
        processes.append(gateway)
        pids["gateway"] = gateway.pid
        wait_ready(url, gateway)
        for n in range(schedulers):
            processes.append(_spawn([*cordum, "scheduler"], env, logs / f"scheduler{n}.log"))
            pids["scheduler" if schedulers == 1 else f"scheduler {n + 1}"] = processes[-1].pid
        worker = [sys.executable, str(HERE / "nats_worker.py"), NATS_URL, REDIS_URL, run]
        processes.append(_spawn(worker, env, logs / "worker.log"))
        pids["worker"] = processes[-1].pid
        _wait_for_worker(url)
        yield Cluster(url, prefix, pids)
    finally:
        stop_processes(reversed(processes), timeout=20)
        _forget(prefix)
        asyncio.run(_forget_stream(env["CORDUM_BUS_STREAM"], run))


def _wait_for_worker(url: str) -> None:
    for _ in range(300):
        workers = httpx.get(f"{url}/api/v1/workers", headers=AUTH, timeout=5).json()["workers"]
        if any(w["live"] for w in workers):
            return
        time.sleep(0.1)
    raise RuntimeError("the NATS worker never registered")


def _forget(prefix: str) -> None:
    """Delete the run's keys and the CAP blobs of its jobs."""
    client = redis.Redis.from_url(REDIS_URL)
    job_ids = []
    for key in client.scan_iter(match=f"{prefix}*", count=5000):
        text = key.decode()
        if text.startswith(f"{prefix}job:"):
            job_ids.append(text.removeprefix(f"{prefix}job:"))
        client.unlink(key)
    blobs = [k for j in job_ids for k in (f"ctx:{j}", f"res:{j}")]
    for start in range(0, len(blobs), 5000):
        client.unlink(*blobs[start : start + 5000])


async def _forget_stream(stream: str, subject_prefix: str) -> None:
    """Delete the run's JetStream stream (the NATS server outlives the benchmark)."""
    import nats
    import nats.js.errors

    from cordum.ports.nats_jetstream import stream_name

    client = await nats.connect(NATS_URL)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await client.jetstream().delete_stream(stream_name(stream, subject_prefix))
    finally:
        await client.close()


def stored_jobs(prefix: str) -> dict[str, dict[str, Any]]:
    """Every job of the run, read from Redis."""
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}job:*", count=5000))
    jobs: dict[str, dict[str, Any]] = {}
    for start in range(0, len(keys), 2000):
        for raw in client.mget(keys[start : start + 2000]):
            if raw is not None:
                job = json.loads(raw)
                jobs[job["id"]] = job
    return jobs


def wait_done(prefix: str, expected: int, timeout: float = 600) -> None:
    """Until ``expected`` jobs are terminal (the store's per-state indexes)."""
    client = redis.Redis.from_url(REDIS_URL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sum(int(client.zcard(f"{prefix}jobs:state:{state}")) for state in TERMINAL)
        if done >= expected:
            return
        time.sleep(0.2)
    raise RuntimeError(f"only some of {expected} jobs finished in {timeout} s")


def throughput(
    schedulers: int, jobs: int, concurrency: int, logs: Path, kernel: str = "remote"
) -> dict[str, Any]:
    """End-to-end jobs/s through the cluster."""
    with cluster(schedulers, logs, kernel) as running:
        body = {"topic": "job.bench.echo", "context": {"name": "bench"}}
        cpu = CpuMeter(running.pids)
        cpu.start()
        start = asyncio.run(
            closed_loop(running.url, body, jobs=jobs, concurrency=concurrency, headers=AUTH)
        )
        submitted = time.time()
        wait_done(running.prefix, jobs)
        cpu_ms_per_job = cpu.per_job(jobs)
        stored = stored_jobs(running.prefix)
    figures = throughput_figures(
        stored, jobs=jobs, start=start, submitted=submitted, concurrency=concurrency
    )
    return {"kernel": kernel, "schedulers": schedulers, **figures, "cpu_ms_per_job": cpu_ms_per_job}


def latency(
    schedulers: int, rate: float, duration: float, logs: Path, kernel: str = "remote"
) -> dict[str, Any]:
    """Submit-to-worker-start at ``rate`` jobs/s through the cluster."""

    def body(i: int) -> dict[str, Any]:
        return {"topic": "job.bench.echo", "context": {"i": i}}

    with cluster(schedulers, logs, kernel) as running:
        warm_sent, result = asyncio.run(
            warmed_open_loop(
                running.url,
                "/api/v1/jobs",
                body,
                rate=rate,
                duration_s=duration,
                keep_answers=True,
                headers=AUTH,
            )
        )
        wait_done(running.prefix, warm_sent + result.sent)
        stored = stored_jobs(running.prefix)
    starts = start_delays_ms(result.answers, stored)
    return {
        "kernel": kernel,
        "schedulers": schedulers,
        "offered_rps": rate,
        "jobs": len(starts),
        **latency_figures(starts),
    }
