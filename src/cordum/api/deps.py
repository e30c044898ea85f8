"""What every route needs: the control plane behind the app, and the job parser."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.requests import HTTPConnection

from cordum.api.errors import ApiError, invalid
from cordum.models import Job
from cordum.wiring import ControlPlane

MAX_LABEL_KEY = 256
MAX_LABEL_VALUE = 4096


def plane_of(request: HTTPConnection) -> ControlPlane:
    """The control plane serving this request (or WebSocket)."""
    plane: ControlPlane = request.app.state.plane
    return plane


def parse_job(data: dict[str, Any], request: Request, *, max_labels: int) -> Job:
    """A job from a flat JSON body plus the ``Idempotency-Key`` and ``X-Tenant-ID`` headers."""
    data = dict(data)
    header_key = request.headers.get("idempotency-key")
    if header_key is not None:
        body_key = data.get("idempotency_key")
        if body_key is not None and body_key != header_key:
            raise ApiError(
                400,
                "idempotency_key_mismatch",
                "the Idempotency-Key header and the body's idempotency_key differ; send one",
            )
        data["idempotency_key"] = header_key
    header_tenant = request.headers.get("x-tenant-id")
    if header_tenant:
        body_tenant = data.get("tenant_id", data.get("tenant"))
        if body_tenant is not None and body_tenant != header_tenant:
            raise ApiError(
                400,
                "tenant_mismatch",
                f"the body names tenant {body_tenant!r} but X-Tenant-ID is {header_tenant!r}",
            )
        if body_tenant is None:
            data["tenant_id"] = header_tenant
    labels = data.get("labels")
    if isinstance(labels, dict):
        check_labels(labels, max_labels)
    try:
        return Job.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, "job") from None


def check_labels(labels: dict[str, Any], max_labels: int) -> None:
    """Refuse label maps too large to be labels."""
    if len(labels) > max_labels:
        raise ApiError(
            422,
            "too_many_labels",
            f"labels has {len(labels)} entries; at most {max_labels} are allowed",
        )
    for key, value in labels.items():
        if len(str(key)) > MAX_LABEL_KEY:
            raise ApiError(
                422,
                "label_too_long",
                f"label key {str(key)[:40]!r}... exceeds {MAX_LABEL_KEY} chars",
            )
        if isinstance(value, str) and len(value) > MAX_LABEL_VALUE:
            raise ApiError(
                422, "label_too_long", f"label {key!r} exceeds {MAX_LABEL_VALUE} characters"
            )
