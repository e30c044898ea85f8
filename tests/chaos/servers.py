"""Private Redis and NATS servers for the chaos suite, killable and restartable in place.

Each server keeps its port and its data directory across restarts, so a restart is what
an operator's crash-and-restart is: Redis replays its append-only file (written with
``appendfsync always``, so nothing acknowledged is lost), NATS JetStream reloads its
streams and consumers from its store directory. Clients reconnect to the same address.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.backing import Backing, free_port


def binary(name: str) -> str:
    """The path of ``name``; skips the test (fails it under ``CI=true``) when missing."""
    found = shutil.which(name)
    if found is None:
        return Backing(None, f"{name} is not on PATH: the chaos suite needs it").require()
    return found


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file, for assertion messages."""
    if not path.exists():
        return f"<{path.name}: no log>"
    text = path.read_text(errors="replace")
    return f"--- {path.name} (last {min(chars, len(text))} chars) ---\n{text[-chars:]}"


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


class ServerProcess:
    """A server binary on a fixed port and data directory: start, kill (SIGKILL), restart."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.data = workdir / f"{self.name}-data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The command line (with port and data directory)."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the server serves clients."""
        return listening(self.port)

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 15) -> None:
        """Start on the same port and data directory; return once it serves."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start\n{tail(self.log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start in {timeout}s\n{tail(self.log)}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed that was not already."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def restart(self) -> None:
        """SIGKILL, then start again in place."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """For the end of the suite: SIGTERM, then SIGKILL."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class RedisServer(ServerProcess):
    """``redis-server`` persisting every write to its append-only file before answering."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            binary("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--dir",
            str(self.data),
            "--maxmemory-policy",
            "noeviction",
        ]

    def ready(self) -> bool:
        """Answers PING (not LOADING: the append-only file is replayed)."""
        if not listening(self.port):
            return False
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()


class NatsServer(ServerProcess):
    """``nats-server`` with JetStream, its file store in the data directory."""

    name = "nats"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            binary("nats-server"),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.data),
        ]
