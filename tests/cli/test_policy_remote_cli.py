"""``cordum policy publish|snapshots|rollback|diff`` against a real ``cordum up``.

The server runs as a subprocess (the sync client must not share its event loop); the
commands run in-process with CliRunner, in the test's directory.

Pinned:
- publish uploads a bundle directory and publishes it; server bundles the directory
  lacks are kept (and listed) unless ``--prune``; publishing the same again is
  ``unchanged``; a policy that does not load locally is refused before anything is sent
  (exit 2, file:line); one the server refuses prints the server's issues (exit 2);
- snapshots lists versions newest first with the active one; rollback by ``v1`` and by
  id, 2 for an unknown snapshot;
- diff of versions, ids, ``active`` and local paths: exit 1 with a unified diff when
  they differ, 0 when identical; ``--json``;
- an unreachable server is exit 3;
- ``cordum up --policy`` on a data directory that already has a snapshot publishes the
  file when it differs, and a plain restart keeps the store's active snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cordum.sdk import Client
from tests.cli.conftest import Cli
from tests.sdk.servers import CordumUp, cordum_up, free_port

BASE = """
version: "lc-2"
default_decision: deny
rules:
  - id: greet
    match: {topics: [job.demo.greet]}
    decision: allow
    reason: greetings are fine
"""
FREEZE = """
rules:
  - id: greet
    match: {topics: [job.demo.greet]}
    decision: require_approval
    reason: change freeze
