"""Requests about the audit chain, shared by the sync and async clients."""

from __future__ import annotations

from cordum.sdk._wire import Call, path


def verify_call(tenant: str | None) -> Call:
    """``GET /api/v1/audit/verify`` for one chain, or every chain the key may read."""
    return Call(
        "GET", path("audit", "verify"), params=None if tenant is None else {"tenant": tenant}
    )


def export_path() -> str:
    """Where a chain's NDJSON export is served."""
    return path("audit", "export")
