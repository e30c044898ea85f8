"""The policy's lifecycle over HTTP: bundles, publish, snapshots, rollback, audit.

The policy is the same for every tenant, so whatever changes it (``policy_admin``) or
reads its audit trail (``audit``, events of the system chain) takes a key of every tenant
(``*``); writes are made in the caller's name. Listings need ``read``; the text of bundles
and snapshots, which may name any tenant in its rules, needs ``read`` with a key of every
tenant or an admin or operator key.
A policy that does not load is a 422 whose ``issues`` are the loader's own, each with
file (the bundle id), line, column, rule and field.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from cordum.api.auth import CanRead, record_failure, require
from cordum.api.body import read_bytes, read_object
from cordum.api.deps import plane_of
from cordum.api.errors import ApiError, invalid, not_found
from cordum.api.routes_audit import CURSOR, events_page
from cordum.api.views import iso
from cordum.models.keys import Permission, Principal, Role
from cordum.models.policy_records import PolicyBundleRecord, PolicySnapshotRecord
from cordum.policy import PolicyLoadError
from cordum.policy.source import decode_policy_bytes
from cordum.services.policy_admin import (
    Activation,
    InvalidBundleIdError,
    LastBundleError,
    UnknownBundleError,
    UnknownSnapshotError,
    text_digest,
)

router = APIRouter(prefix="/api/v1/policy", tags=["policy"])

CanAdminPolicy = Annotated[Principal, Depends(require(Permission.POLICY_ADMIN, every_tenant=True))]
CanAuditSystem = Annotated[Principal, Depends(require(Permission.AUDIT, every_tenant=True))]
TEXT_READERS = frozenset({Role.ADMIN, Role.OPERATOR})
"""Roles that may read the policy's text with a key of some tenants only."""


def reads_policy_text(principal: Principal) -> bool:
    """Whether ``principal`` may read the policy's text: a key of every tenant, or an admin
    or operator key. The rules may name any tenant, which a viewer or agent of one tenant
    has no business learning."""
    return principal.all_tenants or principal.role in TEXT_READERS


async def may_read_text(request: Request, principal: CanRead) -> Principal:
    """``read``, and :func:`reads_policy_text`; otherwise audited and refused (403)."""
    if reads_policy_text(principal):
        return principal
    await record_failure(request, principal, "forbidden", "read policy text")
    raise ApiError(
        403,
        "forbidden",
        f"role {principal.role.value} of some tenants may not read the policy's text (its"
        " rules may name any tenant); use an admin or operator key, or a key of every tenant",
        role=principal.role.value,
        permission=Permission.READ.value,
    )


CanReadText = Annotated[Principal, Depends(may_read_text)]

MAX_MESSAGE = 2000
YAML_TYPES = frozenset(
    {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"}
)
BUNDLE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "text/plain": {"schema": {"type": "string"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"text": {"type": "string"}},
                    "required": ["text"],
                    "additionalProperties": False,
                }
            },
        },
    }
}


class BundleText(BaseModel):
    """``PUT /policy/bundles/{id}`` as JSON."""

    model_config = ConfigDict(extra="forbid")

    text: StrictStr


class PublishBody(BaseModel):
    """``POST /policy/publish``."""

    model_config = ConfigDict(extra="forbid")

    message: StrictStr = Field("", max_length=MAX_MESSAGE)


class RollbackBody(BaseModel):
    """``POST /policy/rollback``: a snapshot id, or a version number."""

    model_config = ConfigDict(extra="forbid")

    snapshot_id: StrictStr | StrictInt
    message: StrictStr = Field("", max_length=MAX_MESSAGE)


# --- views ----------------------------------------------------------------------------------


def bundle_view(bundle: PolicyBundleRecord, *, text: bool = True) -> dict[str, Any]:
    """A bundle: its id, a digest and size of its text, who changed it last (and the text)."""
    view: dict[str, Any] = {
        "bundle_id": bundle.bundle_id,
        "sha256": text_digest(bundle.text),
        "bytes": len(bundle.text.encode("utf-8")),
        "updated_at": iso(bundle.updated_at),
        "updated_by": bundle.updated_by,
    }
    if text:
        view["text"] = bundle.text
    return view


