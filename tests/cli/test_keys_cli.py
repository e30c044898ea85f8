"""``cordum keys create|list|revoke``, over the API and on a stopped server's store.

Pinned: ``create`` prints the key once (and ``--json`` gives it as ``key``), ``list`` never
shows a secret, ``revoke`` stops the key; without a key the error says to export
``CORDUM_API_KEY``; ``--data-dir`` works while the server is stopped, and while it runs
says to use the API instead (exit 1); bad options are usage errors (exit 2).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cordum.cli.main import app
from tests.cli.conftest import Cli
from tests.pipeline.harness import ADMIN_KEY, auth
from tests.sdk.servers import CordumUp, cordum_up

JOBS = "/api/v1/jobs"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CordumUp]:
    """``cordum up --no-demo`` (admin key: ADMIN_KEY), shared by the module."""
    with cordum_up(tmp_path_factory.mktemp("keys-cli") / "data", "--no-demo") as served:
        yield served


def test_create_list_revoke_over_the_api(cli: Cli, server: CordumUp) -> None:
    url = ("--url", server.url)
    shown = cli("keys", "create", "--role", "agent", "--tenant", "acme", "--name", "bot", *url)
    assert shown.exit_code == 0, shown.output
    key = re.search(r"cordum_\S+", shown.stdout)
    assert key is not None, shown.stdout
    assert "Shown only now" in shown.stdout
    assert httpx.get(server.url + JOBS, headers=auth(key.group(0))).status_code == 200

    code, created = cli.json(
        "keys", "create", "--role", "viewer", "--tenant", "*", "--name", "v", *url
    )
    assert code == 0
    assert isinstance(created, dict)
    assert created["tenants"] == ["*"]
    assert created["key"].startswith("cordum_")

    code, listed = cli.json("keys", "list", *url)
    assert code == 0
    assert isinstance(listed, list)
    assert {k["name"] for k in listed} >= {"bootstrap-admin", "bot", "v"}
    assert key.group(0) not in json.dumps(listed)
    assert created["key"] not in json.dumps(listed)
    table = cli("keys", "list", *url)
    assert "bot" in table.stdout
    assert "active" in table.stdout

    code, revoked = cli.json("keys", "revoke", created["key_id"], *url)
    assert code == 0
    assert isinstance(revoked, dict)
    assert revoked["active"] is False
    assert httpx.get(server.url + JOBS, headers=auth(created["key"])).status_code == 401


def test_without_a_key_the_error_says_to_export_it(cli: Cli, server: CordumUp) -> None:
    result = cli.runner.invoke(
        app, ["keys", "list", "--url", server.url], env={"CORDUM_API_KEY": ""}
    )
    assert result.exit_code == 2, result.output
    assert "export CORDUM_API_KEY" in result.stderr
    assert "Traceback" not in result.output


def test_data_dir_mode_refuses_a_running_server(cli: Cli, server: CordumUp) -> None:
    result = cli("keys", "list", "--data-dir", server.data_dir)
    assert result.exit_code == 1
    assert "leave out --data-dir" in result.stderr
    assert "CORDUM_API_KEY" in result.stderr


def test_data_dir_mode_works_on_a_stopped_server(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with cordum_up(data, "--no-demo"):
        pass  # the first start creates the store and installs ADMIN_KEY
    code, created = cli.json(
        "keys", "create", "--role", "admin", "--tenant", "*", "--name", "rescue", "--data-dir", data
    )
    assert code == 0, created
    assert isinstance(created, dict)
    code, listed = cli.json("keys", "list", "--data-dir", data)
    assert isinstance(listed, list)
    assert [k["name"] for k in listed] == ["bootstrap-admin", "rescue"]
    bootstrap = listed[0]["key_id"]
    code, revoked = cli.json("keys", "revoke", bootstrap, "--data-dir", data)
    assert code == 0, revoked
    with cordum_up(data, "--no-demo", env={"CORDUM_API_KEY": ""}) as restarted:
        rescue = httpx.get(restarted.url + JOBS, headers=auth(created["key"]))
        assert rescue.status_code == 200
        old = httpx.get(restarted.url + JOBS, headers=auth(ADMIN_KEY))
        assert old.status_code == 401, "revoked on disk while the server was down"


def test_data_dir_mode_errors(cli: Cli, tmp_path: Path) -> None:
    missing = cli("keys", "list", "--data-dir", tmp_path / "nowhere")
    assert missing.exit_code == 2
    assert "no Cordum store" in missing.stderr
    assert not (tmp_path / "nowhere").exists(), "a typo must not create a store"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["create", "--role", "agent", "--name", "x"], "--tenant"),
        (["create", "--role", "root", "--tenant", "a", "--name", "x"], "root"),
        (["create", "--role", "agent", "--tenant", "a"], "--name"),
    ],
)
def test_bad_options_are_usage_errors(cli: Cli, args: list[str], says: str) -> None:
    result = cli("keys", *args, "--url", "http://127.0.0.1:9")
    assert result.exit_code == 2, result.output
    assert says in result.output
