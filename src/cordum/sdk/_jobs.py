"""The job API as I/O-free pieces, so the sync and async clients cannot drift apart.

Each builder returns a :class:`Call`; the clients only perform it. Submission answers and
finished jobs are turned into return values or policy errors here, once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from cordum.sdk._wire import Call, decode, envelope, error_for, path
from cordum.sdk.errors import (
    ApprovalRequired,
    JobCancelled,
    JobFailed,
    JobTimedOut,
    OutputQuarantined,
    PolicyDenied,
    Throttled,
)

MAX_WAIT_S = 30.0
"""The longest single ``?wait=`` the server honours; longer waits loop."""

TERMINAL_STATES = frozenset(
    {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "DENIED", "OUTPUT_QUARANTINED"}
)


def _retry_after_header(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


def parse_submission(response: httpx.Response) -> dict[str, Any]:
    """The answer of an accepted submission; every other answer raises.

    ``approval_required`` raises :class:`ApprovalRequired` even though it is a 200: the
    action has not run, and an agent must not mistake the answer for success.
    """
    body = envelope(response) or {}
    rejection, code = body.get("rejection"), body.get("code")
    if isinstance(rejection, dict) and response.status_code == 403 and code == "policy_denied":
        raise PolicyDenied(rejection)
    if isinstance(rejection, dict) and response.status_code == 429 and code == "throttled":
        hinted = rejection.get("retry_after")
        if isinstance(hinted, int | float):
            raise Throttled(rejection, float(hinted))
        raise Throttled(rejection, _retry_after_header(response))
    answer = decode(response)
    if not isinstance(answer, dict):
        raise error_for(response)
    if answer.get("status") == "approval_required":
        raise ApprovalRequired(answer)
    return answer


def submit_call(
    topic: str,
    input: Any,
    *,
    risk_tags: Iterable[str],
    labels: Mapping[str, str] | None,
    capability: str | None,
    requires: Iterable[str],
    idempotency_key: str | None,
    actor_id: str | None,
    actor_type: str | None,
    pack_id: str | None,
    priority: str | None,
    prompt: str | None,
    deadline_ms: int | None,
) -> Call:
    """``POST /jobs`` with only the fields that were given."""
    body: dict[str, Any] = {"topic": topic}
    optional: dict[str, Any] = {
        "context": input,
        "labels": dict(labels) if labels else None,
        "capability": capability,
        "idempotency_key": idempotency_key,
        "actor_id": actor_id,
        "actor_type": actor_type,
        "pack_id": pack_id,
        "priority": priority,
        "prompt": prompt,
        "deadline_ms": deadline_ms,
        "risk_tags": list(risk_tags) or None,
        "requires": list(requires) or None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return Call("POST", path("jobs"), json=body, parse=parse_submission)


def get_job_call(job_id: str, wait_s: float = 0.0) -> Call:
    """``GET /jobs/{id}``, held by the server up to ``wait_s`` for a terminal state."""
    params = {"wait": round(wait_s, 3)} if wait_s > 0 else None
    return Call("GET", path("jobs", job_id), params=params, hold_s=wait_s)


def list_jobs_call(state: str | None, topic: str | None, limit: int, cursor: str | None) -> Call:
    """``GET /jobs`` with the filters that were given."""
    given: dict[str, str | int | None] = {
        "state": state,
        "topic": topic,
        "limit": limit,
        "cursor": cursor,
    }
    params = {k: v for k, v in given.items() if v is not None}
    return Call("GET", path("jobs"), params=params)


def _decisions(response: httpx.Response) -> list[dict[str, Any]]:
    body = decode(response)
    decisions: list[dict[str, Any]] = body.get("decisions", []) if isinstance(body, dict) else []
    return decisions


def decisions_call(job_id: str) -> Call:
    """``GET /jobs/{id}/decisions``, answered as the list of decisions."""
    return Call("GET", path("jobs", job_id, "decisions"), parse=_decisions)


def cancel_call(job_id: str) -> Call:
    """``POST /jobs/{id}/cancel``."""
    return Call("POST", path("jobs", job_id, "cancel"), json={})


def resolve_call(
    job_id: str, verb: str, reason: str, note: str, job_hash: str | None = None
) -> Call:
    """``POST /approvals/{id}/approve`` or ``.../reject``; ``job_hash`` binds the answer
    to the request that was reviewed."""
    body: dict[str, str] = {"reason": reason, "note": note}
    if job_hash is not None:
        body["job_hash"] = job_hash
    return Call("POST", path("approvals", job_id, verb), json=body)


def approval_call(job_id: str) -> Call:
    """``GET /approvals/{id}``: the approval and the job it is about."""
    return Call("GET", path("approvals", job_id))


def remediate_call(job_id: str, remediation_id: str) -> Call:
    """``POST /jobs/{id}/remediate``; answered like a submission."""
    body = {"remediation_id": remediation_id}
    return Call("POST", path("jobs", job_id, "remediate"), json=body, parse=parse_submission)


def policy_call(kind: str, job: Mapping[str, Any]) -> Call:
    """``POST /policy/{evaluate|simulate|explain}``."""
    return Call("POST", path("policy", kind), json=dict(job))


def _error(job: Mapping[str, Any]) -> Mapping[str, Any]:
    error = job.get("error")
    return error if isinstance(error, Mapping) else {}


def _denial(job: Mapping[str, Any]) -> PolicyDenied:
    error = _error(job)
    rejected = error.get("code") == "approval_rejected"
    reason = job.get("safety_reason")
    if rejected:
        reason = f"a human rejected the approval: {error.get('message') or 'no reason given'}"
    return PolicyDenied(
        {
            "decision": "DENY" if rejected else job.get("safety_decision"),
            "reason": reason,
            "rule_id": job.get("safety_rule_id"),
            "policy_snapshot": job.get("safety_snapshot"),
            "remediations": job.get("remediations") or [],
            "job_id": job.get("job_id"),
            "trace_id": job.get("trace_id"),
        }
    )


def _quarantine(job: Mapping[str, Any]) -> OutputQuarantined:
    error = _error(job)
    return OutputQuarantined(
        {
            "reason": error.get("message") or "output policy quarantined the result",
            "policy_snapshot": job.get("safety_snapshot"),
            "job_id": job.get("job_id"),
            "trace_id": job.get("trace_id"),
        }
    )


def settle(job: Mapping[str, Any]) -> Any:
    """The result of a terminal job, or the error that says why there is none."""
    state = job.get("state")
    if state == "SUCCEEDED":
        return job.get("result")
    if state == "FAILED":
        raise JobFailed(job)
    if state == "CANCELLED":
        raise JobCancelled(job)
    if state == "TIMEOUT":
        raise JobTimedOut(job)
    if state == "DENIED":
        raise _denial(job)
    raise _quarantine(job)


class Deadline:
    """How long each ``?wait=`` round of a client-side wait may last."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self._end = None if timeout is None else time.monotonic() + timeout
        self._rounds = 0

    def next_wait(self) -> float | None:
        """Seconds for the next round, or None when the wait is over (one round always runs)."""
        self._rounds += 1
        if self._end is None:
            return MAX_WAIT_S
        remaining = self._end - time.monotonic()
        if remaining <= 0 and self._rounds > 1:
            return None
        return min(MAX_WAIT_S, max(0.0, remaining))
