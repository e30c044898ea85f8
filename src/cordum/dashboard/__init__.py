"""The dashboard: server-rendered pages on the gateway's own port, live over SSE.

Pages are a view of the JSON API: they call its route functions in-process (same scoping,
same checks, same audit of refusals) and render the result with Jinja2; actions are
forms that a little hand-written JavaScript sends to the JSON API itself, with the
session's CSRF token. There is no build step and no client-side framework.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from cordum.dashboard.access import install_errors
from cordum.dashboard.live import LiveFeed
from cordum.dashboard.render import HERE
from cordum.dashboard.routes_approvals import router as approvals_router
from cordum.dashboard.routes_audit import router as audit_router
from cordum.dashboard.routes_jobs import router as jobs_router
from cordum.dashboard.routes_ops import router as ops_router
from cordum.dashboard.routes_overview import router as overview_router
from cordum.dashboard.routes_policy import router as policy_router
from cordum.dashboard.routes_session import router as session_router
from cordum.wiring import ControlPlane

ROUTERS = (
    session_router,
    overview_router,
    jobs_router,
    approvals_router,
    policy_router,
    audit_router,
    ops_router,
)


def install(app: FastAPI, plane: ControlPlane) -> LiveFeed:
    """Serve the dashboard from ``app``; returns its live feed, for the app to stop."""
    feed = LiveFeed(plane.store)
    app.state.live_feed = feed
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
    for router in ROUTERS:
        app.include_router(router)
    install_errors(app)
    return feed
