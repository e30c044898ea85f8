"""Approvals: the queue of jobs waiting for a human, and what was decided lately.

The queue comes from ``GET /api/v1/approvals`` and each job's input from
``GET /api/v1/jobs/{id}``, both called in-process, so a page shows exactly what the API
would to the same key. Approving and rejecting are forms sent to the API itself, with the
``job_hash`` of the request on screen: the server refuses it if the job is no longer the
one the approver reviewed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from cordum.api import routes_approvals, routes_jobs
from cordum.api.errors import ApiError
from cordum.dashboard.access import viewer
from cordum.dashboard.render import page
from cordum.models.approval import ApprovalStatus
from cordum.models.keys import Permission, Principal

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
RESOLVED_SHOWN = 20
RESOLVED = [status for status in ApprovalStatus if status.resolved]


@router.get("/approvals")
async def approvals(request: Request, cursor: str | None = None) -> Response:
    """Pending approvals, newest first, each with its job's input; the latest resolved ones."""
    principal = await viewer(request)
    problem = None
    pending: dict[str, Any] = {"approvals": [], "next_cursor": None}
    try:
        pending = await routes_approvals.list_approvals(
            request, status=None, include_resolved=False, cursor=cursor, limit=PAGE_SIZE
        )
    except ApiError as exc:
        if exc.status != 422:  # 422: a cursor typed by hand; the rest is the error page's
            raise
        problem = exc.message
    job_ids = [approval["job_id"] for approval in pending["approvals"]]
    jobs, resolved = await asyncio.gather(
        _jobs(request, principal, job_ids), _resolved(request, first_page=cursor is None)
    )
    items = [
        {
            **approval,
            "job": jobs.get(approval["job_id"]),
            "mine": _requested_by(principal, approval),
        }
        for approval in pending["approvals"]
    ]
    return page(
        request,
        "approvals.html",
        principal,
        section="approvals",
        status_code=422 if problem else 200,
        items=items,
        resolved=resolved,
        next_cursor=pending["next_cursor"],
        first_page=cursor is None,
        may_approve=principal.may(Permission.APPROVE),
        problem=problem,
    )


async def _jobs(
    request: Request, principal: Principal, job_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """The jobs of one page of approvals, read concurrently (at most :data:`PAGE_SIZE`).

    A job that cannot be read (deleted meanwhile) is left out: its approval is still
    shown, without the input, rather than failing the whole queue.
    """
    views = await asyncio.gather(
        *(routes_jobs.get_job(request, principal, job_id, wait=0) for job_id in job_ids),
        return_exceptions=True,
    )
    found: dict[str, dict[str, Any]] = {}
    for job_id, view in zip(job_ids, views, strict=True):
        if isinstance(view, ApiError):
            continue
        if isinstance(view, BaseException):
            raise view
        found[job_id] = view
    return found


async def _resolved(request: Request, *, first_page: bool) -> list[dict[str, Any]]:
    """The latest resolved approvals, under the first page of the queue only."""
    if not first_page:
        return []
    listing = await routes_approvals.list_approvals(
        request, status=RESOLVED, include_resolved=False, cursor=None, limit=RESOLVED_SHOWN
    )
    approvals: list[dict[str, Any]] = listing["approvals"]
    return approvals


def _requested_by(principal: Principal, approval: dict[str, Any]) -> bool:
    """Whether ``principal`` asked for this approval: the server refuses them as its
    approver (same key, or same name), so the page does not offer it."""
    if principal.key_id is not None and principal.key_id == approval["requested_key"]:
        return True
    return approval["requested_by"] is not None and approval["requested_by"] == principal.name
