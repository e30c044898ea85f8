"""Record factories for the port contract tests: valid defaults, any field overridable."""

from __future__ import annotations

import itertools
import time
import uuid
from collections import deque
from typing import Any

from cordum.models import Decision, Job
from cordum.models.pipeline import (
    Approval,
    DecisionEntry,
    DLQEntry,
    DLQReason,
    Gate,
    IdempotencyEntry,
    JobError,
    JobRecord,
    WorkerRecord,
)
from cordum.models.state import TRANSITIONS, JobState

# Creation times strictly increase across every factory call, so "newest first" is never a tie.
_BASE = time.time()
_TICK = itertools.count(1)


def next_time() -> float:
    """A timestamp later than every one handed out before (millisecond steps)."""
    return _BASE + next(_TICK) / 1000


def new_id() -> str:
    """A fresh job id."""
    return uuid.uuid4().hex


def make_job(**overrides: Any) -> JobRecord:
    """A PENDING job in the default tenant on ``job.test.x``; ``overrides`` replace fields.

    ``topic=...`` is accepted as a shortcut for ``spec=Job(topic=...)``.
    """
    at = next_time()
    topic = overrides.pop("topic", "job.test.x")
    fields: dict[str, Any] = {
        "id": new_id(),
        "trace_id": new_id(),
        "tenant_id": "default",
        "spec": Job(topic=topic),
        "state": JobState.PENDING,
        "created_at": at,
        "updated_at": at,
    }
    fields.update(overrides)
    return JobRecord(**fields)


def make_full_job(result: Any = None, **overrides: Any) -> JobRecord:
    """A job with every optional field set to a non-default value (for round trips)."""
    at = next_time()
    spec = Job(
        topic="job.full.roundtrip",
        tenant_id="acme",
        capability="k8s.scale",
        risk_tags=("prod", "écriture"),
        requires=("kubectl",),
        labels={"env": "prod", "team": "ops"},
        context={"replicas": 3, "names": ["a", "b"], "nested": {"ok": True, "none": None}},
        prompt="scale it ✓",
        actor_id="agent-7",
        actor_type="agent",
        pack_id="pack-1",
        principal_id="user-1",
        idempotency_key="idem-full",
        priority="critical",
        deadline_ms=30_000,
    )
    fields: dict[str, Any] = {
        "id": new_id(),
        "trace_id": new_id(),
        "tenant_id": "acme",
        "spec": spec,
        "state": JobState.PENDING,
        "labels": {"env": "prod", "safety_bypassed": "false"},
        "safety_decision": Decision.ALLOW_WITH_CONSTRAINTS,
        "safety_reason": "allowed with limits",
        "safety_rule_id": "rule-42",
        "safety_snapshot": "v3:abc123",
        "constraints": {"budgets": {"max_retries": 2, "max_runtime_ms": 1500}, "tags": ["x"]},
        "approval": Approval(
            approved=True, by="alice", at=at - 1.5, reason="looks fine", policy_snapshot="v3:abc"
        ),
        "attempts": 2,
        "scheduling_attempts": 3,
        "next_attempt_at": at + 12.25,
        "waiting_reason": "no workers",
        "worker_id": "worker-1",
        "pool": "pool-a",
        "result": result,
        "error": JobError(code="boom", message="it broke: ünïcode"),
        "progress": {"percent": 42.5, "step": "copy"},
        "retry_of": new_id(),
        "created_at": at,
        "updated_at": at + 0.125,
        "dispatched_at": at + 0.25,
        "started_at": at + 0.5,
        "finished_at": at + 1.0,
        "deadline_at": at + 30.0,
    }
    fields.update(overrides)
    return JobRecord(**fields)


def make_decision(job: JobRecord | str, **overrides: Any) -> DecisionEntry:
    """A gate-A ALLOW decision for ``job`` (a record or an id)."""
    fields: dict[str, Any] = {
        "job_id": job if isinstance(job, str) else job.id,
        "gate": Gate.SUBMIT,
        "decision": Decision.ALLOW,
        "reason": "allowed by default",
        "at": next_time(),
    }
    fields.update(overrides)
    return DecisionEntry(**fields)


def make_full_decision(job: JobRecord | str) -> DecisionEntry:
    """A decision with every optional field set."""
    return make_decision(
        job,
        gate=Gate.DISPATCH,
        decision=Decision.THROTTLE,
        reason="too many",
        rule_id="velocity-1",
        policy_snapshot="v3:abc123",
        constraints={"budgets": {"max_retries": 1}},
        remediations=[{"id": "r1", "title": "wait", "add_labels": {"slow": "yes"}}],
        retry_after_seconds=2.5,
        safety_bypassed=True,
    )


def make_dlq(job: JobRecord, **overrides: Any) -> DLQEntry:
    """A DLQ entry for ``job``."""
    fields: dict[str, Any] = {
        "job_id": job.id,
        "tenant_id": job.tenant_id,
        "topic": job.topic,
        "reason_code": DLQReason.MAX_RETRIES_EXCEEDED,
        "message": "gave up",
        "attempts": 3,
        "at": next_time(),
    }
    fields.update(overrides)
    return DLQEntry(**fields)


def make_idempotency(job: JobRecord, key: str, **overrides: Any) -> IdempotencyEntry:
    """The first answer for ``key`` in ``job``'s tenant, pointing at ``job``."""
    fields: dict[str, Any] = {
        "tenant_id": job.tenant_id,
        "key": key,
        "request_hash": uuid.uuid4().hex,
        "job_id": job.id,
        "response": {"status": "accepted", "job_id": job.id},
        "at": next_time(),
    }
    fields.update(overrides)
    return IdempotencyEntry(**fields)


def make_worker(worker_id: str | None = None, **overrides: Any) -> WorkerRecord:
    """A live in-process worker on ``job.test.*``."""
    at = next_time()
    fields: dict[str, Any] = {
        "worker_id": worker_id or f"worker-{new_id()[:8]}",
        "pool": "default",
        "topics": ("job.test.*",),
        "capacity": 2,
        "labels": {"zone": "a"},
        "registered_at": at,
        "last_heartbeat": at,
    }
    fields.update(overrides)
    return WorkerRecord(**fields)


def path_to(state: JobState) -> list[JobState]:
    """The shortest legal list of states from "no job" to ``state`` (first one is initial)."""
    paths: dict[JobState, list[JobState]] = {s: [s] for s in TRANSITIONS[None]}
    queue = deque(paths)
    while queue:
        current = queue.popleft()
        for nxt in sorted(TRANSITIONS[current]):
            if nxt not in paths:
                paths[nxt] = [*paths[current], nxt]
                queue.append(nxt)
    return paths[state]
