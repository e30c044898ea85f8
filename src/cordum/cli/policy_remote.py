"""``cordum policy publish|snapshots|rollback|diff``: the policy lifecycle on a server.

They talk to a running control plane over its API with the SDK client (``CORDUM_URL``,
``CORDUM_API_KEY``, ``CORDUM_TENANT_ID``). A policy is checked locally before anything
is uploaded, and a policy the server refuses is reported issue by issue, like ``cordum
policy check`` does. Exit codes: 0 done, 2 unusable input or refused request, 3 server
unreachable; ``diff`` exits 1 when the two sides differ, like diff(1).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cordum.cli import render
from cordum.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, console, print_json
from cordum.cli.policy import PolicyArg, _guard, _load
from cordum.cli.remote import JsonOpt, UrlOpt, _call, _client
from cordum.policy.errors import PolicyIssue
from cordum.sdk import Client, CordumAPIError
from cordum.services.policy_admin import source_from_path, text_digest

T = TypeVar("T")

DIFF_STYLES = {"+": "green", "-": "red", "@": "cyan"}
ACTIVE = "active"

MessageOpt = typer.Option(..., "--message", "-m", help="Why: kept with the snapshot.")


def _api(action: Callable[[], T], json_output: bool) -> T:
    """An API call; a policy the server refuses is printed issue by issue (exit 2)."""

    def checked() -> T:
        try:
            return action()
        except CordumAPIError as exc:
            issues = _issues(exc.body.get("issues"))
            if not issues:
                raise
            if json_output:
                print_json(
                    {
                        "ok": False,
                        "code": exc.code,
                        "error": exc.message,
                        "errors": [i.to_dict() for i in issues],
                    }
                )
            else:
                render.issues(issues, f"refused by the server: {exc.message}")
            raise typer.Exit(EXIT_USAGE) from None

    return _call(checked, json_output)


def _issues(raw: Any) -> list[PolicyIssue]:
    """The loader's issues from an error body (unknown keys from a newer server dropped)."""
    if not isinstance(raw, list):
        return []
    known = {spec.name for spec in fields(PolicyIssue)}
    return [
        PolicyIssue(**{key: value for key, value in item.items() if key in known})
        for item in raw
        if isinstance(item, dict) and "code" in item and "message" in item
    ]


def _snapshot_line(snapshot: Mapping[str, Any]) -> str:
    who = escape(str(snapshot.get("author") or "?"))
    why = escape(str(snapshot.get("message") or "no message"))
    return f"v{snapshot['version']}  {escape(snapshot['snapshot_id'])}  ({who}: {why})"


# --- publish --------------------------------------------------------------------------------


