"""Run ``cordum up`` and SDK workers as real processes, to test what happens when they die."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from cordum.cli.cluster import stop_processes

ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    """``cordum up`` in a subprocess on a fixed port and data directory."""

    def __init__(self, data_dir: Path, port: int, *args: str, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.port = port
        self.args = args
        self.env = {**os.environ, **env}
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{port}.log"

    def start(self, timeout: float = 30) -> None:
        """Start and wait for ``/readyz``."""
        command = [sys.executable, "-m", "cordum.cli.main", "up", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), *self.args]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cordum up exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("cordum up did not become ready")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait (graceful); SIGKILL after 20 s."""
        stop_processes([self.process], timeout=20)


def start_script(script: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """Run a Python script of the test (e.g. an SDK worker) in the project's interpreter."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
