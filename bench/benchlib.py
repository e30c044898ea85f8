"""Shared by the benchmarks: the machine description, percentiles, a server to measure.

Benchmarks print their figures with the machine they ran on; ``docs/benchmarks.md``
records the latest run of each.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import yaml

from cordum.cli.cluster import stop_processes

PACKAGES = ("cordum", "pydantic", "PyYAML", "google-re2", "fastapi", "uvicorn", "httpx")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "libyaml": yaml.__with_libyaml__,
        **versions,
    }


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def latency_figures(values_ms: list[float]) -> dict[str, Any]:
    """p50, p90, p99 and max of latencies in milliseconds."""
    return {
        "p50_ms": round(percentile(values_ms, 50), 2),
        "p90_ms": round(percentile(values_ms, 90), 2),
        "p99_ms": round(percentile(values_ms, 99), 2),
        "max_ms": round(max(values_ms), 2),
    }


def start_delays_ms(
    answers: list[tuple[float, bytes]], stored: dict[str, dict[str, Any]]
) -> list[float]:
    """Submit-to-worker-start of each answered submit: from when it was due (open loop)
    to the ``started_at`` of its stored job."""
    delays = []
    for due, payload in answers:
        job = stored[json.loads(payload)["job_id"]]
        delays.append((job["started_at"] - due) * 1000)
    return delays


def throughput_figures(
    stored: dict[str, dict[str, Any]],
    *,
    jobs: int,
    start: float,
    submitted: float,
    concurrency: int,
) -> dict[str, Any]:
    """Jobs/s of a closed-loop run of ``jobs`` submits, from ``start`` to ``submitted``,
    and end to end from ``start`` to the last stored job's finish."""
    finished = [j["finished_at"] for j in stored.values() if j["state"] == "SUCCEEDED"]
    elapsed = max(finished) - start
    return {
        "jobs": jobs,
        "succeeded": len(finished),
        "concurrency": concurrency,
        "submit_rps": round(jobs / (submitted - start), 1),
        "end_to_end_jobs_per_s": round(len(finished) / elapsed, 1),
        "elapsed_s": round(elapsed, 2),
    }


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


BENCH_KEY = "cordum_bench-admin-" + secrets.token_hex(16)
"""The admin key every benchmark server is started with (``CORDUM_API_KEY``)."""
AUTH = {"X-API-Key": BENCH_KEY}
"""Headers that authenticate as :data:`BENCH_KEY`."""


@contextlib.contextmanager
def cordum_up(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``cordum up`` in a subprocess with :data:`BENCH_KEY` as its admin key; yields
    its base URL once it is ready."""
    port = free_port()
    command = [sys.executable, "-m", "cordum.cli.main", "up", "--port", str(port)]
    command += ["--data-dir", str(data_dir), *args]
    process = subprocess.Popen(
        command,
        env={**os.environ, "CORDUM_API_KEY": BENCH_KEY, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url
    finally:
        stop_processes([process], timeout=20)


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Block until ``/readyz`` answers 200, or fail with the server's stderr."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"cordum up exited with {process.returncode}:\n{err}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} was not ready after {timeout} s")
