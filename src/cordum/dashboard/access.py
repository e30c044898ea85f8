"""Who is looking at a page, and what a browser is shown when the answer is "nobody".

Pages use :func:`viewer` like API routes use ``authorize``: the same key check, role
permissions and ``auth.failure`` audit events, with the key taken from the session
cookie. A browser without a session is sent to the sign-in page rather than shown a 401,
and every other refusal of a page is an HTML page saying what to do.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import cast
from urllib.parse import quote

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from cordum.api.auth import authorize
from cordum.api.errors import ApiError
from cordum.dashboard.render import signed_out_page
from cordum.models.keys import Permission, Principal

PAGE_PREFIXES = ("/api/", "/health", "/readyz", "/metrics", "/docs", "/redoc", "/openapi")


async def viewer(request: Request, permission: Permission = Permission.READ) -> Principal:
    """The signed-in person, if their role holds ``permission`` (see the module doc)."""
    request.state.started = time.perf_counter()
    return await authorize(request, permission)


def is_page(request: Request) -> bool:
    """Whether the request is for a dashboard page (not the API, probes or docs)."""
    return not request.url.path.startswith(PAGE_PREFIXES)


def install_errors(app: FastAPI) -> None:
    """Answer dashboard pages' errors in HTML; the API keeps its JSON errors."""
    api_error = cast(HttpHandler, app.exception_handlers[ApiError])
    http_error = cast(HttpHandler, app.exception_handlers[StarletteHTTPException])

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if not is_page(request):
            return await _answer(api_error, request, exc)
        if exc.status == 401:
            target = quote(
                request.url.path + (f"?{request.url.query}" if request.url.query else "")
            )
            return RedirectResponse(f"/login?next={target}", status_code=303)
        return error_page(request, exc.status, exc.message)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if not is_page(request):
            return await _answer(http_error, request, exc)
        message = (
            f"there is no page at {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        )
        return error_page(request, exc.status_code, message)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)


HttpHandler = Callable[[Request, Exception], Response | Awaitable[Response]]


async def _answer(handler: HttpHandler, request: Request, exc: Exception) -> Response:
    """What the API's own handler answers (it may be sync or async)."""
    answer = handler(request, exc)
    return await answer if inspect.isawaitable(answer) else answer


def error_page(request: Request, status: int, message: str) -> Response:
    """A plain page saying what went wrong and where to go."""
    return signed_out_page(
        request, "error.html", section="", status_code=status, status=status, message=message
    )
