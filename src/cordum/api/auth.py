"""Who is calling, and may they: API keys, roles and tenants at the HTTP edge.

A key comes in ``X-API-Key`` or ``Authorization: Bearer`` (or, for the dashboard, in its
session cookie: :mod:`cordum.api.session`). Unknown and revoked keys are
401, a role without the permission is 403, and an object of a tenant the key does not
cover is 404, exactly as if it did not exist, so ids never leak across tenants. Every
refusal is an ``auth.failure`` audit event on the system chain. ``--insecure-no-auth``
turns all of this off for local demos: every caller is an admin of every tenant.

Routes declare what they need with one of the ``Can*`` parameter types below, or call
:func:`authorize` first thing (the submit route does: it is the hottest path, and a
dependency costs more than the call); ``tests/api/test_tenant_matrix.py`` fails for any
route it does not know. :func:`document_auth` puts the headers into the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NoReturn

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from cordum.api.deps import plane_of
from cordum.api.errors import ApiError, not_found
from cordum.api.session import session_key
from cordum.models import Job
from cordum.models.audit import SYSTEM_CHAIN, AuditDraft
from cordum.models.keys import ALL_TENANTS, Permission, Principal, Role, tenant_problem
from cordum.models.pipeline import DEFAULT_TENANT, JobRecord
from cordum.ports import JobFilter

ANONYMOUS = "anonymous"

PUBLIC_PATHS = frozenset({"/health", "/healthz", "/readyz", "/metrics"})
"""Routes anyone may call: probes and the Prometheus scrape."""

SECURITY_SCHEMES = {
    "ApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key (`cordum keys create`); `cordum up` prints the first one.",
    },
    "Bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "The same API key as a bearer token.",
    },
}
TENANT_HEADER = {
    "name": "X-Tenant-ID",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "The tenant to act in (a key covering several must name one to write);"
    " lists cover only this tenant when given.",
}


def document_auth(document: dict[str, Any]) -> None:
    """Put the key headers and ``X-Tenant-ID`` into an OpenAPI document.

    Done once on the document rather than with security dependencies on every route:
    FastAPI resolves those on every request, a measurable share of a submit's cost.
    """
    document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in document.get("paths", {}).items():
        if path in PUBLIC_PATHS:
            continue
        for operation in operations.values():
            operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
            parameters = operation.setdefault("parameters", [])
            if not any(p.get("name") == "X-Tenant-ID" for p in parameters):
                parameters.append(TENANT_HEADER)


def presented_key(request: HTTPConnection) -> str | None:
    """The key the request carries, if any: a header, else a dashboard session's cookie
    where it may stand in for one (see :mod:`cordum.api.session`)."""
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return session_key(request)


async def principal_of(request: HTTPConnection) -> Principal:
    """The authenticated caller (401 without a valid key, unless auth is off).

    An ``X-Tenant-ID`` the key does not cover is 403 ``tenant_forbidden`` right here.
    """
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    plane = plane_of(request)
    if not plane.settings.auth:
        name = request.headers.get("x-principal-id") or ANONYMOUS
        principal = Principal(name=name, role=Role.ADMIN, tenants=frozenset({ALL_TENANTS}))
    else:
        key = presented_key(request)
        found = None if key is None else await plane.keys.principal_for(key)
        if found is None:
            why = "no API key" if key is None else "an unknown or revoked API key"
            await record_failure(request, None, "unauthenticated", why)
            raise ApiError(
                401,
                "unauthenticated",
                f"the request carries {why}; send a key in the X-API-Key header (or"
                " Authorization: Bearer <key>). `cordum up` prints the first admin key;"
                " `cordum keys create` makes more.",
                headers={"WWW-Authenticate": 'Bearer realm="cordum"'},
            )
        principal = found
    named = request.headers.get("x-tenant-id")
    if named:
        # Checked once for every route, whatever it does with the tenant afterwards.
        await _check_tenant(request, principal, named)
    request.state.principal = principal
    return principal


async def authorize(request: HTTPConnection, permission: Permission) -> Principal:
    """The caller, if their role holds ``permission``; 403 otherwise."""
    principal = await principal_of(request)
    if not principal.may(permission):
        await forbid(request, principal, permission)
    return principal


async def forbid(request: HTTPConnection, principal: Principal, permission: Permission) -> NoReturn:
    """Refuse ``principal`` for lacking ``permission``: audit it, then raise 403."""
    await record_failure(request, principal, "forbidden", permission.value)
    raise ApiError(
        403,
        "forbidden",
        f"role {principal.role.value} may not {permission.value}; use a key with a role"
        " that may (see docs/security.md)",
        role=principal.role.value,
        permission=permission.value,
    )


async def _caller(
    request: Request,
) -> Principal:
    return await principal_of(request)


def require(
    permission: Permission, *, every_tenant: bool = False
) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the caller, holding ``permission``.

    ``every_tenant``: and with a key of every tenant (``*``), for what all tenants share
    (the policy, the system audit chain): a key of some tenants must not change it.
    """

    async def dependency(
        request: Request, principal: Annotated[Principal, Depends(_caller)]
    ) -> Principal:
        if not principal.may(permission):
            await forbid(request, principal, permission)
        if every_tenant and not principal.all_tenants:
            await forbid_partial(request, principal, permission)
        return principal

    return dependency


