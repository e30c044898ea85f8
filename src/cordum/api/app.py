"""The FastAPI application: one router per resource, one error shape, one control plane."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from cordum import __version__, dashboard
from cordum.api import errors
from cordum.api.auth import document_auth
from cordum.api.routes_approvals import router as approvals_router
from cordum.api.routes_audit import router as audit_router
from cordum.api.routes_jobs import JOB_SCHEMAS
from cordum.api.routes_jobs import router as jobs_router
from cordum.api.routes_keys import router as keys_router
from cordum.api.routes_ops import health
from cordum.api.routes_ops import router as ops_router
from cordum.api.routes_policy import router as policy_router
from cordum.api.routes_workers import router as workers_router
from cordum.wiring import ControlPlane

Hook = Callable[[ControlPlane], Awaitable[None]]


def create_app(plane: ControlPlane, *, on_start: Hook | None = None) -> FastAPI:
    """An app serving ``plane``; the app's lifespan starts and stops it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await plane.start()
        if on_start is not None:
            await on_start(plane)
        try:
            yield
        finally:
            await feed.stop()
            await plane.stop()

    app = FastAPI(
        title="Cordum",
        version=__version__,
        description="The control plane that governs what AI agents do.",
        lifespan=lifespan,
    )
    app.state.plane = plane
    errors.install(app)
    app.include_router(jobs_router)
    app.include_router(ops_router)
    app.include_router(approvals_router)
    app.include_router(audit_router)
    app.include_router(policy_router)
    app.include_router(workers_router)
    app.include_router(keys_router)
    app.include_router(health)
    feed = dashboard.install(app, plane)
    _complete_openapi(app)
    return app


def _complete_openapi(app: FastAPI) -> None:
    """Add the job body's nested schemas and the auth headers to FastAPI's OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in JOB_SCHEMAS.items():
            schemas.setdefault(name, schema)
        document_auth(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
