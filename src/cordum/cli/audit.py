"""``cordum audit verify``: check the audit chain on a server, or an exported file offline."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import typer
from rich.table import Table

from cordum.cli.output import EXIT_FAILED, console, fail, print_json
from cordum.cli.remote import JsonOpt, UrlOpt, _call, _client
from cordum.models.audit import VerifyReport
from cordum.services.audit import key_id_of
from cordum.services.audit_trail import (
    ExportFormatError,
    hmac_key_bytes,
    read_export,
    verify_export,
)

audit_app = typer.Typer(help="Verify and export the tamper-evident audit chain.")


@audit_app.command("verify")
def verify(
    tenant: str | None = typer.Option(
        None, "--tenant", help="One chain (a tenant, or _system). Default: every chain."
    ),
    export: Path | None = typer.Option(
        None, "--export", help="Download the chain (of --tenant) to FILE, then verify FILE."
    ),
    file: Path | None = typer.Option(
        None, "--file", help="Verify an exported FILE offline; no server is contacted."
    ),
    hmac_key: str | None = typer.Option(
        None,
        "--hmac-key",
        help="The chain's HMAC key, for offline checks of an HMAC-sealed chain"
        " (default: $CORDUM_AUDIT_HMAC_KEY).",
    ),
    public_key: list[str] = typer.Option(
        [],
        "--public-key",
        help="Trust only this checkpoint-signing key (hex, repeatable). Without it the"
        " keys named in the file are used, which catches accidents, not forgers.",
    ),
    url: str | None = UrlOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Verify the audit chain: on the server, or an exported file with no server at all.

    Exit 0 when every chain is intact, 1 when one is compromised (the first bad sequence
    number and the kind of break are printed), 2 for a usage or file error.
    """
    if export is not None and file is not None:
        fail(json_output, "give --export (download then verify) or --file, not both", code="usage")
    if export is not None:
        with _client(url) as client, _writing(export, json_output) as out:
            _call(lambda: client.export_audit(out, tenant=tenant), json_output)
        if not json_output:
            console.print(f"exported to {export}")
        file = export
    if file is not None:
        report = _verify_file(file, hmac_key, public_key, json_output)
        _show([report.model_dump(mode="json")], json_output, source=str(file))
        return
    with _client(url) as client:
        answer = _call(lambda: client.verify_audit(tenant), json_output)
    _show(answer["chains"], json_output, source=client.settings.url)


def _verify_file(
    file: Path, hmac_key: str | None, public_keys: list[str], json_output: bool
) -> VerifyReport:
    trusted = None
    if public_keys:
        try:
            raw = [bytes.fromhex(k) for k in public_keys]
        except ValueError:
            fail(json_output, "--public-key takes the key as hex (64 characters)", code="usage")
        trusted = {key_id_of(k): k for k in raw}
    try:
        with file.open(encoding="utf-8") as lines:
            chain = read_export(lines, source=str(file))
    except OSError as exc:
        fail(json_output, f"cannot read {file}: {exc.strerror or exc}", code="usage")
    except (ExportFormatError, UnicodeDecodeError) as exc:
        fail(json_output, str(exc), code="usage")
    text = hmac_key or os.environ.get("CORDUM_AUDIT_HMAC_KEY") or None
    key = hmac_key_bytes(text)
    try:
        return verify_export(chain, hmac_key=key, trusted_keys=trusted)
    except ValueError as exc:
        fail(json_output, f"{file}: {exc} (--hmac-key or $CORDUM_AUDIT_HMAC_KEY)", code="usage")
    raise AssertionError("unreachable")


@contextmanager
def _writing(path: Path, json_output: bool) -> Iterator[BinaryIO]:
    try:
        handle = path.open("wb")
    except OSError as exc:
        fail(json_output, f"cannot write {path}: {exc.strerror or exc}", code="usage")
    with handle:
        yield handle


def _show(chains: list[dict[str, Any]], json_output: bool, source: str) -> None:
    ok = all(chain["ok"] for chain in chains)
    if json_output:
        print_json({"ok": ok, "status": "ok" if ok else "compromised", "chains": chains})
    else:
        table = Table(title=f"audit chains at {source}")
        for column in ("chain", "status", "events", "checkpoints", "first bad", "kind", "detail"):
            table.add_column(column)
        for chain in chains:
            status = "[bold green]ok[/]" if chain["ok"] else "[bold red]COMPROMISED[/]"
            table.add_row(
                chain["tenant_id"],
                status,
                str(chain["checked"]),
                str(chain["checkpoints"]),
                "" if chain["first_bad_seq"] is None else str(chain["first_bad_seq"]),
                chain["kind"] or "",
                chain["detail"],
            )
        console.print(table)
        if not chains:
            console.print("no audit events yet")
    if not ok:
        raise typer.Exit(EXIT_FAILED)
