"""Gate A: deciding a submitted job, recording it, and answering the agent.

Idempotency (invariant 5): the first answer for a (tenant, key) is stored in the same
transaction as the job, so a repeat with the same body gets that answer again and a
repeat with a different body is a conflict; either way nothing runs twice. Throttled and
"kernel unavailable" answers are not bound to the key: retrying later is the point.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cordum.models import Decision, DecisionRecord, Job
from cordum.models.keys import Principal
from cordum.models.pipeline import (
    DEFAULT_TENANT,
    DecisionEntry,
    Gate,
    IdempotencyEntry,
    JobError,
    JobRecord,
)
from cordum.models.state import JobState
from cordum.ports import Bus, Store
from cordum.services import subjects
from cordum.services.answers import AnswerStatus, answer_for
from cordum.services.approvals import Approvals
from cordum.services.metrics import Metrics
from cordum.services.safety import SafetyClient

log = logging.getLogger(__name__)

STATE_OF_DECISION = {
    Decision.ALLOW: JobState.PENDING,
    Decision.ALLOW_WITH_CONSTRAINTS: JobState.PENDING,
    Decision.REQUIRE_APPROVAL: JobState.APPROVAL_REQUIRED,
    Decision.DENY: JobState.DENIED,
    Decision.THROTTLE: JobState.DENIED,
}


class IdempotencyConflictError(ValueError):
    """The idempotency key was used before for a different request."""

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used for a different request (job {job_id});"
            " use a new key for a new request"
        )
        self.key = key
        self.job_id = job_id


@dataclass(frozen=True)
class Submission:
    """The answer to a submission and whether it is a replay of an earlier one."""

    status: AnswerStatus
    body: dict[str, Any]
    job_id: str
    replayed: bool = False

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait before retrying a throttled submission."""
        value = self.body.get("retry_after")
        return None if value is None else float(value)


