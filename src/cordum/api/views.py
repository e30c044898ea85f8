"""How stored things look on the wire: ISO-8601 times, the job's input as ``input``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cordum.models.approval import ApprovalRecord
from cordum.models.keys import ALL_TENANTS, ApiKeyRecord
from cordum.models.pipeline import DecisionEntry, DLQEntry, JobEvent, JobRecord, WorkerRecord


def iso(ts: float | None) -> str | None:
    """A Unix time as an ISO-8601 UTC string."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_view(job: JobRecord) -> dict[str, Any]:
    """A job as ``GET /api/v1/jobs/{id}`` shows it."""
    spec = job.spec
    return {
        "job_id": job.id,
        "trace_id": job.trace_id,
        "tenant_id": job.tenant_id,
        "topic": spec.topic,
        "state": job.state.value,
        "input": spec.context,
        "prompt": spec.prompt,
        "capability": spec.capability,
        "risk_tags": list(spec.risk_tags),
        "requires": list(spec.requires),
        "labels": job.labels,
        "actor_id": spec.actor_id,
        "actor_type": spec.actor_type,
        "principal_id": spec.principal_id,
        "pack_id": spec.pack_id,
        "priority": None if spec.priority is None else spec.priority.value,
        "idempotency_key": spec.idempotency_key,
        "safety_decision": None if job.safety_decision is None else job.safety_decision.value,
        "safety_reason": job.safety_reason,
        "safety_rule_id": job.safety_rule_id,
        "safety_snapshot": job.safety_snapshot,
        "constraints": job.constraints,
        "remediations": job.remediations,
        "approval": None if job.approval is None else job.approval.model_dump(mode="json"),
        "result": job.result,
        "error": None if job.error is None else job.error.model_dump(mode="json"),
        "progress": job.progress,
        "attempts": job.attempts,
        "scheduling_attempts": job.scheduling_attempts,
        "waiting_reason": job.waiting_reason,
        "next_attempt_at": iso(job.next_attempt_at),
        "worker_id": job.worker_id,
        "pool": job.pool,
        "retry_of": job.retry_of,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "dispatched_at": iso(job.dispatched_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "deadline_at": iso(job.deadline_at),
    }


def decision_view(entry: DecisionEntry) -> dict[str, Any]:
    """One decision of ``GET /api/v1/jobs/{id}/decisions``."""
    data = entry.model_dump(mode="json")
    data["at"] = iso(entry.at)
    return data


def event_view(event: JobEvent) -> dict[str, Any]:
    """One state change."""
    return {
        "from": None if event.from_state is None else event.from_state.value,
        "to": event.to_state.value,
        "at": iso(event.at),
        "reason": event.reason,
    }


def dlq_view(entry: DLQEntry) -> dict[str, Any]:
    """One DLQ entry."""
    data = entry.model_dump(mode="json")
    data["at"] = iso(entry.at)
    return data


def worker_view(worker: WorkerRecord, *, live: bool, active: int) -> dict[str, Any]:
    """One worker of ``GET /api/v1/workers``."""
    data = worker.model_dump(mode="json")
    data.update(
        registered_at=iso(worker.registered_at),
        last_heartbeat=iso(worker.last_heartbeat),
        live=live,
        active_jobs=active,
        tenants=[ALL_TENANTS] if worker.tenants is None else list(worker.tenants),
    )
    return data


def approval_view(approval: ApprovalRecord) -> dict[str, Any]:
    """An approval as ``GET /api/v1/approvals`` shows it (its id is its job's id)."""
    view = approval.model_dump(mode="json")
    view["approval_id"] = approval.job_id
    for name in ("created_at", "expires_at", "resolved_at"):
        view[name] = iso(getattr(approval, name))
    return view


def key_view(record: ApiKeyRecord) -> dict[str, Any]:
    """An API key as the API and CLI show it: everything but its hash."""
    return {
        "key_id": record.key_id,
        "name": record.name,
        "role": record.role.value,
        "tenants": list(record.tenants),
        "created_at": iso(record.created_at),
        "created_by": record.created_by,
        "revoked_at": iso(record.revoked_at),
        "active": record.active,
    }
