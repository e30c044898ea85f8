"""Consoles and exit codes shared by the commands."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from cordum.models import Decision

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# soft_wrap: long values (snapshot ids, paths) are left for the terminal to wrap, so
# they stay copyable; tables still lay themselves out to the terminal width.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

DECISION_STYLES = {
    Decision.ALLOW: "bold green",
    Decision.ALLOW_WITH_CONSTRAINTS: "bold cyan",
    Decision.REQUIRE_APPROVAL: "bold yellow",
    Decision.THROTTLE: "bold magenta",
    Decision.DENY: "bold red",
}
SEVERITY_STYLES = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def fail(
    json_output: bool, message: str, *, code: str | None = None, exit_code: int = EXIT_USAGE
) -> NoReturn:
    """Report a failure the user can act on (one line, or a JSON error) and exit."""
    if json_output:
        print_json({"ok": False, **({"code": code} if code else {}), "error": message})
    else:
        err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(exit_code)


def print_json(data: Any) -> None:
    """Machine-readable output: plain JSON on stdout, no colours, no wrapping."""
    print(json.dumps(data, indent=2, ensure_ascii=False))


def decision_text(decision: Decision) -> str:
    """A decision in its colour, as Rich markup."""
    return f"[{DECISION_STYLES[decision]}]{decision.value}[/]"
