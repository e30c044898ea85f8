"""Policy checks, DLQ, approvals, health and metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response

from cordum.api.body import read_object
from cordum.api.deps import parse_job, plane_of
from cordum.api.errors import ApiError, not_found
from cordum.api.routes_jobs import JOB_BODY, require_job, submit_job
from cordum.api.views import dlq_view, job_view
from cordum.models import Job
from cordum.models.state import JobState
from cordum.policy import InvalidJobError
from cordum.ports import JobFilter
from cordum.services.approvals import ApprovalConflictError
from cordum.services.kernel import Kernel

router = APIRouter(prefix="/api/v1")
health = APIRouter(tags=["health"])


# --- policy -------------------------------------------------------------------------------


async def _decide(request: Request, ask: Callable[[Kernel, Job], Awaitable[Any]]) -> Any:
    """Parse the job body and put it to the kernel; a job the kernel refuses is a 422."""
    plane = plane_of(request)
    data = await read_object(request, plane.settings.max_body_bytes)
    job = parse_job(data, request, max_labels=plane.settings.max_labels)
    try:
        return (await ask(plane.kernel, job)).to_dict()
    except InvalidJobError as exc:
        raise ApiError(422, "invalid_job", str(exc)) from None


@router.post("/policy/evaluate", tags=["policy"], openapi_extra=JOB_BODY)
async def policy_evaluate(request: Request) -> dict[str, Any]:
    """Decide a job as gate A would (velocity rules count it); nothing is submitted."""
    result: dict[str, Any] = await _decide(request, lambda kernel, job: kernel.evaluate(job))
    return result


@router.post("/policy/simulate", tags=["policy"], openapi_extra=JOB_BODY)
async def policy_simulate(request: Request) -> dict[str, Any]:
    """Decide a job with no side effects at all."""
    result: dict[str, Any] = await _decide(request, lambda kernel, job: kernel.simulate(job))
    return result


@router.post("/policy/explain", tags=["policy"], openapi_extra=JOB_BODY)
async def policy_explain(request: Request) -> dict[str, Any]:
    """The simulated decision plus each rule's trace."""
    result: dict[str, Any] = await _decide(request, lambda kernel, job: kernel.explain(job))
    return result


# --- DLQ ----------------------------------------------------------------------------------


@router.get("/dlq", tags=["dlq"])
async def list_dlq(
    request: Request, cursor: str | None = None, limit: int = Query(50, ge=1, le=500)
) -> dict[str, Any]:
    """Dead-lettered jobs, newest first, with reason codes."""
    plane = plane_of(request)
    try:
        page = await plane.store.list_dlq(cursor=cursor, limit=limit)
    except ValueError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from None
    return {"entries": [dlq_view(e) for e in page.entries], "next_cursor": page.next_cursor}


@router.post("/dlq/{job_id}/retry", tags=["dlq"])
async def retry_dlq(request: Request, job_id: str) -> Response:
    """Submit the dead-lettered job again (a new job, through gate A); the entry is removed."""
    plane = plane_of(request)
    if await plane.store.get_dlq(job_id) is None:
        raise not_found("dlq_entry", job_id)
    job = await require_job(plane, job_id)
    response = await submit_job(
        plane, job.spec.model_copy(update={"idempotency_key": None}), retry_of=job_id
    )
    await plane.store.delete_dlq(job_id)
    return response


@router.delete("/dlq/{job_id}", tags=["dlq"], status_code=204)
async def delete_dlq(request: Request, job_id: str) -> Response:
    """Remove a DLQ entry (the job itself stays, terminal)."""
    if not await plane_of(request).store.delete_dlq(job_id):
        raise not_found("dlq_entry", job_id)
    return Response(status_code=204)


# --- approvals ----------------------------------------------------------------------------


@router.get("/approvals", tags=["approvals"])
async def list_approvals(
    request: Request, cursor: str | None = None, limit: int = Query(50, ge=1, le=500)
) -> dict[str, Any]:
    """Jobs waiting for a human decision, newest first."""
    plane = plane_of(request)
    filters = JobFilter(states=frozenset({JobState.APPROVAL_REQUIRED}))
    try:
        page = await plane.store.list_jobs(filters, cursor=cursor, limit=limit)
    except ValueError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from None
    return {"approvals": [job_view(j) for j in page.jobs], "next_cursor": page.next_cursor}


async def _resolve(request: Request, job_id: str, approve: bool) -> dict[str, Any]:
    plane = plane_of(request)
    body = await read_object(request, plane.settings.max_body_bytes, optional=True)
    await require_job(plane, job_id)
    by = request.headers.get("x-principal-id") or "admin"
    try:
        outcome = await plane.approvals.resolve(
            job_id,
            approve=approve,
            by=by,
            reason=str(body.get("reason") or ""),
            note=str(body.get("note") or ""),
        )
    except ApprovalConflictError as exc:
        raise ApiError(
            409, "approval_already_resolved", str(exc), state=exc.job.state.value
        ) from None
    status = "approved" if approve else "rejected"
    if not outcome.changed:
        status = f"already_{status}"
    return {"status": status, "job": job_view(outcome.job)}


@router.post("/approvals/{job_id}/approve", tags=["approvals"])
async def approve(request: Request, job_id: str) -> dict[str, Any]:
    """Approve: the job goes back to PENDING and through gate B."""
    return await _resolve(request, job_id, approve=True)


@router.post("/approvals/{job_id}/reject", tags=["approvals"])
async def reject(request: Request, job_id: str) -> dict[str, Any]:
    """Reject: the job is DENIED."""
    return await _resolve(request, job_id, approve=False)


# --- health -------------------------------------------------------------------------------


@health.get("/health")
@health.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@health.get("/readyz")
async def readyz(request: Request) -> Response:
    """Ready when every role runs and the store answers."""
    plane = plane_of(request)
    problems = []
    if not plane.started:
        problems.append("control plane not started")
    try:
        await plane.store.count_dlq()
    except Exception as exc:
        problems.append(f"store: {exc}")
    if problems:
        return ApiError(503, "not_ready", "; ".join(problems)).response()
    return PlainTextResponse('{"status":"ready"}', media_type="application/json")


@health.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    plane = plane_of(request)
    plane.metrics.set_job_counts(await plane.store.count_jobs_by_state())
    plane.metrics.dlq_size.set(await plane.store.count_dlq())
    directory = plane.directory
    plane.metrics.workers_online.set(sum(directory.is_live(w) for w in directory.workers.values()))
    for gate in (plane.gate_a, plane.gate_b):
        plane.metrics.breaker_open.labels(gate.gate).set(int(gate.breaker.state != "closed"))
    return Response(plane.metrics.render(), media_type="text/plain; version=0.0.4")