def request_hash(job: Job) -> str:
    """A stable digest of what was asked (everything but the idempotency key)."""
    data = job.model_dump(mode="json", exclude={"idempotency_key"}, exclude_defaults=True)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Submitter:
    """Takes jobs in: gate A, store, notify the scheduler."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        safety: SafetyClient,
        metrics: Metrics,
        *,
        approvals: Approvals,
        throttle_retry_s: float = 5.0,
        default_tenant: str = DEFAULT_TENANT,
    ) -> None:
        self.store = store
        self.approvals = approvals
        self.bus = bus
        self.safety = safety
        self.metrics = metrics
        self.throttle_retry_s = throttle_retry_s
        self.default_tenant = default_tenant

    async def submit(
        self, job: Job, *, retry_of: str | None = None, principal: Principal | None = None
    ) -> Submission:
        """Decide and record ``job``, submitted by ``principal`` (who may not approve it).

        Raises :class:`IdempotencyConflictError`, :class:`~cordum.services.safety.
        SafetyUnavailableError` (fail closed) and :class:`~cordum.policy.InvalidJobError`.
        """
        tenant = job.tenant_id or self.default_tenant
        key = job.idempotency_key
        digest = request_hash(job) if key else ""
        if key:
            earlier = await self.store.get_idempotency(tenant, key)
            if earlier is not None:
                return self._replay(earlier, digest)
        verdict = await self.safety.check(job)
        record = verdict.record
        if record.decision is Decision.THROTTLE and record.retry_after_seconds is None:
            record = record.model_copy(update={"retry_after_seconds": self.throttle_retry_s})
        now = time.time()
        job_record = self._new_record(
            job, tenant, record, verdict.bypassed, now, retry_of, principal
        )
        entry = decision_entry(job_record.id, Gate.SUBMIT, record, verdict.bypassed, now)
        body = answer_for(record, job_record.id, job_record.trace_id)
        status = AnswerStatus(body["status"])
        binding = None
        if key and status is not AnswerStatus.THROTTLED:
            binding = IdempotencyEntry(
                tenant_id=tenant,
                key=key,
                request_hash=digest,
                job_id=job_record.id,
                response=body,
                at=now,
            )
        approval = None
        if job_record.state is JobState.APPROVAL_REQUIRED:
            approval = self.approvals.request(job_record, Gate.SUBMIT, record, now)
        outcome = await self.store.create_job(
            job_record, entry, binding, record.reason, approval=approval
        )
        if not outcome.created:
            assert outcome.existing is not None
            return self._replay(outcome.existing, digest)
        if approval is not None:
            self.approvals.requested(approval, job_record)
        self.metrics.submissions.labels(status.value).inc()
        if job_record.state is JobState.PENDING:
            await self.bus.publish(
                subjects.SUBMIT, {"job_id": job_record.id, "topic": job_record.topic}
            )
        elif job_record.state.terminal:
            self.metrics.finished.labels(job_record.state.value).inc()
        return Submission(status, body, job_record.id)

    def _replay(self, earlier: IdempotencyEntry, digest: str) -> Submission:
        if earlier.request_hash != digest:
            raise IdempotencyConflictError(earlier.key, earlier.job_id)
        body = earlier.response
        return Submission(AnswerStatus(body["status"]), body, earlier.job_id, replayed=True)

    def _new_record(
        self,
        job: Job,
        tenant: str,
        record: DecisionRecord,
        bypassed: bool,
        now: float,
        retry_of: str | None,
        principal: Principal | None,
    ) -> JobRecord:
        state = STATE_OF_DECISION[record.decision]
        error = None
        if state is JobState.DENIED:
            code = "throttled" if record.decision is Decision.THROTTLE else "policy_denied"
            error = JobError(code=code, message=record.reason)
        return JobRecord(
            id=uuid.uuid4().hex,
            trace_id=uuid.uuid4().hex,
            tenant_id=tenant,
            spec=job,
            state=state,
            **safety_fields(record, job.labels, bypassed),
            error=error,
            retry_of=retry_of,
            **submitter_fields(job, principal),
            created_at=now,
            updated_at=now,
            finished_at=now if state.terminal else None,
            deadline_at=None if job.deadline_ms is None else now + job.deadline_ms / 1000,
        )


def submitter_fields(job: Job, principal: Principal | None) -> dict[str, str | None]:
    """Who submitted: the authenticated key when there is one, else what the job claims."""
    if principal is not None and principal.key_id is not None:
        return {"submitter": principal.name, "submitter_key": principal.key_id}
    # Without auth nobody is authenticated: the job's own claim is all there is.
    return {"submitter": job.principal_id or job.actor_id, "submitter_key": None}


def safety_fields(
    record: DecisionRecord, labels: Mapping[str, str], bypassed: bool
) -> dict[str, Any]:
    """The job fields a decision sets (verdict, rule, snapshot, constraints, remediations).

    Also the labels, with ``safety_bypassed`` when the kernel was skipped (fail open).
    """
    labels = dict(labels)
    if bypassed:
        labels["safety_bypassed"] = "true"
    return {
        "safety_decision": record.decision,
        "safety_reason": record.reason,
        "safety_rule_id": record.rule_id,
        "safety_snapshot": record.policy_snapshot,
        "constraints": record.constraints.to_dict(),
        "remediations": [r.model_dump(mode="json") for r in record.remediations],
        "labels": labels,
    }


def decision_entry(
    job_id: str, gate: Gate, record: DecisionRecord, bypassed: bool, now: float
) -> DecisionEntry:
    """What the store keeps of a decision taken on a job."""
    return DecisionEntry(
        job_id=job_id,
        gate=gate,
        decision=record.decision,
        reason=record.reason,
        rule_id=record.rule_id,
        policy_snapshot=record.policy_snapshot,
        constraints=record.constraints.to_dict(),
        remediations=[r.model_dump(mode="json") for r in record.remediations],
        retry_after_seconds=record.retry_after_seconds,
        safety_bypassed=bypassed,
        at=now,
    )
