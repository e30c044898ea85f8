"""Tenant isolation and roles across the whole API, route by route.

Every route of the app's OpenAPI document (and every WebSocket route) must have an entry
in :data:`ROUTES`, or the first test fails: a route added later is checked as soon as it
exists, and nobody can add one without saying who may call it. For every route:

- without a key, 401 (public routes excepted: health, readiness, metrics);
- with a viewer key, every write (POST, PUT, DELETE) is 403;
- with an admin key of tenant ``acme``, ``X-Tenant-ID: globex`` is 403 ``tenant_forbidden``;
- with that key, every object of tenant ``globex`` (job, approval, DLQ entry, key, worker)
  is 404 or 403 with nothing but the error, and a body naming ``globex`` is 403;
- every listing (any GET without a path parameter), read by the acme admin and viewer,
  holds none of globex's ids; routes taking a ``tenant`` query refuse ``globex``.

Policy bundles, snapshots and workers are shared by every tenant (``GLOBAL``): they are
checked for authentication and roles. What changes the shared policy, or reads the system
chain, takes a key of every tenant (``EVERY``): the acme admin gets 403
``all_tenants_required``. The policy's text (``TEXT``) may name any tenant: a viewer of
acme gets 403, its admin reads it.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from fastapi.routing import APIWebSocketRoute
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import cordum.api
from cordum.api import create_app
from cordum.models.keys import Permission
from cordum.services.keys import key_id_of
from tests.api.support import served
from tests.pipeline.harness import Harness, auth
from tests.pipeline.workers import BareWorker

pytestmark = pytest.mark.anyio

A, B = "acme", "globex"
PUBLIC, TENANT, GLOBAL, WORKER = "public", "tenant", "global", "worker"
EVERY, TEXT = "every", "text"
WRITES = frozenset({"POST", "PUT", "DELETE", "PATCH"})
ERROR_FIELDS = {"error", "code", "status", "tenant", "worker_id", "role", "permission"}
"""All a refusal may say; anything else would be data of the other tenant."""


@dataclass(frozen=True)
class Route:
    """Who may call a route and which of tenant B's objects to aim it at."""

    permission: Permission | None
    """What the route needs (None: public)."""
    scope: str = TENANT
    """TENANT (objects of one tenant), GLOBAL (shared by all), EVERY (shared, and only a
    key of every tenant may call it), TEXT (shared, but not for a viewer or agent of one
    tenant), WORKER (the registering key's), PUBLIC (no key)."""
    objects: dict[str, str] = field(default_factory=dict)
    """Path parameter -> which of tenant B's objects (:class:`World`) to put there."""
    body: dict[str, Any] | None = None
    """A body that passes validation, so the tenant check is what answers."""
    tenant_query: str | None = None
    """A query parameter naming a tenant (or chain), refused for a tenant not covered."""


