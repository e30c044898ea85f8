"""Policy checks, DLQ, health and metrics.

Health, readiness and metrics answer without a key: probes and Prometheus scrapers
carry none, and these routes show counts, never ids or data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response

from cordum.api.auth import (
    CanOperate,
    CanRead,
    CanSubmit,
    job_in_tenant,
    record_failure,
    visible_tenants,
)
from cordum.api.body import read_object
from cordum.api.deps import parse_job, plane_of
from cordum.api.errors import ApiError, not_found
from cordum.api.routes_jobs import JOB_BODY, require_job, submit_job
from cordum.api.views import dlq_view
from cordum.models import Job
from cordum.models.keys import Principal
from cordum.models.pipeline import DLQEntry
from cordum.policy import InvalidJobError
from cordum.services.kernel import Kernel

router = APIRouter(prefix="/api/v1")
health = APIRouter(tags=["health"])


# --- policy -------------------------------------------------------------------------------


async def _decide(
    request: Request, principal: Principal, ask: Callable[[Kernel, Job], Awaitable[Any]]
) -> Any:
    """Parse the job body and put it to the kernel; a job the kernel refuses is a 422.

    The job is decided in its tenant, checked like a submission's: tenant rules and
    per-tenant velocity counters must not be readable (or spent) from another tenant.
    """
    plane = plane_of(request)
    data = await read_object(request, plane.settings.max_body_bytes)
    job = parse_job(data, request, max_labels=plane.settings.max_labels)
    job = await job_in_tenant(request, principal, job)
    try:
        return (await ask(plane.kernel, job)).to_dict()
    except InvalidJobError as exc:
        raise ApiError(422, "invalid_job", str(exc)) from None


@router.post("/policy/evaluate", tags=["policy"], openapi_extra=JOB_BODY)
async def policy_evaluate(request: Request, principal: CanSubmit) -> dict[str, Any]:
    """Decide a job as gate A would (velocity rules count it); nothing is submitted."""
    result: dict[str, Any] = await _decide(
        request, principal, lambda kernel, job: kernel.evaluate(job)
    )
    return result


@router.post("/policy/simulate", tags=["policy"], openapi_extra=JOB_BODY)
async def policy_simulate(request: Request, principal: CanSubmit) -> dict[str, Any]:
    """Decide a job with no side effects at all."""
    result: dict[str, Any] = await _decide(
        request, principal, lambda kernel, job: kernel.simulate(job)
    )
    return result


@router.post("/policy/explain", tags=["policy"], openapi_extra=JOB_BODY)
async def policy_explain(request: Request, principal: CanSubmit) -> dict[str, Any]:
    """The simulated decision plus each rule's trace."""
    result: dict[str, Any] = await _decide(
        request, principal, lambda kernel, job: kernel.explain(job)
    )
    return result


# --- DLQ ----------------------------------------------------------------------------------


@router.get("/dlq", tags=["dlq"])
async def list_dlq(
    request: Request,
    principal: CanRead,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    """Dead-lettered jobs of the key's tenants, newest first, with reason codes."""
    plane = plane_of(request)
    tenants = await visible_tenants(request, principal)
    try:
        page = await plane.store.list_dlq(cursor=cursor, limit=limit, tenant_ids=tenants)
    except ValueError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from None
    return {"entries": [dlq_view(e) for e in page.entries], "next_cursor": page.next_cursor}


@router.post("/dlq/{job_id}/retry", tags=["dlq"])
async def retry_dlq(request: Request, principal: CanOperate, job_id: str) -> Response:
    """Submit the dead-lettered job again (a new job, through gate A); the entry is removed.

    The new job is submitted by the caller, in the dead job's tenant. The entry is taken
    first, so of concurrent retries exactly one submits (the others find no entry: 404);
    if the submission then fails (gate A unavailable, say), the entry is put back.
    """
    plane = plane_of(request)
    entry = await _visible_entry(request, principal, job_id)
    job = await require_job(plane, job_id)
    spec = job.spec.model_copy(update={"idempotency_key": None, "tenant_id": job.tenant_id})
    if not await plane.store.delete_dlq(job_id):
        raise not_found("dlq_entry", job_id)  # another retry (or a delete) took it
    try:
        return await submit_job(plane, spec, principal, retry_of=job_id)
    except ApiError:
        # A refusal (policy unavailable, invalid job): nothing was stored, so the entry
        # goes back. Anything else may come after the new job was stored: the entry stays
        # taken, as a lost entry is better than a second run.
        await plane.store.put_dlq(entry)
        raise


@router.delete("/dlq/{job_id}", tags=["dlq"], status_code=204)
async def delete_dlq(request: Request, principal: CanOperate, job_id: str) -> Response:
    """Remove a DLQ entry (the job itself stays, terminal)."""
    await _visible_entry(request, principal, job_id)
    if not await plane_of(request).store.delete_dlq(job_id):
        raise not_found("dlq_entry", job_id)
    return Response(status_code=204)


async def _visible_entry(request: Request, principal: Principal, job_id: str) -> DLQEntry:
    """The DLQ entry, or 404 when there is none or it belongs to a tenant the key lacks."""
    entry = await plane_of(request).store.get_dlq(job_id)
    if entry is not None and not principal.sees(entry.tenant_id):
        await record_failure(request, principal, "not_visible", f"dlq entry {job_id}")
        entry = None
    if entry is None:
        raise not_found("dlq_entry", job_id)
    return entry


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
