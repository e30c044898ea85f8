"""Operations: the workers (who is online, how loaded) and the dead-letter queue.

Both read the JSON API's own route functions in-process; retrying and deleting a DLQ
entry are forms sent to ``POST /api/v1/dlq/{id}/retry`` and ``DELETE /api/v1/dlq/{id}``.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from cordum.api import routes_ops, routes_workers
from cordum.api.deps import plane_of
from cordum.api.errors import ApiError
from cordum.dashboard.access import viewer
from cordum.dashboard.render import page
from cordum.models.keys import Permission

router = APIRouter(include_in_schema=False)

DLQ_PAGE_SIZE = 50
STATE_ORDER = {"live": 0, "draining": 1, "lost": 2}


def _epoch(value: str) -> float:
    """An API timestamp (ISO-8601, UTC, ``Z``) as Unix time."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def worker_state(view: dict[str, Any], now: float, lost_after_s: float) -> str:
    """``live``, ``draining`` or ``lost``.

    The API's ``live`` is "heartbeat recent and not draining", so a worker that is not
    live yet beats recently is draining; one whose heartbeat is too old is lost.
    """
    if view["live"]:
        return "live"
    if now - _epoch(view["last_heartbeat"]) <= lost_after_s:
        return "draining"
    return "lost"


@router.get("/workers")
async def workers(request: Request) -> Response:
    """Every registered worker: live, draining or lost, its pool, topics and load."""
    principal = await viewer(request)
    listing = await routes_workers.list_workers(request, principal)
    now = time.time()
    lost_after_s = plane_of(request).settings.worker_lost_after_s
    rows = []
    for view in listing["workers"]:
        state = worker_state(view, now, lost_after_s)
        rows.append({**view, "state": state, "beat": _epoch(view["last_heartbeat"])})
    rows.sort(key=lambda row: (STATE_ORDER[row["state"]], row["pool"], row["worker_id"]))
    return page(
        request,
        "workers.html",
        principal,
        section="workers",
        workers=rows,
        online=sum(row["state"] == "live" for row in rows),
        lost_after_s=lost_after_s,
    )


@router.get("/dlq")
async def dlq(request: Request, cursor: str | None = None) -> Response:
    """Dead-lettered jobs, newest first, a page at a time, with retry and delete."""
    principal = await viewer(request)
    listing: dict[str, Any] = {"entries": [], "next_cursor": None}
    problem = None
    status = 200
    try:
        listing = await routes_ops.list_dlq(request, principal, cursor=cursor, limit=DLQ_PAGE_SIZE)
    except ApiError as exc:
        if exc.status == 401:
            raise
        problem, status = exc.message, exc.status
    return page(
        request,
        "dlq.html",
        principal,
        section="dlq",
        status_code=status,
        entries=listing["entries"],
        next_cursor=listing["next_cursor"],
        problem=problem,
        first_page=cursor is None,
        may_operate=principal.may(Permission.OPERATE),
    )
