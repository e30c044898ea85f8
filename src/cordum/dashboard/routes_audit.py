"""Audit: one chain's events, filtered and paged, and a button that verifies the chain.

Events come from ``GET /api/v1/audit/events``'s own route function, called in-process,
so the page shows what the API would, with the same chain checks; verifying is a form
sent to ``GET /api/v1/audit/verify`` itself. Events are listed in chain order (oldest
first, as the API gives them). Without filters the page opens on the chain's latest
events, which it follows live: in an unfiltered chain sequence numbers have no gaps, so
the last page starts at the head's number less a page. A filtered listing starts at the
oldest match, as the API's cursor only moves forward.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from cordum.api import routes_audit
from cordum.api.deps import plane_of
from cordum.api.errors import ApiError
from cordum.dashboard.access import viewer
from cordum.dashboard.render import page
from cordum.models.audit import SYSTEM_CHAIN
from cordum.models.keys import ALL_TENANTS, Permission, Principal
from cordum.models.pipeline import DEFAULT_TENANT

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 100
MAX_FILTER = 200
MAX_CURSOR = 2**63 - 1
"""The API's bound on a cursor (SQLite integers end there); checked here because a route
function called in-process skips FastAPI's validation of its query."""
COMPACT = 120
"""Longer event data is cut to this many characters, with the whole of it one click away."""
KNOWN_KINDS = (
    "job.transition",
    "decision",
    "approval.",
    "policy.",
    "key.",
    "auth.failure",
)
"""Offered as the kind filter's suggestions; a trailing dot matches every kind under it."""
FILTERS = ("kind", "subject", "actor", "since", "until")


def readable_chains(principal: Principal, chains: list[str]) -> list[str]:
    """The chains the viewer may pick: those with events that the key may read (as
    ``GET /api/v1/audit/verify`` decides), and the key's own tenants even when empty."""
    names = {
        name
        for name in chains
        if principal.all_tenants or (name != SYSTEM_CHAIN and principal.sees(name))
    }
    names.update(t for t in principal.tenants if t != ALL_TENANTS)
    return sorted(names)


def default_chain(principal: Principal, chains: list[str]) -> str:
    """The default tenant's chain when the key covers it, else the key's first chain."""
    if principal.sees(DEFAULT_TENANT) or not chains:
        return DEFAULT_TENANT
    return chains[0]


def _instant(value: str, name: str) -> dt.datetime | None:
    """A filter's time (the form's ``datetime-local`` value, read as UTC)."""
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(
            422, "invalid_filter", f"{name} must be a date and time, e.g. 2024-05-01T12:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _cursor(value: str) -> int | None:
    """The ``cursor`` query parameter: None for the default view, else the seq to start after."""
    if not value:
        return None
    if not value.isdigit() or int(value) > MAX_CURSOR:
        raise ApiError(422, "invalid_cursor", "cursor must be a sequence number")
    return int(value)


def compact(data: dict[str, Any]) -> str:
    """Event data on one line."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)


def is_job_event(kind: str) -> bool:
    """Whether an event of ``kind`` is about a job (its subject is a job id)."""
    return kind in ("job.transition", "decision") or kind.startswith("approval.")


@router.get("/audit")
async def audit(
    request: Request,
    tenant: str = "",
    kind: str = "",
    subject: str = "",
    actor: str = "",
    since: str = "",
    until: str = "",
    cursor: str = "",
) -> Response:
    """A page of one chain's events matching the filters (see the module doc)."""
    principal = await viewer(request, Permission.AUDIT)
    store = plane_of(request).store
    chains = readable_chains(principal, await store.audit_chains())
    chain = tenant[:MAX_FILTER] or default_chain(principal, chains)
    if chain not in chains:
        chains.append(chain)  # still listed, so the chooser shows what was asked for
    filters = {
        name: value[:MAX_FILTER]
        for name, value in zip(FILTERS, (kind, subject, actor, since, until), strict=True)
    }
    filtered = any(filters.values())
    listing: dict[str, Any] = {"events": [], "next_cursor": None}
    problem = None
    status = 200
    start = 0
    try:
        start = _cursor(cursor) or 0
        if not cursor and not filtered:
            head, _ = await store.audit_head(chain) if principal.sees(chain) else (0, "")
            start = max(0, head - PAGE_SIZE)
        prefix = filters["kind"] if filters["kind"].endswith(".") else None
        listing = await routes_audit.list_events(
            request,
            tenant=chain,
            kind=[filters["kind"]] if filters["kind"] and prefix is None else None,
            kind_prefix=prefix,
            subject=filters["subject"] or None,
            actor=filters["actor"] or None,
            since=_instant(filters["since"], "since"),
            until=_instant(filters["until"], "until"),
            cursor=start,
            limit=PAGE_SIZE,
        )
    except ApiError as exc:
        if exc.status == 401:
            raise
        problem, status = exc.message, exc.status
    events = [
        {**event, "compact": compact(event["data"]), "job": is_job_event(event["kind"])}
        for event in listing["events"]
    ]
    here = {"tenant": chain, **{name: value for name, value in filters.items() if value}}
    return page(
        request,
        "audit.html",
        principal,
        section="audit",
        status_code=status,
        chain=chain,
        chains=chains,
        filters=filters,
        filtered=filtered,
        known_kinds=KNOWN_KINDS,
        events=events,
        problem=problem,
        compact_size=COMPACT,
        following=not cursor,
        older=_link(here, max(0, start - PAGE_SIZE)) if not filtered and start > 0 else None,
        newer=_link(here, listing["next_cursor"]) if listing["next_cursor"] else None,
        first=_link(here, None) if cursor else None,
    )


def _link(query: dict[str, str], cursor: int | str | None) -> str:
    """This page's address with ``cursor`` (None: the default view)."""
    if cursor is None:
        return f"/audit?{urlencode(query)}"
    return f"/audit?{urlencode({**query, 'cursor': cursor})}"
