"""``cordum gateway | scheduler | kernel``: one role per process, for distributed mode.

Every role reads the same settings (``CORDUM_STORE_URL`` = Redis, ``CORDUM_BUS_URL`` =
NATS, ``CORDUM_KERNEL_URL`` = the kernel service) and any number of gateway and scheduler
replicas may run at once: they share work through NATS queue groups and state through
Redis. ``cordum up --distributed`` starts one of each on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import typer
import uvicorn
from rich.markup import escape

from cordum.cli import render
from cordum.cli.output import EXIT_FAILED, EXIT_USAGE, console, err_console
from cordum.config import Settings, SettingsError
from cordum.policy import PolicyLoadError
from cordum.sdk import eventloop
from cordum.services.policy_admin import StartupPolicyError
from cordum.wiring import GATEWAY, SCHEDULER, KernelRole, build_plane, load_policy

log = logging.getLogger("cordum")

STORE_URL_HELP = "Redis URL of the shared store [env: CORDUM_STORE_URL]."
BUS_URL_HELP = "NATS URL of the shared bus [env: CORDUM_BUS_URL]."


def component_id(role: str) -> str:
    """How this process names itself on the bus: role, host and pid."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"{role}-{host}-{os.getpid()}"


def _settings(**overrides: Any) -> Settings:
    try:
        settings = Settings.load(**overrides)
    except SettingsError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_USAGE) from None
    if not settings.distributed:
        err_console.print(
            "[bold red]error:[/] this role runs in distributed mode: set CORDUM_STORE_URL"
            " (redis://...) and CORDUM_BUS_URL (nats://...), or pass --store-url and"
            " --bus-url. For everything in one process, use `cordum up`."
        )
        raise typer.Exit(EXIT_USAGE)
    return settings


def _run(main: Callable[[], Coroutine[Any, Any, None]], settings: Settings) -> None:
    """Run ``main``; unreachable Redis/NATS and bad policies end in one line, not a trace."""
    from nats.errors import Error as NatsError
    from redis.exceptions import RedisError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        eventloop.run(main())
    except KeyboardInterrupt:
        pass
    except PolicyLoadError as exc:
        render.issues(exc.issues, "The policy cannot be loaded; nothing was started.")
        raise typer.Exit(EXIT_USAGE) from None
    except StartupPolicyError as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.summary)}")
        raise typer.Exit(EXIT_USAGE) from None
    except RedisError as exc:
        err_console.print(
            f"[bold red]error:[/] cannot use Redis at {escape(settings.store_url or '')}:"
            f" {escape(str(exc))} (is it running? is CORDUM_STORE_URL right?)"
        )
        raise typer.Exit(EXIT_FAILED) from None
    except (NatsError, OSError) as exc:
        err_console.print(
            f"[bold red]error:[/] cannot reach NATS at {escape(settings.bus_url or '')}:"
            f" {escape(str(exc) or type(exc).__name__)} (is it running with -js?)"
        )
        raise typer.Exit(EXIT_FAILED) from None


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def gateway(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8081, "--port", help="HTTP port of the API."),
    policy: Path | None = typer.Option(
        None, "--policy", help="Publish this policy at start-up if it differs from the active one."
    ),
    demo: bool = typer.Option(
        False,
        "--demo",
        help="With no --policy and no active snapshot yet, publish the demo pack's policy"
        " (else deny-all).",
    ),
    store_url: str | None = typer.Option(None, "--store-url", help=STORE_URL_HELP),
    bus_url: str | None = typer.Option(None, "--bus-url", help=BUS_URL_HELP),
) -> None:
    """Run a gateway replica: the HTTP API, gate A, approvals, policy admin, audit."""
    settings = _settings(
        host=host, port=port, policy=policy, store_url=store_url, bus_url=bus_url, demo=demo
    )

    async def main() -> None:
        from cordum.api import create_app
        from cordum.cli.server import bootstrap_auth, http_config

        plane = await build_plane(
            settings, roles=frozenset({GATEWAY}), component=component_id(GATEWAY)
        )
        app = create_app(plane, on_start=bootstrap_auth)
        console.print(f"[bold]Cordum gateway[/] on http://{settings.host}:{settings.port}")
        await uvicorn.Server(http_config(app, settings)).serve()

    _run(main, settings)


def scheduler(
    store_url: str | None = typer.Option(None, "--store-url", help=STORE_URL_HELP),
    bus_url: str | None = typer.Option(None, "--bus-url", help=BUS_URL_HELP),
) -> None:
    """Run a scheduler replica: gate B, dispatch to workers, results, reconciler, timers."""
    settings = _settings(store_url=store_url, bus_url=bus_url, demo=False)

    async def main() -> None:
        plane = await build_plane(
            settings, roles=frozenset({SCHEDULER}), component=component_id(SCHEDULER)
        )
        await plane.start()
        console.print(f"[bold]Cordum scheduler[/] {component_id(SCHEDULER)} ready")
        try:
            await _until_signalled()
        finally:
            await plane.stop()

    _run(main, settings)


def kernel(
    listen: str | None = typer.Option(
        None, "--listen", help="HOST:PORT to serve gRPC on [env: CORDUM_KERNEL_LISTEN]."
    ),
    store_url: str | None = typer.Option(None, "--store-url", help=STORE_URL_HELP),
    bus_url: str | None = typer.Option(None, "--bus-url", help=BUS_URL_HELP),
) -> None:
    """Run the Safety Kernel service (gRPC cordum.agent.v1.SafetyKernel)."""
    settings = _settings(kernel_listen=listen, store_url=store_url, bus_url=bus_url, demo=False)

    async def main() -> None:
        role = KernelRole(settings, policy=load_policy(settings), component=component_id("kernel"))
        port = await role.start()
        host = settings.kernel_listen.rpartition(":")[0]
        console.print(
            f"[bold]Cordum kernel[/] serving gRPC on {host}:{port},"
            f" policy {role.holder.policy.snapshot_id}"
        )
        try:
            await _until_signalled()
        finally:
            await role.stop()

    _run(main, settings)
