"""The dashboard's sign-in: an API key kept in an HttpOnly cookie, and its CSRF token.

A person signs in to the dashboard with an API key; the key goes into an HttpOnly,
``SameSite=Strict`` cookie (``Secure`` over HTTPS), so page scripts never see it, and
every request re-checks it, so a revoked key signs its sessions out at once. Nothing is
kept on the server: any gateway replica serves any session.

Cross-site requests are refused twice over. The cookie is ``SameSite=Strict``, and
:func:`session_key` only lets it stand in for the key on page reads (GET/HEAD outside
``/api/``) or on requests that carry the session's CSRF token in ``X-CSRF-Token``, which a
page of another site can neither read nor compute: it is an HMAC of a fixed label under
the key itself. The dashboard's scripts send it with every write to the JSON API.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from starlette.requests import HTTPConnection
from starlette.responses import Response

COOKIE: Final = "cordum_session"
CSRF_HEADER: Final = "x-csrf-token"
MAX_AGE_S: Final = 12 * 3600
"""A session lasts a working day; signing in again takes one paste."""

_SAFE_METHODS = frozenset({"GET", "HEAD"})
_CSRF_LABEL = b"cordum-dashboard-csrf-v1"


def csrf_token(key: str) -> str:
    """The CSRF token of a session signed in with ``key``."""
    return hmac.new(key.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def session_key(request: HTTPConnection) -> str | None:
    """The key of the request's session cookie, when the cookie may stand in for it here."""
    key = request.cookies.get(COOKIE)
    if not key:
        return None
    method = request.scope.get("method", "GET")
    if method in _SAFE_METHODS and not request.url.path.startswith("/api/"):
        return key
    sent = request.headers.get(CSRF_HEADER, "")
    return key if sent and hmac.compare_digest(sent, csrf_token(key)) else None


def form_token_matches(request: HTTPConnection, sent: str) -> bool:
    """Whether a form's CSRF field matches the request's session (for dashboard forms)."""
    key = request.cookies.get(COOKIE)
    return bool(key and sent) and hmac.compare_digest(sent, csrf_token(key or ""))


def start_session(response: Response, request: HTTPConnection, key: str) -> None:
    """Put ``key`` into the session cookie of ``response``."""
    response.set_cookie(
        COOKIE,
        key,
        max_age=MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def end_session(response: Response) -> None:
    """Drop the session cookie."""
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
