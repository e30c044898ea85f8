"""The CAP translation (``cordum.models.cap_packets``): what goes on the wire and back.

Pinned: every packet we build passes the CAP SDK's own strict validation (strict
receivers drop anything else); assignments, results, heartbeats (with the jobs a Cordum
worker holds), cancels and progress survive the round trip; failures map to retryable
or not by CAP status; a packet of the wrong kind or version is refused.
"""

from __future__ import annotations

import time

import pytest
from cap.validate import validate_bus_packet

from cordum.models import cap_packets as cap
from cordum.models.cap_packets import job_pb2

ASSIGNMENT = {
    "job_id": "j-1",
    "trace_id": "t-1",
    "topic": "job.test.echo",
    "tenant_id": "acme",
    "input": {"n": 1},
    "prompt": "say hi",
    "labels": {"env": "prod"},
    "constraints": {"budgets": {"max_retries": 2}},
    "attempt": 2,
    "deadline_at": 123.5,
}


def test_a_job_request_carries_the_whole_assignment() -> None:
    packet = cap.request_packet(ASSIGNMENT, context_ptr="redis://ctx:j-1", sender_id="sched")
    assert validate_bus_packet(packet) == []
    wire = cap.parse(packet.SerializeToString(), "job_request")
    assert wire.job_request.context_ptr == "redis://ctx:j-1"
    assert cap.assignment_of(wire, {"n": 1}) == ASSIGNMENT


def test_results_map_to_success_retryable_and_fatal_failures() -> None:
    ok = cap.result_packet(
        {"job_id": "j-1", "worker_id": "w-1", "succeeded": True}, result_ptr="redis://res:j-1"
    )
    assert validate_bus_packet(ok) == []
    assert cap.result_notice(ok, {"x": 1}) == {
        "job_id": "j-1",
        "worker_id": "w-1",
        "succeeded": True,
        "result": {"x": 1},
    }
    for retryable in (True, False):
        failed = cap.result_packet(
            {
                "job_id": "j-1",
                "worker_id": "w-1",
                "succeeded": False,
                "retryable": retryable,
                "error": {"code": "boom", "message": "it broke"},
            },
            result_ptr="",
        )
        assert validate_bus_packet(failed) == []
        notice = cap.result_notice(failed, None)
        assert (notice["retryable"], notice["error"]) == (
            retryable,
            {"code": "boom", "message": "it broke"},
        )


def test_a_third_party_failure_status_decides_retry() -> None:
    packet = cap.envelope("w-2")
    packet.job_result.CopyFrom(
        job_pb2.JobResult(job_id="j", worker_id="w-2", status=job_pb2.JOB_STATUS_TIMEOUT)
    )
    notice = cap.result_notice(packet, None)
    assert notice["retryable"] is False
    assert notice["error"]["code"] == "timeout"


def test_heartbeats_carry_the_jobs_a_worker_holds() -> None:
    beat = {
        "worker_id": "w-1",
        "pool": "p",
        "active_jobs": 2,
        "max_parallel": 8,
        "topics": ["job.test.*"],
        "labels": {"zone": "a"},
        "job_ids": ["j-1", "j-2"],
    }
    packet = cap.heartbeat_packet(beat)
    assert validate_bus_packet(packet) == []
    notice = cap.heartbeat_notice(packet)
    assert abs(notice.pop("sent_at") - time.time()) < 60  # when the worker made it
    assert notice == beat
    assert cap.heartbeat_notice(cap.heartbeat_packet({**beat, "job_ids": None}))["job_ids"] is None


def test_cancel_and_progress_round_trip() -> None:
    cancel = cap.cancel_packet({"job_id": "j", "worker_id": "w", "reason": "stop"}, "sched")
    assert validate_bus_packet(cancel) == []
    assert cap.cancel_notice(cancel) == {"job_id": "j", "worker_id": "w", "reason": "stop"}
    progress = cap.progress_packet({"job_id": "j", "worker_id": "w", "percent": 140})
    assert validate_bus_packet(progress) == []
    assert cap.progress_notice(progress)["percent"] == 100


def test_a_packet_of_another_kind_or_version_is_refused() -> None:
    packet = cap.submit_packet({"job_id": "j", "topic": "job.x"}, "gw")
    with pytest.raises(cap.PacketError, match="expected a job_result"):
        cap.parse(packet.SerializeToString(), "job_result")
    packet.protocol_version = 2
    with pytest.raises(cap.PacketError, match="version 2"):
        cap.parse(packet.SerializeToString(), "job_request")
    with pytest.raises(cap.PacketError, match="not a CAP BusPacket"):
        cap.parse(b"\xff\xff\xff", "job_request")


@pytest.mark.parametrize(
    ("subject", "kind"),
    [
        ("sys.job.submit", "submit"),
        ("sys.job.result", "job_result"),
        ("job.db.migrate", "job_request"),
        ("worker.w-1.jobs", "job_request"),
        ("sys.job.finished", None),
        ("sys.worker.event", None),
    ],
)
def test_which_subjects_carry_cap_packets(subject: str, kind: str | None) -> None:
    assert cap.kind_of(subject) == kind
