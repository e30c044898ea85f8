"""Shared by the benchmarks: the machine description, percentiles, a server to measure.

Benchmarks print their figures with the machine they ran on; ``docs/benchmarks.md``
records the latest run of each.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import signal
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
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
