"""The policy lifecycle over real HTTP: bundles, publish, snapshots, rollback, audit.

Pinned:
- ``PUT /policy/bundles/{id}`` takes raw YAML or JSON ``{"text"}``; a bundle that does not
  load is a 422 carrying the loader's issues (file = bundle id, line, rule); ids with
  ``/``; 201 created, 200 updated or unchanged; 415 for other media types; unknown
  bundles are 404; the last bundle cannot be deleted (409);
- ``POST /policy/publish`` answers 201 with the new snapshot, and a job submitted after
  it is decided (and recorded) under the new snapshot id; a publish that changes
  nothing answers 200 ``unchanged``;
- ``GET /policy/snapshots`` marks the active one; ``GET /policy/snapshots/{ref}`` has the
  bundle texts; ``POST /policy/rollback`` by id or version, 200 ``unchanged`` for the
  active one, 404 for unknown ones, 422 for malformed bodies;
- ``GET /policy/audit`` pages through the policy events; viewers may read but not publish,
  agents may not read the audit trail;
- what every tenant shares takes a key of every tenant: an admin of one tenant may not
  edit, publish, roll back or read the policy audit (403 ``all_tenants_required``, audited);
  the policy's text is for admins, operators and keys of every tenant, while any reader
  sees which bundles and snapshots exist;
- the active snapshot survives a restart on the same data directory;
- hot swap: a publish in the middle of a stream of concurrent submissions drops none,
  and every decision on every job names exactly one of the two snapshots, consistent with
  what it decided and with when it was taken.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cordum.models.audit import SYSTEM_CHAIN
from cordum.models.keys import Role
from cordum.ports import AuditFilter
from cordum.services.keys import key_id_of
from tests.api.support import assert_error, served
from tests.pipeline.harness import Harness

pytestmark = pytest.mark.anyio

POLICY = "/api/v1/policy"
YAML = {"Content-Type": "application/yaml"}
FRAGMENT = """\
rules:
  - id: no-prod-run
    match: {topics: [job.test.run], risk_tags: [prod]}
    decision: deny
    reason: no production runs today
"""
CLOSE_RUNS = """\
rules:
  - id: allow-test
    match: {topics: ["job.test.*"]}
    decision: deny
    reason: test jobs are closed
"""
"""Replaces the harness policy's ``allow-test`` rule in place: job.test.run becomes DENY."""


@pytest.fixture
async def harness(tmp_path) -> AsyncIterator[Harness]:
    async with served(tmp_path) as served_harness:
        yield served_harness


async def key_for(harness: Harness, role: Role) -> dict[str, str]:
    """Headers authenticating as a new key of ``role`` for every tenant."""
    tenants = ["*"] if role is Role.ADMIN else ["default"]
    key, _ = await harness.plane.keys.create(name=f"a {role.value}", role=role, tenants=tenants)
    return {"X-API-Key": key}


async def publish(harness: Harness, message: str = "") -> httpx.Response:
    return await harness.http.post(f"{POLICY}/publish", json={"message": message})


async def active_snapshot(harness: Harness) -> dict[str, Any]:
    listing = (await harness.http.get(f"{POLICY}/snapshots")).json()
    (active,) = [s for s in listing["snapshots"] if s["active"]]
    return active


# --- bundles --------------------------------------------------------------------------------


async def test_an_invalid_bundle_is_a_422_with_the_loaders_issues(harness):
    broken = "rules:\n  - id: oops\n    match: {topics: [job.x]}\n    decision: allow-ish\n"
    response = await harness.http.put(f"{POLICY}/bundles/team/oops", content=broken, headers=YAML)
    body = assert_error(response, 422, "invalid_policy")
    issue = body["issues"][0]
    assert (issue["file"], issue["line"], issue["rule_id"]) == ("team/oops", 4, "oops")
    assert "team/oops:4" in body["error"]
    assert_error(await harness.http.get(f"{POLICY}/bundles/team/oops"), 404, "bundle_not_found")


