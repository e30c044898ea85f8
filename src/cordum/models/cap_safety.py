"""CAP wire shapes of the Safety Kernel service: jobs and decisions as protobuf, and back.

The gRPC service ``cordum.agent.v1.SafetyKernel`` speaks ``PolicyCheckRequest`` /
``PolicyCheckResponse``. This module is the pure half of the translation (no I/O), shared
by the server (:mod:`cordum.api.kernel_grpc`) and the client
(:mod:`cordum.ports.remote_kernel`).

Two audiences read the same messages:

- **Third-party CAP callers** fill the CAP fields (topic, tenant, principal, labels,
  ``meta``, JSON or text ``input_content``) and read the CAP answer (decision, reason,
  rule id, snapshot, constraints, remediations, approval). CAP has no field for some of
  what a decision carries (``retry_after_seconds``, findings, ``max_output_bytes``,
  ``allowed_destinations``, ``approval_ttl_s``) and cannot tell 0 or false from unset.
- **Cordum clients** must get exactly what the local kernel would return, so they also
  send the whole job as JSON in ``input_content`` (content type
  :data:`JOB_CONTENT_TYPE`) and get the whole answer as JSON in the trailing metadata
  entry :data:`RECORD_KEY`. The trailer is only sent to requests in a Cordum content
  type: a large explanation would overflow a third-party client's metadata limit.

What CAP has no RPC for is selected with request metadata :data:`MODE_KEY` on
``Evaluate``: :data:`MODE_RECHECK` (gate B: velocity rules neither count nor apply) and
:data:`MODE_OUTPUT` (check a result against the output rules; the job, the output and
whether the job failed travel in ``input_content`` as :data:`OUTPUT_CONTENT_TYPE`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

from cap.pb.cordum.agent.v1 import job_pb2 as _job_pb2
from cap.pb.cordum.agent.v1 import safety_pb2 as _safety_pb2

from cordum.models.constraints import Budgets, Constraints, DiffLimits, Sandbox, Toolchain
from cordum.models.decision import (
    Decision,
    DecisionRecord,
    Explanation,
    OutputDecision,
    OutputVerdict,
    Remediation,
)
from cordum.models.job import Job, Priority

# The generated modules create their classes at import time, so a type checker sees none
# of them: they are typed as what they are to it, anything.
job_pb2: Any = _job_pb2
safety_pb2: Any = _safety_pb2
CheckRequest: TypeAlias = Any
"""A ``cordum.agent.v1.PolicyCheckRequest``."""
CheckResponse: TypeAlias = Any
"""A ``cordum.agent.v1.PolicyCheckResponse``."""

SERVICE: Final = "cordum.agent.v1.SafetyKernel"

JOB_CONTENT_TYPE: Final = "application/vnd.cordum.job+json"
"""``input_content`` is a whole :class:`~cordum.models.Job` as JSON."""
FIELDS_CONTENT_TYPE: Final = "application/vnd.cordum.job-fields+json"
"""``input_content`` is a mapping of job fields, decided as the policy decides a mapping
(unvalidated: the kernel's own errors name the bad field). Simulate and Explain only."""
OUTPUT_CONTENT_TYPE: Final = "application/vnd.cordum.job-output+json"
"""``input_content`` is ``{"job": <Job>, "output": <any JSON>, "failed": <bool>}``."""

MODE_KEY: Final = "cordum-mode"
MODE_RECHECK: Final = "recheck"
MODE_OUTPUT: Final = "output"
RECORD_KEY: Final = "cordum-record-bin"
"""Trailing metadata: the DecisionRecord, Explanation or OutputVerdict as JSON."""
INVALID_FIELD_KEY: Final = "cordum-invalid-field-bin"
"""Trailing metadata of an INVALID_ARGUMENT answer: the job field that is wrong."""
AUTHORIZATION_KEY: Final = "authorization"
"""Request metadata ``authorization: Bearer <token>`` when the server requires a token."""

_DECISIONS: Final = {
    Decision.ALLOW: safety_pb2.DECISION_TYPE_ALLOW,
    Decision.DENY: safety_pb2.DECISION_TYPE_DENY,
    Decision.REQUIRE_APPROVAL: safety_pb2.DECISION_TYPE_REQUIRE_HUMAN,
    Decision.THROTTLE: safety_pb2.DECISION_TYPE_THROTTLE,
    Decision.ALLOW_WITH_CONSTRAINTS: safety_pb2.DECISION_TYPE_ALLOW_WITH_CONSTRAINTS,
}
_CAP_DECISIONS: Final = {number: decision for decision, number in _DECISIONS.items()}
_OUTPUT_DECISIONS: Final = {
    OutputDecision.ALLOW: safety_pb2.DECISION_TYPE_ALLOW,
    OutputDecision.QUARANTINE: safety_pb2.DECISION_TYPE_QUARANTINE,
    OutputDecision.REDACT: safety_pb2.DECISION_TYPE_REDACT,
}
_PRIORITIES: Final = {
    Priority.INTERACTIVE: job_pb2.JOB_PRIORITY_INTERACTIVE,
    Priority.BATCH: job_pb2.JOB_PRIORITY_BATCH,
    Priority.CRITICAL: job_pb2.JOB_PRIORITY_CRITICAL,
}
_CAP_PRIORITIES: Final = {number: priority for priority, number in _PRIORITIES.items()}
_ACTOR_TYPES: Final = {"human": job_pb2.ACTOR_TYPE_HUMAN, "service": job_pb2.ACTOR_TYPE_SERVICE}
_CAP_ACTOR_TYPES: Final = {number: name for name, number in _ACTOR_TYPES.items()}


class RequestContentError(ValueError):
    """``input_content`` cannot be read as its content type says."""


# --- requests ------------------------------------------------------------------------------


def request_for_job(job: Job) -> CheckRequest:
    """A request carrying ``job`` twice: as CAP fields, and whole as JSON."""
    request = _cap_fields(job)
    _set_content(request, job.model_dump_json().encode(), JOB_CONTENT_TYPE)
    return request


def request_for_fields(fields: Mapping[str, Any]) -> CheckRequest:
    """A request carrying a mapping of job fields as given (for Simulate and Explain)."""
    request = safety_pb2.PolicyCheckRequest()
    _set_content(request, _json(dict(fields)), FIELDS_CONTENT_TYPE)
    return request


def request_for_output(job: Job, output: Any, *, failed: bool) -> CheckRequest:
    """A request to check ``output`` of ``job`` against the output rules (``output`` mode)."""
    request = _cap_fields(job)
    envelope = {"job": job.model_dump(mode="json"), "output": output, "failed": failed}
    _set_content(request, _json(envelope), OUTPUT_CONTENT_TYPE)
    return request


def output_from_request(request: CheckRequest) -> tuple[Job, Any, bool]:
    """The job, output and failure flag of an ``output`` mode request.

    Raises :class:`RequestContentError`, or pydantic's ``ValidationError`` for a bad job.
    """
    envelope = _content_json(request)
    if not isinstance(envelope, dict) or not isinstance(envelope.get("failed"), bool):
        raise RequestContentError(
            f"{OUTPUT_CONTENT_TYPE} must be an object with `job`, `output` and `failed` (bool)"
        )
    return Job.model_validate(envelope.get("job")), envelope.get("output"), envelope["failed"]


def fields_from_request(request: CheckRequest) -> dict[str, Any]:
    """The job-field mapping of a :data:`FIELDS_CONTENT_TYPE` request."""
    fields = _content_json(request)
    if not isinstance(fields, dict):
        raise RequestContentError(f"{FIELDS_CONTENT_TYPE} must be a JSON object of job fields")
    return fields


def job_from_request(request: CheckRequest) -> Job:
    """The job a request describes: its JSON when in :data:`JOB_CONTENT_TYPE`, else CAP fields.

    From CAP fields: ``tenant``, ``principal_id`` and the actor fall back to ``meta`` and
    ``identity``; ``labels`` are ``meta.labels`` overridden by the request's own; a JSON
    ``input_content`` is the job's context, text content its context as a string (input
    rules must see it). Other content types are refused rather than ignored: input rules
    would silently not scan them. Raises :class:`RequestContentError`, or pydantic's
    ``ValidationError`` for fields a job does not accept.
    """
    if request.input_content_type == JOB_CONTENT_TYPE:
        return Job.model_validate_json(request.input_content)
    meta = request.meta
    identity = request.identity
    fields: dict[str, Any] = {
        "topic": request.topic,
        "tenant_id": request.tenant or meta.tenant_id or identity.tenant_id or None,
        "principal_id": request.principal_id or identity.principal_id or None,
        "actor_id": meta.actor_id or identity.actor_id or None,
        "actor_type": _CAP_ACTOR_TYPES.get(meta.actor_type),
        "capability": meta.capability or None,
        "risk_tags": tuple(meta.risk_tags),
        "requires": tuple(meta.requires),
        "pack_id": meta.pack_id or None,
        "idempotency_key": meta.idempotency_key or None,
        "labels": {**meta.labels, **request.labels},
        "priority": _CAP_PRIORITIES.get(request.priority),
        "deadline_ms": request.budget.deadline_ms or None,
        "context": _cap_context(request),
    }
    return Job.model_validate(fields)


def _cap_fields(job: Job) -> CheckRequest:
    meta = job_pb2.JobMetadata(
        tenant_id=job.tenant_id or "",
        actor_id=job.actor_id or "",
        actor_type=_ACTOR_TYPES.get((job.actor_type or "").strip().lower(), 0),
        idempotency_key=job.idempotency_key or "",
        capability=job.capability or "",
        risk_tags=job.risk_tags,
        requires=job.requires,
        pack_id=job.pack_id or "",
        labels=job.labels,
    )
    request = safety_pb2.PolicyCheckRequest(
        topic=job.topic,
        tenant=job.tenant_id or "",
        principal_id=job.principal_id or "",
        labels=job.labels,
        meta=meta,
    )
    if job.priority is not None:
        request.priority = _PRIORITIES[job.priority]
    if job.deadline_ms is not None:
        request.budget.deadline_ms = job.deadline_ms
    return request


def _set_content(request: CheckRequest, content: bytes, kind: str) -> None:
    request.input_content = content
    request.input_content_type = kind
    request.input_size_bytes = len(content)


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _content_json(request: CheckRequest) -> Any:
    try:
        return json.loads(request.input_content)
    except ValueError as exc:
        raise RequestContentError(
            f"input_content is not the JSON its content type"
            f" {request.input_content_type!r} says: {exc}"
        ) from None


def _cap_context(request: CheckRequest) -> Any:
    if not request.input_content:
        return None
    kind = request.input_content_type.split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        return _content_json(request)
    if kind.startswith("text/"):
        try:
            return request.input_content.decode()
        except UnicodeDecodeError:
            raise RequestContentError("text input_content must be UTF-8") from None
    raise RequestContentError(
        f"input_content_type {request.input_content_type!r} is not understood: send"
        " application/json (or another +json type) or text/*, so input rules can scan it"
    )


# --- responses -----------------------------------------------------------------------------


def response_for_record(record: DecisionRecord) -> CheckResponse:
    """A decision as CAP fields."""
    return safety_pb2.PolicyCheckResponse(
        decision=_DECISIONS[record.decision],
        reason=record.reason,
        policy_snapshot=record.policy_snapshot,
        rule_id=record.rule_id or "",
        constraints=_cap_constraints(record.constraints),
        approval_required=record.approval_required,
        approval_ref=record.approval_ref or "",
        remediations=[_cap_remediation(item) for item in record.remediations],
    )


def response_for_verdict(verdict: OutputVerdict, snapshot: str) -> CheckResponse:
    """An output verdict as CAP fields (QUARANTINE and REDACT have decision types of their own)."""
    return safety_pb2.PolicyCheckResponse(
        decision=_OUTPUT_DECISIONS[verdict.decision],
        reason=verdict.reason,
        policy_snapshot=snapshot,
        rule_id=verdict.rule_id or "",
    )


def record_from_response(response: CheckResponse) -> DecisionRecord:
    """The decision a CAP answer carries, for a kernel that sends no :data:`RECORD_KEY`.

    Raises ValueError when the answer is not a decision (unspecified, or an output type).
    """
    decision = _CAP_DECISIONS.get(response.decision)
    if decision is None:
        name = safety_pb2.DecisionType.Name(response.decision)
        raise ValueError(f"the kernel answered {name}, which is not a job decision")
    return DecisionRecord(
        decision=decision,
        reason=response.reason,
        rule_id=response.rule_id or None,
        policy_snapshot=response.policy_snapshot,
        constraints=_constraints(response.constraints),
        remediations=tuple(_remediation(item) for item in response.remediations),
        approval_required=response.approval_required,
        approval_ref=response.approval_ref or None,
    )


def record_json(answer: DecisionRecord | Explanation | OutputVerdict) -> bytes:
    """The whole answer for :data:`RECORD_KEY`.

    An ALLOW verdict leaves ``output`` out: it is always the output the caller sent
    (the output rules return it untouched), which the client puts back.
    """
    if isinstance(answer, OutputVerdict) and answer.decision is OutputDecision.ALLOW:
        return answer.model_dump_json(exclude={"output"}).encode()
    return answer.model_dump_json().encode()


def _cap_constraints(constraints: Constraints) -> Any:
    cap = safety_pb2.PolicyConstraints(redaction_level=constraints.redaction_level or "")
    if (budgets := constraints.budgets) is not None:
        cap.budgets.CopyFrom(
            safety_pb2.BudgetConstraints(
                max_runtime_ms=budgets.max_runtime_ms or 0,
                max_retries=budgets.max_retries or 0,
                max_artifact_bytes=budgets.max_artifact_bytes or 0,
                max_concurrent_jobs=budgets.max_concurrent_jobs or 0,
            )
        )
    if (sandbox := constraints.sandbox) is not None:
        cap.sandbox.CopyFrom(
            safety_pb2.SandboxProfile(
                isolated=bool(sandbox.isolated),
                network_allowlist=sandbox.network_allowlist,
                fs_read_only=sandbox.fs_read_only,
                fs_read_write=sandbox.fs_read_write,
            )
        )
    if (toolchain := constraints.toolchain) is not None:
        cap.toolchain.CopyFrom(
            safety_pb2.ToolchainConstraints(
                allowed_tools=toolchain.allowed_tools, allowed_commands=toolchain.allowed_commands
            )
        )
    if (diff := constraints.diff) is not None:
        cap.diff.CopyFrom(
            safety_pb2.DiffConstraints(
                max_files=diff.max_files or 0,
                max_lines=diff.max_lines or 0,
                deny_path_globs=diff.deny_path_globs,
            )
        )
    return cap


def _constraints(cap: Any) -> Constraints:
    budgets = sandbox = toolchain = diff = None
    if cap.HasField("budgets"):
        b = cap.budgets
        budgets = Budgets(
            max_runtime_ms=b.max_runtime_ms or None,
            max_retries=b.max_retries or None,
            max_artifact_bytes=b.max_artifact_bytes or None,
            max_concurrent_jobs=b.max_concurrent_jobs or None,
        )
    if cap.HasField("sandbox"):
        s = cap.sandbox
        sandbox = Sandbox(
            isolated=s.isolated or None,
            network_allowlist=tuple(s.network_allowlist),
            fs_read_only=tuple(s.fs_read_only),
            fs_read_write=tuple(s.fs_read_write),
        )
    if cap.HasField("toolchain"):
        t = cap.toolchain
        toolchain = Toolchain(
            allowed_tools=tuple(t.allowed_tools), allowed_commands=tuple(t.allowed_commands)
        )
    if cap.HasField("diff"):
        d = cap.diff
        diff = DiffLimits(
            max_files=d.max_files or None,
            max_lines=d.max_lines or None,
            deny_path_globs=tuple(d.deny_path_globs),
        )
    return Constraints(
        budgets=budgets,
        sandbox=sandbox,
        toolchain=toolchain,
        diff=diff,
        redaction_level=cap.redaction_level or None,
    )


def _cap_remediation(item: Remediation) -> Any:
    return safety_pb2.PolicyRemediation(
        id=item.id,
        title=item.title,
        summary=item.summary,
        replacement_topic=item.replacement_topic or "",
        replacement_capability=item.replacement_capability or "",
        add_labels=dict(item.add_labels),
        remove_labels=item.remove_labels,
    )


def _remediation(cap: Any) -> Remediation:
    return Remediation(
        id=cap.id,
        title=cap.title,
        summary=cap.summary,
        replacement_topic=cap.replacement_topic or None,
        replacement_capability=cap.replacement_capability or None,
        add_labels=dict(cap.add_labels),
        remove_labels=tuple(cap.remove_labels),
    )
