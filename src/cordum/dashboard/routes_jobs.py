"""Jobs: a filterable list that updates live, and one job's whole story.

The data comes from the JSON API's own route functions, called in-process, so a page
shows exactly what ``GET /api/v1/jobs`` would, with the same tenant scoping and checks.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from cordum.api import routes_jobs
from cordum.api.errors import ApiError
from cordum.dashboard.access import viewer
from cordum.dashboard.render import page
from cordum.models.keys import Permission
from cordum.models.state import JobState

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
MAX_FILTER = 200


@router.get("/jobs")
async def jobs(
    request: Request,
    state: str = "",
    topic: str = "",
    tenant: str = "",
    cursor: str | None = None,
) -> Response:
    """The newest jobs matching the filters, a page at a time."""
    principal = await viewer(request)
    filters = {
        "state": state[:MAX_FILTER],
        "topic": topic[:MAX_FILTER],
        "tenant": tenant[:MAX_FILTER],
    }
    listing: dict[str, Any] = {"jobs": [], "next_cursor": None}
    problem = None
    try:
        listing = await routes_jobs.list_jobs(
            request,
            principal,
            state=filters["state"] or None,
            topic=filters["topic"] or None,
            tenant=filters["tenant"] or None,
            cursor=cursor,
            limit=PAGE_SIZE,
        )
    except ApiError as exc:
        if exc.status == 401:
            raise
        problem = exc.message
    return page(
        request,
        "jobs.html",
        principal,
        section="jobs",
        status_code=422 if problem else 200,
        jobs=listing["jobs"],
        next_cursor=listing["next_cursor"],
        filters=filters,
        states=[s.value for s in JobState],
        problem=problem,
        first_page=cursor is None,
    )


@router.get("/jobs/{job_id}")
async def job(request: Request, job_id: str) -> Response:
    """Input, constraints, result or error, every decision and the state timeline."""
    principal = await viewer(request)
    view = await routes_jobs.get_job(request, principal, job_id, wait=0)
    decisions, events = await asyncio.gather(
        routes_jobs.job_decisions(request, principal, job_id),
        routes_jobs.job_events(request, principal, job_id),
    )
    return page(
        request,
        "job.html",
        principal,
        section="jobs",
        job=view,
        decisions=decisions["decisions"],
        events=events["events"],
        terminal=JobState(view["state"]).terminal,
        may_cancel=principal.may(Permission.SUBMIT),
    )