JOB_BODY = {"topic": "job.test.run", "tenant_id": B}
JOB_OF_B = {"job_id": "job"}
ROUTES: dict[tuple[str, str], Route] = {
    # jobs
    ("POST", "/api/v1/jobs"): Route(Permission.SUBMIT, body=JOB_BODY),
    ("GET", "/api/v1/jobs"): Route(Permission.READ, tenant_query="tenant"),
    ("GET", "/api/v1/jobs/{job_id}"): Route(Permission.READ, objects=JOB_OF_B),
    ("GET", "/api/v1/jobs/{job_id}/decisions"): Route(Permission.READ, objects=JOB_OF_B),
    ("GET", "/api/v1/jobs/{job_id}/events"): Route(Permission.READ, objects=JOB_OF_B),
    ("POST", "/api/v1/jobs/{job_id}/cancel"): Route(Permission.SUBMIT, objects=JOB_OF_B, body={}),
    ("POST", "/api/v1/jobs/{job_id}/remediate"): Route(
        Permission.SUBMIT, objects={"job_id": "denied"}, body={"remediation_id": "archive"}
    ),
    # policy decisions on a job body
    ("POST", "/api/v1/policy/evaluate"): Route(Permission.SUBMIT, body=JOB_BODY),
    ("POST", "/api/v1/policy/simulate"): Route(Permission.SUBMIT, body=JOB_BODY),
    ("POST", "/api/v1/policy/explain"): Route(Permission.SUBMIT, body=JOB_BODY),
    # DLQ
    ("GET", "/api/v1/dlq"): Route(Permission.READ),
    ("POST", "/api/v1/dlq/{job_id}/retry"): Route(
        Permission.OPERATE, objects={"job_id": "dead"}, body={}
    ),
    ("DELETE", "/api/v1/dlq/{job_id}"): Route(Permission.OPERATE, objects={"job_id": "dead"}),
    # approvals
    ("GET", "/api/v1/approvals"): Route(Permission.READ),
    ("GET", "/api/v1/approvals/{job_id}"): Route(Permission.READ, objects={"job_id": "approval"}),
    ("POST", "/api/v1/approvals/{job_id}/approve"): Route(
        Permission.APPROVE, objects={"job_id": "approval"}, body={}
    ),
    ("POST", "/api/v1/approvals/{job_id}/reject"): Route(
        Permission.APPROVE, objects={"job_id": "approval"}, body={}
    ),
    # audit: one chain per tenant
    ("GET", "/api/v1/audit/events"): Route(Permission.AUDIT, tenant_query="tenant"),
    ("GET", "/api/v1/audit/verify"): Route(Permission.AUDIT, tenant_query="tenant"),
    ("GET", "/api/v1/audit/export"): Route(Permission.AUDIT, tenant_query="tenant"),
    # policy administration: one policy for every tenant
    ("GET", "/api/v1/policy/bundles"): Route(Permission.READ, GLOBAL),
    ("GET", "/api/v1/policy/bundles/{bundle_id}"): Route(Permission.READ, TEXT),
    ("PUT", "/api/v1/policy/bundles/{bundle_id}"): Route(Permission.POLICY_ADMIN, EVERY),
    ("DELETE", "/api/v1/policy/bundles/{bundle_id}"): Route(Permission.POLICY_ADMIN, EVERY),
    ("POST", "/api/v1/policy/publish"): Route(Permission.POLICY_ADMIN, EVERY),
    ("GET", "/api/v1/policy/snapshots"): Route(Permission.READ, GLOBAL),
    ("GET", "/api/v1/policy/snapshots/{ref}"): Route(Permission.READ, TEXT),
    ("POST", "/api/v1/policy/rollback"): Route(
        Permission.POLICY_ADMIN, EVERY, body={"snapshot_id": 1}
    ),
    ("GET", "/api/v1/policy/audit"): Route(Permission.AUDIT, EVERY),
    # workers: shared, but each acts only as itself
    ("GET", "/api/v1/workers"): Route(Permission.READ, GLOBAL),
    ("POST", "/api/v1/workers"): Route(
        Permission.WORK, WORKER, body={"worker_id": "<worker>", "pool": "p", "topics": ["x.>"]}
    ),
    **{
        ("POST", f"/api/v1/workers/{{worker_id}}/{verb}"): Route(
            Permission.WORK, WORKER, objects={"worker_id": "worker"}, body={}
        )
        for verb in ("heartbeat", "poll", "drain")
    },
    ("POST", "/api/v1/workers/{worker_id}/jobs/{job_id}/progress"): Route(
        Permission.WORK,
        WORKER,
        objects={"worker_id": "worker", "job_id": "job"},
        body={"message": "x"},
    ),
    ("POST", "/api/v1/workers/{worker_id}/jobs/{job_id}/result"): Route(
        Permission.WORK,
        WORKER,
        objects={"worker_id": "worker", "job_id": "job"},
        body={"status": "succeeded"},
    ),
    ("DELETE", "/api/v1/workers/{worker_id}"): Route(
        Permission.WORK, WORKER, objects={"worker_id": "worker"}
    ),
    # keys
    ("POST", "/api/v1/keys"): Route(
        Permission.KEYS_ADMIN, body={"name": "x", "role": "agent", "tenants": [B]}
    ),
    ("GET", "/api/v1/keys"): Route(Permission.KEYS_ADMIN),
    ("DELETE", "/api/v1/keys/{key_id}"): Route(Permission.KEYS_ADMIN, objects={"key_id": "key"}),
    # probes and metrics
    ("GET", "/health"): Route(None, PUBLIC),
    ("GET", "/healthz"): Route(None, PUBLIC),
    ("GET", "/readyz"): Route(None, PUBLIC),
    ("GET", "/metrics"): Route(None, PUBLIC),
}

WEBSOCKETS = {"/api/v1/workers/{worker_id}/ws": Route(Permission.WORK, WORKER)}


@dataclass
class World:
    """One plane with tenant A's keys and tenant B's objects."""

    harness: Harness
    admin_a: str
    viewer_a: str
    b: dict[str, str]
    """B's objects by name: job, denied, approval, dead (DLQ), keys, worker."""
    a: dict[str, str]
    """A's own objects, to show the listings are not simply empty."""

    @property
    def http(self) -> httpx.AsyncClient:
        """The served plane's client (its default key is the bootstrap admin's)."""
        return self.harness.http

    def b_ids(self) -> set[str]:
        """Ids no listing by A may contain (workers are shared: their ids are public)."""
        return {value for name, value in self.b.items() if name != "worker"}


