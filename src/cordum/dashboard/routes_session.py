"""Signing in and out, and the live-update stream every page listens to."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import StreamingResponse
from starlette.responses import RedirectResponse, Response

from cordum.api.auth import record_failure
from cordum.api.deps import plane_of
from cordum.api.session import end_session, form_token_matches, start_session
from cordum.dashboard.access import viewer
from cordum.dashboard.live import LiveFeed
from cordum.dashboard.render import signed_out_page

router = APIRouter(include_in_schema=False)


def local_target(target: str | None) -> str:
    """Where to go after signing in: a path of this site only (never ``//elsewhere``)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _login_page(request: Request, target: str, error: str | None, status: int) -> Response:
    return signed_out_page(
        request, "login.html", section="login", status_code=status, next=target, error=error
    )


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    """The sign-in form (straight to the dashboard when auth is off)."""
    target = local_target(next)
    if not plane_of(request).settings.auth:
        return RedirectResponse(target, status_code=303)
    return _login_page(request, target, None, 200)


@router.post("/login")
async def login(
    request: Request,
    key: Annotated[str, Form(max_length=512)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/",
) -> Response:
    """Check the key; keep it in the session cookie and go on, or say why not."""
    target = local_target(next)
    plane = plane_of(request)
    key = key.strip()
    principal = await plane.keys.principal_for(key) if key else None
    if principal is None:
        why = "no API key" if not key else "an unknown or revoked API key"
        await record_failure(request, None, "unauthenticated", f"dashboard sign-in with {why}")
        error = (
            "Paste an API key to sign in."
            if not key
            else "That key is unknown or revoked. `cordum up` prints the first admin key;"
            " `cordum keys create` makes more."
        )
        return _login_page(request, target, error, 401)
    response = RedirectResponse(target, status_code=303)
    start_session(response, request, key)
    return response


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form(max_length=128)] = "") -> Response:
    """Drop the session (the form carries the CSRF token: no other site signs you out)."""
    if plane_of(request).settings.auth and not form_token_matches(request, csrf):
        return Response("the sign-out form is stale; reload the page and try again", 403)
    response = RedirectResponse("/login", status_code=303)
    end_session(response)
    return response


@router.get("/ui/events")
async def events(request: Request) -> StreamingResponse:
    """Server-Sent Events: what changed, for the pages to refresh (see ``live``)."""
    principal = await viewer(request)
    feed: LiveFeed = request.app.state.live_feed
    return StreamingResponse(
        feed.stream(principal),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