async def test_bad_yaml_and_bad_bodies_are_client_errors(harness):
    url = f"{POLICY}/bundles/team/x"
    bad_yaml = await harness.http.put(url, content="rules: [\n", headers=YAML)
    assert assert_error(bad_yaml, 422, "invalid_policy")["issues"][0]["line"] is not None
    binary = await harness.http.put(url, content=b"\x00\xff\x00rules", headers=YAML)
    assert_error(binary, 422, "invalid_policy")
    form = await harness.http.put(
        url, content=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert_error(form, 415, "unsupported_media_type")
    assert_error(await harness.http.put(url, json={"txt": FRAGMENT}), 422, "invalid_request")
    assert_error(await harness.http.put(url, json={"text": 3}), 422, "invalid_request")
    dots = await harness.http.put(f"{POLICY}/bundles/a/%2E%2E/b", json={"text": FRAGMENT})
    assert_error(dots, 422, "invalid_bundle_id")


async def test_bundles_are_created_updated_listed_and_deleted(harness):
    url = f"{POLICY}/bundles/secops/prod"
    created = await harness.http.put(url, content=FRAGMENT, headers=YAML)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "created"
    assert created.json()["bundle"]["updated_by"] == "bootstrap-admin"
    same = await harness.http.put(url, json={"text": FRAGMENT})
    assert (same.status_code, same.json()["status"]) == (200, "unchanged")
    changed = await harness.http.put(url, json={"text": FRAGMENT + "# reviewed\n"})
    assert (changed.status_code, changed.json()["status"]) == (200, "updated")

    one = (await harness.http.get(url)).json()
    assert one["text"] == FRAGMENT + "# reviewed\n"
    listed = (await harness.http.get(f"{POLICY}/bundles")).json()["bundles"]
    assert [b["bundle_id"] for b in listed] == ["base", "secops/prod"]
    assert "text" not in listed[0]

    assert (await harness.http.delete(url)).status_code == 204
    assert_error(await harness.http.delete(url), 404, "bundle_not_found")
    assert_error(await harness.http.delete(f"{POLICY}/bundles/base"), 409, "last_bundle")


# --- publish and snapshots ------------------------------------------------------------------


async def test_publish_swaps_the_policy_that_decides_new_jobs(harness):
    before = await active_snapshot(harness)
    assert before["version"] == 1
    await harness.http.put(f"{POLICY}/bundles/tighten", content=CLOSE_RUNS, headers=YAML)
    allowed = await harness.submit("job.test.run")
    assert allowed.status_code == 200  # a draft decides nothing

    response = await publish(harness, "close test runs")

    assert response.status_code == 201, response.text
    assert response.json()["status"] == "published"
    snapshot = response.json()["snapshot"]
    assert (snapshot["version"], snapshot["active"]) == (2, True)
    assert (snapshot["author"], snapshot["message"]) == ("bootstrap-admin", "close test runs")
    assert snapshot["bundles"] == ["base", "tighten"]
    assert snapshot["snapshot_id"] != before["snapshot_id"]
    denied = await harness.submit("job.test.run")
    rejection = assert_error(denied, 403)["rejection"]
    assert rejection["policy_snapshot"] == snapshot["snapshot_id"]
    job_id = rejection["job_id"]
    (decision,) = (await harness.http.get(f"/api/v1/jobs/{job_id}/decisions")).json()["decisions"]
    assert (decision["decision"], decision["policy_snapshot"]) == ("DENY", snapshot["snapshot_id"])


async def test_a_publish_that_changes_nothing_answers_unchanged(harness):
    response = await publish(harness, "nothing new")
    assert (response.status_code, response.json()["status"]) == (200, "unchanged")
    assert response.json()["snapshot"]["version"] == 1
    listing = (await harness.http.get(f"{POLICY}/snapshots")).json()
    assert [s["version"] for s in listing["snapshots"]] == [1]


async def test_snapshots_list_and_show_their_bundles(harness):
    await harness.http.put(f"{POLICY}/bundles/secops/prod", content=FRAGMENT, headers=YAML)
    second = (await publish(harness, "v2")).json()["snapshot"]
    listing = (await harness.http.get(f"{POLICY}/snapshots")).json()
    assert listing["active_version"] == 2
    assert [(s["version"], s["active"]) for s in listing["snapshots"]] == [(2, True), (1, False)]
    assert set(listing["snapshots"][0]) >= {
        "version",
        "snapshot_id",
        "policy_version",
        "author",
        "message",
        "created_at",
        "active",
    }
    by_id = (await harness.http.get(f"{POLICY}/snapshots/{second['snapshot_id']}")).json()
    by_version = (await harness.http.get(f"{POLICY}/snapshots/2")).json()
    assert by_id == by_version
    assert by_id["bundles"]["secops/prod"] == FRAGMENT
    assert_error(await harness.http.get(f"{POLICY}/snapshots/9"), 404, "snapshot_not_found")


async def test_rollback_by_id_or_version(harness):
    first = await active_snapshot(harness)
    await harness.http.put(f"{POLICY}/bundles/tighten", content=CLOSE_RUNS, headers=YAML)
    await publish(harness, "close")
    assert (await harness.submit("job.test.run")).status_code == 403

    back = await harness.http.post(
        f"{POLICY}/rollback", json={"snapshot_id": first["snapshot_id"], "message": "reopen"}
    )

    assert back.status_code == 200, back.text
    assert back.json()["status"] == "rolled_back"
    assert back.json()["snapshot"]["version"] == 1
    assert (await harness.submit("job.test.run")).status_code == 200
    bundles = (await harness.http.get(f"{POLICY}/bundles")).json()["bundles"]
    assert [b["bundle_id"] for b in bundles] == ["base"]  # the drafts follow the rollback
    forward = await harness.http.post(f"{POLICY}/rollback", json={"snapshot_id": 2})
    assert forward.json()["snapshot"]["version"] == 2
    again = await harness.http.post(f"{POLICY}/rollback", json={"snapshot_id": "2"})
    assert (again.status_code, again.json()["status"]) == (200, "unchanged")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"snapshot_id": 42}, 404, "snapshot_not_found"),
        ({"snapshot_id": 10**30}, 404, "snapshot_not_found"),
        ({"snapshot_id": "\u00b2"}, 404, "snapshot_not_found"),
        ({"snapshot_id": -1}, 404, "snapshot_not_found"),
        ({"snapshot_id": "x:" + "0" * 64}, 404, "snapshot_not_found"),
        ({"snapshot_id": 1.5}, 422, "invalid_request"),
        ({"snapshot_id": True}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ({"snapshot_id": 1, "force": True}, 422, "invalid_request"),
    ],
)
async def test_rollback_refuses_what_it_cannot_use(harness, body, status, code):
    assert_error(await harness.http.post(f"{POLICY}/rollback", json=body), status, code)


