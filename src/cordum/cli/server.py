"""``cordum up``: the whole embedded control plane in one process."""

from __future__ import annotations

import errno
import gc
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import typer
import uvicorn
from rich.markup import escape
from rich.panel import Panel

from cordum.cli import render
from cordum.cli.cluster import run_cluster
from cordum.cli.output import EXIT_FAILED, EXIT_USAGE, console, err_console
from cordum.config import Settings, SettingsError
from cordum.policy import PolicyLoadError
from cordum.ports.sqlite_audit import AuditKeyMismatchError
from cordum.ports.sqlite_store import StoreLockedError
from cordum.services.audit_trail import SigningKeyError
from cordum.services.keys import MIN_KEY_LENGTH
from cordum.services.policy_admin import StartupPolicyError
from cordum.wiring import ControlPlane, load_policy, policy_source

log = logging.getLogger("cordum")

GC_YOUNG_THRESHOLD = 20_000
"""Allocations between young-generation collections (CPython's default is 700)."""

EXIT_STARTUP_FAILED = 3
"""The server did not start (what ``uvicorn.run`` exits with then)."""


def up(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8081, "--port", help="HTTP port of the API."),
    data_dir: Path = typer.Option(
        Path(".cordum"), "--data-dir", help="Where the SQLite store lives (created if missing)."
    ),
    policy: Path | None = typer.Option(
        None, "--policy", help="A policy file or bundle directory (default: the demo pack's)."
    ),
    no_demo: bool = typer.Option(False, "--no-demo", help="Do not start the demo pack workers."),
    insecure_no_auth: bool = typer.Option(
        False,
        "--insecure-no-auth",
        help="Turn API keys off: every caller is an admin of every tenant. Local demos only.",
    ),
    distributed: bool = typer.Option(
        False,
        "--distributed",
        help="Run kernel, scheduler, gateway (and demo worker) as separate processes on NATS"
        " (CORDUM_BUS_URL) and Redis (CORDUM_STORE_URL), defaulting to the local servers.",
    ),
) -> None:
    """Start the embedded control plane: API, gates, scheduler, workers, one SQLite file.

    The first start mints an admin API key and prints it once (or installs
    $CORDUM_API_KEY as the admin key when it is set). With --distributed, every role
    runs as its own process on NATS and Redis instead.
    """
    if distributed:
        if insecure_no_auth:
            os.environ["CORDUM_AUTH"] = "false"
        run_cluster(host=host, port=port, policy=policy, demo=not no_demo)
        return
    try:
        settings = Settings.load(
            host=host,
            port=port,
            data_dir=data_dir,
            policy=policy,
            demo=not no_demo,
            auth=False if insecure_no_auth else None,
        )
    except SettingsError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    if settings.auth and settings.api_key is not None and len(settings.api_key) < MIN_KEY_LENGTH:
        err_console.print(
            f"[bold red]error:[/] CORDUM_API_KEY is shorter than {MIN_KEY_LENGTH} characters;"
            " set a long random key (or unset it and one is generated)"
        )
        raise typer.Exit(EXIT_USAGE)
    try:
        active_policy = load_policy(settings)
        source = policy_source(settings)
    except PolicyLoadError as exc:
        render.issues(exc.issues, "The policy cannot be loaded; nothing was started.")
        raise typer.Exit(EXIT_USAGE) from None
    _check_port_free(settings.host, settings.port)
    try:
        plane = ControlPlane(settings, policy=active_policy, policy_source=source)
    except StoreLockedError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    except (SigningKeyError, AuditKeyMismatchError) as exc:
        # Configuration that does not fit the data: the message names what and what to do.
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_USAGE) from None
    from cordum.api import create_app  # keeps `cordum policy` start-up light

    async def start_demo(started: ControlPlane) -> None:
        await bootstrap_auth(started)
        # Known only now: the store's active snapshot wins over the policy given at start.
        active = await started.policy_admin.active()
        if active is not None:
            console.print(
                f"  policy snapshot v{active.version} {active.snapshot_id}"
                f"  ({escape(active.author or '?')}: {escape(active.message or 'no message')})"
            )
        if settings.demo:
            from cordum.demo.workers import build_demo_worker

            await started.add_worker(build_demo_worker())
        # Everything loaded so far lives for the whole run: keep the cyclic collector
        # from rescanning it on every pass, which shows up as request latency spikes.
        gc.collect()
        gc.freeze()
        # Each job allocates thousands of short-lived objects (request, records, JSON),
        # nearly all freed by reference counting; at the default threshold of 700 the
        # collector still ran every few jobs and cost over a tenth of the CPU.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    async def sync_policy() -> None:
        # The app's start does this too (a no-op after this one). Done first, an active
        # snapshot that no longer loads stops here with one line, instead of failing inside
        # uvicorn's lifespan handling, which prints the traceback around it.
        try:
            await plane.policy_admin.sync_at_startup(source)
        except BaseException:
            await plane.store.close()
            raise
        url = f"http://{settings.host}:{settings.port}"
        console.print(
            f"[bold]Cordum[/] is up on [cyan]{url}[/]  (API docs: {url}/docs)\n"
            f"  store:  {settings.store_path}\n"
            f"  policy: {source.origin}"
            f"{'' if source.explicit else ' (unless the store already has an active snapshot)'}\n"
            f"  demo workers: {'on (job.demo.*)' if settings.demo else 'off'}"
            f"   fail mode: {settings.fail_mode.value}\n"
            "Try [bold]cordum demo[/] in another terminal. Ctrl+C stops."
        )

    app = create_app(plane, on_start=start_demo)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    server = _Server(http_config(app, settings), before=sync_policy)
    try:
        server.run()  # what uvicorn.run(app, ...) does, with sync_policy first
    except StartupPolicyError as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.summary)}")
        for issue in exc.issues:
            err_console.print(f"  {escape(issue.format())}")
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        pass
    if not server.started:
        raise typer.Exit(EXIT_STARTUP_FAILED)


