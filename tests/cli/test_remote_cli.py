"""The ``cordum`` commands that run or talk to a control plane, as real processes.

Pinned (every command a subprocess, COLUMNS=200 NO_COLOR=1):
- ``cordum demo`` shows ALLOW, DENY and REQUIRE_APPROVAL and how to approve; ``cordum
  approve ID`` then ``cordum job get ID --wait 10 --json`` shows SUCCEEDED; ``cordum demo
  --approve`` shows the approved job SUCCEEDED. Every process has ``CORDUM_API_KEY`` (the
  servers' bootstrap admin key); the demo submits under a temporary agent key so that key
  may approve.
- ``cordum job submit --wait --json`` prints the result; a denied submit exits 1 and
  prints the rule and the remediation; ``job list --json``; ``job cancel`` of a job
  awaiting approval makes it CANCELLED; ``cordum reject`` makes it DENIED.
- A server that cannot be reached: exit 3, one line, no traceback; ``CORDUM_URL`` is
  read when ``--url`` is not given.
- ``cordum up``: a broken policy exits 2 naming file:line; a port in use exits 1 saying
  so; a stored active snapshot that no longer loads, or an audit signing key file that is
  not one, exits 2 with an error line saying what to do and no traceback; state survives
  a SIGTERM restart on the same ``--data-dir``; ``--no-demo`` starts no worker.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cordum.models.policy_records import PolicySnapshotRecord
from cordum.ports.sqlite_store import SqliteStore
from tests.pipeline.harness import AUTH
from tests.sdk.servers import CordumUp, clean_env, cordum_up, free_port

CLI_ENV = {"COLUMNS": "200", "NO_COLOR": "1"}
AGENT_KEY = ("--role", "agent", "--tenant", "default", "--name", "agent")


def cordum(*args: object, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``cordum ARGS`` as a user's shell would."""
    return subprocess.run(
        [sys.executable, "-m", "cordum.cli.main", *(str(a) for a in args)],
        env=clean_env(**CLI_ENV, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON:\n{done.stdout}\n{done.stderr}") from None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CordumUp]:
    """``cordum up`` with the demo pack, shared by the module."""
    with cordum_up(tmp_path_factory.mktemp("remote-cli") / "data") as served:
        yield served


def awaiting_approval(url: str, **env: str) -> str:
    """Submit the demo's admin job; return the id of the job waiting for approval."""
    done = cordum("job", "submit", "--topic", "job.demo.admin", "--url", url, "--json", **env)
    assert done.returncode == 1, done.stdout + done.stderr
    answer = as_json(done)
    assert answer["status"] == "approval_required"
    job_id: str = answer["job_id"]
    return job_id


def test_demo_shows_every_decision_and_how_to_approve(server: CordumUp) -> None:
    done = cordum("demo", "--url", server.url)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for word in ("ALLOW", "DENY", "REQUIRE_APPROVAL", "Hello, Ada!", "demo-no-mass-delete"):
        assert word in out
    approve_hint = re.search(r"cordum approve ([0-9a-f]{8,})", out)
    assert approve_hint is not None, out
    job_id = approve_hint.group(1)
    assert f"cordum job get {job_id} --wait 10" in out

    approved = cordum("approve", job_id, "--url", server.url)
    assert approved.returncode == 0, approved.stderr
    assert f"approved: job {job_id}" in approved.stdout

    shown = cordum("job", "get", job_id, "--wait", "10", "--json", "--url", server.url)
    assert shown.returncode == 0, shown.stderr
    job = as_json(shown)
    assert job["state"] == "SUCCEEDED"
    assert job["result"] == {"granted": "admin", "user": "mallory"}


def test_demo_with_approve_shows_the_job_succeed(server: CordumUp) -> None:
    done = cordum("demo", "--approve", "--url", server.url)
    assert done.returncode == 0, done.stderr
    assert re.search(r"approved job [0-9a-f]+: SUCCEEDED", done.stdout), done.stdout
    assert "'granted': 'admin'" in done.stdout


def test_submit_and_wait_prints_the_result(server: CordumUp) -> None:
    done = cordum(
        "job",
        "submit",
        "--topic",
        "job.demo.greet",
        "--context",
        '{"name":"x"}',
        "--wait",
        "--json",
        "--url",
        server.url,
    )
    assert done.returncode == 0, done.stderr
    assert as_json(done) == {"ok": True, "result": {"message": "Hello, x!"}}


def test_a_denied_submit_exits_1_with_the_rule_and_remediation(server: CordumUp) -> None:
    done = cordum("job", "submit", "--topic", "job.demo.delete-all", "--url", server.url)
    assert done.returncode == 1, done.stderr
    assert "DENY" in done.stdout
    assert "rule:   demo-no-mass-delete" in done.stdout
    assert "Deleting everything is never automated." in done.stdout
    assert "remediation archive-instead" in done.stdout
    assert "-> job.demo.archive" in done.stdout

    as_tool = cordum(
        "job", "submit", "--topic", "job.demo.delete-all", "--url", server.url, "--json"
    )
    assert as_tool.returncode == 1
    answer = as_json(as_tool)
    assert answer["ok"] is False
    assert answer["status"] == "blocked"
    assert answer["rule_id"] == "demo-no-mass-delete"
    assert [r["id"] for r in answer["remediations"]] == ["archive-instead"]


def test_job_list_shows_submitted_jobs(server: CordumUp) -> None:
    submitted = cordum("job", "submit", "--topic", "job.demo.greet", "--json", "--url", server.url)
    assert submitted.returncode == 0, submitted.stderr
    job_id = as_json(submitted)["answer"]["job_id"]

    listed = cordum("job", "list", "--topic", "job.demo.greet", "--json", "--url", server.url)
    assert listed.returncode == 0, listed.stderr
    jobs = as_json(listed)["jobs"]
    assert job_id in [j["job_id"] for j in jobs]
    assert {j["topic"] for j in jobs} == {"job.demo.greet"}


def test_cancel_a_job_awaiting_approval(server: CordumUp) -> None:
    job_id = awaiting_approval(server.url)
    done = cordum("job", "cancel", job_id, "--url", server.url)
    assert done.returncode == 0, done.stderr
    assert f"job {job_id}  CANCELLED  topic job.demo.admin" in done.stdout


def test_reject_denies_the_job(server: CordumUp) -> None:
    job_id = awaiting_approval(server.url)
    done = cordum("reject", job_id, "--reason", "not on a Friday", "--url", server.url)
    assert done.returncode == 0, done.stderr
    assert f"rejected: job {job_id} is now DENIED" in done.stdout
    again = cordum("reject", job_id, "--json", "--url", server.url)
    assert again.returncode == 0, again.stderr
    answer = as_json(again)
    assert answer["status"] == "already_rejected"
    assert answer["job"]["state"] == "DENIED"
    assert answer["job"]["error"]["code"] == "approval_rejected"


@pytest.mark.parametrize(
    "command",
    [
        ("job", "list"),
        ("job", "submit", "--topic", "job.demo.greet"),
        ("demo",),
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_an_unreachable_server_is_exit_3_and_one_line(command: tuple[str, ...]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = cordum(*command, "--url", url)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert "failed" in lines[0]


def test_cordum_url_chooses_the_server(server: CordumUp) -> None:
    done = cordum("job", "list", "--json", CORDUM_URL=server.url)
    assert done.returncode == 0, done.stderr
    assert "jobs" in as_json(done)


def test_up_refuses_a_broken_policy_naming_file_and_line(tmp_path: Path) -> None:
    policy = tmp_path / "broken.yaml"
    policy.write_text(
        'version: "b-1"\n'
        "default_decision: deny\n"
        "rules:\n"
        "  - id: allow-everything\n"
        "    decision: alow\n"
    )
    port = free_port()
    done = cordum(
        "up", "--port", port, "--data-dir", tmp_path / "data", "--policy", policy, timeout=30
    )
    assert done.returncode == 2, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert f"{policy}:5:" in output
    assert "alow" in output
    assert "nothing was started" in output
    assert "is up" not in output
    assert "Traceback" not in output


def test_up_on_a_port_in_use_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cordum("up", "--port", port, "--data-dir", tmp_path / "data", timeout=30)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"127.0.0.1:{port} is already in use" in done.stderr
    assert "--port" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def store_a_snapshot_that_no_longer_loads(data: Path) -> None:
    """An active snapshot in ``data``'s store as a laxer release might have left it."""

    async def write() -> None:
        store = SqliteStore(data / "cordum.db")
        try:
            bundles = {"base": "default_decision: maybe\nrules: []\n"}
            await store.add_policy_snapshot(
                PolicySnapshotRecord(snapshot_id="old:" + "0" * 64, created_at=1.0, bundles=bundles)
            )
        finally:
            await store.close()

    asyncio.run(write())


def test_up_on_a_stored_policy_that_no_longer_loads_exits_2_saying_what_to_do(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    store_a_snapshot_that_no_longer_loads(data)
    done = cordum("up", "--port", free_port(), "--data-dir", data, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    output = done.stdout + done.stderr
    error = done.stderr.splitlines()[0]
    assert error.startswith("error: the active policy snapshot v1 (old:")
    assert "start with --policy PATH" in error
    assert "base:1:1:" in done.stderr  # which bundle, where
    assert "is up" not in output
    assert "Traceback" not in output
    assert "startup failed" not in output

    # The way out it names works: an explicit policy is published over the broken one.
    policy = tmp_path / "policy.yaml"
    policy.write_text('version: "fixed"\ndefault_decision: deny\nrules: []\n')
    with cordum_up(data, "--policy", str(policy), "--no-demo") as served:
        snapshots = httpx.get(f"{served.url}/api/v1/policy/snapshots", headers=AUTH).json()
        assert snapshots["active_version"] == 2, snapshots


def test_up_with_a_malformed_signing_key_file_exits_2_naming_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    key_file = data / "audit-signing.key"
    key_file.write_text("not a hex seed\n")
    done = cordum("up", "--port", free_port(), "--data-dir", data, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert done.stderr.startswith(f"error: {key_file}: expected a 32-byte Ed25519 seed")
    assert "delete the file" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in output
    assert "internal error" not in output


def test_jobs_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = CordumUp(data)
    first.start()
    try:
        with httpx.Client(base_url=first.url, headers=AUTH, timeout=15) as http:
            done_id = http.post("/api/v1/jobs", json={"topic": "job.demo.greet"}).json()["job_id"]
            finished = http.get(f"/api/v1/jobs/{done_id}?wait=10").json()
        assert finished["state"] == "SUCCEEDED"
        agent = as_json(cordum("keys", "create", *AGENT_KEY, "--url", first.url, "--json"))
        # submitted by an agent: the admin key approves it below (nobody approves their own)
        waiting_id = awaiting_approval(first.url, CORDUM_API_KEY=agent["key"])
    finally:
        stopped = first.stop()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it so supervisors see it
    assert stopped in (0, -signal.SIGTERM), first.output()

    with cordum_up(data) as second:
        workers = httpx.get(f"{second.url}/api/v1/workers", headers=AUTH).json()["workers"]
        assert len(workers) == 1, "the first run's demo worker left on the way out"
        kept = cordum("job", "get", done_id, "--json", "--url", second.url)
        assert kept.returncode == 0, kept.stderr
        assert as_json(kept)["state"] == "SUCCEEDED"
        assert as_json(kept)["result"] == {"message": "Hello, world!"}
        approved = cordum("approve", waiting_id, "--url", second.url)
        assert approved.returncode == 0, approved.stderr
        assert f"approved: job {waiting_id}" in approved.stdout, "it still awaited approval"
        shown = cordum("job", "get", waiting_id, "--wait", "10", "--json", "--url", second.url)
        assert as_json(shown)["state"] == "SUCCEEDED"
        assert as_json(shown)["result"] == {"granted": "admin", "user": "someone"}


def test_up_without_the_demo_pack_has_no_workers(tmp_path: Path) -> None:
    with cordum_up(tmp_path / "data", "--no-demo") as served:
        response = httpx.get(f"{served.url}/api/v1/workers", headers=AUTH, timeout=5)
        assert response.status_code == 200
        assert response.json() == {"workers": []}
        denied = cordum("job", "submit", "--topic", "job.demo.greet", "--url", served.url)
        assert denied.returncode == 1
        assert "DENY" in denied.stdout
