"""Requests about the policy's lifecycle (bundles, publish, snapshots, rollback).

Shared by the sync and async clients, so both send exactly the same requests.
"""

from __future__ import annotations

from cordum.sdk._wire import Call, path


def bundles_call() -> Call:
    """``GET /api/v1/policy/bundles``: the draft bundles, without their text."""
    return Call("GET", path("policy", "bundles"))


def bundle_path(bundle_id: str) -> str:
    """The URL path of a bundle; its ``/`` separators stay path separators."""
    return path("policy", "bundles", *bundle_id.split("/"))


def put_bundle_call(bundle_id: str, text: str) -> Call:
    """``PUT /api/v1/policy/bundles/{id}`` with the YAML text."""
    return Call("PUT", bundle_path(bundle_id), json={"text": text})


def delete_bundle_call(bundle_id: str) -> Call:
    """``DELETE /api/v1/policy/bundles/{id}``."""
    return Call("DELETE", bundle_path(bundle_id))


def publish_call(message: str) -> Call:
    """``POST /api/v1/policy/publish``."""
    return Call("POST", path("policy", "publish"), json={"message": message})


def snapshots_call() -> Call:
    """``GET /api/v1/policy/snapshots``."""
    return Call("GET", path("policy", "snapshots"))


def snapshot_call(ref: str | int) -> Call:
    """``GET /api/v1/policy/snapshots/{version or id}``, with the bundle texts."""
    return Call("GET", path("policy", "snapshots", str(ref)))


def rollback_call(ref: str | int, message: str) -> Call:
    """``POST /api/v1/policy/rollback``: a version number or a snapshot id."""
    target: str | int = int(ref) if str(ref).isdigit() else str(ref)
    return Call(
        "POST", path("policy", "rollback"), json={"snapshot_id": target, "message": message}
    )
