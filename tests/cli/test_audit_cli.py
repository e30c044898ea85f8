"""``cordum audit verify`` as a user runs it: against a real ``cordum up``, then on an
exported file with the server gone, and on a file someone edited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.test_remote_cli import as_json, cordum
from tests.pipeline.harness import AUTH
from tests.sdk.servers import CordumUp, cordum_up, free_port


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CordumUp, Path]]:
    """A server with some audited history, and the default chain exported while it runs."""
    root = tmp_path_factory.mktemp("audit-cli")
    with cordum_up(root / "data", "--no-demo") as server:
        for topic in ("job.demo.read", "job.k8s.delete-namespace", "job.anything"):
            httpx.post(f"{server.url}/api/v1/jobs", json={"topic": topic}, headers=AUTH)
        export = root / "default.ndjson"
        done = cordum(
            "audit",
            "verify",
            "--tenant",
            "default",
            "--export",
            export,
            "--json",
            CORDUM_URL=server.url,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        report = as_json(done)
        assert report["status"] == "ok"
        online = as_json(cordum("audit", "verify", "--json", CORDUM_URL=server.url))
        assert online["ok"] is True
        assert {c["tenant_id"] for c in online["chains"]} >= {"default"}
        yield server, export


def test_an_export_verifies_offline_with_no_server(exported: tuple[CordumUp, Path]) -> None:
    _, export = exported
    done = cordum("audit", "verify", "--file", export, CORDUM_URL="http://127.0.0.1:9")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok" in done.stdout
    assert "default" in done.stdout


def test_an_edited_export_is_compromised_with_its_position(
    exported: tuple[CordumUp, Path], tmp_path: Path
) -> None:
    _, export = exported
    lines = export.read_text().splitlines()
    event = json.loads(lines[2])
    event["data"]["reason"] = "nothing to see here"
    lines[2] = json.dumps(event)
    edited = tmp_path / "edited.ndjson"
    edited.write_text("\n".join(lines) + "\n")
    done = cordum("audit", "verify", "--file", edited, "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    (chain,) = as_json(done)["chains"]
    assert (chain["kind"], chain["first_bad_seq"]) == ("modified", 2)


def test_a_pinned_key_that_did_not_sign_fails_the_checkpoints(
    exported: tuple[CordumUp, Path],
) -> None:
    _, export = exported
    done = cordum("audit", "verify", "--file", export, "--public-key", "ab" * 32, "--json")
    assert done.returncode == 1
    assert as_json(done)["chains"][0]["kind"] == "modified"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--file", "missing.ndjson"], "cannot read"),
        (["--file", "garbage.ndjson"], "garbage.ndjson:1: not JSON"),
        (["--file", "x", "--export", "y"], "not both"),
        (["--file", "garbage.ndjson", "--public-key", "zz"], "hex"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "garbage.ndjson").write_text("this is not an export\n")
    done = cordum(
        "audit", "verify", *[str(tmp_path / a) if a.endswith(".ndjson") else a for a in args]
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_up_refuses_to_continue_a_chain_with_another_hmac_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with cordum_up(data, "--no-demo"):
        pass  # creates the store, its chains sealed without an HMAC key
    done = cordum(
        "up", "--no-demo", "--data-dir", data, "--port", free_port(), CORDUM_AUDIT_HMAC_KEY="k" * 32
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "CORDUM_AUDIT_HMAC_KEY" in done.stderr
    assert "Traceback" not in done.stderr
