"""Rendering pages: the Jinja2 environment, its filters, and the context every page gets."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any, Final

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from cordum.api.session import COOKIE, csrf_token
from cordum.models.keys import Permission, Principal

HERE: Final = Path(__file__).parent
TEMPLATES: Final = Jinja2Templates(directory=HERE / "templates")

NAV: Final = (
    ("overview", "/", "Overview"),
    ("jobs", "/jobs", "Jobs"),
    ("approvals", "/approvals", "Approvals"),
    ("policy", "/policy", "Policy"),
    ("audit", "/audit", "Audit"),
    ("workers", "/workers", "Workers"),
    ("dlq", "/dlq", "DLQ"),
)


def when(epoch: float | int | None, *, millis: bool = False) -> str:
    """An instant as UTC ``YYYY-MM-DD HH:MM:SS``: one reading for every viewer's clock."""
    if epoch is None:
        return "—"
    seconds = epoch / 1000 if millis else epoch
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(epoch: float | None) -> str:
    """How long ago, roughly (``12 s``, ``4 min``, ``3 h``, ``2 d``)."""
    if epoch is None:
        return "—"
    seconds = max(0.0, time.time() - epoch)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def iso(value: str | None) -> str:
    """An API timestamp (ISO-8601, UTC) as ``YYYY-MM-DD HH:MM:SS``."""
    if not value:
        return "—"
    return value[:19].replace("T", " ")


def pretty(value: Any) -> str:
    """JSON for people: indented, keys in their order."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


TEMPLATES.env.filters["when"] = when
TEMPLATES.env.filters["when_ms"] = lambda value: when(value, millis=True)
TEMPLATES.env.filters["ago"] = ago
TEMPLATES.env.filters["pretty"] = pretty
TEMPLATES.env.filters["iso"] = iso


def signed_out_page(
    request: Request, template: str, *, section: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render ``template`` for nobody in particular (sign-in, errors): no navigation."""
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {"principal": None, "nav": (), "section": section, **context},
        status_code=status_code,
    )


def page(
    request: Request,
    template: str,
    principal: Principal,
    *,
    section: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render ``template`` for ``principal``; adds what the layout needs and how long the
    server took (``Server-Timing``), the figure the dashboard's speed is judged by."""
    key = request.cookies.get(COOKIE)
    response = TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "principal": principal,
            "can": {
                permission.name.lower(): principal.may(permission) for permission in Permission
            },
            "csrf": csrf_token(key) if key else "",
            "auth_on": request.app.state.plane.settings.auth,
            "nav": NAV,
            "section": section,
            **context,
        },
        status_code=status_code,
    )
    started: float | None = getattr(request.state, "started", None)
    if started is not None:
        took = (time.perf_counter() - started) * 1000
        response.headers["Server-Timing"] = f"app;dur={took:.1f}"
    response.headers["Cache-Control"] = "no-store"
    return response
