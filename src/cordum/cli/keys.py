"""``cordum keys create|list|revoke``: API keys, over the API or on a stopped server's store.

By default the commands call the running server (``CORDUM_URL``) with an admin key
(``CORDUM_API_KEY``). ``--data-dir DIR`` works on the SQLite store of a server that is
not running instead: the way back in when every admin key is lost. A running server
holds the store's lock, so that mode then says to use the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from cordum.cli.output import EXIT_FAILED, console, fail, print_json
from cordum.cli.remote import JsonOpt, UrlOpt, _call, _client
from cordum.models.keys import Role
from cordum.services.keys import KeyCreationError, KeyService, LastAdminKeyError

T = TypeVar("T")

keys_app = typer.Typer(
    help="Create, list and revoke API keys (who may do what, in which tenants).",
    no_args_is_help=True,
)
DataDirOpt = typer.Option(
    None,
    "--data-dir",
    help="Work on the store in DIR directly (the server must be stopped) instead of the API.",
)


@keys_app.command("create")
def create(
    role: Role = typer.Option(
        ...,
        "--role",
        case_sensitive=False,
        help="admin (everything), operator (runs things, approves), viewer (reads),"
        " agent (submits, reads its own jobs, never approves), worker (runs jobs).",
    ),
    tenant: list[str] = typer.Option(
        [], "--tenant", help="A tenant the key may act in (repeatable); '*' for every tenant."
    ),
    name: str = typer.Option(..., "--name", help="Who or what uses the key (shown in audits)."),
    data_dir: Path | None = DataDirOpt,
    url: str | None = UrlOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Create a key and print it: this is the only time the key itself is shown."""
    if not tenant:
        fail(json_output, "give at least one --tenant (or --tenant '*' for every tenant)")
    if data_dir is None:
        with _client(url) as client:
            created = _call(lambda: client.create_key(name, role.value, tenant), json_output)
    else:
        created = _offline(data_dir, json_output, _create_offline(name, role, tenant))
    if json_output:
        print_json(created)
        return
    console.print(
        f"created key [bold]{created['key_id']}[/] ({escape(created['name'])}):"
        f" role {created['role']}, tenants {', '.join(created['tenants'])}"
    )
    console.print(f"  [bold]{created['key']}[/]")
    console.print(
        "  Shown only now (the server keeps a hash): hand it over as CORDUM_API_KEY."
        f"  Revoke it with: cordum keys revoke {created['key_id']}"
    )


@keys_app.command("list")
def list_keys(
    data_dir: Path | None = DataDirOpt,
    url: str | None = UrlOpt,
    json_output: bool = JsonOpt,
) -> None:
    """List the keys (never their secrets), oldest first, revoked ones marked."""
    if data_dir is None:
        with _client(url) as client:
            keys = _call(client.list_keys, json_output)
    else:
        keys = _offline(data_dir, json_output, _list_offline)
    if json_output:
        print_json(keys)
        return
    table = Table("key id", "name", "role", "tenants", "created", "by", "status")
    for key in keys:
        status = "[green]active[/]" if key["active"] else "[red]revoked[/]"
        table.add_row(
            key["key_id"],
            escape(key["name"]),
            key["role"],
            ", ".join(key["tenants"]),
            key["created_at"],
            escape(key["created_by"] or ""),
            status,
        )
    console.print(table)


@keys_app.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., help="The key's id (ck_..., from `cordum keys list`)."),
    data_dir: Path | None = DataDirOpt,
    url: str | None = UrlOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Revoke a key: requests carrying it are refused from now on."""
    if data_dir is None:
        with _client(url) as client:
            revoked = _call(lambda: client.revoke_key(key_id), json_output)
    else:
        revoked = _offline(data_dir, json_output, _revoke_offline(key_id))
    if json_output:
        print_json(revoked)
        return
    console.print(f"revoked key [bold]{revoked['key_id']}[/] ({escape(revoked['name'])})")


# --- on a stopped server's store ----------------------------------------------------------

# The offline actions take the key service and answer the API's views, so the output
# above does not care which way a command went.
Action = Callable[[KeyService], Awaitable[T]]


def _create_offline(name: str, role: Role, tenants: list[str]) -> Action[dict[str, Any]]:
    async def action(keys: KeyService) -> dict[str, Any]:
        from cordum.api.views import key_view  # the API's own view, loaded only here

        try:
            secret, record = await keys.create(
                name=name, role=role, tenants=tenants, created_by="cli --data-dir"
            )
        except KeyCreationError as exc:
            raise _RefusedError(str(exc)) from None
        return {"key": secret, **key_view(record)}

    return action


async def _list_offline(keys: KeyService) -> list[dict[str, Any]]:
    from cordum.api.views import key_view

    return [key_view(record) for record in await keys.store.list_api_keys()]


def _revoke_offline(key_id: str) -> Action[dict[str, Any]]:
    async def action(keys: KeyService) -> dict[str, Any]:
        from cordum.api.views import key_view

        try:
            record = await keys.revoke(key_id, by="cli --data-dir")
        except LastAdminKeyError as exc:
            raise _RefusedError(str(exc)) from None
        if record is None:
            raise _RefusedError(f"no key with id {key_id!r} (see `cordum keys list --data-dir`)")
        return key_view(record)

    return action


class _RefusedError(Exception):
    """The store said no; the message says why."""


def _offline(data_dir: Path, json_output: bool, action: Action[T]) -> T:
    """Run ``action`` with a key service on the store in ``data_dir`` (server stopped)."""
    # Imported here: the API mode above needs none of the server side.
    from cordum.config import Settings, SettingsError
    from cordum.ports.sqlite_audit import AuditKeyMismatchError
    from cordum.ports.sqlite_store import StoreLockedError
    from cordum.wiring import open_store

    try:
        settings = Settings.load(data_dir=data_dir)
    except SettingsError as exc:
        fail(json_output, str(exc))
    if not settings.store_path.exists():
        fail(
            json_output,
            f"no Cordum store at {settings.store_path}; check --data-dir (it is the"
            " directory given to `cordum up --data-dir`, .cordum by default)",
        )
    try:
        store = open_store(settings)
    except StoreLockedError:
        fail(
            json_output,
            f"a running Cordum server holds {settings.store_path}; leave out --data-dir to"
            " go through its API (with CORDUM_URL and an admin key in CORDUM_API_KEY),"
            " or stop the server first",
            exit_code=EXIT_FAILED,
        )
    except AuditKeyMismatchError as exc:
        fail(json_output, str(exc))

    async def run() -> T:
        try:
            return await action(KeyService(store))
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except _RefusedError as exc:
        fail(json_output, str(exc))
