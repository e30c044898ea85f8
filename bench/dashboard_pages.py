"""Benchmark: server time of every dashboard page with 10,000 jobs in the store.

Starts ``cordum up`` (embedded, demo pack and its workers) in a subprocess, submits
``--jobs`` jobs through the API (a mix the demo policy allows, denies, constrains and
sends for approval, so every page has something to show), waits for the allowed ones to
finish, then requests each page ``--repeat`` times and reports the server time the page
itself measured (its ``Server-Timing`` header) and the round trip.

Target on the 2-core reference machine: no page needs more than 300 ms of server time.

    python bench/dashboard_pages.py [--jobs 10000] [--repeat 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchlib import AUTH, cordum_up, machine, percentile
from httpload import open_loop

TARGET_MS = 300.0
TOPICS = ("job.demo.greet",) * 7 + ("job.demo.delete-all", "job.demo.archive", "job.demo.admin")
SUBMIT_RATE = 600.0
TIMING = re.compile(r"app;dur=([0-9.]+)")


def job_body(i: int) -> dict[str, Any]:
    """A job of the mix: mostly allowed, some denied, constrained or held for approval."""
    return {"topic": TOPICS[i % len(TOPICS)], "context": {"name": f"agent-{i}", "n": i}}


def pages(job_id: str) -> dict[str, str]:
    """Every page of the dashboard, with a real job for the job page."""
    return {
        "overview": "/",
        "jobs": "/jobs",
        "jobs (filtered)": "/jobs?state=SUCCEEDED&topic=job.demo.greet",
        "job": f"/jobs/{job_id}",
        "approvals": "/approvals",
        "policy": "/policy",
        "audit": "/audit",
        "workers": "/workers",
        "dlq": "/dlq",
    }


def fill(url: str, jobs: int) -> None:
    """Submit ``jobs`` jobs, then wait until none is left to run."""
    asyncio.run(
        open_loop(
            url,
            "/api/v1/jobs",
            job_body,
            rate=SUBMIT_RATE,
            duration_s=jobs / SUBMIT_RATE,
            headers=AUTH,
        )
    )
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as http:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            busy = http.get(
                "/api/v1/jobs", params={"state": "PENDING,SCHEDULED,DISPATCHED,RUNNING", "limit": 1}
            )
            if not busy.json()["jobs"]:
                return
            time.sleep(0.5)
    raise RuntimeError("the submitted jobs did not finish within 300 s")


def measure(url: str, repeat: int) -> dict[str, dict[str, float]]:
    """Server and round-trip milliseconds (p50, p99, max) per page."""
    figures: dict[str, dict[str, float]] = {}
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as http:
        job_id = http.get("/api/v1/jobs", params={"limit": 1}).json()["jobs"][0]["job_id"]
        for name, path in pages(job_id).items():
            server: list[float] = []
            trip: list[float] = []
            for _ in range(repeat):
                started = time.perf_counter()
                response = http.get(path)
                trip.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"{path} answered {response.status_code}: {response.text[:200]}"
                    )
                found = TIMING.search(response.headers.get("server-timing", ""))
                if found is None:
                    raise RuntimeError(f"{path} sent no Server-Timing header")
                server.append(float(found.group(1)))
            figures[name] = {
                "server_p50_ms": percentile(server, 50),
                "server_p99_ms": percentile(server, 99),
                "server_max_ms": max(server),
                "round_trip_p50_ms": percentile(trip, 50),
            }
    return figures


def main() -> int:
    """Run the benchmark; exit 1 if a page needs more than the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, cordum_up(Path(tmp)) as url:
        started = time.perf_counter()
        fill(url, args.jobs)
        filled_s = time.perf_counter() - started
        figures = measure(url, args.repeat)
    print(f"machine: {machine()}")
    print(
        f"{args.jobs} jobs submitted and settled in {filled_s:.1f} s;"
        f" {args.repeat} requests per page"
    )
    print(
        f"{'page':<18} {'server p50':>11} {'server p99':>11} {'server max':>11}"
        f" {'round trip p50':>15}"
    )
    worst = 0.0
    for name, row in figures.items():
        worst = max(worst, row["server_max_ms"])
        print(
            f"{name:<18} {row['server_p50_ms']:>9.1f}ms {row['server_p99_ms']:>9.1f}ms"
            f" {row['server_max_ms']:>9.1f}ms {row['round_trip_p50_ms']:>13.1f}ms"
        )
    verdict = "met" if worst <= TARGET_MS else "NOT met"
    print(f"slowest page: {worst:.1f} ms of server time; target <= {TARGET_MS:.0f} ms: {verdict}")
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine(), "jobs": args.jobs, "pages": figures}, indent=2)
        )
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