def snapshot_view(
    snapshot: PolicySnapshotRecord, active_version: int | None, *, texts: bool = False
) -> dict[str, Any]:
    """A snapshot: version, id, who published it and why, whether it is active, its bundles.

    ``bundles`` is the list of bundle ids, or with ``texts`` the map id -> YAML text.
    """
    return {
        "version": snapshot.version,
        "snapshot_id": snapshot.snapshot_id,
        "policy_version": snapshot.policy_version,
        "author": snapshot.author,
        "message": snapshot.message,
        "created_at": iso(snapshot.created_at),
        "active": snapshot.version == active_version,
        "bundles": dict(snapshot.bundles) if texts else sorted(snapshot.bundles),
    }


def activation_view(activation: Activation, status: str) -> dict[str, Any]:
    """The answer to a publish or rollback: ``status`` (or ``unchanged``) and the snapshot."""
    snapshot = activation.snapshot
    return {
        "status": status if activation.changed else "unchanged",
        "snapshot": snapshot_view(snapshot, snapshot.version),
    }


def load_failed(exc: PolicyLoadError, what: str) -> ApiError:
    """422 with every issue the loader found (file = bundle id, line, column, rule, field)."""
    count = len(exc.issues)
    first = exc.issues[0].format().splitlines()[0] if exc.issues else ""
    return ApiError(
        422,
        "invalid_policy",
        f"{what}: {count} problem{'s' if count != 1 else ''}; first: {first}",
        issues=[issue.to_dict() for issue in exc.issues],
    )


def _snapshot_missing(exc: UnknownSnapshotError) -> ApiError:
    return ApiError(404, "snapshot_not_found", str(exc), snapshot=exc.ref)


# --- bundles --------------------------------------------------------------------------------


@router.get("/bundles")
async def list_bundles(request: Request, _: CanRead) -> dict[str, Any]:
    """The draft bundles, by id (without their text; GET one bundle for it)."""
    bundles = await plane_of(request).policy_admin.list_bundles()
    return {"bundles": [bundle_view(bundle, text=False) for bundle in bundles]}


@router.get("/bundles/{bundle_id:path}")
async def get_bundle(request: Request, bundle_id: str, _: CanReadText) -> dict[str, Any]:
    """One draft bundle with its YAML text."""
    try:
        bundle = await plane_of(request).policy_admin.get_bundle(bundle_id)
    except UnknownBundleError:
        raise not_found("bundle", bundle_id) from None
    return bundle_view(bundle)


@router.put("/bundles/{bundle_id:path}", openapi_extra=BUNDLE_BODY)
async def put_bundle(request: Request, bundle_id: str, principal: CanAdminPolicy) -> JSONResponse:
    """Create (201) or replace (200) a draft bundle; nothing decides with it until a publish.

    The body is the YAML itself (``application/yaml`` or ``text/plain``), or JSON
    ``{"text": "..."}``. The bundle must load on its own and together with the other
    bundles, with the same validation as policy files; otherwise 422 lists every issue.
    """
    plane = plane_of(request)
    text = await _bundle_text(request, bundle_id, plane.settings.max_body_bytes)
    try:
        edit = await plane.policy_admin.put_bundle(bundle_id, text, principal.name)
    except InvalidBundleIdError as exc:
        raise ApiError(422, "invalid_bundle_id", str(exc)) from None
    except PolicyLoadError as exc:
        raise load_failed(exc, f"bundle {bundle_id!r} not saved") from None
    status = "created" if edit.created else "updated" if edit.changed else "unchanged"
    return JSONResponse(
        {"status": status, "bundle": bundle_view(edit.bundle, text=False)},
        status_code=201 if edit.created else 200,
    )


