"""Approvals: the queue of jobs waiting for a human, and the human's answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from cordum.api.auth import authorize, require_visible, sees_job, visible_tenants
from cordum.api.body import read_object
from cordum.api.deps import plane_of
from cordum.api.errors import ApiError, not_found
from cordum.api.views import approval_view, job_view
from cordum.models.approval import ApprovalStatus
from cordum.models.keys import Permission
from cordum.ports import ApprovalFilter, JobNotFoundError
from cordum.services.approvals import (
    ApprovalError,
    ApprovalNotFoundError,
    SelfApprovalError,
)
from cordum.services.kernel import KernelUnavailableError

router = APIRouter(prefix="/api/v1", tags=["approvals"])

MAX_TEXT = 4096


@router.get("/approvals")
async def list_approvals(
    request: Request,
    status: Annotated[
        list[ApprovalStatus] | None,
        Query(description="Only these statuses (repeatable); default: pending."),
    ] = None,
    include_resolved: bool = Query(False, description="Every status, not only pending."),
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    """Approvals, newest request first: pending ones unless asked otherwise."""
    principal = await authorize(request, Permission.READ)
    statuses = frozenset(status or ())
    if not statuses and not include_resolved:
        statuses = frozenset({ApprovalStatus.PENDING})
    filters = ApprovalFilter(
        tenant_ids=await visible_tenants(request, principal), statuses=statuses
    )
    plane = plane_of(request)
    try:
        page = await plane.store.list_approvals(filters, cursor=cursor, limit=limit)
    except ValueError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from None
    approvals = page.approvals
    if principal.own_jobs_only:
        approvals = [a for a in approvals if a.requested_key == principal.key_id]
    return {"approvals": [approval_view(a) for a in approvals], "next_cursor": page.next_cursor}


@router.get("/approvals/{job_id}")
async def get_approval(request: Request, job_id: str) -> dict[str, Any]:
    """One approval with the job it is about (the exact input the approver is asked about)."""
    principal = await authorize(request, Permission.READ)
    plane = plane_of(request)
    job = require_visible(principal, await plane.store.get_job(job_id), job_id)
    approval = await plane.store.get_approval(job_id)
    if approval is None:
        raise not_found("approval", job_id)
    return {"approval": approval_view(approval), "job": job_view(job)}


async def _resolve(request: Request, job_id: str, approve: bool) -> dict[str, Any]:
    principal = await authorize(request, Permission.APPROVE)
    plane = plane_of(request)
    body = await read_object(request, plane.settings.max_body_bytes, optional=True)
    job = await plane.store.get_job(job_id)
    if job is None or not sees_job(principal, job):
        raise not_found("approval", job_id)
    try:
        outcome = await plane.approvals.resolve(
            job_id,
            approve=approve,
            principal=principal,
            reason=_text(body, "reason"),
            note=_text(body, "note"),
            reviewed_hash=_text(body, "job_hash") or None,
        )
    except JobNotFoundError:
        raise not_found("approval", job_id) from None
    except ApprovalNotFoundError as exc:
        raise ApiError(404, exc.code, str(exc)) from None
    except SelfApprovalError as exc:
        raise ApiError(403, exc.code, str(exc)) from None
    except ApprovalError as exc:
        details = {} if exc.approval is None else {"approval": approval_view(exc.approval)}
        raise ApiError(409, exc.code, str(exc), **details) from None
    except KernelUnavailableError as exc:
        raise ApiError(
            503,
            "kernel_unavailable",
            f"the policy changed since the request and could not be re-checked: {exc};"
            " nothing was changed, try again",
        ) from None
    status = outcome.approval.status.value
    return {
        "status": status if outcome.changed else f"already_{status}",
        "approval": approval_view(outcome.approval),
        "job": job_view(outcome.job),
    }


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(422, "invalid_body", f"`{name}` must be a string")
    if len(value) > MAX_TEXT:
        raise ApiError(422, "invalid_body", f"`{name}` is longer than {MAX_TEXT} characters")
    return value


@router.post("/approvals/{job_id}/approve")
async def approve(request: Request, job_id: str) -> dict[str, Any]:
    """Approve: the job goes back to the scheduler (gate B still runs). Body:
    ``{reason, note, job_hash}``; ``job_hash`` = the request you reviewed (optional)."""
    return await _resolve(request, job_id, approve=True)


@router.post("/approvals/{job_id}/reject")
async def reject(request: Request, job_id: str) -> dict[str, Any]:
    """Reject: the job is DENIED. Body: ``{reason, note}``."""
    return await _resolve(request, job_id, approve=False)
