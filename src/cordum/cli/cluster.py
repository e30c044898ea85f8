"""``cordum up --distributed``: every role as its own process, on NATS and Redis.

Starts the kernel service, a scheduler, a gateway and (with the demo pack) a demo worker
that speaks CAP over NATS, each a ``cordum`` subprocess whose output is shown here.
Ctrl+C (or SIGTERM) stops them all; if one of them dies, the rest are stopped too, so
the cluster is never left half up. The same commands, run by hand or by an orchestrator
with any number of gateway and scheduler replicas, make a production deployment
(docs/deployment.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import typer

from cordum.cli.output import EXIT_FAILED, console, err_console

DEFAULT_STORE_URL = "redis://127.0.0.1:6379/0"
DEFAULT_BUS_URL = "nats://127.0.0.1:4222"
DEFAULT_KERNEL_LISTEN = "127.0.0.1:50051"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


@dataclass
class Role:
    """One role's process."""

    name: str
    argv: list[str]
    ready_port: tuple[str, int] | None = None
    process: subprocess.Popen[bytes] | None = None


def _cordum(*args: str) -> list[str]:
    return [sys.executable, "-m", "cordum.cli.main", *args]


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), 0.3):
            return True
    except OSError:
        return False


def run_cluster(*, host: str, port: int, policy: Path | None, demo: bool) -> None:
    """Start every role, wait until they serve, and supervise them until stopped."""
    env = dict(os.environ)
    env.setdefault("CORDUM_STORE_URL", DEFAULT_STORE_URL)
    env.setdefault("CORDUM_BUS_URL", DEFAULT_BUS_URL)
    env.setdefault("CORDUM_KERNEL_LISTEN", DEFAULT_KERNEL_LISTEN)
    kernel_host, _, kernel_port = env["CORDUM_KERNEL_LISTEN"].rpartition(":")
    env.setdefault("CORDUM_KERNEL_URL", env["CORDUM_KERNEL_LISTEN"])
    gateway_args = ["gateway", "--host", host, "--port", str(port)]
    if policy is not None:
        gateway_args += ["--policy", str(policy)]
    if demo:
        gateway_args.append("--demo")
    roles = [
        Role("kernel", _cordum("kernel"), (kernel_host or "127.0.0.1", int(kernel_port))),
        Role("gateway", _cordum(*gateway_args), (host, port)),
        Role("scheduler", _cordum("scheduler")),
    ]
    if demo:
        roles.append(Role("demo-worker", [sys.executable, "-m", "cordum.demo.workers"]))
    console.print(
        f"[bold]Cordum (distributed)[/]: store {env['CORDUM_STORE_URL']},"
        f" bus {env['CORDUM_BUS_URL']}, kernel {env['CORDUM_KERNEL_URL']}"
    )
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failed = None
    try:
        for role in roles:
            role.process = subprocess.Popen(role.argv, env=env)
            failed = _wait_ready(role, lambda: stopping)
            if failed or stopping:
                break
        if not failed and not stopping:
            console.print("Every role is up. Ctrl+C stops them all.")
        while not failed and not stopping:
            failed = next(
                (r.name for r in roles if r.process and r.process.poll() is not None), None
            )
            time.sleep(0.2)
    finally:
        _stop_all(roles)
    if failed:
        err_console.print(f"[bold red]error:[/] the {failed} process stopped; stopped the others")
        raise typer.Exit(EXIT_FAILED)


def _exited(role: Role) -> bool:
    return role.process is not None and role.process.poll() is not None


def _wait_ready(role: Role, interrupted: Callable[[], bool]) -> str | None:
    """None once ``role`` serves (or, without a port, has stayed up a moment); else its name."""
    deadline = time.monotonic() + (START_TIMEOUT_S if role.ready_port else 1.0)
    process = role.process
    while process is not None and time.monotonic() < deadline:
        if process.poll() is not None:
            return role.name
        if interrupted():
            return None
        if role.ready_port and _listening(*role.ready_port):
            return None
        time.sleep(0.1)
    return role.name if role.ready_port else None


def _stop_all(roles: list[Role]) -> None:
    """SIGTERM in reverse start order (workers and gateways first), then wait, then kill."""
    stop_processes(role.process for role in reversed(roles))


def stop_processes(
    processes: Iterable[subprocess.Popen[bytes] | None], timeout: float = STOP_TIMEOUT_S
) -> None:
    """SIGTERM every live process of ``processes`` at once, in order, then wait for them;
    SIGKILL what outlives ``timeout`` seconds (counted for all of them together)."""
    live = [p for p in processes if p is not None and p.poll() is None]
    for process in live:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in live:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
