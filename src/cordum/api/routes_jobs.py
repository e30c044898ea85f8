"""Jobs: submit (gate A), read, wait, cancel, remediate."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from cordum.api.auth import (
    CanRead,
    CanSubmit,
    authorize,
    check_body_tenant,
    job_filter,
    job_in_tenant,
    visible_job,
    visible_tenants,
)
from cordum.api.body import read_object
from cordum.api.deps import parse_job, plane_of
from cordum.api.errors import ApiError, not_found
from cordum.api.views import decision_view, event_view, job_view
from cordum.models import Job
from cordum.models.keys import Permission, Principal
from cordum.models.pipeline import JobRecord
from cordum.models.state import JobState
from cordum.policy import InvalidJobError
from cordum.services.answers import AnswerStatus
from cordum.services.execution import JobStateError
from cordum.services.safety import SafetyUnavailableError
from cordum.services.submission import IdempotencyConflictError, Submission
from cordum.wiring import ControlPlane

router = APIRouter(prefix="/api/v1", tags=["jobs"])

# The body is read by hand (strict JSON, clear errors), so FastAPI cannot describe it:
# the job's schema is given explicitly, its nested models published under components.
_JOB_SCHEMA = Job.model_json_schema(by_alias=False, ref_template="#/components/schemas/{model}")
JOB_SCHEMAS: dict[str, Any] = _JOB_SCHEMA.pop("$defs", {})
"""Schemas the job body refers to, for ``components.schemas`` of /openapi.json."""
JOB_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _JOB_SCHEMA}},
    }
}


async def submit_job(
    plane: ControlPlane, job: Job, principal: Principal, *, retry_of: str | None = None
) -> Response:
    """Submit through gate A as ``principal`` and answer as reference section 5 says.

    The job's tenant must already be settled and checked (:func:`job_in_tenant`).
    """
    try:
        submission = await plane.submitter.submit(job, retry_of=retry_of, principal=principal)
    except IdempotencyConflictError as exc:
        raise ApiError(409, "idempotency_conflict", str(exc), job_id=exc.job_id) from None
    except SafetyUnavailableError as exc:
        raise ApiError(
            503,
            "policy_unavailable",
            f"{exc}; nothing was submitted, retry later",
            headers={"Retry-After": "5"},
        ) from None
    except InvalidJobError as exc:
        raise ApiError(422, "invalid_job", str(exc)) from None
    return submission_response(submission)


def submission_response(submission: Submission) -> Response:
    """200 accepted / 200 approval_required / 403 blocked / 429 throttled."""
    headers = {"Idempotent-Replayed": "true"} if submission.replayed else None
    body = submission.body
    if submission.status in (AnswerStatus.ACCEPTED, AnswerStatus.APPROVAL_REQUIRED):
        return JSONResponse(body, headers=headers)
    if submission.status is AnswerStatus.BLOCKED:
        return ApiError(
            403, "policy_denied", body["reason"], headers=headers, rejection=body
        ).response()
    retry_after = submission.retry_after or 1.0
    throttle_headers = {**(headers or {}), "Retry-After": str(max(1, math.ceil(retry_after)))}
    return ApiError(
        429, "throttled", body["reason"], headers=throttle_headers, rejection=body
    ).response()


@router.post("/jobs", openapi_extra=JOB_BODY, summary="Submit a job (gate A)")
async def post_job(request: Request) -> Response:
    """Decide a job at gate A; allowed jobs are queued for dispatch."""
    principal = await authorize(request, Permission.SUBMIT)
    plane = plane_of(request)
    data = await read_object(request, plane.settings.max_body_bytes)
    job = parse_job(data, request, max_labels=plane.settings.max_labels)
    job = await job_in_tenant(request, principal, job)
    return await submit_job(plane, job, principal)


def _states(state: str | None) -> frozenset[JobState]:
    if not state:
        return frozenset()
    names = [s.strip().upper() for s in state.split(",") if s.strip()]
    try:
        return frozenset(JobState(name) for name in names)
    except ValueError:
        allowed = ", ".join(s.value for s in JobState)
        raise ApiError(422, "invalid_state", f"state must be one of: {allowed}") from None


@router.get("/jobs", summary="List jobs, newest first")
async def list_jobs(
    request: Request,
    principal: CanRead,
    state: str | None = Query(None, description="One state or a comma-separated list."),
    topic: str | None = None,
    tenant: str | None = None,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    """Jobs matching the filters; pass ``next_cursor`` back as ``cursor`` for the next page.

    Only jobs of the key's tenants (of ``X-Tenant-ID`` when given), and an agent's own.
    """
    plane = plane_of(request)
    scope = await visible_tenants(request, principal)
    if tenant:
        await check_body_tenant(request, principal, tenant)
        if scope is not None and tenant not in scope:
            raise ApiError(
                400,
                "tenant_mismatch",
                f"the tenant filter is {tenant!r} but X-Tenant-ID is"
                f" {request.headers.get('x-tenant-id')!r}; send one",
            )
        scope = frozenset({tenant})
    filters = replace(job_filter(principal, scope), states=_states(state), topic=topic)
    try:
        page = await plane.store.list_jobs(filters, cursor=cursor, limit=limit)
    except ValueError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from None
    return {"jobs": [job_view(j) for j in page.jobs], "next_cursor": page.next_cursor}


async def require_job(plane: ControlPlane, job_id: str) -> JobRecord:
    """The job or a 404."""
    job = await plane.store.get_job(job_id)
    if job is None:
        raise not_found("job", job_id)
    return job


@router.get("/jobs/{job_id}", summary="One job; ?wait=N holds until it finishes")
async def get_job(
    request: Request,
    principal: CanRead,
    job_id: str,
    wait: float = Query(0, ge=0, description="Seconds to wait for a terminal state."),
) -> dict[str, Any]:
    """The job, optionally after waiting up to ``wait`` seconds for it to finish."""
    plane = plane_of(request)
    job = await visible_job(request, principal, job_id)
    deadline = time.monotonic() + min(wait, plane.settings.max_wait_s)
    pause = 0.002
    while not job.state.terminal and time.monotonic() < deadline:
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.05)
        job = await require_job(plane, job_id)
    return job_view(job)


@router.get("/jobs/{job_id}/decisions", summary="Every policy decision taken on a job")
async def job_decisions(request: Request, principal: CanRead, job_id: str) -> dict[str, Any]:
    """Gate A, gate B and approval decisions, oldest first, each with its snapshot."""
    plane = plane_of(request)
    await visible_job(request, principal, job_id)
    decisions = await plane.store.job_decisions(job_id)
    return {"job_id": job_id, "decisions": [decision_view(d) for d in decisions]}


@router.get("/jobs/{job_id}/events", summary="A job's state timeline")
async def job_events(request: Request, principal: CanRead, job_id: str) -> dict[str, Any]:
    """Every state change, oldest first."""
    plane = plane_of(request)
    await visible_job(request, principal, job_id)
    events = await plane.store.job_events(job_id)
    return {"job_id": job_id, "events": [event_view(e) for e in events]}


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job that has not finished")
async def cancel_job(request: Request, principal: CanSubmit, job_id: str) -> dict[str, Any]:
    """Cancel; a running job's worker is told to stop. Agents cancel only their own jobs."""
    plane = plane_of(request)
    body = await read_object(request, plane.settings.max_body_bytes, optional=True)
    await visible_job(request, principal, job_id)
    reason = str(body.get("reason") or "cancelled by request")
    try:
        job = await plane.execution.cancel(job_id, reason=reason)
    except JobStateError as exc:
        raise ApiError(409, "job_not_cancellable", str(exc), state=exc.job.state.value) from None
    return job_view(job)