"""


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CordumUp]:
    """``cordum up`` with the demo pack (bundle ``base``); ``CORDUM_URL`` points at it."""
    with cordum_up(tmp_path / "data") as served:
        monkeypatch.setenv("CORDUM_URL", served.url)
        yield served


def published(cli: Cli, *args: object) -> dict[str, Any]:
    code, answer = cli.json("policy", "publish", *args)
    assert code == 0, answer
    assert isinstance(answer, dict)
    return answer


def snapshot_versions(cli: Cli) -> list[tuple[int, bool]]:
    code, listing = cli.json("policy", "snapshots")
    assert code == 0, listing
    assert isinstance(listing, dict)
    return [(s["version"], s["active"]) for s in listing["snapshots"]]


def test_publish_uploads_a_directory_and_prunes_only_when_asked(cli, server):
    cli.write("policies/base.yaml", BASE)
    cli.write("policies/legacy.yaml", FREEZE.replace("greet", "old-greet"))
    first = published(cli, "policies", "-m", "our own policy")
    assert (first["status"], first["uploaded"], first["kept"]) == (
        "published",
        ["base", "legacy"],  # `base` replaces the demo pack's
        [],
    )
    (cli.root / "policies" / "legacy.yaml").unlink()
    cli.write("policies/ops/freeze.yaml", FREEZE)

    kept = published(cli, "policies", "-m", "freeze greetings")
    assert (kept["uploaded"], kept["kept"]) == (["ops/freeze"], ["legacy"])
    assert kept["snapshot"]["bundles"] == ["base", "legacy", "ops/freeze"]
    pruned = published(cli, "policies", "-m", "without the legacy bundle", "--prune")
    assert (pruned["uploaded"], pruned["deleted"], pruned["kept"]) == ([], ["legacy"], [])
    assert pruned["snapshot"]["version"] == 4
    again = published(cli, "policies", "-m", "same again", "--prune")
    assert (again["status"], again["snapshot"]["version"]) == ("unchanged", 4)
    assert snapshot_versions(cli) == [(4, True), (3, False), (2, False), (1, False)]

    human = cli("policy", "publish", "policies", "-m", "once more")
    assert human.exit_code == 0, human.output
    assert "unchanged: v4" in human.stdout


def test_a_policy_that_does_not_load_is_refused_before_anything_is_sent(cli, server):
    cli.write("broken/base.yaml", BASE.replace("decision: allow", "decision: allow-ish"))
    done = cli("policy", "publish", "broken", "-m", "oops")
    assert done.exit_code == 2
    assert "broken/base.yaml:6" in done.stderr
    with Client() as client:
        (bundle,) = client.policy_bundles()
        assert bundle["updated_by"] == "cordum up"
    assert snapshot_versions(cli) == [(1, True)]


def test_a_policy_the_server_refuses_is_reported_issue_by_issue(cli, server):
    # Loads on its own, but conflicts with the server's `base` bundle (default deny).
    cli.write("lax/extra.yaml", BASE.replace("default_decision: deny", "default_decision: allow"))
    done = cli("policy", "publish", "lax", "-m", "lax")
    assert done.exit_code == 2
    assert "conflicting_default_decision" in done.stderr
    assert "refused by the server" in done.stderr
    assert snapshot_versions(cli) == [(1, True)]


def test_rollback_by_version_and_id(cli, server):
    cli.write("one.yaml", BASE)
    published(cli, "one.yaml", "-m", "v2")
    code, listing = cli.json("policy", "snapshots")
    first_id = listing["snapshots"][-1]["snapshot_id"]

    code, back = cli.json("policy", "rollback", "v1", "-m", "undo")
    assert (code, back["status"], back["snapshot"]["version"]) == (0, "rolled_back", 1)
    forward = cli("policy", "rollback", "2")
    assert forward.exit_code == 0, forward.output
    assert "rolled back to v2" in forward.stdout
    code, by_id = cli.json("policy", "rollback", first_id)
    assert (code, by_id["snapshot"]["version"]) == (0, 1)
    code, again = cli.json("policy", "rollback", first_id)
    assert (code, again["status"]) == (0, "unchanged")

    code, unknown = cli.json("policy", "rollback", "42")
    assert (code, unknown["code"]) == (2, "snapshot_not_found")


def test_diff_shows_what_changed_bundle_by_bundle(cli, server):
    cli.write("policies/base.yaml", BASE)
    published(cli, "policies", "-m", "base", "--prune")
    cli.write("policies/ops/freeze.yaml", FREEZE)

    same = cli("policy", "diff", "active", "2")
    assert (same.exit_code, same.stdout.strip()) == (0, "identical: v2 and v2")
    local = cli("policy", "diff", "active", "policies")
    assert local.exit_code == 1, local.output
    assert "--- /dev/null" in local.stdout
    assert "+++ policies/ops/freeze" in local.stdout
    assert "+    decision: require_approval" in local.stdout

    code, versions = cli.json("policy", "diff", "1", "2")
    assert code == 1
    assert list(versions["bundles"]) == ["base"]
    assert versions["bundles"]["base"].startswith("--- v1/base\n+++ v2/base\n")
    assert versions["a"]["snapshot_id"] != versions["b"]["snapshot_id"]


def test_diff_of_two_local_policies_needs_no_server(cli, monkeypatch):
    monkeypatch.setenv("CORDUM_URL", f"http://127.0.0.1:{free_port()}")
    cli.write("a.yaml", BASE)
    cli.write("b/a.yaml", BASE + "# a comment\n")
    code, answer = cli.json("policy", "diff", "a.yaml", "b")
    assert code == 1
    assert answer["same_snapshot"] is True
    commented = cli("policy", "diff", "a.yaml", "b")
    assert "no decision changes" in commented.stdout


def test_an_unreachable_server_is_exit_3(cli, monkeypatch):
    monkeypatch.setenv("CORDUM_URL", f"http://127.0.0.1:{free_port()}")
    done = cli("policy", "snapshots")
    assert done.exit_code == 3
    assert "is Cordum running there?" in done.stderr


def test_cordum_up_publishes_a_differing_explicit_policy_and_otherwise_keeps_the_store(
    cli, tmp_path, monkeypatch
):
    data = tmp_path / "data"
    with cordum_up(data) as served:
        monkeypatch.setenv("CORDUM_URL", served.url)
        assert snapshot_versions(cli) == [(1, True)]
    policy = cli.root / cli.write("strict.yaml", BASE)
    with cordum_up(data, "--policy", str(policy)) as served:
        monkeypatch.setenv("CORDUM_URL", served.url)
        code, listing = cli.json("policy", "snapshots")
        assert code == 0, listing
        newest = listing["snapshots"][0]
        assert (newest["version"], newest["active"]) == (2, True)
        assert newest["message"] == f"loaded from {policy} at startup"
        assert newest["bundles"] == ["base"]
    with cordum_up(data) as served:  # the demo pack is the default, but the store wins
        monkeypatch.setenv("CORDUM_URL", served.url)
        assert snapshot_versions(cli) == [(2, True), (1, False)]
