"""API keys: create (the secret is shown once), list (never the secret), revoke."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cordum.api.auth import CanAdminKeys, record_failure
from cordum.api.body import read_object
from cordum.api.deps import plane_of
from cordum.api.errors import ApiError, invalid, not_found
from cordum.api.views import key_view
from cordum.models.keys import ALL_TENANTS, Principal, Role
from cordum.services.keys import KeyCreationError, LastAdminKeyError
from cordum.services.workers import UnknownWorkerError
from cordum.wiring import ControlPlane

router = APIRouter(prefix="/api/v1", tags=["keys"])


class KeyRequest(BaseModel):
    """Body of ``POST /api/v1/keys``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="Who or what will use it.")
    role: Role
    tenants: list[str] = Field(
        min_length=1, max_length=256, description='Tenants it may act in; `["*"]` for all.'
    )


def covers(principal: Principal, tenants: tuple[str, ...] | list[str]) -> bool:
    """Whether every tenant of a key lies within the caller's: a tenant's admin manages
    that tenant's keys only, and only an admin of every tenant handles ``*`` keys."""
    return principal.all_tenants or (
        ALL_TENANTS not in tenants and set(tenants) <= principal.tenants
    )


@router.post("/keys", status_code=201)
async def create_key(request: Request, principal: CanAdminKeys) -> JSONResponse:
    """Create a key. The answer's ``key`` is the only time the secret is ever shown."""
    plane = plane_of(request)
    data = await read_object(request, plane.settings.max_body_bytes)
    try:
        body = KeyRequest.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, "key") from None
    tenants = [tenant.strip() for tenant in body.tenants]
    if not covers(principal, tenants):
        await record_failure(request, principal, "tenant_forbidden", ",".join(tenants))
        raise ApiError(
            403,
            "tenant_forbidden",
            "a key may only be given tenants your own key covers"
            + ("" if principal.all_tenants else f" ({', '.join(sorted(principal.tenants))})"),
        )
    try:
        secret, record = await plane.keys.create(
            name=body.name,
            role=body.role,
            tenants=tenants,
            created_by=principal.key_id or principal.name,
        )
    except KeyCreationError as exc:
        raise ApiError(422, "invalid_key", str(exc)) from None
    return JSONResponse({"key": secret, **key_view(record)}, status_code=201)


@router.get("/keys")
async def list_keys(principal: CanAdminKeys, request: Request) -> dict[str, Any]:
    """Every key within the caller's tenants, oldest first (revoked ones too, marked)."""
    records = await plane_of(request).store.list_api_keys()
    return {"keys": [key_view(r) for r in records if covers(principal, r.tenants)]}


@router.delete("/keys/{key_id}")
async def revoke_key(request: Request, principal: CanAdminKeys, key_id: str) -> dict[str, Any]:
    """Revoke a key: it stops working at once, and its workers are removed (no job is sent
    to them any more). Revoking twice answers the first revocation."""
    plane = plane_of(request)
    record = await plane.store.get_api_key(key_id)
    if record is not None and not covers(principal, record.tenants):
        await record_failure(request, principal, "not_visible", f"key {key_id}")
        record = None
    if record is None:
        raise not_found("key", key_id)
    try:
        revoked = await plane.keys.revoke(key_id, by=principal.key_id or principal.name)
    except LastAdminKeyError as exc:
        raise ApiError(409, "last_admin_key", str(exc)) from None
    if revoked is None:  # deleted between the two reads: nothing left to revoke
        raise not_found("key", key_id)
    await _remove_workers_of(plane, key_id)
    return key_view(revoked)


async def _remove_workers_of(plane: ControlPlane, key_id: str) -> None:
    """Remove the workers a key registered: the scheduler stops choosing them, jobs sent
    to them but never taken go back to PENDING, and their WebSockets close. Otherwise
    they would be sent jobs they can no longer take until they counted as lost."""
    for worker in await plane.store.list_workers():
        if worker.owner_key != key_id:
            continue
        with contextlib.suppress(UnknownWorkerError):  # it left meanwhile
            await plane.workers.deregister(worker.worker_id)
        await plane.connections.disconnect(worker.worker_id)