def http_config(app: Any, settings: Settings) -> uvicorn.Config:
    """How ``cordum up`` and ``cordum gateway`` serve the API: on the configured address,
    quiet (no access log), WebSocket messages bounded like request bodies."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        ws_max_size=settings.max_body_bytes,
    )


class _Server(uvicorn.Server):
    """uvicorn's server, running ``before`` on its event loop before it starts serving."""

    def __init__(self, config: uvicorn.Config, before: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._before = before

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        await self._before()
        await super().serve(sockets)


async def bootstrap_auth(plane: ControlPlane) -> None:
    """Say how callers authenticate; mint the first admin key (printed only now) if needed."""
    settings = plane.settings
    if not settings.auth:
        local = settings.host in ("127.0.0.1", "localhost", "::1")
        exposed = "" if local else f"\nIt listens on {settings.host}: whoever reaches it owns it."
        err_console.print(
            Panel(
                "[bold]AUTHENTICATION IS OFF[/] (--insecure-no-auth or CORDUM_AUTH=false).\n"
                "Every caller is an admin of every tenant: they can approve any job, create"
                " keys and change the policy. For local demos only." + exposed,
                title="[bold red]INSECURE[/]",
                border_style="bold red",
            )
        )
        log.warning("authentication is off: every caller is an admin of every tenant")
        return
    minted = await plane.keys.ensure_bootstrap(settings.api_key)
    if minted is not None:
        # No panel around the key: its border would get in the way of copying the line.
        console.rule("[bold yellow]admin API key, shown only this once[/]", style="yellow")
        console.print(f"  [bold]export CORDUM_API_KEY={minted}[/]")
        console.print(
            "  An admin key of every tenant; only its hash is stored. Export it in the shells"
            " that talk to this server, then make keys for agents, workers and people with"
            " [bold]cordum keys create[/]."
        )
        console.rule(style="yellow")
    elif settings.api_key is not None:
        known = await plane.keys.principal_for(settings.api_key)
        what = (
            f"the {known.role.value} key {known.key_id}"
            if known is not None
            else "not a usable key (see the log)"
        )
        console.print(f"  auth:   on; $CORDUM_API_KEY is {what}")
    else:
        console.print("  auth:   on (X-API-Key); `cordum keys list` shows the keys")


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be used: {exc}"
            err_console.print(
                f"[bold red]error:[/] {host}:{port} {why}; stop the other process or pass --port"
            )
            raise typer.Exit(EXIT_FAILED) from None