async def _job(http: httpx.AsyncClient, key: str, topic: str, tenant: str) -> str:
    response = await http.post(
        "/api/v1/jobs", json={"topic": topic}, headers=auth(key) | {"X-Tenant-ID": tenant}
    )
    assert response.status_code in (200, 403), response.text
    job_id: str = response.json().get("job_id") or response.json()["rejection"]["job_id"]
    return job_id


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """Tenant B's job, refused job, approval, DLQ entry, key and worker; A's keys."""
    async with served(tmp_path_factory.mktemp("tenants")) as harness:
        http = harness.http
        admin_a = await harness.new_key("admin", A, name="admin-a")
        viewer_a = await harness.new_key("viewer", A, name="viewer-a")
        admin_b = await harness.new_key("admin", B, name="admin-b")
        agent_b = await harness.new_key("agent", B, name="agent-b")
        worker_b = await harness.new_key("worker", B, name="worker-b")

        async with httpx.AsyncClient(base_url=harness.url, headers=auth(worker_b)) as as_b:
            worker = await BareWorker.register(as_b)
            dead = await _job(http, admin_b, "job.test.fail", B)
            job = await _job(http, agent_b, "job.test.run", B)
            claimed = {j["job_id"] for j in await worker.poll(wait_s=3)}
            claimed |= {j["job_id"] for j in await worker.poll(wait_s=0.5)}
            assert {dead, job} <= claimed, claimed
            await worker.fail(dead, "gave up", retryable=False)
        assert await harness.plane.store.get_dlq(dead) is not None
        b = {
            "job": job,  # RUNNING on B's worker
            "denied": await _job(http, agent_b, "job.test.delete", B),
            "approval": await _job(http, agent_b, "job.test.admin", B),
            "dead": dead,
            "key": key_id_of(agent_b),
            "admin_key": key_id_of(admin_b),
            "worker": worker.worker_id,
            "worker_key": key_id_of(worker_b),
        }
        a = {
            "job": await _job(http, admin_a, "job.test.admin", A),
            "key": key_id_of(viewer_a),
        }
        yield World(harness, admin_a, viewer_a, b, a)


def concrete(template: str, values: dict[str, str] | None = None) -> str:
    """The path with every parameter filled: from ``values``, else a dummy id."""
    values = values or {}
    return re.sub(r"\{([^}:]+)(:[^}]*)?\}", lambda m: values.get(m.group(1), "nothing"), template)


def only_an_error(response: httpx.Response) -> None:
    """A refusal says why and nothing more."""
    body = response.json()
    assert set(body) <= ERROR_FIELDS, body


# --- every route is known -------------------------------------------------------------------


async def test_every_route_has_an_entry(world: World) -> None:
    app = create_app(world.harness.plane)  # built, not started: only its routes are read
    served_routes = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if method.upper() in WRITES | {"GET"}
    }
    missing = sorted(served_routes - ROUTES.keys())
    stale = sorted(ROUTES.keys() - served_routes)
    assert not missing, f"routes with no entry in ROUTES (who may call them?): {missing}"
    assert not stale, f"ROUTES names routes the API no longer has: {stale}"
    assert websocket_routes() == set(WEBSOCKETS), "a WebSocket route has no entry in WEBSOCKETS"


def websocket_routes() -> set[str]:
    """The WebSocket paths of every router in ``cordum.api`` (OpenAPI does not list them)."""
    paths = set()
    for info in pkgutil.iter_modules(cordum.api.__path__):
        module = importlib.import_module(f"cordum.api.{info.name}")
        for router in vars(module).values():
            if isinstance(router, APIRouter):
                paths |= {r.path for r in router.routes if isinstance(r, APIWebSocketRoute)}
    return paths


# --- authentication and roles ---------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
async def test_no_key_is_401_except_on_public_routes(world: World, method: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=world.harness.url) as anonymous:
        response = await anonymous.request(method, concrete(path))
    if ROUTES[method, path].scope == PUBLIC:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "unauthenticated"


@pytest.mark.parametrize(("method", "path"), sorted(k for k in ROUTES if k[0] in WRITES))
async def test_a_viewer_may_not_write(world: World, method: str, path: str) -> None:
    route = ROUTES[method, path]
    response = await world.http.request(
        method, concrete(path, world.b), json=route.body, headers=auth(world.viewer_a)
    )
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"


# --- what every tenant shares ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), sorted(k for k, r in ROUTES.items() if r.scope == EVERY)
)
async def test_an_admin_of_one_tenant_may_not_touch_what_every_tenant_shares(
    world: World, method: str, path: str
) -> None:
    route = ROUTES[method, path]
    response = await world.http.request(
        method, concrete(path, {"bundle_id": "x"}), json=route.body, headers=auth(world.admin_a)
    )
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "all_tenants_required"
    only_an_error(response)


