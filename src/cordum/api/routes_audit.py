"""The audit chain over HTTP: list events, verify chains, export a chain as NDJSON."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from cordum.api.auth import authorize, check_body_tenant
from cordum.api.deps import plane_of
from cordum.api.errors import ApiError
from cordum.api.views import iso
from cordum.models.audit import SYSTEM_CHAIN, AuditEvent, VerifyReport
from cordum.models.keys import Permission, Principal
from cordum.models.pipeline import DEFAULT_TENANT
from cordum.ports import AuditFilter

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])

TENANT = Query(
    None,
    description="The chain: a tenant id, or `_system` (policy, keys, auth failures; keys for"
    " every tenant only). Default: X-Tenant-ID, else the key's only tenant.",
)


CURSOR = Query(0, ge=0, le=2**63 - 1, description="The `next_cursor` of the previous page.")
"""An audit listing's cursor: the last sequence number seen (SQLite integers end at 2**63)."""


def events_page(events: list[AuditEvent], limit: int) -> dict[str, Any]:
    """``{events, next_cursor}`` from ``limit + 1`` events read after the cursor."""
    next_cursor = str(events[limit - 1].seq) if len(events) > limit else None
    return {"events": [event_view(e) for e in events[:limit]], "next_cursor": next_cursor}


def event_view(event: AuditEvent) -> dict[str, Any]:
    """An event as the API shows it: every sealed field, the hashes and the hashed body."""
    view = event.model_dump(mode="json")
    view["at"] = iso(event.at_ms / 1000)
    return view


def report_view(report: VerifyReport) -> dict[str, Any]:
    """A verification result, with ``status`` ok or compromised."""
    return {"status": "ok" if report.ok else "compromised", **report.model_dump(mode="json")}


async def _chain(request: Request, principal: Principal, tenant: str | None) -> str:
    """The chain a request names, if the caller may read it (403 otherwise)."""
    name = tenant or request.headers.get("x-tenant-id")
    if name is None:
        own = sorted(principal.tenants)
        name = own[0] if len(own) == 1 and not principal.all_tenants else DEFAULT_TENANT
    if name == SYSTEM_CHAIN and not principal.all_tenants:
        raise ApiError(
            403,
            "tenant_forbidden",
            "the system chain is readable only with a key for every tenant (`*`)",
            tenant=name,
        )
    await check_body_tenant(request, principal, name)
    return name


def _file_safe(name: str) -> str:
    """A tenant name fit for a download's file name (headers are latin-1, quotes end it)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


@router.get("/events")
async def list_events(
    request: Request,
    tenant: str | None = TENANT,
    kind: Annotated[list[str] | None, Query(description="Only these kinds (repeatable).")] = None,
    kind_prefix: str | None = Query(None, description="Kinds starting with this, e.g. `job.`."),
    subject: str | None = Query(None, description="Only events about this job, key, snapshot."),
    actor: str | None = None,
    since: Annotated[datetime | None, Query(description="ISO-8601; at or after.")] = None,
    until: Annotated[datetime | None, Query(description="ISO-8601; before.")] = None,
    cursor: int = CURSOR,
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """Events of one chain, oldest first, ``limit`` at a time."""
    principal = await authorize(request, Permission.AUDIT)
    chain = await _chain(request, principal, tenant)
    filters = AuditFilter(
        tenant_id=chain,
        after_seq=cursor,
        kinds=frozenset(kind or ()),
        kind_prefix=kind_prefix,
        subject=subject,
        actor=actor,
        since_ms=_ms(since),
        until_ms=_ms(until),
    )
    events = await plane_of(request).store.list_audit(filters, limit=limit + 1)
    return {"tenant_id": chain, **events_page(events, limit)}


@router.get("/verify")
async def verify(request: Request, tenant: str | None = TENANT) -> dict[str, Any]:
    """Verify a chain (``tenant``), or every chain the key may read: hashes, order, gaps,
    and the signed checkpoints. ``status`` is ``ok`` or ``compromised``; a compromised
    chain names the first bad sequence number and the kind (modified, missing,
    reordered, truncated)."""
    principal = await authorize(request, Permission.AUDIT)
    plane = plane_of(request)
    if tenant is None and request.headers.get("x-tenant-id") is None:
        chains = [
            name
            for name in await plane.store.audit_chains()
            if principal.all_tenants or (name != SYSTEM_CHAIN and principal.sees(name))
        ]
    else:
        chains = [await _chain(request, principal, tenant)]
    reports = [await plane.audit.verify(name) for name in chains]
    ok = all(report.ok for report in reports)
    return {
        "status": "ok" if ok else "compromised",
        "ok": ok,
        "chains": [report_view(report) for report in reports],
    }


@router.get("/export", response_class=StreamingResponse)
async def export(request: Request, tenant: str | None = TENANT) -> StreamingResponse:
    """One chain as NDJSON: a `chain` line, every `event`, then the `checkpoint` lines.
    ``cordum audit verify --file`` checks such a file offline."""
    principal = await authorize(request, Permission.AUDIT)
    chain = await _chain(request, principal, tenant)
    return StreamingResponse(
        plane_of(request).audit.export(chain),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="audit-{_file_safe(chain)}.ndjson"'},
    )
