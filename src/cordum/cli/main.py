"""Entry point of the ``cordum`` command.

Users never see a traceback: known errors are printed by the commands themselves with
an exit code, and anything unexpected becomes one line that says how to get details.
"""

from __future__ import annotations

import os
import sys

import typer

from cordum import __version__
from cordum.cli.audit import audit_app
from cordum.cli.keys import keys_app
from cordum.cli.output import err_console
from cordum.cli.policy import policy_app
from cordum.cli.policy_remote import diff, publish, rollback, snapshots
from cordum.cli.remote import approve, demo, job_app, reject
from cordum.cli.roles import gateway, kernel, scheduler
from cordum.cli.server import up

EXIT_INTERNAL_ERROR = 70

app = typer.Typer(
    name="cordum",
    help="Cordum: the control plane that governs what AI agents do.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(policy_app, name="policy")
policy_app.command()(publish)
policy_app.command()(snapshots)
policy_app.command()(rollback)
policy_app.command()(diff)
app.add_typer(job_app, name="job")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.command()(up)
app.command()(gateway)
app.command()(scheduler)
app.command()(kernel)
app.command()(demo)
app.command()(approve)
app.command()(reject)


def _show_version(value: bool) -> None:
    if value:
        print(f"cordum {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Cordum: the control plane that governs what AI agents do."""


def run() -> None:
    """Console-script entry point."""
    try:
        app()
    except Exception as exc:  # the last line of defence: report, don't dump a traceback
        if os.environ.get("CORDUM_DEBUG"):
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc}\n"
            "This is a bug in Cordum. Run again with CORDUM_DEBUG=1 for the traceback"
            " and report it."
        )
        sys.exit(EXIT_INTERNAL_ERROR)


if __name__ == "__main__":
    run()