@router.post("/jobs/{job_id}/remediate", summary="Re-submit a refused job as a remediation")
async def remediate_job(request: Request, principal: CanSubmit, job_id: str) -> Response:
    """Apply one of the job's remediations and submit the result through gate A."""
    plane = plane_of(request)
    body = await read_object(request, plane.settings.max_body_bytes)
    remediation_id = body.get("remediation_id")
    if not isinstance(remediation_id, str) or not remediation_id:
        raise ApiError(422, "invalid_request", "remediation_id (a string) is required")
    job = await visible_job(request, principal, job_id)
    offered: dict[str, dict[str, Any]] = {}
    for decision in await plane.store.job_decisions(job_id):
        for remediation in decision.remediations:
            offered[str(remediation["id"])] = remediation
    chosen = offered.get(remediation_id)
    if chosen is None:
        ids = ", ".join(sorted(offered)) or "none"
        raise ApiError(
            404,
            "remediation_not_found",
            f"job {job_id} offers no remediation {remediation_id!r} (offered: {ids})",
        )
    return await submit_job(plane, remediated(job, chosen), principal, retry_of=job_id)


def remediated(job: JobRecord, remediation: dict[str, Any]) -> Job:
    """The job's spec with a remediation applied (a fresh submission: no idempotency key).

    It stays in the job's tenant, whatever the caller's ``X-Tenant-ID`` says.
    """
    spec = job.spec
    labels = {k: v for k, v in spec.labels.items() if k not in remediation.get("remove_labels", ())}
    labels.update(remediation.get("add_labels") or {})
    return spec.model_copy(
        update={
            "topic": remediation.get("replacement_topic") or spec.topic,
            "capability": remediation.get("replacement_capability") or spec.capability,
            "labels": labels,
            "idempotency_key": None,
            "tenant_id": job.tenant_id,
        }
    )
