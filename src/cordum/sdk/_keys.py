"""Requests about API keys, shared by the sync and async clients."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

from cordum.sdk._wire import Call, decode, path


def create_call(name: str, role: str, tenants: Iterable[str]) -> Call:
    """``POST /api/v1/keys``: the answer holds the secret, shown this once."""
    return Call("POST", path("keys"), json={"name": name, "role": role, "tenants": list(tenants)})


def _keys(response: httpx.Response) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = decode(response)["keys"]
    return keys


def list_call() -> Call:
    """``GET /api/v1/keys``: the keys the caller may manage (never a secret)."""
    return Call("GET", path("keys"), parse=_keys)


def revoke_call(key_id: str) -> Call:
    """``DELETE /api/v1/keys/{key_id}``: the key stops working at once."""
    return Call("DELETE", path("keys", key_id))
