"""Who may do what: API keys, roles, tenants, bootstrap, and insecure mode.

Pinned, over real HTTP:

- no key, an unknown key and a revoked key are 401 ``unauthenticated`` (``X-API-Key`` and
  ``Authorization: Bearer`` alike) with ``WWW-Authenticate``; the message names the header;
- a role without the permission is 403 ``forbidden`` naming role and permission: a viewer
  cannot submit, a worker cannot read jobs, an agent cannot approve;
- every refusal (401, 403, other tenant, a hidden job) is an ``auth.failure`` event on the
  system audit chain, with the key id and the path, never the key itself;
- tenants: a key of several tenants names one to write (400 ``tenant_required``); a body or
  ``X-Tenant-ID`` outside the key is 403 ``tenant_forbidden``; ``*`` and ``_``-names are no
  tenants; the submitted job records its tenant and submitter key;
- agents see and cancel only their own jobs (another agent's, in the same tenant, is 404);
  the SDK sends ``CORDUM_API_KEY`` and ``CORDUM_TENANT_ID`` from the environment;
- workers: only the registering key may act as a worker (4404/404 for anyone else), an id
  taken by another key is 403, an operator of every tenant may drain any worker; the
  WebSocket refuses no key with 4401 and a non-worker key with 4403; each refusal (another
  key's worker, a taken id, a report on a hidden job) is an ``auth.failure``, an unknown
  worker id is not;
- keys API: create shows the key once (201), list never shows a secret or hash, revoke
  stops the key at once, the last admin key of every tenant cannot be revoked, an admin
  of one tenant manages that tenant's keys only;
- bootstrap: ``ensure_bootstrap`` mints exactly once, and installs ``CORDUM_API_KEY``,
  but never brings it back once revoked, nor changes a known key's role (it logs why);
  ``cordum up`` prints a minted key once, honours ``CORDUM_API_KEY``, and
  ``--insecure-no-auth`` warns loudly and lets anonymous callers in.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cordum.models.audit import SYSTEM_CHAIN
from cordum.ports import AuditFilter
from cordum.sdk import AsyncClient, CordumAPIError
from cordum.services.keys import KeyService, key_hash, key_id_of
from tests.api.support import accepted, assert_error, served
from tests.pipeline.harness import ADMIN_KEY, Harness, auth
from tests.pipeline.workers import BareWorker
from tests.sdk.servers import CordumUp, cordum_up

pytestmark = pytest.mark.anyio

JOBS = "/api/v1/jobs"
KEYS = "/api/v1/keys"


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Harness]:
    """A fresh plane (auth on) per test: these tests count keys and audit events."""
    async with served(tmp_path) as harness:
        yield harness


async def auth_failures(harness: Harness) -> list[dict[str, Any]]:
    """The ``auth.failure`` events of the system chain, as plain dicts."""
    filters = AuditFilter(tenant_id=SYSTEM_CHAIN, kinds=frozenset({"auth.failure"}))
    events = await harness.plane.store.list_audit(filters)
    return [{"actor": e.actor, "subject": e.subject, **e.data} for e in events]


async def submitted(harness: Harness, key: str, tenant: str | None = None, **body: Any) -> str:
    """Submit an allowed job with ``key``; its id."""
    headers = auth(key) | ({"X-Tenant-ID": tenant} if tenant else {})
    response = await harness.http.post(
        JOBS, json={"topic": "job.test.run", **body}, headers=headers
    )
    assert response.status_code == 200, response.text
    job_id: str = response.json()["job_id"]
    return job_id


# --- 401 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-key"),
        pytest.param({"X-API-Key": "cordum_not-a-key-anyone-made-00000"}, id="unknown-key"),
        pytest.param({"Authorization": "Bearer cordum_unknown-bearer-00000000"}, id="bearer"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic-is-not-a-key"),
        pytest.param({"X-API-Key": ""}, id="empty-key"),
    ],
)
async def test_no_valid_key_is_401_naming_the_header(
    plane: Harness, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=plane.url, headers=headers) as anonymous:
        response = await anonymous.get(JOBS)
    body = assert_error(response, 401, "unauthenticated")
    assert "X-API-Key" in body["error"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    (failure,) = await auth_failures(plane)
    assert failure["code"] == "unauthenticated"
    assert failure["subject"] == f"GET {JOBS}"
    assert failure["actor"] is None


async def test_both_header_styles_authenticate(plane: Harness) -> None:
    key = await plane.new_key("viewer")
    async with httpx.AsyncClient(base_url=plane.url) as http:
        for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
            response = await http.get(JOBS, headers=headers)
            assert response.status_code == 200, (headers, response.text)


async def test_a_revoked_key_stops_working_at_once(plane: Harness) -> None:
    key = await plane.new_key("agent")
    await submitted(plane, key)
    response = await plane.http.delete(f"{KEYS}/{key_id_of(key)}")
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False
    async with httpx.AsyncClient(base_url=plane.url) as http:
        for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
            again = await http.post(JOBS, json={"topic": "job.test.run"}, headers=headers)
            assert_error(again, 401, "unauthenticated")
    assert "revoked" in (await auth_failures(plane))[-1]["detail"]


async def test_the_audit_never_holds_a_presented_key(plane: Harness) -> None:
    secret = "cordum_wrong-key-that-must-not-be-logged"
    await plane.http.get(JOBS, headers={"X-API-Key": secret})
    events = await plane.plane.store.list_audit(AuditFilter(tenant_id=SYSTEM_CHAIN))
    assert all(secret not in event.body for event in events)
    assert all(key_hash(ADMIN_KEY) not in event.body for event in events)


# --- 403: roles -----------------------------------------------------------------------------


async def test_a_viewer_reads_but_may_not_submit(plane: Harness) -> None:
    viewer = await plane.new_key("viewer")
    job_id = await accepted(plane)
    assert (await plane.http.get(f"{JOBS}/{job_id}", headers=auth(viewer))).status_code == 200
    response = await plane.http.post(JOBS, json={"topic": "job.test.run"}, headers=auth(viewer))
    body = assert_error(response, 403, "forbidden")
    assert body["role"] == "viewer"
    assert body["permission"] == "submit"
    (failure,) = await auth_failures(plane)
    assert failure == {
        "actor": key_id_of(viewer),
        "subject": f"POST {JOBS}",
        "code": "forbidden",
        "detail": "submit",
        "client": "127.0.0.1",
    }


async def test_a_worker_key_may_not_read_or_submit_jobs(plane: Harness) -> None:
    worker = await plane.new_key("worker")
    assert_error(await plane.http.get(JOBS, headers=auth(worker)), 403, "forbidden")
    response = await plane.http.post(JOBS, json={"topic": "job.test.run"}, headers=auth(worker))
    assert_error(response, 403, "forbidden")


async def test_an_agent_may_not_approve_even_a_job_it_can_see(plane: Harness) -> None:
    agent = await plane.new_key("agent")
    response = await plane.http.post(JOBS, json={"topic": "job.test.admin"}, headers=auth(agent))
    job_id = response.json()["job_id"]
    assert response.json()["status"] == "approval_required"
    for verb in ("approve", "reject"):
        refused = await plane.http.post(
            f"/api/v1/approvals/{job_id}/{verb}", json={}, headers=auth(agent)
        )
        assert_error(refused, 403, "forbidden")
    assert (await plane.job(job_id)).state.value == "APPROVAL_REQUIRED"


async def test_an_operator_may_approve_an_agents_job(plane: Harness) -> None:
    agent, operator = await plane.new_key("agent"), await plane.new_key("operator")
    response = await plane.http.post(JOBS, json={"topic": "job.test.admin"}, headers=auth(agent))
    job_id = response.json()["job_id"]
    approved = await plane.http.post(
        f"/api/v1/approvals/{job_id}/approve", json={}, headers=auth(operator)
    )
    assert approved.status_code == 200, approved.text
    assert (await plane.job(job_id)).submitter_key == key_id_of(agent)


# --- agents see their own jobs --------------------------------------------------------------


async def test_an_agent_sees_and_cancels_only_its_own_jobs(plane: Harness) -> None:
    mine, theirs = await plane.new_key("agent"), await plane.new_key("agent")
    own = await submitted(plane, mine)
    other = await submitted(plane, theirs)
    admins = await accepted(plane)

    listed = await plane.http.get(JOBS, headers=auth(mine))
    assert [j["job_id"] for j in listed.json()["jobs"]] == [own]
    for path in (f"{JOBS}/{other}", f"{JOBS}/{other}/decisions", f"{JOBS}/{admins}/events"):
        assert_error(await plane.http.get(path, headers=auth(mine)), 404, "job_not_found")
    cancel = await plane.http.post(f"{JOBS}/{other}/cancel", json={}, headers=auth(mine))
    assert_error(cancel, 404, "job_not_found")
    assert (await plane.job(other)).state.value == "PENDING"
    mine_cancelled = await plane.http.post(f"{JOBS}/{own}/cancel", json={}, headers=auth(mine))
    assert mine_cancelled.json()["state"] == "CANCELLED"
    # a hidden job that exists is noted in the audit; the caller cannot tell it from none
    assert [f["detail"] for f in await auth_failures(plane)][-1] == f"job {other}"


async def test_the_job_records_its_submitter(plane: Harness) -> None:
    agent = await plane.new_key("agent", name="billing-bot")
    job = await plane.job(await submitted(plane, agent))
    assert (job.submitter, job.submitter_key) == ("billing-bot", key_id_of(agent))


async def test_the_sdk_sends_the_key_and_tenant_of_the_environment(
    plane: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await plane.new_key("agent", "acme", "globex")
    monkeypatch.setenv("CORDUM_URL", plane.url)
    monkeypatch.setenv("CORDUM_API_KEY", key)
    monkeypatch.setenv("CORDUM_TENANT_ID", "globex")
    async with AsyncClient() as agent:
        answer = await agent.submit("job.test.run")
        with pytest.raises(CordumAPIError) as refused:
            await agent.approve(answer["job_id"])
    assert refused.value.code == "forbidden"
    job = await plane.job(answer["job_id"])
    assert (job.tenant_id, job.submitter_key) == ("globex", key_id_of(key))


# --- tenants ------------------------------------------------------------------------------


async def test_a_key_of_one_tenant_writes_there_by_default(plane: Harness) -> None:
    acme = await plane.new_key("agent", "acme")
    job = await plane.job(await submitted(plane, acme))
    assert job.tenant_id == "acme"


async def test_a_key_of_several_tenants_must_name_one(plane: Harness) -> None:
    both = await plane.new_key("agent", "acme", "globex")
    response = await plane.http.post(JOBS, json={"topic": "job.test.run"}, headers=auth(both))
    body = assert_error(response, 400, "tenant_required")
    assert "X-Tenant-ID" in body["error"]
    assert (await plane.job(await submitted(plane, both, "globex"))).tenant_id == "globex"
    in_body = await submitted(plane, both, tenant_id="acme")
    assert (await plane.job(in_body)).tenant_id == "acme"


@pytest.mark.parametrize(
    ("header", "body"),
    [
        pytest.param("globex", {}, id="header"),
        pytest.param(None, {"tenant_id": "globex"}, id="body"),
        pytest.param(None, {"tenant": "globex"}, id="body-alias"),
    ],
)
async def test_naming_a_tenant_the_key_lacks_is_403(
    plane: Harness, header: str | None, body: dict[str, str]
) -> None:
    acme = await plane.new_key("admin", "acme")
    headers = auth(acme) | ({"X-Tenant-ID": header} if header else {})
    for path in (JOBS, "/api/v1/policy/simulate"):
        response = await plane.http.post(
            path, json={"topic": "job.test.run", **body}, headers=headers
        )
        error = assert_error(response, 403, "tenant_forbidden")
        assert error["tenant"] == "globex"
    failures = await auth_failures(plane)
    assert [(f["code"], f["detail"]) for f in failures] == [("tenant_forbidden", "globex")] * 2


@pytest.mark.parametrize("tenant", ["*", "_system"])
async def test_star_and_reserved_names_are_no_tenants(plane: Harness, tenant: str) -> None:
    response = await plane.submit("job.test.run", tenant_id=tenant)
    assert_error(response, 400, "invalid_tenant")
    header = await plane.http.post(
        JOBS, json={"topic": "job.test.run"}, headers={"X-Tenant-ID": tenant}
    )
    assert_error(header, 400, "invalid_tenant")


async def test_a_listing_covers_the_keys_tenants_only(plane: Harness) -> None:
    acme = await plane.new_key("viewer", "acme")
    in_acme = await submitted(plane, ADMIN_KEY, "acme")
    await submitted(plane, ADMIN_KEY, "globex")
    listed = await plane.http.get(JOBS, headers=auth(acme))
    assert [j["job_id"] for j in listed.json()["jobs"]] == [in_acme]
    for params, headers in (({"tenant": "globex"}, {}), ({}, {"X-Tenant-ID": "globex"})):
        response = await plane.http.get(JOBS, params=params, headers=auth(acme) | headers)
        assert_error(response, 403, "tenant_forbidden")


# --- workers --------------------------------------------------------------------------------


async def test_only_the_registering_key_acts_as_a_worker(plane: Harness) -> None:
    first, second = await plane.new_key("worker"), await plane.new_key("worker")
    async with httpx.AsyncClient(base_url=plane.url, headers=auth(first)) as http:
        worker = await BareWorker.register(http)
    job_id = await accepted(plane)
    base = f"/api/v1/workers/{worker.worker_id}"
    for path, body in (
        (f"{base}/heartbeat", {}),
        (f"{base}/poll", {"wait_s": 0}),
        (f"{base}/drain", {}),
        (f"{base}/jobs/{job_id}/result", {"status": "succeeded"}),
    ):
        response = await plane.http.post(path, json=body, headers=auth(second))
        assert_error(response, 404, "unknown_worker")
    assert_error(await plane.http.delete(base, headers=auth(second)), 404, "unknown_worker")
    taken = await plane.http.post(
        "/api/v1/workers",
        json={"worker_id": worker.worker_id, "pool": "p", "topics": ["job.test.>"]},
        headers=auth(second),
    )
    assert_error(taken, 403, "worker_id_taken")
    beat = await plane.http.post(f"{base}/heartbeat", json={}, headers=auth(first))
    assert beat.status_code == 200, beat.text
    assert (await plane.http.get("/api/v1/workers")).json()["workers"][0]["owner_key"] == (
        key_id_of(first)
    )


async def test_drain_and_removal_by_operators(plane: Harness) -> None:
    owner = await plane.new_key("worker")
    async with httpx.AsyncClient(base_url=plane.url, headers=auth(owner)) as http:
        worker = await BareWorker.register(http)
    base = f"/api/v1/workers/{worker.worker_id}"
    local_operator = await plane.new_key("operator", "acme")
    refused = await plane.http.post(f"{base}/drain", json={}, headers=auth(local_operator))
    assert_error(refused, 404, "unknown_worker")
    viewer = await plane.new_key("viewer")
    assert_error(
        await plane.http.post(f"{base}/drain", json={}, headers=auth(viewer)), 403, "forbidden"
    )
    everywhere = await plane.new_key("operator", "*")
    drained = await plane.http.post(f"{base}/drain", json={}, headers=auth(everywhere))
    assert drained.status_code == 200, drained.text
    assert (await plane.http.delete(base, headers=auth(everywhere))).status_code == 204


async def test_a_report_about_another_tenants_job_is_404(plane: Harness) -> None:
    acme_worker = await plane.new_key("worker", "acme")
    async with httpx.AsyncClient(base_url=plane.url, headers=auth(acme_worker)) as http:
        worker = await BareWorker.register(http, topics=("job.none.>",))
    hidden = await submitted(plane, ADMIN_KEY, "globex")
    for kind, body in (("progress", {"message": "x"}), ("result", {"status": "succeeded"})):
        response = await plane.http.post(
            f"/api/v1/workers/{worker.worker_id}/jobs/{hidden}/{kind}",
            json=body,
            headers=auth(acme_worker),
        )
        error = assert_error(response, 404, "job_not_found")
        assert "state" not in error, "nothing about the hidden job leaks"


async def test_every_worker_refusal_is_an_auth_failure(plane: Harness) -> None:
    owner, other = await plane.new_key("worker", "acme"), await plane.new_key("worker", "acme")
    async with httpx.AsyncClient(base_url=plane.url, headers=auth(owner)) as http:
        worker = await BareWorker.register(http, topics=("job.none.>",))
    hidden = await submitted(plane, ADMIN_KEY, "globex")
    base = f"/api/v1/workers/{worker.worker_id}"
    async with httpx.AsyncClient(base_url=plane.url) as http:
        # an unknown worker is no refusal: it is how a forgotten worker learns to register
        unknown = await http.post("/api/v1/workers/w-unknown/heartbeat", headers=auth(owner))
        assert_error(unknown, 404, "unknown_worker")
        assert await auth_failures(plane) == []
        beat = await http.post(f"{base}/heartbeat", json={}, headers=auth(other))
        assert_error(beat, 404, "unknown_worker")
        taken = await http.post(
            "/api/v1/workers",
            json={"worker_id": worker.worker_id, "pool": "p", "topics": ["job.test.>"]},
            headers=auth(other),
        )
        assert_error(taken, 403, "worker_id_taken")
        report = await http.post(
            f"{base}/jobs/{hidden}/result", json={"status": "succeeded"}, headers=auth(owner)
        )
        assert_error(report, 404, "job_not_found")
    failures = await auth_failures(plane)
    assert [(f["actor"], f["code"], f["detail"], f["subject"]) for f in failures] == [
        (key_id_of(other), "not_visible", f"worker {worker.worker_id}", f"POST {base}/heartbeat"),
        (key_id_of(other), "worker_id_taken", f"worker {worker.worker_id}", "POST /api/v1/workers"),
        (key_id_of(owner), "not_visible", f"job {hidden}", f"POST {base}/jobs/{hidden}/result"),
    ]


def socket_url(harness: Harness, worker_id: str) -> str:
    return harness.url.replace("http://", "ws://") + f"/api/v1/workers/{worker_id}/ws"


@pytest.mark.parametrize(("role", "code"), [(None, 4401), ("viewer", 4403), ("other", 4404)])
async def test_the_websocket_refuses_with_a_4xxx_close_code(
    plane: Harness, role: str | None, code: int
) -> None:
    worker = await BareWorker.register(plane.http)
    headers = {}
    if role == "other":
        headers = auth(await plane.new_key("worker"))
    elif role is not None:
        headers = auth(await plane.new_key(role))
    async with connect(socket_url(plane, worker.worker_id), additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == code
    assert closed.value.rcvd.reason


# --- keys API -------------------------------------------------------------------------------


async def test_a_created_key_is_shown_once_and_works(plane: Harness) -> None:
    response = await plane.http.post(
        KEYS, json={"name": "ci-bot", "role": "agent", "tenants": ["acme"]}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    key = created["key"]
    assert key.startswith("cordum_")
    assert created["key_id"] == key_id_of(key)
    assert (created["role"], created["tenants"], created["active"]) == ("agent", ["acme"], True)
    assert created["created_by"] == key_id_of(ADMIN_KEY)
    assert (await plane.job(await submitted(plane, key))).tenant_id == "acme"

    listed = await plane.http.get(KEYS)
    assert key not in listed.text
    assert key_hash(key) not in listed.text
    assert {k["name"] for k in listed.json()["keys"]} == {"bootstrap-admin", "ci-bot"}
    assert all("key" not in k and "secret_hash" not in k for k in listed.json()["keys"])


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "x", "role": "root", "tenants": ["a"]}, 422, "invalid_request"),
        ({"name": "x", "role": "agent", "tenants": []}, 422, "invalid_request"),
        ({"name": "", "role": "agent", "tenants": ["a"]}, 422, "invalid_request"),
        ({"name": "x", "role": "agent", "tenants": ["a"], "key": "mine"}, 422, "invalid_request"),
        ({"name": "x", "role": "agent", "tenants": ["*", "a"]}, 422, "invalid_key"),
        ({"name": "x", "role": "agent", "tenants": ["_system"]}, 422, "invalid_key"),
    ],
)
async def test_a_bad_key_request_is_a_clear_4xx(
    plane: Harness, body: dict[str, Any], status: int, code: str
) -> None:
    assert_error(await plane.http.post(KEYS, json=body), status, code)


async def test_revoking(plane: Harness) -> None:
    key = await plane.new_key("viewer")
    first = await plane.http.delete(f"{KEYS}/{key_id_of(key)}")
    again = await plane.http.delete(f"{KEYS}/{key_id_of(key)}")
    assert again.json()["revoked_at"] == first.json()["revoked_at"]
    assert_error(await plane.http.delete(f"{KEYS}/ck_000000000000"), 404, "key_not_found")
    last = await plane.http.delete(f"{KEYS}/{key_id_of(ADMIN_KEY)}")
    assert "create another" in assert_error(last, 409, "last_admin_key")["error"]
    spare = await plane.new_key("admin", "*")
    assert (await plane.http.delete(f"{KEYS}/{key_id_of(ADMIN_KEY)}")).status_code == 200
    assert (await plane.http.get(KEYS, headers=auth(spare))).status_code == 200


async def test_only_admins_manage_keys(plane: Harness) -> None:
    operator = await plane.new_key("operator", "*")
    for method, path in (("GET", KEYS), ("POST", KEYS), ("DELETE", f"{KEYS}/ck_x")):
        response = await plane.http.request(method, path, headers=auth(operator), json={})
        assert_error(response, 403, "forbidden")


async def test_an_admin_of_one_tenant_manages_that_tenants_keys(plane: Harness) -> None:
    acme_admin = await plane.new_key("admin", "acme")
    globex = await plane.new_key("agent", "globex")
    for tenants in (["globex"], ["*"], ["acme", "globex"]):
        response = await plane.http.post(
            KEYS, json={"name": "x", "role": "agent", "tenants": tenants}, headers=auth(acme_admin)
        )
        assert_error(response, 403, "tenant_forbidden")
    made = await plane.http.post(
        KEYS,
        json={"name": "acme-bot", "role": "agent", "tenants": ["acme"]},
        headers=auth(acme_admin),
    )
    assert made.status_code == 201
    listed = (await plane.http.get(KEYS, headers=auth(acme_admin))).json()["keys"]
    assert {k["name"] for k in listed} == {"test-admin", "acme-bot"}
    hidden = await plane.http.delete(f"{KEYS}/{key_id_of(globex)}", headers=auth(acme_admin))
    assert_error(hidden, 404, "key_not_found")


# --- bootstrap ------------------------------------------------------------------------------


async def test_bootstrap_mints_a_key_only_for_an_empty_store(plane: Harness) -> None:
    store = plane.plane.store
    fresh = KeyService(store)
    assert await fresh.ensure_bootstrap(None) is None, "the store already holds a key"
    for record in await store.list_api_keys():
        await store.put_api_key(record.model_copy(update={"revoked_at": 1.0}))
    assert await fresh.ensure_bootstrap(None) is None, "revoked keys still count: no remint"


async def test_bootstrap_installs_the_given_key_as_an_admin_of_every_tenant(
    tmp_path: Path,
) -> None:
    key = "cordum_from-the-environment-0123456789"
    async with served(tmp_path, api_key=key) as harness:
        principal = await harness.plane.keys.principal_for(key)
        assert principal is not None
        assert (principal.role.value, principal.all_tenants) == ("admin", True)
        assert await harness.plane.keys.ensure_bootstrap(key) is None
        assert len(await harness.plane.store.list_api_keys()) == 1


async def test_bootstrap_never_brings_a_revoked_key_back(
    plane: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    keys = plane.plane.keys
    key = "cordum_revoked-in-the-environment-0123"
    await keys.ensure_bootstrap(key)
    assert await keys.principal_for(key) is not None
    assert await keys.revoke(key_id_of(key)) is not None
    with caplog.at_level("ERROR", logger="cordum.services.keys"):
        assert await keys.ensure_bootstrap(key) is None  # as at the next start
    assert await keys.principal_for(key) is None, "a revoked key stays revoked"
    record = await plane.plane.store.get_api_key(key_id_of(key))
    assert record is not None
    assert record.revoked_at is not None
    assert "revoked" in caplog.text
    assert key not in caplog.text
    async with httpx.AsyncClient(base_url=plane.url, headers=auth(key)) as http:
        assert_error(await http.get(JOBS), 401, "unauthenticated")


async def test_bootstrap_leaves_a_known_key_of_another_role_as_it_is(
    plane: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    viewer = await plane.new_key("viewer", "acme")
    with caplog.at_level("WARNING", logger="cordum.services.keys"):
        assert await plane.plane.keys.ensure_bootstrap(viewer) is None
    principal = await plane.plane.keys.principal_for(viewer)
    assert principal is not None
    assert (principal.role.value, principal.tenants) == ("viewer", frozenset({"acme"}))
    assert "not an admin key" in caplog.text


def _minted(output: str) -> str:
    found = re.findall(r"export CORDUM_API_KEY=(cordum_\S+)", output)
    assert len(found) == 1, output
    return str(found[0])


def test_cordum_up_prints_a_minted_key_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = CordumUp(data, "--no-demo", env={"CORDUM_API_KEY": ""})
    first.start()
    try:
        key = _minted(first.output())
        anonymous = httpx.get(f"{first.url}{JOBS}", timeout=5)
        assert anonymous.status_code == 401
        assert httpx.get(f"{first.url}{JOBS}", headers=auth(key), timeout=5).status_code == 200
        assert httpx.get(f"{first.url}/readyz", timeout=5).status_code == 200, "probes are open"
    finally:
        first.stop()
    with cordum_up(data, "--no-demo", env={"CORDUM_API_KEY": ""}) as second:
        assert "export CORDUM_API_KEY" not in second.output()
        assert "cordum keys list" in second.output()
        assert httpx.get(f"{second.url}{JOBS}", headers=auth(key), timeout=5).status_code == 200


def test_cordum_up_honours_cordum_api_key(tmp_path: Path) -> None:
    with cordum_up(tmp_path / "data", "--no-demo") as served_up:  # CORDUM_API_KEY=ADMIN_KEY
        assert "export CORDUM_API_KEY" not in served_up.output()
        assert "CORDUM_API_KEY is the admin key ck_" in served_up.output()
        answer = httpx.get(f"{served_up.url}{JOBS}", headers=auth(ADMIN_KEY), timeout=5)
        assert answer.status_code == 200


def test_cordum_up_refuses_a_short_cordum_api_key(tmp_path: Path) -> None:
    server = CordumUp(tmp_path / "data", env={"CORDUM_API_KEY": "short"})
    with pytest.raises(RuntimeError, match="CORDUM_API_KEY is shorter"):
        server.start()


def test_insecure_mode_says_so_and_lets_anyone_in(tmp_path: Path) -> None:
    with cordum_up(tmp_path / "data", "--no-demo", "--insecure-no-auth") as insecure:
        assert "AUTHENTICATION IS OFF" in insecure.output()
        assert "authentication is off" in insecure.output(), "also logged"
        response = httpx.get(f"{insecure.url}{JOBS}", timeout=5)
        assert response.status_code == 200, response.text


# --- no auth, in process --------------------------------------------------------------------


async def test_without_auth_every_caller_is_an_admin(tmp_path: Path) -> None:
    async with served(tmp_path, auth=False) as harness:
        async with httpx.AsyncClient(base_url=harness.url) as anonymous:
            response = await anonymous.post(
                JOBS, json={"topic": "job.test.admin"}, headers={"X-Tenant-ID": "acme"}
            )
            assert response.status_code == 200, response.text
            job_id = response.json()["job_id"]
            assert (await anonymous.get(KEYS)).status_code == 200
            approved = await anonymous.post(
                f"/api/v1/approvals/{job_id}/approve",
                json={},
                headers={"X-Principal-ID": "alice"},
            )
            assert approved.status_code == 200, approved.text
        job = await harness.job(job_id)
        assert (job.tenant_id, job.submitter_key) == ("acme", None)
        assert await auth_failures(harness) == []