async def test_publish_refuses_a_malformed_body(harness):
    response = await harness.http.post(f"{POLICY}/publish", json={"message": ["no"]})
    assert_error(response, 422, "invalid_request")
    empty = await harness.http.post(f"{POLICY}/publish")
    assert empty.status_code == 200  # no body: publish with no message


# --- audit and roles ------------------------------------------------------------------------


async def test_the_policy_audit_trail_pages_through_every_change(harness):
    await harness.http.put(f"{POLICY}/bundles/secops/prod", content=FRAGMENT, headers=YAML)
    published = (await publish(harness, "v2")).json()["snapshot"]
    await harness.http.post(f"{POLICY}/rollback", json={"snapshot_id": 1})

    page = (await harness.http.get(f"{POLICY}/audit", params={"limit": 3})).json()
    rest = (
        await harness.http.get(f"{POLICY}/audit", params={"cursor": page["next_cursor"]})
    ).json()

    events = page["events"] + rest["events"]
    assert rest["next_cursor"] is None
    assert [(e["kind"], e["subject"]) for e in events] == [
        ("policy.bundle.put", "base"),  # seeded by the first start
        ("policy.publish", events[1]["subject"]),
        ("policy.bundle.put", "secops/prod"),
        ("policy.publish", published["snapshot_id"]),
        ("policy.rollback", events[1]["subject"]),
        ("policy.bundle.deleted", "secops/prod"),
    ]
    assert events[3]["actor"] == "bootstrap-admin"
    assert events[3]["data"]["message"] == "v2"
    assert all(e["tenant_id"] == "_system" for e in events)


async def test_viewers_read_the_policy_but_may_not_change_it(harness):
    viewer = await key_for(harness, Role.VIEWER)
    assert (await harness.http.get(f"{POLICY}/bundles", headers=viewer)).status_code == 200
    assert (await harness.http.get(f"{POLICY}/snapshots", headers=viewer)).status_code == 200
    everywhere, _ = await harness.plane.keys.create(name="v*", role=Role.VIEWER, tenants=["*"])
    audit = await harness.http.get(f"{POLICY}/audit", headers={"X-API-Key": everywhere})
    assert audit.status_code == 200, audit.text
    put = await harness.http.put(
        f"{POLICY}/bundles/x", content=FRAGMENT, headers={**viewer, **YAML}
    )
    assert_error(put, 403, "forbidden")
    assert_error(await harness.http.post(f"{POLICY}/publish", headers=viewer), 403, "forbidden")
    roll = await harness.http.post(f"{POLICY}/rollback", json={"snapshot_id": 1}, headers=viewer)
    assert_error(roll, 403, "forbidden")
    agent = await key_for(harness, Role.AGENT)
    assert_error(await harness.http.get(f"{POLICY}/audit", headers=agent), 403, "forbidden")
    anonymous = await harness.http.get(f"{POLICY}/bundles", headers={"X-API-Key": ""})
    assert_error(anonymous, 401, "unauthenticated")


