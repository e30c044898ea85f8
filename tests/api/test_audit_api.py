"""The audit chain over real HTTP: listing with filters and cursors, verify before and
after tampering in the database, the NDJSON export, and who may read which chain."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cordum.models.keys import Role
from cordum.services.audit_trail import read_export, verify_export
from tests.api.support import API_POLICY, POOLS, assert_error
from tests.pipeline.harness import Harness, running_plane

pytestmark = pytest.mark.anyio

AUDIT = "/api/v1/audit"


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_plane(tmp_path, policy_text=API_POLICY, pools=POOLS) as served:
        yield served


async def submit(harness: Harness, topic: str = "job.test.run", **headers: str) -> str:
    response = await harness.http.post("/api/v1/jobs", json={"topic": topic}, headers=headers)
    assert response.status_code in (200, 403), response.text
    body: dict[str, Any] = response.json()
    return str(body.get("job_id") or body["rejection"]["job_id"])


async def get(harness: Harness, path: str, **params: Any) -> dict[str, Any]:
    response = await harness.http.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_events_are_listed_oldest_first_with_filters_and_a_cursor(harness: Harness) -> None:
    first = await submit(harness)
    second = await submit(harness, "job.test.delete")
    page = await get(harness, f"{AUDIT}/events", limit=3)
    assert page["tenant_id"] == "default"
    assert [e["seq"] for e in page["events"]] == [1, 2, 3]
    assert page["events"][0]["kind"] == "job.transition"
    assert page["events"][0]["subject"] == first
    assert page["events"][0]["at"].endswith("Z")
    rest = await get(harness, f"{AUDIT}/events", cursor=page["next_cursor"])
    assert rest["events"][0]["seq"] == 4
    assert rest["next_cursor"] is None

    about_second = await get(harness, f"{AUDIT}/events", subject=second)
    assert {e["subject"] for e in about_second["events"]} == {second}
    decisions = await get(harness, f"{AUDIT}/events", kind="decision")
    assert [e["data"]["decision"] for e in decisions["events"]] == ["ALLOW", "DENY"]
    jobs = await get(harness, f"{AUDIT}/events", kind_prefix="job.")
    assert {e["kind"] for e in jobs["events"]} == {"job.transition"}


async def test_verify_says_ok_then_names_the_tampered_event(harness: Harness) -> None:
    for _ in range(5):
        await submit(harness)
    report = await get(harness, f"{AUDIT}/verify", tenant="default")
    assert report["status"] == "ok"
    (chain,) = report["chains"]
    assert chain["ok"] is True
    assert chain["checked"] == 10

    store: Any = harness.plane.store
    store._db.execute(
        "UPDATE audit_events SET body = replace(body, 'PENDING', 'SUCCEEDED') WHERE seq = 3"
    )
    broken = await get(harness, f"{AUDIT}/verify", tenant="default")
    assert broken["status"] == "compromised"
    (chain,) = broken["chains"]
    assert (chain["first_bad_seq"], chain["kind"]) == (3, "modified")
    assert chain["last_seq"] == 2


async def test_verify_without_a_tenant_checks_every_chain(harness: Harness) -> None:
    await submit(harness)
    await submit(harness, **{"X-Tenant-ID": "acme"})
    report = await get(harness, f"{AUDIT}/verify")
    assert {c["tenant_id"] for c in report["chains"]} >= {"default", "acme"}
    assert report["ok"] is True


async def test_the_export_is_ndjson_that_verifies_offline(harness: Harness) -> None:
    for _ in range(3):
        await submit(harness)
    await harness.plane.audit.checkpoint()
    response = await harness.http.get(f"{AUDIT}/export", params={"tenant": "default"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert "audit-default.ndjson" in response.headers["content-disposition"]
    lines = response.text.splitlines()
    assert json.loads(lines[0])["type"] == "chain"
    assert [json.loads(line)["type"] for line in lines[1:]] == ["event"] * 6 + ["checkpoint"]
    chain = read_export(lines)
    report = verify_export(chain, trusted_keys=harness.plane.audit.public_keys)
    assert report.ok
    assert report.checkpoints == 1


async def test_the_system_chain_is_for_keys_that_span_every_tenant(harness: Harness) -> None:
    unauthenticated = await harness.http.get("/api/v1/jobs", headers={"X-API-Key": "wrong" * 5})
    assert_error(unauthenticated, 401)
    system = await get(harness, f"{AUDIT}/events", tenant="_system", kind="auth.failure")
    assert system["events"][-1]["data"]["code"] == "unauthenticated"

    secret, _ = await harness.plane.keys.create(
        name="acme-ops", role=Role.OPERATOR, tenants=["acme"]
    )
    mine = {"X-API-Key": secret}
    denied = await harness.http.get(f"{AUDIT}/events", params={"tenant": "_system"}, headers=mine)
    assert_error(denied, 403, "tenant_forbidden")
    other = await harness.http.get(f"{AUDIT}/events", params={"tenant": "default"}, headers=mine)
    assert_error(other, 403, "tenant_forbidden")
    own = await harness.http.get(f"{AUDIT}/events", headers=mine)
    assert own.status_code == 200
    assert own.json()["tenant_id"] == "acme"
    everything = await harness.http.get(f"{AUDIT}/verify", headers=mine)
    assert {c["tenant_id"] for c in everything.json()["chains"]} <= {"acme"}


async def test_an_agent_may_not_read_the_audit_chain(harness: Harness) -> None:
    secret, _ = await harness.plane.keys.create(name="bot", role=Role.AGENT, tenants=["default"])
    response = await harness.http.get(f"{AUDIT}/events", headers={"X-API-Key": secret})
    assert_error(response, 403, "forbidden")


async def test_bad_filters_are_422(harness: Harness) -> None:
    assert_error(await harness.http.get(f"{AUDIT}/events", params={"cursor": -1}), 422)
    assert_error(await harness.http.get(f"{AUDIT}/events", params={"since": "yesterday"}), 422)
    assert_error(await harness.http.get(f"{AUDIT}/events", params={"limit": 0}), 422)


@pytest.mark.parametrize("path", [f"{AUDIT}/events", "/api/v1/policy/audit"])
async def test_a_cursor_beyond_any_sequence_number_is_422_not_500(
    harness: Harness, path: str
) -> None:
    assert_error(await harness.http.get(path, params={"cursor": 10**20}), 422)