async def forbid_partial(
    request: HTTPConnection, principal: Principal, permission: Permission
) -> NoReturn:
    """Refuse a key of some tenants what concerns every tenant: audit it, then raise 403."""
    await record_failure(request, principal, "all_tenants_required", permission.value)
    raise ApiError(
        403,
        "all_tenants_required",
        f"this concerns every tenant, so it takes a key of every tenant (`--tenant '*'`);"
        f" this key covers {', '.join(sorted(principal.tenants))} only",
        permission=permission.value,
    )


CanRead = Annotated[Principal, Depends(require(Permission.READ))]
CanSubmit = Annotated[Principal, Depends(require(Permission.SUBMIT))]
CanOperate = Annotated[Principal, Depends(require(Permission.OPERATE))]
CanWork = Annotated[Principal, Depends(require(Permission.WORK))]
CanAdminKeys = Annotated[Principal, Depends(require(Permission.KEYS_ADMIN))]
Authenticated = Annotated[Principal, Depends(_caller)]
"""Any valid key; the route decides (e.g. a worker's own key, or an operator)."""


async def acting_tenant(request: HTTPConnection, principal: Principal) -> str:
    """The one tenant a write acts in: ``X-Tenant-ID``, else the key's only tenant."""
    named = request.headers.get("x-tenant-id")
    if named:
        await _check_writable(request, principal, named)
        return named
    own = sorted(principal.tenants - {ALL_TENANTS})
    if principal.all_tenants or (len(own) == 1 and own[0] == DEFAULT_TENANT):
        return DEFAULT_TENANT
    if len(own) == 1:
        return own[0]
    raise ApiError(
        400,
        "tenant_required",
        f"this key covers tenants {', '.join(own)}; name one in the X-Tenant-ID header",
    )


async def visible_tenants(request: HTTPConnection, principal: Principal) -> frozenset[str] | None:
    """The tenants a listing covers: ``X-Tenant-ID`` alone, else all of the key's (None = all)."""
    named = request.headers.get("x-tenant-id")
    if named:
        await _check_tenant(request, principal, named)
        return frozenset({named})
    return None if principal.all_tenants else principal.tenants


async def check_body_tenant(request: HTTPConnection, principal: Principal, tenant_id: str) -> None:
    """403 when a body names a tenant the key does not cover."""
    await _check_tenant(request, principal, tenant_id)


async def job_in_tenant(request: HTTPConnection, principal: Principal, job: Job) -> Job:
    """The job with its tenant settled: the one it names (if the key covers it), else the
    acting tenant. What every route that submits or evaluates a job body uses."""
    if job.tenant_id:
        await _check_writable(request, principal, job.tenant_id)
        return job
    tenant = await acting_tenant(request, principal)
    return job.model_copy(update={"tenant_id": tenant})


def job_filter(principal: Principal, tenants: frozenset[str] | None) -> JobFilter:
    """The part of a job listing's filter that keeps it to what ``principal`` may see."""
    if not principal.own_jobs_only:
        return JobFilter(tenant_ids=tenants)
    # An agent lists its own submissions only; one without a key id owns nothing.
    return JobFilter(tenant_ids=tenants, submitter_key=principal.key_id or "")


def sees_job(principal: Principal, job: JobRecord) -> bool:
    """Whether the caller may see ``job``: its tenant, and for agents their own jobs only."""
    if not principal.sees(job.tenant_id):
        return False
    return not principal.own_jobs_only or (
        principal.key_id is not None and job.submitter_key == principal.key_id
    )


def require_visible(principal: Principal, job: JobRecord | None, job_id: str) -> JobRecord:
    """The job, or 404 when it does not exist *or* the caller may not see it."""
    if job is None or not sees_job(principal, job):
        raise not_found("job", job_id)
    return job


async def visible_job(request: HTTPConnection, principal: Principal, job_id: str) -> JobRecord:
    """Load a job the caller may see, or 404 (the same answer as for an unknown id).

    A hidden job that exists is also recorded as an ``auth.failure`` (``not_visible``),
    so probing for other tenants' ids shows in the audit trail without showing the prober.
    """
    job = await plane_of(request).store.get_job(job_id)
    if job is not None and not sees_job(principal, job):
        await record_failure(request, principal, "not_visible", f"job {job_id}")
    return require_visible(principal, job, job_id)


async def _check_writable(request: HTTPConnection, principal: Principal, tenant_id: str) -> None:
    """A tenant to create things in: a real tenant id (not ``*`` nor a reserved chain's
    name, which reads may name), and one the key covers."""
    problem = tenant_problem(tenant_id)
    if problem is not None:
        raise ApiError(400, "invalid_tenant", f"tenant {tenant_id!r}: {problem}")
    await _check_tenant(request, principal, tenant_id)


async def _check_tenant(request: HTTPConnection, principal: Principal, tenant_id: str) -> None:
    if not principal.sees(tenant_id):
        await record_failure(request, principal, "tenant_forbidden", tenant_id)
        raise ApiError(
            403,
            "tenant_forbidden",
            f"this key does not cover tenant {tenant_id!r}; use a key of that tenant",
            tenant=tenant_id,
        )


async def record_failure(
    request: HTTPConnection, principal: Principal | None, code: str, detail: str
) -> None:
    """An ``auth.failure`` event on the system chain: who tried what, from where."""
    plane = plane_of(request)
    client = request.client.host if request.client else None
    method = request.scope.get("method") or "WEBSOCKET"
    await plane.store.append_audit(
        [
            AuditDraft(
                tenant_id=SYSTEM_CHAIN,
                kind="auth.failure",
                subject=f"{method} {request.url.path}",
                actor=None if principal is None else principal.key_id,
                data={"code": code, "detail": detail, "client": client},
            )
        ]
    )
