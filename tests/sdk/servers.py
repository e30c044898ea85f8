"""``cordum up`` as a real process, for tests that block: the sync Client and the CLI.

The sync :class:`~cordum.sdk.Client` blocks its thread, so it must never share an event
loop with the server it talks to. These helpers start the server the way a user does,
wait for ``GET /readyz``, and stop it with SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.pipeline.harness import ADMIN_KEY

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without ``CORDUM_*`` settings, plus ``extra``.

    ``CORDUM_API_KEY`` is :data:`ADMIN_KEY`: a server started with it installs it as its
    bootstrap admin key, and the CLI and SDK in other processes send it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORDUM_")}
    env.pop("FORCE_COLOR", None)
    env.update(PYTHONPATH=str(ROOT / "src"), PYTHONIOENCODING="utf-8", CORDUM_API_KEY=ADMIN_KEY)
    env.update(extra)
    return env


def free_port() -> int:
    """A loopback port nothing listens on (at the moment of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CordumUp:
    """``cordum up --port P --data-dir D [args]`` in a subprocess.

    ``env`` adds to (or, with ``""``, blanks) variables of :func:`clean_env`.
    """

    def __init__(
        self, data_dir: Path, *args: str, port: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.args = args
        self.env = clean_env(**(env or {}))
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"cordum-up-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The command line that starts the server."""
        return [
            sys.executable,
            "-m",
            "cordum.cli.main",
            "up",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]

    def output(self) -> str:
        """What the server printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until ``/readyz`` answers 200."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cordum up exited early:\n{self.output()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"cordum up was not ready in {timeout}s:\n{self.output()[-3000:]}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; returns the exit code (None if it was never started)."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError(
                    f"cordum up ignored SIGTERM for {timeout}s:\n{self.output()[-3000:]}"
                ) from None
        return process.returncode


@contextlib.contextmanager
def cordum_up(
    data_dir: Path, *args: str, port: int | None = None, env: dict[str, str] | None = None
) -> Iterator[CordumUp]:
    """A started server for the duration of the block, stopped with SIGTERM after it."""
    server = CordumUp(data_dir, *args, port=port, env=env)
    server.start()
    try:
        yield server
    finally:
        server.stop()
