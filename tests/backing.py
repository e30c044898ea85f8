"""Redis and NATS for tests that need the real servers.

The suite uses the servers already running on the standard ports (CI and this project's
machines start them). On a laptop without them, it starts ``redis-server`` /
``nats-server -js`` from PATH on a free port for the session. When neither works, those
tests skip with a one-line reason, except under ``CI=true``, where a missing server is a
failure: CI must never pass by skipping the distributed half of the suite.

Every test gets its own Redis key prefix and NATS subject/stream namespace (see
:func:`unique_prefix`) and cleans up after itself, so runs never collide.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis as redis_client

REDIS_DEFAULT = ("127.0.0.1", 6379)
NATS_DEFAULT = ("127.0.0.1", 4222)


def _reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout):
        return True
    return False


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if _reachable("127.0.0.1", port, 0.2):
            return True
        time.sleep(0.05)
    return False


def _spawn(command: list[str], port: int) -> bool:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(_stop, process)
    return _wait_listening(port, process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)


@dataclass(frozen=True)
class Backing:
    """Where a server is, or why there is none."""

    url: str | None
    missing: str = ""

    def require(self) -> str:
        """The URL; skips the test (fails it under ``CI=true``) when there is no server."""
        if self.url is not None:
            return self.url
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {self.missing}: CI must not skip these tests")
        pytest.skip(self.missing)


def _find_redis() -> Backing:
    if _reachable(*REDIS_DEFAULT):
        return Backing("redis://127.0.0.1:6379/0")
    binary = shutil.which("redis-server")
    if binary is None:
        return Backing(None, "no Redis on 127.0.0.1:6379 and no redis-server on PATH")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    if _spawn([*command, "--appendonly", "no", "--dir", tempfile.mkdtemp()], port):
        return Backing(f"redis://127.0.0.1:{port}/0")
    return Backing(None, f"redis-server on PATH did not start on port {port}")


def _find_nats() -> Backing:
    if _reachable(*NATS_DEFAULT):
        return Backing("nats://127.0.0.1:4222")
    binary = shutil.which("nats-server")
    if binary is None:
        return Backing(None, "no NATS on 127.0.0.1:4222 and no nats-server on PATH")
    port = free_port()
    command = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", tempfile.mkdtemp()]
    if _spawn(command, port):
        return Backing(f"nats://127.0.0.1:{port}")
    return Backing(None, f"nats-server on PATH did not start on port {port}")


_found: dict[str, Backing] = {}


def redis() -> Backing:
    """The session's Redis (found or started once)."""
    if "redis" not in _found:
        _found["redis"] = _find_redis()
    return _found["redis"]


def nats() -> Backing:
    """The session's NATS with JetStream (found or started once)."""
    if "nats" not in _found:
        _found["nats"] = _find_nats()
    return _found["nats"]


def unique_prefix(label: str = "t") -> str:
    """A namespace no other test or run uses: ``cordumtest-<label>-<random>``.

    Safe as a Redis key prefix and as a NATS subject token and stream-name part.
    """
    return f"cordumtest-{label}-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def redis_namespace(url: str, label: str) -> Iterator[str]:
    """A :func:`unique_prefix` on the Redis at ``url``; its ``<prefix>:*`` keys are
    deleted when the block ends."""
    name = unique_prefix(label)
    yield name
    client = redis_client.Redis.from_url(url)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()