async def _bundle_text(request: Request, bundle_id: str, limit: int) -> str:
    """The bundle's YAML from a raw YAML body or a JSON ``{"text"}`` body."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if "json" in media_type:
        data = await read_object(request, limit)
        try:
            return BundleText.model_validate(data).text
        except ValidationError as exc:
            raise invalid(exc, "bundle") from None
    if media_type and media_type not in YAML_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the bundle as YAML (Content-Type: application/yaml or text/plain) or as"
            f' JSON {{"text": ...}} (application/json), not {media_type}',
        )
    raw = await read_bytes(request, limit)
    try:
        # The loader's own decoding: encodings, byte-order marks and binary data are
        # refused with the same issue a file would get.
        return decode_policy_bytes(raw, bundle_id)
    except PolicyLoadError as exc:
        raise load_failed(exc, f"bundle {bundle_id!r} not saved") from None


@router.delete("/bundles/{bundle_id:path}", status_code=204)
async def delete_bundle(request: Request, bundle_id: str, principal: CanAdminPolicy) -> Response:
    """Remove a draft bundle (the others must still load without it; the last one stays)."""
    try:
        await plane_of(request).policy_admin.delete_bundle(bundle_id, principal.name)
    except UnknownBundleError:
        raise not_found("bundle", bundle_id) from None
    except LastBundleError as exc:
        raise ApiError(409, "last_bundle", str(exc)) from None
    except PolicyLoadError as exc:
        raise load_failed(
            exc, f"bundle {bundle_id!r} not deleted: the rest would not load"
        ) from None
    return Response(status_code=204)


# --- snapshots ------------------------------------------------------------------------------


@router.post("/publish")
async def publish(request: Request, principal: CanAdminPolicy) -> JSONResponse:
    """Compile the draft bundles into a new active snapshot (201) and decide with it.

    When the drafts compile to the active snapshot (no change in meaning, perhaps only
    comments), no version is made: 200 with ``status: unchanged``.
    """
    plane = plane_of(request)
    data = await read_object(request, plane.settings.max_body_bytes, optional=True)
    try:
        body = PublishBody.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, "publish request") from None
    try:
        activation = await plane.policy_admin.publish(principal.name, body.message)
    except PolicyLoadError as exc:
        raise load_failed(exc, "not published: the bundles do not load") from None
    return JSONResponse(
        activation_view(activation, "published"), status_code=201 if activation.changed else 200
    )


@router.get("/snapshots")
async def list_snapshots(request: Request, _: CanRead) -> dict[str, Any]:
    """Every published snapshot, newest first, with the active one marked."""
    admin = plane_of(request).policy_admin
    active = await admin.active()
    active_version = None if active is None else active.version
    return {
        "active_version": active_version,
        "snapshots": [snapshot_view(s, active_version) for s in await admin.snapshots()],
    }


@router.get("/snapshots/{ref:path}")
async def get_snapshot(request: Request, ref: str, _: CanReadText) -> dict[str, Any]:
    """One snapshot, by version or snapshot id, with the text of each of its bundles."""
    admin = plane_of(request).policy_admin
    try:
        snapshot = await admin.find_snapshot(ref)
    except UnknownSnapshotError as exc:
        raise _snapshot_missing(exc) from None
    active = await admin.active()
    return snapshot_view(snapshot, None if active is None else active.version, texts=True)


@router.post("/rollback")
async def rollback(request: Request, principal: CanAdminPolicy) -> dict[str, Any]:
    """Make an earlier snapshot active again; the draft bundles are reset to its bundles.

    ``snapshot_id`` is a snapshot id or a version number. Rolling back to the active
    snapshot changes nothing: 200 with ``status: unchanged``.
    """
    plane = plane_of(request)
    data = await read_object(request, plane.settings.max_body_bytes)
    try:
        body = RollbackBody.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, "rollback request") from None
    try:
        activation = await plane.policy_admin.rollback(
            body.snapshot_id, principal.name, body.message
        )
    except UnknownSnapshotError as exc:
        raise _snapshot_missing(exc) from None
    except PolicyLoadError as exc:
        raise load_failed(exc, "not rolled back: that snapshot no longer loads") from None
    return activation_view(activation, "rolled_back")


@router.get("/audit")
async def policy_audit(
    request: Request,
    _: CanAuditSystem,
    cursor: int = CURSOR,
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """Policy events (bundle edits, publishes, rollbacks), oldest first, ``limit`` at a time."""
    events = await plane_of(request).policy_admin.audit(after_seq=cursor, limit=limit + 1)
    return events_page(events, limit)