async def test_only_keys_of_every_tenant_change_the_policy_or_read_its_audit(harness):
    acme_admin, _ = await harness.plane.keys.create(name="a", role=Role.ADMIN, tenants=["acme"])
    acme = {"X-API-Key": acme_admin}
    before = await active_snapshot(harness)
    for method, path, body in (
        ("PUT", f"{POLICY}/bundles/x", None),
        ("DELETE", f"{POLICY}/bundles/x", None),
        ("POST", f"{POLICY}/publish", {}),
        ("POST", f"{POLICY}/rollback", {"snapshot_id": 1}),
        ("GET", f"{POLICY}/audit", None),
    ):
        if method == "PUT":
            response = await harness.http.put(path, content=FRAGMENT, headers={**acme, **YAML})
        else:
            response = await harness.http.request(method, path, json=body, headers=acme)
        error = assert_error(response, 403, "all_tenants_required")
        assert "every tenant" in error["error"]
    bundles = (await harness.http.get(f"{POLICY}/bundles")).json()["bundles"]
    assert "x" not in [bundle["bundle_id"] for bundle in bundles]
    assert await active_snapshot(harness) == before, "nothing changed"
    failures = await harness.plane.store.list_audit(
        AuditFilter(tenant_id=SYSTEM_CHAIN, kinds=frozenset({"auth.failure"}))
    )
    assert [(e.data["code"], e.actor) for e in failures] == [
        ("all_tenants_required", key_id_of(acme_admin))
    ] * 5


async def test_the_policy_text_is_for_admins_operators_and_keys_of_every_tenant(harness):
    await harness.http.put(f"{POLICY}/bundles/secops/prod", content=FRAGMENT, headers=YAML)
    assert (await publish(harness)).status_code == 201
    texts = (f"{POLICY}/bundles/secops/prod", f"{POLICY}/snapshots/2")
    for role, tenants, allowed in (
        (Role.VIEWER, ["acme"], False),
        (Role.AGENT, ["acme"], False),
        (Role.OPERATOR, ["acme"], True),
        (Role.ADMIN, ["acme"], True),
        (Role.VIEWER, ["*"], True),
    ):
        key, _ = await harness.plane.keys.create(name="k", role=role, tenants=tenants)
        headers = {"X-API-Key": key}
        for path in texts:
            response = await harness.http.get(path, headers=headers)
            if allowed:
                assert response.status_code == 200, (role, tenants, response.text)
                assert "no-prod-run" in response.text
            else:
                assert_error(response, 403, "forbidden")
                assert "no-prod-run" not in response.text
        # what is there (ids, versions, which is active) stays readable to every reader
        listing = await harness.http.get(f"{POLICY}/snapshots", headers=headers)
        assert listing.json()["active_version"] == 2
        bundles = await harness.http.get(f"{POLICY}/bundles", headers=headers)
        assert "secops/prod" in bundles.text
        assert "no-prod-run" not in bundles.text + listing.text


# --- restart and hot swap -------------------------------------------------------------------


async def test_the_active_snapshot_survives_a_restart(tmp_path):
    async with served(tmp_path) as first:
        await first.http.put(f"{POLICY}/bundles/tighten", content=CLOSE_RUNS, headers=YAML)
        published = (await publish(first, "close")).json()["snapshot"]
    async with served(tmp_path) as second:
        active = await active_snapshot(second)
        assert (active["version"], active["snapshot_id"]) == (2, published["snapshot_id"])
        denied = assert_error(await second.submit("job.test.run"), 403)
        assert denied["rejection"]["policy_snapshot"] == published["snapshot_id"]


async def test_a_publish_under_concurrent_submissions_drops_and_misattributes_nothing(harness):
    old = (await active_snapshot(harness))["snapshot_id"]
    await harness.http.put(f"{POLICY}/bundles/tighten", content=CLOSE_RUNS, headers=YAML)
    statuses: list[int] = []
    job_ids: list[str] = []

    async def submit_one() -> None:
        response = await harness.submit("job.test.run")
        statuses.append(response.status_code)
        body = response.json()
        job_ids.append(
            body["job_id"] if response.status_code == 200 else body["rejection"]["job_id"]
        )

    async def stream(count: int) -> None:
        tasks = []
        for _ in range(count):
            tasks.append(asyncio.create_task(submit_one()))
            await asyncio.sleep(0.004)
        await asyncio.gather(*tasks)

    load = asyncio.create_task(stream(200))
    await asyncio.sleep(0.3)
    started = time.time()
    new = (await publish(harness, "mid-stream")).json()["snapshot"]["snapshot_id"]
    finished = time.time()
    await load

    assert set(statuses) <= {200, 403}, statuses
    assert len(job_ids) == 200
    expected = {old: "ALLOW", new: "DENY"}
    seen = set()
    for job_id in job_ids:
        for decision in await harness.plane.store.job_decisions(job_id):
            assert decision.policy_snapshot in expected, decision
            assert decision.decision.value == expected[decision.policy_snapshot], decision
            if decision.at < started:
                assert decision.policy_snapshot == old, decision
            if decision.at > finished:
                assert decision.policy_snapshot == new, decision
            seen.add(decision.policy_snapshot)
    assert seen == {old, new}  # the publish really happened mid-stream