@pytest.mark.parametrize(
    ("method", "path"), sorted(k for k, r in ROUTES.items() if r.scope == TEXT)
)
async def test_the_policy_text_is_not_for_a_viewer_of_one_tenant(
    world: World, method: str, path: str
) -> None:
    bundles = (await world.http.get("/api/v1/policy/bundles")).json()["bundles"]
    concrete_path = concrete(path, {"bundle_id": bundles[0]["bundle_id"], "ref": "1"})
    refused = await world.http.request(method, concrete_path, headers=auth(world.viewer_a))
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "forbidden"
    only_an_error(refused)
    admin = await world.http.request(method, concrete_path, headers=auth(world.admin_a))
    assert admin.status_code == 200, admin.text


# --- tenant isolation -----------------------------------------------------------------------

TENANT_ROUTES = sorted(k for k, r in ROUTES.items() if r.scope in (TENANT, WORKER))


@pytest.mark.parametrize(("method", "path"), TENANT_ROUTES)
async def test_naming_another_tenant_in_the_header_is_403(
    world: World, method: str, path: str
) -> None:
    route = ROUTES[method, path]
    response = await world.http.request(
        method,
        concrete(path, world.a),
        json=route.body,
        headers=auth(world.admin_a) | {"X-Tenant-ID": B},
    )
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "tenant_forbidden"
    only_an_error(response)


@pytest.mark.parametrize(
    ("method", "path"), sorted(k for k in TENANT_ROUTES if ROUTES[k].objects or ROUTES[k].body)
)
async def test_another_tenants_objects_are_out_of_reach(
    world: World, method: str, path: str
) -> None:
    route = ROUTES[method, path]
    body = route.body
    if body is not None and body.get("worker_id") == "<worker>":
        body = {**body, "worker_id": world.b["worker"]}
    values = {param: world.b[name] for param, name in route.objects.items()}
    response = await world.http.request(
        method, concrete(path, values), json=body, headers=auth(world.admin_a)
    )
    assert response.status_code in (403, 404), response.text
    only_an_error(response)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/workers/{worker_id}/jobs/{job_id}/progress",
        "/api/v1/workers/{worker_id}/jobs/{job_id}/result",
    ],
)
async def test_a_worker_of_its_own_hears_nothing_of_another_tenants_job(
    world: World, path: str
) -> None:
    async with httpx.AsyncClient(base_url=world.harness.url, headers=auth(world.admin_a)) as a:
        own = await BareWorker.register(a, topics=("job.nobody.>",))
        response = await a.post(
            concrete(path, {"worker_id": own.worker_id, "job_id": world.b["job"]}),
            json=ROUTES["POST", path].body,
        )
    assert response.status_code == 404, response.text
    only_an_error(response)


async def test_another_tenants_worker_socket_is_closed_4404(world: World) -> None:
    url = world.harness.url.replace("http://", "ws://")
    path = concrete(next(iter(WEBSOCKETS)), {"worker_id": world.b["worker"]})
    async with connect(url + path, additional_headers=auth(world.admin_a)) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4404


# --- listings -------------------------------------------------------------------------------

LISTINGS = sorted(path for method, path in ROUTES if method == "GET" and "{" not in path)


@pytest.mark.parametrize("path", LISTINGS)
@pytest.mark.parametrize("who", ["admin_a", "viewer_a"])
async def test_no_listing_shows_another_tenants_ids(world: World, path: str, who: str) -> None:
    response = await world.http.get(path, headers=auth(getattr(world, who)))
    assert response.status_code in (200, 403), response.text
    leaked = sorted(i for i in world.b_ids() if i in response.text)
    assert not leaked, f"{path} shows tenant {B}'s {leaked}"


@pytest.mark.parametrize(
    ("path", "own"),
    [("/api/v1/jobs", "job"), ("/api/v1/approvals", "job"), ("/api/v1/keys", "key")],
)
async def test_listings_do_show_the_tenants_own_objects(world: World, path: str, own: str) -> None:
    response = await world.http.get(path, headers=auth(world.admin_a))
    assert response.status_code == 200, response.text
    assert world.a[own] in response.text


@pytest.mark.parametrize(
    ("method", "path"), sorted(k for k, r in ROUTES.items() if r.tenant_query is not None)
)
async def test_a_tenant_query_outside_the_key_is_403(world: World, method: str, path: str) -> None:
    route = ROUTES[method, path]
    assert route.tenant_query is not None
    response = await world.http.request(
        method, path, params={route.tenant_query: B}, headers=auth(world.admin_a)
    )
    assert response.status_code == 403, response.text
    only_an_error(response)
