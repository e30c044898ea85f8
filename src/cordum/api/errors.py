"""The one error shape of the API: ``{"error": message, "code": snake_code, "status": n}``.

Every failure a client can cause is an :class:`ApiError` with a message that says what
to change. Validation errors list each bad field. A 500 means a bug in Cordum.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cordum.ports.outage import is_outage

log = logging.getLogger(__name__)

HTTP_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "TRACE"})


class ApiError(Exception):
    """An answer other than success, with what the client should do about it."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.details = details

    def response(self) -> JSONResponse:
        """The JSON response for this error."""
        body = {"error": self.message, "code": self.code, "status": self.status, **self.details}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def not_found(what: str, ident: str) -> ApiError:
    """404 for an unknown id."""
    return ApiError(404, f"{what}_not_found", f"no {what} with id {ident!r}")


def field_errors(exc: ValidationError | RequestValidationError) -> list[dict[str, str]]:
    """Pydantic errors as ``[{field, message}]`` with dotted field paths."""
    problems = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or "(body)"
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "extra_forbidden":
            message = "unknown field; remove it (check the spelling against the API docs)"
        problems.append({"field": field, "message": message})
    return problems


def invalid(exc: ValidationError | RequestValidationError, what: str = "request") -> ApiError:
    """422 listing every invalid field."""
    problems = field_errors(exc)
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
    return ApiError(422, "invalid_request", f"invalid {what}: {summary}", details=problems)


def _allowed_methods(request: Request) -> list[str]:
    """Every method the API documents at this path (Starlette names only one route's).

    Read from the OpenAPI document, the public description of every route, rather than
    from the router's internals, which differ between FastAPI versions.
    """
    app = request.app
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(app.state, "allow_table", None)
    if table is None:
        table = []
        for template, operations in app.openapi().get("paths", {}).items():
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            methods = {method.upper() for method in operations if method.upper() in HTTP_METHODS}
            table.append((re.compile(f"^{pattern}$"), methods))
        app.state.allow_table = table
    path = request.url.path
    return sorted({m for pattern, methods in table if pattern.match(path) for m in methods})


def install(app: FastAPI) -> None:
    """Route every error through the one shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        if exc.status_code == 405:
            allowed = ", ".join(_allowed_methods(request)) or headers.get("allow", "see /docs")
            headers["Allow"] = allowed
            message = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
        return ApiError(exc.status_code, code, message, headers=headers or None).response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        if is_outage(exc):
            log.warning(
                "%s %s: a backing service is unavailable: %s", request.method, request.url.path, exc
            )
            response = ApiError(
                503,
                "service_unavailable",
                "the store or bus is unavailable right now; nothing was changed, retry",
            ).response()
            response.headers["Retry-After"] = "1"
            return response
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return ApiError(
            500, "internal_error", "internal error; this is a bug in Cordum, see the server log"
        ).response()
