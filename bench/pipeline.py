"""Benchmark: the whole embedded pipeline, end to end.

submit over HTTP -> gate A -> SQLite -> bus -> gate B -> worker -> result stored.

Runs ``cordum up`` (embedded) in a subprocess and reports:

- ``throughput``: jobs/s end to end with in-process workers (the demo pack's), from the
  first submit to the last result stored, with ``--concurrency`` submitters.
- ``latency``: p50/p99 submit-to-worker-start at a fixed offered load (``--rate``): from
  the moment each submit was due to the moment the worker claimed the job (``started_at``,
  recorded just before the handler is called).
- ``external``: the same latency for an idle external SDK worker process, one job at a
  time, over WebSocket and over HTTP long-poll.

Targets on the 2-core reference machine: >= 1,000 jobs/s; p50 dispatch to an idle
external worker <= 10 ms.

``--distributed`` measures the same figures with the roles as processes on NATS and
Redis instead (bench/distributed.py), with 1 and 2 scheduler replicas (``--schedulers``).
Targets: >= 1,000 jobs/s and p99 <= 50 ms at 500 jobs/s.

    python bench/pipeline.py [--jobs 20000] [--rate 500] [--json FILE] [--quick]
    python bench/pipeline.py --distributed [--schedulers 1 2] [--jobs 20000] [--rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchlib import (
    AUTH,
    cordum_up,
    latency_figures,
    machine,
    start_delays_ms,
    throughput_figures,
)
from httpload import closed_loop, warmed_open_loop

HERE = Path(__file__).resolve().parent


def stored_jobs(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Every job in the (stopped) server's store, by id."""
    with sqlite3.connect(data_dir / "cordum.db") as db:
        return {
            job_id: json.loads(data) for job_id, data in db.execute("SELECT id, data FROM jobs")
        }


def wait_done(url: str, expected: int, timeout: float = 300) -> None:
    """Until ``expected`` jobs are terminal (read from /metrics)."""
    terminal = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "DENIED", "OUTPUT_QUARANTINED")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        done = 0.0
        for line in text.splitlines():
            if line.startswith("cordum_jobs{") and any(f'"{s}"' in line for s in terminal):
                done += float(line.rsplit(" ", 1)[1])
        if done >= expected:
            return
        time.sleep(0.2)
    raise RuntimeError(f"only some of {expected} jobs finished in {timeout} s")


def throughput(jobs: int, concurrency: int) -> dict[str, Any]:
    """End-to-end jobs/s with in-process workers."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        with cordum_up(data_dir) as url:
            body = {"topic": "job.demo.greet", "context": {"name": "bench"}}
            start = asyncio.run(
                closed_loop(url, body, jobs=jobs, concurrency=concurrency, headers=AUTH)
            )
            submitted = time.time()
            wait_done(url, jobs)
        stored = stored_jobs(data_dir)
    return throughput_figures(
        stored, jobs=jobs, start=start, submitted=submitted, concurrency=concurrency
    )


def latency(rate: float, duration: float) -> dict[str, Any]:
    """Submit-to-worker-start at a fixed offered load, in-process workers."""

    def body(i: int) -> dict[str, Any]:
        return {"topic": "job.demo.greet", "context": {"name": f"n{i}"}}

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        with cordum_up(data_dir) as url:
            warm_sent, result = asyncio.run(
                warmed_open_loop(
                    url,
                    "/api/v1/jobs",
                    body,
                    rate=rate,
                    duration_s=duration,
                    keep_answers=True,
                    headers=AUTH,
                )
            )
            wait_done(url, warm_sent + result.sent)
        stored = stored_jobs(data_dir)
    starts = start_delays_ms(result.answers, stored)
    return latency_figures(starts) | {"offered_rps": rate, "jobs": len(starts)}


def external(transport: str, samples: int) -> dict[str, Any]:
    """Dispatch latency to an idle external worker process, one job at a time."""
    policy = HERE / "policies" / "pipeline.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        with cordum_up(data_dir, "--no-demo", "--policy", str(policy)) as url:
            worker = subprocess.Popen(
                [sys.executable, str(HERE / "external_worker.py"), url, transport],
                env={**os.environ, "CORDUM_API_KEY": AUTH["X-API-Key"]},
            )
            try:
                times = asyncio.run(_one_at_a_time(url, samples))
            finally:
                worker.terminate()
                worker.wait(30)
        stored = stored_jobs(data_dir)
    starts = [(stored[job_id]["started_at"] - sent) * 1000 for job_id, sent in times]
    return latency_figures(starts) | {"transport": transport, "jobs": len(starts)}


async def _one_at_a_time(url: str, samples: int) -> list[tuple[str, float]]:
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=AUTH) as http:
        for _ in range(100):  # wait for the worker to register
            if (await http.get("/api/v1/workers")).json()["workers"]:
                break
            await asyncio.sleep(0.1)
        times = []
        for i in range(samples + 20):
            sent = time.time()
            answer = await http.post(
                "/api/v1/jobs", json={"topic": "job.bench.echo", "context": {"i": i}}
            )
            job_id = answer.json()["job_id"]
            await http.get(f"/api/v1/jobs/{job_id}", params={"wait": 10})
            if i >= 20:  # the first jobs warm up both processes
                times.append((job_id, sent))
        return times


def run_distributed(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Throughput and latency with each number of scheduler replicas."""
    import distributed

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for kernel in args.kernel:
            for count in args.schedulers:
                logs = Path(tmp) / f"{kernel}-s{count}"
                logs.mkdir()
                run = {
                    "throughput": distributed.throughput(
                        count, args.jobs, args.concurrency, logs, kernel
                    ),
                    "latency": distributed.latency(count, args.rate, args.duration, logs, kernel),
                }
                print(json.dumps(run), flush=True)
                runs.append(run)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs for the throughput run")
    parser.add_argument("--concurrency", type=int, default=64, help="submitting connections")
    parser.add_argument("--rate", type=float, default=500.0, help="offered jobs/s, latency run")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds, latency run")
    parser.add_argument("--samples", type=int, default=300, help="jobs per external run")
    parser.add_argument("--quick", action="store_true", help="small runs, for a smoke test")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--distributed", action="store_true", help="roles as processes on NATS + Redis"
    )
    parser.add_argument(
        "--schedulers", type=int, nargs="+", default=[1, 2], help="replicas, --distributed"
    )
    parser.add_argument(
        "--kernel",
        nargs="+",
        choices=("remote", "local"),
        default=["remote", "local"],
        help="--distributed: the kernel service (gRPC) and/or decisions in-process",
    )
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.duration, args.samples = 2_000, 2.0, 50
    figures: dict[str, Any] = {"machine": machine()}
    if args.distributed:
        figures["distributed"] = run_distributed(args)
        print(json.dumps(figures, indent=2))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        return
    figures["throughput"] = throughput(args.jobs, args.concurrency)
    print(json.dumps(figures["throughput"]), flush=True)
    figures["latency"] = latency(args.rate, args.duration)
    print(json.dumps(figures["latency"]), flush=True)
    figures["external"] = [external(t, args.samples) for t in ("websocket", "http")]
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
