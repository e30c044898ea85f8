"""CAP wire shapes: the services' bus payloads as protobuf ``BusPacket`` s and back.

The services exchange plain dicts (see :mod:`cordum.services.subjects`); on NATS, CAP
subjects carry ``cordum.agent.v1.BusPacket`` (reference section 6) so that workers built
with any CAP SDK understand them. This module is the pure half of that translation: no
I/O. Job input and output do not travel in the packet: they are JSON blobs at Redis keys
``ctx:<job_id>`` / ``res:<job_id>``, referenced by ``context_ptr`` / ``result_ptr``; the
codec that does the Redis reads and writes lives with the NATS adapter, and the SDK's
NATS worker does its own.

What CAP has no field for (our trace id, prompt, constraints, attempt, deadline) rides in
the request's ``env`` under :data:`ASSIGNMENT_ENV`, which third-party workers ignore.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Final

from cap.pb.cordum.agent.v1 import buspacket_pb2, handshake_pb2, heartbeat_pb2, job_pb2

PROTOCOL_VERSION: Final = 1
POINTER_SCHEME: Final = "redis://"
ASSIGNMENT_ENV: Final = "cordum.assignment"
"""The ``env`` entry carrying what a Cordum worker needs beyond CAP's fields (JSON)."""
HELD_JOBS_LABEL: Final = "cordum.held_jobs"
"""The heartbeat label listing (comma-separated) the jobs a Cordum worker holds, so the
scheduler can re-drive a job claimed for it whose claim answer was lost."""

SUBMIT: Final = "sys.job.submit"
RESULT: Final = "sys.job.result"
HEARTBEAT: Final = "sys.heartbeat"
HANDSHAKE: Final = "sys.handshake"
CANCEL: Final = "sys.job.cancel"
PROGRESS: Final = "sys.job.progress"


class PacketError(ValueError):
    """A payload is not a well-formed CAP packet of the kind its subject carries."""


def context_key(job_id: str) -> str:
    """The Redis key holding a job's input."""
    return f"ctx:{job_id}"


def result_key(job_id: str) -> str:
    """The Redis key a worker writes a job's output to."""
    return f"res:{job_id}"


def pointer(key: str) -> str:
    """``redis://<key>``: how CAP packets point at a blob."""
    return POINTER_SCHEME + key


def key_of(ptr: str) -> str | None:
    """The Redis key a ``redis://`` pointer names; None for other (or empty) pointers."""
    if ptr.startswith(POINTER_SCHEME) and len(ptr) > len(POINTER_SCHEME):
        return ptr[len(POINTER_SCHEME) :]
    return None


_FIXED_KINDS: Final = {
    SUBMIT: "submit",
    RESULT: "job_result",
    HEARTBEAT: "heartbeat",
    HANDSHAKE: "handshake",
    CANCEL: "job_cancel",
    PROGRESS: "job_progress",
}


def kind_of(subject: str) -> str | None:
    """Which CAP payload ``subject`` carries, or None for subjects CAP does not define.

    ``job.<topic>`` (pool dispatch) and ``worker.<id>.jobs`` (direct dispatch) carry job
    requests; the fixed ``sys.*`` subjects carry their own payloads.
    """
    if subject in _FIXED_KINDS:
        return _FIXED_KINDS[subject]
    tokens = subject.split(".")
    if tokens[0] == "job" and len(tokens) > 1:
        return "job_request"
    if len(tokens) == 3 and tokens[0] == "worker" and tokens[2] == "jobs":
        return "job_request"
    return None


def envelope(sender_id: str, trace_id: str | None = None) -> buspacket_pb2.BusPacket:
    """A packet with the envelope strict CAP receivers require (reference section 6)."""
    packet = buspacket_pb2.BusPacket(
        trace_id=trace_id or secrets.token_hex(16),
        sender_id=sender_id,
        protocol_version=PROTOCOL_VERSION,
    )
    packet.created_at.GetCurrentTime()
    return packet


def parse(payload: bytes, expected: str) -> buspacket_pb2.BusPacket:
    """Parse ``payload`` as a v1 packet whose payload is ``expected``."""
    packet = buspacket_pb2.BusPacket()
    try:
        packet.ParseFromString(payload)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise PacketError(f"not a CAP BusPacket: {exc}") from None
    if packet.protocol_version != PROTOCOL_VERSION:
        raise PacketError(f"CAP protocol version {packet.protocol_version} is not supported")
    carried = packet.WhichOneof("payload")
    if carried != expected:
        raise PacketError(f"expected a {expected} packet, got {carried or 'an empty one'}")
    return packet


# --- sys.job.submit: "this job is PENDING, schedule it" ------------------------------------


def submit_packet(notice: dict[str, Any], sender_id: str) -> buspacket_pb2.BusPacket:
    """A scheduling notice as a job request without input (gate A already ran)."""
    packet = envelope(sender_id)
    packet.job_request.CopyFrom(
        job_pb2.JobRequest(job_id=notice["job_id"], topic=notice.get("topic") or "unknown")
    )
    return packet


