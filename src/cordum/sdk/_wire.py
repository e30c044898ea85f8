"""HTTP plumbing shared by the clients and the worker links.

One place decides how to reach the server (URL, API key, tenant from arguments or the
environment), how a request is described (:class:`Call`), and how a failure becomes an
SDK error: transport problems are :class:`CordumUnavailable`, error envelopes
:class:`CordumAPIError`. Nothing here raises an httpx exception at a user.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from cordum.sdk.errors import CordumAPIError, CordumError, CordumUnavailable

DEFAULT_URL = "http://127.0.0.1:8081"
API = "/api/v1"
GATEWAY_FAILURES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class Settings:
    """Where the control plane is and who is calling it."""

    url: str
    api_key: str | None
    tenant: str | None
    timeout: float

    @classmethod
    def resolve(
        cls, url: str | None, api_key: str | None, tenant: str | None, timeout: float
    ) -> Settings:
        """Explicit arguments first, then ``CORDUM_URL``/``CORDUM_API_KEY``/``CORDUM_TENANT_ID``."""
        return cls(
            url=(url or os.environ.get("CORDUM_URL") or DEFAULT_URL).rstrip("/"),
            api_key=api_key or os.environ.get("CORDUM_API_KEY") or None,
            tenant=tenant or os.environ.get("CORDUM_TENANT_ID") or None,
            timeout=timeout,
        )

    @property
    def headers(self) -> dict[str, str]:
        """Authentication and tenant headers for every request."""
        headers: dict[str, str] = {}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        if self.tenant:
            headers["X-Tenant-ID"] = self.tenant
        return headers

    def async_http(self) -> httpx.AsyncClient:
        """An async httpx client bound to these settings."""
        return httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=self.timeout)

    def sync_http(self) -> httpx.Client:
        """A blocking httpx client bound to these settings."""
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=self.timeout)


def path(*parts: str) -> str:
    """An API path with each part URL-quoted, e.g. ``path("jobs", job_id, "cancel")``."""
    return API + "".join("/" + quote(part, safe="") for part in parts)


def envelope(response: httpx.Response) -> dict[str, Any] | None:
    """The JSON object of a response, or None when the body is not one."""
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def error_for(response: httpx.Response) -> CordumError:
    """The SDK error for a non-2xx response."""
    body = envelope(response)
    if body is None or "code" not in body:
        if response.status_code in GATEWAY_FAILURES:
            return CordumUnavailable(f"HTTP {response.status_code} from {response.url}")
        text = response.text[:200].strip() or response.reason_phrase
        return CordumAPIError(response.status_code, "http_error", text, body)
    message = str(body.get("error") or response.reason_phrase)
    return CordumAPIError(response.status_code, str(body["code"]), message, body)


def decode(response: httpx.Response) -> Any:
    """The JSON body of a successful response (None for an empty one); raise otherwise."""
    if not response.is_success:
        raise error_for(response)
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise CordumAPIError(
            response.status_code, "invalid_response", "the server's answer is not JSON"
        ) from None


@dataclass(frozen=True)
class Call:
    """One request and how to read its answer, independent of sync or async I/O."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, str | int | float] | None = None
    hold_s: float = 0.0
    """Seconds the server may legitimately hold the request (long-poll, wait)."""
    parse: Callable[[httpx.Response], Any] = field(default=decode)


def _timeout(http: httpx.AsyncClient | httpx.Client, call: Call) -> httpx.Timeout:
    """The client's timeout, with the read timeout stretched by what the server may hold."""
    if call.hold_s <= 0:
        return http.timeout
    read = (http.timeout.read or 0.0) + call.hold_s
    return httpx.Timeout(
        connect=http.timeout.connect, read=read, write=http.timeout.write, pool=http.timeout.pool
    )


def _unavailable(
    http: httpx.AsyncClient | httpx.Client, call: Call, exc: httpx.HTTPError
) -> CordumUnavailable:
    detail = str(exc) or type(exc).__name__
    url = http.base_url.join(call.path)
    return CordumUnavailable(
        f"{call.method} {url} failed: {detail}; is Cordum running there? (CORDUM_URL)"
    )


async def send_async(http: httpx.AsyncClient, call: Call) -> Any:
    """Perform ``call`` and parse its answer; transport failures become CordumUnavailable."""
    try:
        response = await http.request(
            call.method, call.path, json=call.json, params=call.params, timeout=_timeout(http, call)
        )
    except httpx.HTTPError as exc:
        raise _unavailable(http, call, exc) from None
    return call.parse(response)


def send_sync(http: httpx.Client, call: Call) -> Any:
    """Blocking twin of :func:`send_async`."""
    try:
        response = http.request(
            call.method, call.path, json=call.json, params=call.params, timeout=_timeout(http, call)
        )
    except httpx.HTTPError as exc:
        raise _unavailable(http, call, exc) from None
    return call.parse(response)
