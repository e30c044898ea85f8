"""Fixtures for driving the real ``cordum`` CLI: in-process with CliRunner, or as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cordum.cli import output
from cordum.cli.main import app

# Wide enough that Rich never wraps a line or truncates a table cell in these tests.
WIDE_ENV = {"COLUMNS": "400", "NO_COLOR": "1", "FORCE_COLOR": None, "CORDUM_DEBUG": None}


class Cli:
    """Runs ``cordum`` in-process with the test's tmp_path as working directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runner = CliRunner(env=WIDE_ENV)

    def __call__(self, *args: object, stdin: str | None = None) -> Result:
        result = self.runner.invoke(app, [str(arg) for arg in args], input=stdin)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    def json(self, *args: object, stdin: str | None = None) -> tuple[int, object]:
        """(exit code, parsed stdout) of a ``--json`` invocation."""
        result = self(*args, "--json", stdin=stdin)
        return result.exit_code, json.loads(result.stdout)

    def write(self, name: str, text: str) -> Path:
        """Write dedented ``text`` under tmp_path; return the path relative to it."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return Path(name)

    def write_bytes(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return Path(name)


@pytest.fixture
def cli(tmp_path, monkeypatch) -> Cli:
    monkeypatch.chdir(tmp_path)
    # Rich fixes a console's width at import time when COLUMNS is set then; pin it for the
    # test (monkeypatch restores the exact previous value, unlike the `width` setter).
    for console in (output.console, output.err_console):
        monkeypatch.setattr(console, "_width", 400)
    return Cli(tmp_path)


@pytest.fixture
def run_cordum(tmp_path):
    """Run the CLI as a real process in tmp_path: what a user's shell (or CI) sees."""
    env = {key: value for key, value in os.environ.items() if key != "CORDUM_DEBUG"}
    env.update(COLUMNS="400", NO_COLOR="1", PYTHONIOENCODING="utf-8")
    env.pop("FORCE_COLOR", None)

    def run(*args: object, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cordum.cli.main", *(str(arg) for arg in args)],
            cwd=tmp_path,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run