def submit_notice(packet: buspacket_pb2.BusPacket) -> dict[str, Any]:
    """The scheduling notice a submit packet stands for."""
    request = packet.job_request
    return {"job_id": request.job_id, "topic": request.topic, "sender_id": packet.sender_id}


# --- job.<topic> / worker.<id>.jobs: a dispatched job --------------------------------------


def request_packet(
    assignment: dict[str, Any], *, context_ptr: str, sender_id: str
) -> buspacket_pb2.BusPacket:
    """A job assignment (``JobAssignment`` as JSON) as a CAP job request."""
    extra = {
        name: assignment.get(name)
        for name in ("trace_id", "prompt", "constraints", "attempt", "deadline_at")
    }
    request = job_pb2.JobRequest(
        job_id=assignment["job_id"],
        topic=assignment["topic"],
        tenant_id=assignment.get("tenant_id") or "",
        context_ptr=context_ptr,
        labels={str(k): str(v) for k, v in (assignment.get("labels") or {}).items()},
        env={ASSIGNMENT_ENV: json.dumps(extra, separators=(",", ":"))},
    )
    request.dispatch.attempt = int(assignment.get("attempt") or 1)
    request.dispatch.assigned_worker_id = assignment.get("worker_id") or ""
    packet = envelope(sender_id, assignment.get("trace_id"))
    packet.job_request.CopyFrom(request)
    return packet


def assignment_of(packet: buspacket_pb2.BusPacket, job_input: Any) -> dict[str, Any]:
    """A job request (and its input, read from ``context_ptr``) as an assignment dict.

    Requests from other CAP components, without our ``env`` entry, get defaults.
    """
    request = packet.job_request
    try:
        extra = json.loads(request.env.get(ASSIGNMENT_ENV, "{}"))
    except ValueError:
        raise PacketError(f"{ASSIGNMENT_ENV} of job {request.job_id} is not JSON") from None
    if not isinstance(extra, dict):
        raise PacketError(f"{ASSIGNMENT_ENV} of job {request.job_id} is not an object")
    return {
        "job_id": request.job_id,
        "trace_id": extra.get("trace_id") or packet.trace_id,
        "topic": request.topic,
        "tenant_id": request.tenant_id or "default",
        "input": job_input,
        "prompt": extra.get("prompt"),
        "labels": dict(request.labels),
        "constraints": extra.get("constraints") or {},
        "attempt": extra.get("attempt") or request.dispatch.attempt or 1,
        "deadline_at": extra.get("deadline_at"),
    }


# --- sys.job.result -------------------------------------------------------------------------

_FAILED_STATUSES = {
    job_pb2.JOB_STATUS_FAILED: ("failed", True),
    job_pb2.JOB_STATUS_FAILED_RETRYABLE: ("failed", True),
    job_pb2.JOB_STATUS_FAILED_FATAL: ("failed_fatal", False),
    job_pb2.JOB_STATUS_CANCELLED: ("cancelled", False),
    job_pb2.JOB_STATUS_TIMEOUT: ("timeout", False),
    job_pb2.JOB_STATUS_DENIED: ("denied", False),
}


def result_packet(result: dict[str, Any], *, result_ptr: str) -> buspacket_pb2.BusPacket:
    """A worker's result notice as a CAP job result (sender = the worker, as CAP requires)."""
    worker_id = result["worker_id"]
    message = job_pb2.JobResult(job_id=result["job_id"], worker_id=worker_id)
    if result.get("succeeded"):
        message.status = job_pb2.JOB_STATUS_SUCCEEDED
        message.result_ptr = result_ptr
    else:
        error = result.get("error") or {}
        retryable = result.get("retryable", True)
        message.status = (
            job_pb2.JOB_STATUS_FAILED_RETRYABLE if retryable else job_pb2.JOB_STATUS_FAILED_FATAL
        )
        message.error_code = str(error.get("code") or "failed")
        message.error_message = str(error.get("message") or "failed")
    packet = envelope(worker_id, result.get("trace_id"))
    packet.job_result.CopyFrom(message)
    return packet


def result_notice(packet: buspacket_pb2.BusPacket, output: Any) -> dict[str, Any]:
    """A CAP job result (with its output, read from ``result_ptr``) as a result notice."""
    result = packet.job_result
    notice: dict[str, Any] = {"job_id": result.job_id, "worker_id": result.worker_id}
    if result.status == job_pb2.JOB_STATUS_SUCCEEDED:
        return {**notice, "succeeded": True, "result": output}
    code, retryable = _FAILED_STATUSES.get(result.status, ("failed", True))
    if result.error_code:
        code = result.error_code
    elif result.error_code_enum:
        code = job_pb2.ErrorCode.Name(result.error_code_enum).removeprefix("ERROR_CODE_").lower()
    error = {"code": code, "message": result.error_message or code.replace("_", " ")}
    return {**notice, "succeeded": False, "retryable": retryable, "error": error}


