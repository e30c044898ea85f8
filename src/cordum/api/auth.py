"""Who is calling, and may they: API keys, roles and tenants at the HTTP edge.

A key comes in ``X-API-Key`` or ``Authorization: Bearer``. Unknown and revoked keys are
401, a role without the permission is 403, and an object of a tenant the key does not
cover is 404, exactly as if it did not exist, so ids never leak across tenants. Every
refusal is an ``auth.failure`` audit event. ``--insecure-no-auth`` turns all of this off
for local demos: every caller is an admin of every tenant.
"""

from __future__ import annotations

from fastapi import Request

from cordum.api.deps import plane_of
from cordum.api.errors import ApiError, not_found
from cordum.models.audit import SYSTEM_CHAIN, AuditDraft
from cordum.models.keys import ALL_TENANTS, Permission, Principal, Role
from cordum.models.pipeline import DEFAULT_TENANT, JobRecord

ANONYMOUS = "anonymous"


def presented_key(request: Request) -> str | None:
    """The key the request carries, if any."""
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def principal_of(request: Request) -> Principal:
    """The authenticated caller (401 without a valid key, unless auth is off)."""
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
            await _record_failure(request, None, "unauthenticated", why)
            raise ApiError(
                401,
                "unauthenticated",
                f"the request carries {why}; send a key in X-API-Key"
                " (or Authorization: Bearer). `cordum keys create` makes one.",
                headers={"WWW-Authenticate": 'Bearer realm="cordum"'},
            )
        principal = found
    request.state.principal = principal
    return principal


async def authorize(request: Request, permission: Permission) -> Principal:
    """The caller, if their role holds ``permission``; 403 otherwise."""
    principal = await principal_of(request)
    if not principal.may(permission):
        await _record_failure(request, principal, "forbidden", permission.value)
        raise ApiError(
            403,
            "forbidden",
            f"role {principal.role.value} may not {permission.value}; use a key with a role"
            " that may (see docs/security.md)",
            role=principal.role.value,
            permission=permission.value,
        )
    return principal


async def acting_tenant(request: Request, principal: Principal) -> str:
    """The one tenant a write acts in: ``X-Tenant-ID``, else the key's only tenant."""
    named = request.headers.get("x-tenant-id")
    if named:
        await _check_tenant(request, principal, named)
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


async def visible_tenants(request: Request, principal: Principal) -> frozenset[str] | None:
    """The tenants a listing covers: ``X-Tenant-ID`` alone, else all of the key's (None = all)."""
    named = request.headers.get("x-tenant-id")
    if named:
        await _check_tenant(request, principal, named)
        return frozenset({named})
    return None if principal.all_tenants else principal.tenants


async def check_body_tenant(request: Request, principal: Principal, tenant_id: str) -> None:
    """403 when a body names a tenant the key does not cover."""
    await _check_tenant(request, principal, tenant_id)


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


async def _check_tenant(request: Request, principal: Principal, tenant_id: str) -> None:
    if not principal.sees(tenant_id):
        await _record_failure(request, principal, "tenant_forbidden", tenant_id)
        raise ApiError(
            403,
            "tenant_forbidden",
            f"this key does not cover tenant {tenant_id!r}",
            tenant=tenant_id,
        )


async def _record_failure(
    request: Request, principal: Principal | None, code: str, detail: str
) -> None:
    """An ``auth.failure`` event on the system chain: who tried what, from where."""
    plane = plane_of(request)
    client = request.client.host if request.client else None
    await plane.store.append_audit(
        [
            AuditDraft(
                tenant_id=SYSTEM_CHAIN,
                kind="auth.failure",
                subject=f"{request.method} {request.url.path}",
                actor=None if principal is None else principal.key_id,
                data={"code": code, "detail": detail, "client": client},
            )
        ]
    )
