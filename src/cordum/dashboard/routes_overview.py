"""The overview: what agents are doing right now, and what was blocked, at a glance."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from cordum.api.auth import visible_tenants
from cordum.api.deps import plane_of
from cordum.api.routes_workers import list_workers
from cordum.dashboard.access import viewer
from cordum.dashboard.chart import decision_chart, window_start
from cordum.dashboard.render import page
from cordum.models.approval import ApprovalStatus
from cordum.models.state import JobState
from cordum.ports import ApprovalFilter

router = APIRouter(include_in_schema=False)

COUNT_LIMIT = 500
"""Pending approvals and DLQ entries are counted up to here (shown as ``500+``)."""


@router.get("/")
async def overview(request: Request) -> Response:
    """Jobs per state, the last hour's decisions, approvals waiting, DLQ, workers."""
    principal = await viewer(request)
    plane = plane_of(request)
    store = plane.store
    tenants = await visible_tenants(request, principal)
    whole = principal.all_tenants and not principal.own_jobs_only
    states, counts, approvals, dlq, workers = await asyncio.gather(
        store.count_jobs_by_state() if whole else asyncio.sleep(0, None),
        store.decision_counts(window_start(), tenant_ids=tenants),
        store.list_approvals(
            ApprovalFilter(tenant_ids=tenants, statuses=frozenset({ApprovalStatus.PENDING})),
            limit=COUNT_LIMIT,
        ),
        store.list_dlq(limit=COUNT_LIMIT, tenant_ids=tenants),
        list_workers(request, principal),
    )
    online = [w for w in workers["workers"] if w["live"]]
    return page(
        request,
        "overview.html",
        principal,
        section="overview",
        states=None if states is None else [(s.value, states.get(s, 0)) for s in JobState],
        chart=decision_chart(counts),
        pending=_count(len(approvals.approvals), approvals.next_cursor),
        dlq=_count(len(dlq.entries), dlq.next_cursor),
        online=len(online),
        load=sum(w["active_jobs"] for w in online),
        capacity=sum(w["capacity"] for w in online),
    )


def _count(size: int, more: str | None) -> str:
    return f"{size}+" if more else str(size)