# --- sys.heartbeat / sys.handshake: workers announcing themselves --------------------------


def heartbeat_packet(beat: dict[str, Any]) -> buspacket_pb2.BusPacket:
    """A worker's heartbeat notice as a CAP heartbeat (``job_ids``, when given, in a label)."""
    labels = {str(k): str(v) for k, v in (beat.get("labels") or {}).items()}
    if beat.get("job_ids") is not None:
        labels[HELD_JOBS_LABEL] = ",".join(beat["job_ids"])
    packet = envelope(beat["worker_id"], beat["worker_id"])
    packet.heartbeat.CopyFrom(
        heartbeat_pb2.Heartbeat(
            worker_id=beat["worker_id"],
            pool=beat.get("pool") or "",
            active_jobs=int(beat.get("active_jobs") or 0),
            max_parallel_jobs=int(beat.get("max_parallel") or 1),
            capabilities=list(beat.get("topics") or ()),
            labels=labels,
        )
    )
    return packet


def heartbeat_notice(packet: buspacket_pb2.BusPacket) -> dict[str, Any]:
    """A CAP heartbeat as a heartbeat notice."""
    beat = packet.heartbeat
    labels = dict(beat.labels)
    held = labels.pop(HELD_JOBS_LABEL, None)
    return {
        "worker_id": beat.worker_id or packet.sender_id,
        "pool": beat.pool,
        "active_jobs": beat.active_jobs,
        "max_parallel": beat.max_parallel_jobs or 1,
        "topics": list(beat.capabilities),
        "labels": labels,
        "job_ids": None if held is None else [j for j in held.split(",") if j],
        "sent_at": packet.created_at.ToNanoseconds() / 1e9
        if packet.HasField("created_at")
        else None,
    }


def handshake_packet(hello: dict[str, Any]) -> buspacket_pb2.BusPacket:
    """A component's hello as a CAP handshake (topics it is ready to serve)."""
    topics = list(hello.get("topics") or ())
    packet = envelope(hello["worker_id"])
    packet.handshake.CopyFrom(
        handshake_pb2.Handshake(
            component_id=hello["worker_id"],
            role=handshake_pb2.COMPONENT_ROLE_WORKER,
            supported_versions=[PROTOCOL_VERSION],
            capabilities=dict.fromkeys(topics, True),
            ready_topics=topics,
            sdk_version=hello.get("sdk_version") or "cordum-python",
        )
    )
    return packet


def handshake_notice(packet: buspacket_pb2.BusPacket) -> dict[str, Any]:
    """A CAP handshake as a hello notice."""
    hello = packet.handshake
    topics = list(hello.ready_topics) or sorted(k for k, v in hello.capabilities.items() if v)
    return {
        "worker_id": hello.component_id or packet.sender_id,
        "topics": topics,
        "role": handshake_pb2.ComponentRole.Name(hello.role)
        .removeprefix("COMPONENT_ROLE_")
        .lower(),
    }


# --- sys.job.cancel / sys.job.progress -------------------------------------------------------


def cancel_packet(note: dict[str, Any], sender_id: str) -> buspacket_pb2.BusPacket:
    """A stop order for a job's worker as a CAP job cancel."""
    packet = envelope(sender_id)
    message = job_pb2.JobCancel(
        job_id=note["job_id"],
        reason=note.get("reason") or "cancelled",
        requested_by=sender_id,
    )
    message.dispatch.assigned_worker_id = note.get("worker_id") or ""
    packet.job_cancel.CopyFrom(message)
    return packet


def cancel_notice(packet: buspacket_pb2.BusPacket) -> dict[str, Any]:
    """A CAP job cancel as a stop order."""
    cancel = packet.job_cancel
    return {
        "job_id": cancel.job_id,
        "worker_id": cancel.dispatch.assigned_worker_id or None,
        "reason": cancel.reason,
    }


def progress_packet(report: dict[str, Any]) -> buspacket_pb2.BusPacket:
    """A worker's progress report as CAP job progress."""
    packet = envelope(report["worker_id"])
    message = job_pb2.JobProgress(
        job_id=report["job_id"],
        percent=max(0, min(100, int(report.get("percent") or 0))),
        message=str(report.get("message") or ""),
        status=job_pb2.JOB_STATUS_RUNNING,
    )
    message.dispatch.assigned_worker_id = report["worker_id"]
    packet.job_progress.CopyFrom(message)
    return packet


def progress_notice(packet: buspacket_pb2.BusPacket) -> dict[str, Any]:
    """CAP job progress as a progress report."""
    progress = packet.job_progress
    return {
        "job_id": progress.job_id,
        "worker_id": progress.dispatch.assigned_worker_id or packet.sender_id,
        "percent": progress.percent,
        "message": progress.message,
    }