def publish(
    policy: Path = PolicyArg,
    message: str = MessageOpt,
    prune: bool = typer.Option(
        False, "--prune", help="Delete the server's bundles that POLICY does not have."
    ),
    url: str | None = UrlOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Upload a policy file or bundle directory and publish it as the active snapshot.

    The policy is checked here first; nothing is sent if it does not load. Bundles the
    server has but POLICY lacks are kept (and published) unless --prune is given.
    """
    _load(policy, dialect="cordum", json_output=json_output)
    source = _guard(
        lambda: source_from_path(policy),
        json_output=json_output,
        headline=f"{policy}: policy not loaded",
    )
    local = dict(source.bundles)
    with _client(url) as client:
        server = {b["bundle_id"]: b["sha256"] for b in _api(client.policy_bundles, json_output)}
        stale = sorted(set(server) - set(local))
        # Deleting first keeps every intermediate set loadable (fewer bundles cannot
        # conflict), except when nothing would remain: then delete after uploading.
        delete_first = prune and bool(set(server) & set(local))
        if delete_first:
            _delete(client, stale, json_output)
        uploaded = [bid for bid, text in local.items() if server.get(bid) != text_digest(text)]
        for bundle_id in uploaded:
            _put(client, bundle_id, local[bundle_id], json_output)
        if prune and not delete_first:
            _delete(client, stale, json_output)
        answer = _api(lambda: client.publish_policy(message), json_output)
    kept = [] if prune else stale
    deleted = stale if prune else []
    if json_output:
        print_json({"ok": True, **answer, "uploaded": uploaded, "deleted": deleted, "kept": kept})
        return
    console.print(
        f"uploaded {len(uploaded)} bundle{'s' if len(uploaded) != 1 else ''}"
        + (f" ({escape(', '.join(uploaded))})" if uploaded else "")
        + (f"; deleted {escape(', '.join(deleted))}" if deleted else "")
    )
    if kept:
        console.print(
            f"[yellow]kept[/] server bundles not in {escape(str(policy))}:"
            f" {escape(', '.join(kept))} (--prune deletes them)"
        )
    snapshot = answer["snapshot"]
    if answer["status"] == "unchanged":
        console.print(f"unchanged: {_snapshot_line(snapshot)} is already active")
    else:
        console.print(f"[bold green]published[/] {_snapshot_line(snapshot)}")


def _put(client: Client, bundle_id: str, text: str, json_output: bool) -> None:
    _api(lambda: client.put_policy_bundle(bundle_id, text), json_output)


def _delete(client: Client, bundle_ids: list[str], json_output: bool) -> None:
    for bundle_id in bundle_ids:
        _delete_one(client, bundle_id, json_output)


def _delete_one(client: Client, bundle_id: str, json_output: bool) -> None:
    _api(lambda: client.delete_policy_bundle(bundle_id), json_output)


# --- snapshots and rollback -----------------------------------------------------------------


def snapshots(url: str | None = UrlOpt, json_output: bool = JsonOpt) -> None:
    """List the published policy snapshots, newest first; the active one is marked."""
    with _client(url) as client:
        listing = _api(client.policy_snapshots, json_output)
    if json_output:
        print_json(listing)
        return
    table = Table("", "version", "snapshot", "author", "message", "published")
    for snapshot in listing["snapshots"]:
        table.add_row(
            "[bold green]●[/]" if snapshot["active"] else "",
            str(snapshot["version"]),
            escape(snapshot["snapshot_id"]),
            escape(snapshot["author"] or ""),
            escape(snapshot["message"] or ""),
            snapshot["created_at"],
        )
    console.print(table)


def rollback(
    snapshot: str = typer.Argument(..., help="A version number (3, v3) or a snapshot id."),
    message: str = typer.Option("", "--message", "-m", help="Why: kept in the audit trail."),
    url: str | None = UrlOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Make an earlier snapshot active again; the server's draft bundles are reset to it."""
    with _client(url) as client:
        answer = _api(lambda: client.rollback_policy(snapshot, message), json_output)
    if json_output:
        print_json({"ok": True, **answer})
    elif answer["status"] == "unchanged":
        console.print(f"unchanged: {_snapshot_line(answer['snapshot'])} is already active")
    else:
        console.print(f"[bold yellow]rolled back[/] to {_snapshot_line(answer['snapshot'])}")


# --- diff -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One side of a diff: a label, its snapshot id and its bundles."""

    label: str
    snapshot_id: str
    bundles: dict[str, str]


def diff(
    a: str = typer.Argument(..., help="A version, a snapshot id, `active`, or a local path."),
    b: str = typer.Argument(..., help="The same kinds as A."),
    context: int = typer.Option(3, "--context", "-U", min=0, help="Lines of context."),
    url: str | None = UrlOpt,
    json_output: bool = JsonOpt,
) -> None:
    """Show how two policies differ, bundle by bundle (exit 0 identical, 1 different).

    Each side is a published snapshot on the server (version, snapshot id, `active`) or
    a policy file or bundle directory here, e.g. `cordum policy diff active policies/`
    to review a publish.
    """
    local = {ref: _local_side(Path(ref), json_output) for ref in (a, b) if Path(ref).exists()}
    if len(local) < len({a, b}):
        with _client(url) as client:
            sides = [local.get(ref) or _remote_side(client, ref, json_output) for ref in (a, b)]
    else:
        sides = [local[a], local[b]]
    left, right = sides
    diffs = {
        bundle_id: "".join(_bundle_diff(left, right, bundle_id, context))
        for bundle_id in sorted(set(left.bundles) | set(right.bundles))
    }
    diffs = {bundle_id: text for bundle_id, text in diffs.items() if text}
    same_snapshot = left.snapshot_id == right.snapshot_id
    if json_output:
        print_json(
            {
                "identical": not diffs,
                "same_snapshot": same_snapshot,
                "a": {"ref": a, "label": left.label, "snapshot_id": left.snapshot_id},
                "b": {"ref": b, "label": right.label, "snapshot_id": right.snapshot_id},
                "bundles": diffs,
            }
        )
    else:
        _print_diff(left, right, diffs, same_snapshot)
    raise typer.Exit(EXIT_FAILED if diffs else EXIT_OK)


def _local_side(path: Path, json_output: bool) -> Side:
    loaded = _load(path, dialect="cordum", json_output=json_output)
    source = _guard(
        lambda: source_from_path(path),
        json_output=json_output,
        headline=f"{path}: policy not loaded",
    )
    return Side(str(path), loaded.snapshot_id, dict(source.bundles))


def _remote_side(client: Client, ref: str, json_output: bool) -> Side:
    if ref == ACTIVE:
        listing = _api(client.policy_snapshots, json_output)
        ref = str(listing["active_version"])
    snapshot = _api(lambda: client.policy_snapshot(ref), json_output)
    return Side(f"v{snapshot['version']}", snapshot["snapshot_id"], snapshot["bundles"])


def _bundle_diff(left: Side, right: Side, bundle_id: str, context: int) -> list[str]:
    before, after = left.bundles.get(bundle_id), right.bundles.get(bundle_id)
    return list(
        difflib.unified_diff(
            _lines(before),
            _lines(after),
            fromfile=f"{left.label}/{bundle_id}" if before is not None else "/dev/null",
            tofile=f"{right.label}/{bundle_id}" if after is not None else "/dev/null",
            n=context,
        )
    )


def _lines(text: str | None) -> list[str]:
    """Lines with their ends; a missing final newline would glue two diff lines together."""
    if not text:
        return []
    return [line if line.endswith("\n") else line + "\n" for line in text.splitlines(True)]


def _print_diff(left: Side, right: Side, diffs: dict[str, str], same_snapshot: bool) -> None:
    if not diffs:
        console.print(f"identical: {escape(left.label)} and {escape(right.label)}")
        return
    for text in diffs.values():
        for line in text.splitlines():
            style = "bold" if line.startswith(("---", "+++")) else DIFF_STYLES.get(line[:1], "")
            console.print(Text(line, style=style))
    summary = f"{len(diffs)} bundle{'s' if len(diffs) != 1 else ''} differ"
    if same_snapshot:
        summary += "; same snapshot id, so no decision changes (comments or layout only)"
    else:
        summary += f": {escape(left.snapshot_id)} -> {escape(right.snapshot_id)}"
    console.print(summary)
