"""The Safety Kernel over gRPC: the server (api/kernel_grpc) and RemoteKernel (ports).

Pinned:
- cap's generated modules resolve their ``cordum.agent.v1`` imports to themselves;
- every decision type comes back from the remote kernel exactly as the local kernel gives
  it (constraints, remediations, findings, retry_after), and so do explanations with
  their trace (a long one too, past gRPC's default metadata limit) and output verdicts;
- velocity counts on evaluate, not on recheck (where it does not apply either) nor on
  simulate; simulate and explain take a mapping of job fields as given;
- a third-party caller with only CAP fields gets a CAP answer (REQUIRE_HUMAN for an
  approval, constraints, remediations) and no Cordum trailer; text input is scanned;
- a malformed job is InvalidJobError (with the local kernel's message), through the
  safety client too, without counting as a kernel failure; a request out of place is
  INVALID_ARGUMENT; a kernel failure is INTERNAL without its details;
- a missing or wrong token is refused; ListSnapshots answers the active snapshot first;
- a stopped server: fail mode closed raises SafetyUnavailableError and the breaker opens
  after 3 failures; fail mode open passes the job as bypassed; a slow server times out
  (by the RPC deadline, or by the safety client's own timeout) and is unavailable.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from tests.policy.helpers import FakeClock

from cordum.api.kernel_grpc import KernelServer
from cordum.models import (
    Constraints,
    Decision,
    DecisionRecord,
    Job,
    OutputDecision,
    OutputVerdict,
)
from cordum.models import cap_safety as wire
from cordum.models.cap_safety import job_pb2, safety_pb2
from cordum.policy import InMemoryVelocityStore, InvalidJobError, Policy, load_text
from cordum.ports.remote_kernel import RemoteKernel, RemoteKernelError
from cordum.services.breaker import BreakerState, CircuitBreaker
from cordum.services.kernel import LocalKernel, PolicyHolder
from cordum.services.metrics import Metrics
from cordum.services.safety import FailMode, SafetyClient, SafetyUnavailableError

pytestmark = pytest.mark.anyio

TOKEN = "kernel-test-token"

POLICY = textwrap.dedent(
    """\
    version: "remote-1"
    default_decision: deny
    rules:
      - id: burst
        match: {topics: ["job.burst.*"]}
        decision: throttle
        reason: too many bursts
        velocity: {max_requests: 2, window_seconds: 60, key: tenant}
      - id: burst-ok
        match: {topics: ["job.burst.*"]}
        decision: allow
        reason: bursts are fine below the rate
      - id: no-delete
        match: {topics: ["job.db.delete"]}
        decision: deny
        reason: never delete
        remediations:
          - id: archive
            title: Archive instead
            summary: reversible
            replacement_topic: job.db.archive
            replacement_capability: archive
            add_labels: {mode: archive}
            remove_labels: [force]
      - id: prod-approval
        match: {topics: ["job.k8s.*"], risk_tags: [prod]}
        decision: require_approval
        reason: prod needs a human
        constraints: {approval_ttl_s: 600}
      - id: bounded
        match: {topics: ["job.k8s.*", "job.db.*"]}
        decision: allow_with_constraints
        reason: bounded
        constraints:
          budgets: {max_runtime_ms: 60000, max_retries: 0, max_artifact_bytes: 1024,
                    max_concurrent_jobs: 5}
          sandbox: {isolated: true, network_allowlist: [api.github.com],
                    fs_read_only: [/data], fs_read_write: [/tmp]}
          toolchain: {allowed_tools: [git], allowed_commands: [git status]}
          diff: {max_files: 50, max_lines: 2000, deny_path_globs: [".github/*"]}
          redaction_level: standard
          max_output_bytes: 4096
          allowed_destinations: ["#deploys"]
      - id: reads
        match: {topics: ["job.read.*"]}
        decision: allow
        reason: reads are harmless
    input_rules:
      - id: no-secrets
        match: {topics: ["*"], scanners: [secret]}
        decision: deny
        reason: pass a secret:// reference instead
    output_rules:
      - id: quarantine-pii
        match: {topics: ["job.db.*"], scanners: [pii]}
        decision: quarantine
        reason: personal data
      - id: redact-secrets
        match: {topics: ["*"], scanners: [secret]}
        decision: redact
      - id: failed-runs
        match: {has_error: true}
        decision: quarantine
    """
)
SECRET = "ghp_" + "z" * 36

JOBS = {
    "allow": Job(topic="job.read.file", tenant_id="acme"),
    "deny with remediations": Job(topic="job.db.delete", tenant_id="acme"),
    "require approval": Job(topic="job.k8s.scale", tenant_id="acme", risk_tags=("prod",)),
    "allow with constraints": Job(
        topic="job.db.query",
        tenant="acme",
        capability="sql",
        requires=("db",),
        labels={"env": "staging", "replicas": 3},
        context={"sql": "select 1", "limits": [1, 2.5, None, True]},
        prompt="count rows",
        actor_id="agent-7",
        actor_type="service",
        pack_id="dbpack",
        principal_id="p-1",
        idempotency_key="k-1",
        priority="batch",
        deadline_ms=30_000,
    ),
    "input rule escalation": Job(topic="job.db.query", context={"env": {"GH": SECRET}}),
    "default decision": Job(topic="job.unknown.thing"),
}


def build_policy(text: str = POLICY) -> Policy:
    """A policy with its own counters on a frozen clock (retry_after is then exact)."""
    return load_text(text, velocity_store=InMemoryVelocityStore(clock=FakeClock()))


@dataclass
class Served:
    """A kernel server in this process, a client for it, and a local twin to compare with."""

    server: KernelServer
    remote: RemoteKernel
    local: LocalKernel

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    kernel = LocalKernel(PolicyHolder(build_policy()))
    async with (
        KernelServer(kernel, token=TOKEN) as server,
        RemoteKernel(f"127.0.0.1:{server.port}", token=TOKEN, timeout=5) as remote,
    ):
        yield Served(server, remote, LocalKernel(PolicyHolder(build_policy())))


def safety_client(kernel: Any, fail_mode: FailMode, timeout: float = 2.0) -> SafetyClient:
    return SafetyClient(
        kernel,
        gate="gate_a",
        fail_mode=fail_mode,
        timeout=timeout,
        breaker=CircuitBreaker(open_seconds=30),
        metrics=Metrics(),
    )


async def raw_call(
    target: str, method: str, request: Any, metadata: Sequence[tuple[str, str]] = ()
) -> tuple[Any, dict[str, Any]]:
    """A call as a third-party CAP client makes it: the bare protobuf service."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(
            f"/{wire.SERVICE}/{method}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=safety_pb2.PolicyCheckResponse.FromString,
        )(request, timeout=5, metadata=(("authorization", f"Bearer {TOKEN}"), *metadata))
        response = await call
        return response, dict(await call.trailing_metadata())


# --- fidelity -------------------------------------------------------------------------------


def test_the_sdk_protobuf_modules_load_once() -> None:
    """cap's generated modules import ``cordum.agent.v1``: that must be cap's, not a copy."""
    from cap.pb.cordum.agent.v1 import job_pb2 as sdk_job_pb2

    import cordum.agent.v1

    assert cordum.agent.v1.job_pb2 is sdk_job_pb2 is job_pb2
    with pytest.raises(AttributeError):
        _ = cordum.agent.v1.anything_else


@pytest.mark.parametrize("name", list(JOBS))
async def test_every_decision_round_trips_exactly(served: Served, name: str) -> None:
    job = JOBS[name]
    for ask in ("evaluate", "recheck", "simulate"):
        remote: DecisionRecord = await getattr(served.remote, ask)(job)
        local: DecisionRecord = await getattr(served.local, ask)(job)
        assert remote == local, ask
        assert remote.to_dict() == local.to_dict()
    assert served.remote.snapshot_id() == served.local.snapshot_id()


async def test_the_decisions_are_the_expected_ones(served: Served) -> None:
    """The fixtures above really cover every decision type and record field."""
    records = {name: await served.remote.evaluate(job) for name, job in JOBS.items()}
    assert {name: record.decision for name, record in records.items()} == {
        "allow": Decision.ALLOW,
        "deny with remediations": Decision.DENY,
        "require approval": Decision.REQUIRE_APPROVAL,
        "allow with constraints": Decision.ALLOW_WITH_CONSTRAINTS,
        "input rule escalation": Decision.DENY,
        "default decision": Decision.DENY,
    }
    assert records["deny with remediations"].remediations[0].add_labels == {"mode": "archive"}
    assert records["require approval"].approval_required
    assert records["allow with constraints"].constraints.to_dict()["budgets"]["max_retries"] == 0
    assert records["input rule escalation"].findings
    assert records["default decision"].rule_id is None


async def test_velocity_counts_on_evaluate_only(served: Served) -> None:
    job = Job(topic="job.burst.send", tenant_id="acme")
    answers: list[tuple[str, Decision]] = []
    for ask in ("evaluate", "simulate", "recheck", "evaluate", "recheck", "simulate"):
        remote: DecisionRecord = await getattr(served.remote, ask)(job)
        assert remote == await getattr(served.local, ask)(job)
        answers.append((ask, remote.decision))
    throttled = await served.remote.evaluate(job)
    assert throttled == await served.local.evaluate(job)
    assert throttled.decision is Decision.THROTTLE
    assert throttled.retry_after_seconds == pytest.approx(60.0)
    assert answers == [
        ("evaluate", Decision.ALLOW),
        ("simulate", Decision.ALLOW),  # would be the 2nd arrival
        ("recheck", Decision.ALLOW),
        ("evaluate", Decision.ALLOW),  # the 2nd: recheck and simulate did not count
        ("recheck", Decision.ALLOW),
        ("simulate", Decision.THROTTLE),  # would be the 3rd, and counts nothing
    ]
    # A throttled job re-checked at dispatch is not throttled again (velocity is admission).
    assert (await served.remote.recheck(job)).decision is Decision.ALLOW


async def test_explanations_round_trip_with_their_trace(served: Served) -> None:
    for job in JOBS.values():
        remote = await served.remote.explain(job)
        assert remote == await served.local.explain(job)
        assert remote.rules
    mapping = {"topic": "job.k8s.scale", "tenant": "acme", "risk_tags": ["prod"]}
    assert await served.remote.explain(mapping) == await served.local.explain(mapping)
    assert await served.remote.simulate(mapping) == await served.local.simulate(mapping)


async def test_a_long_explanation_fits() -> None:
    rules = "".join(
        f"  - id: rule-{n}\n    match: {{topics: [job.n{n}.*]}}\n    decision: deny\n"
        f"    reason: rule number {n} refuses this\n"
        for n in range(400)
    )
    text = f'version: "long"\ndefault_decision: allow\nrules:\n{rules}'
    kernel = LocalKernel(PolicyHolder(build_policy(text)))
    async with KernelServer(kernel) as server, RemoteKernel(f"127.0.0.1:{server.port}") as remote:
        job = Job(topic="job.other.run")
        explanation = await remote.explain(job)
        assert len(wire.record_json(explanation)) > 16 * 1024  # gRPC's default limit
        assert explanation == await kernel.explain(job)
        assert len(explanation.rules) == 400


async def test_output_verdicts_round_trip(served: Served) -> None:
    db = Job(topic="job.db.query", tenant_id="acme")
    cases: list[tuple[Job, Any, bool, OutputDecision]] = [
        (db, {"rows": [1, 2], "note": "fine"}, False, OutputDecision.ALLOW),
        (db, ["jane@example.com"], False, OutputDecision.QUARANTINE),
        (
            Job(topic="job.read.log"),
            {"log": f"token={SECRET} done", "n": 3},
            False,
            OutputDecision.REDACT,
        ),
        (Job(topic="job.read.log"), "boom", True, OutputDecision.QUARANTINE),
    ]
    for job, output, failed, expected in cases:
        remote: OutputVerdict = await served.remote.evaluate_output(job, output, failed=failed)
        assert remote == await served.local.evaluate_output(job, output, failed=failed)
        assert remote.decision is expected
    redacted = await served.remote.evaluate_output(
        Job(topic="job.read.log"), {"log": f"token={SECRET}"}, failed=False
    )
    assert SECRET not in str(redacted.output)


# --- third-party CAP callers ---------------------------------------------------------------


async def test_a_cap_only_caller_gets_a_cap_answer(served: Served) -> None:
    request = safety_pb2.PolicyCheckRequest(
        job_id="j-1",
        topic="job.k8s.scale",
        tenant="acme",
        meta=job_pb2.JobMetadata(risk_tags=["prod"], actor_type=job_pb2.ACTOR_TYPE_SERVICE),
        input_content=b'{"replicas": 3}',
        input_content_type="application/json",
    )
    response, trailers = await raw_call(served.target, "Check", request)
    assert response.decision == safety_pb2.DECISION_TYPE_REQUIRE_HUMAN
    assert response.approval_required
    assert response.rule_id == "prod-approval"
    assert response.policy_snapshot == served.local.snapshot_id()
    assert wire.RECORD_KEY not in trailers  # never sent to a third-party caller
    job = Job(topic="job.k8s.scale", tenant_id="acme", risk_tags=("prod",), actor_type="service")
    local = await served.local.evaluate(job)
    assert local.constraints.approval_ttl_s == 600  # CAP has no field for it
    assert wire.record_from_response(response) == local.model_copy(
        update={"constraints": Constraints()}
    )

    deny, _ = await raw_call(
        served.target, "Evaluate", safety_pb2.PolicyCheckRequest(topic="job.db.delete")
    )
    assert deny.decision == safety_pb2.DECISION_TYPE_DENY
    assert [(r.id, r.replacement_topic, dict(r.add_labels)) for r in deny.remediations] == [
        ("archive", "job.db.archive", {"mode": "archive"})
    ]
    bounded, _ = await raw_call(
        served.target, "Simulate", safety_pb2.PolicyCheckRequest(topic="job.db.query")
    )
    assert bounded.decision == safety_pb2.DECISION_TYPE_ALLOW_WITH_CONSTRAINTS
    assert bounded.constraints.budgets.max_runtime_ms == 60000
    assert list(bounded.constraints.sandbox.network_allowlist) == ["api.github.com"]
    assert list(bounded.constraints.toolchain.allowed_commands) == ["git status"]
    assert bounded.constraints.diff.max_files == 50
    assert bounded.constraints.redaction_level == "standard"


async def test_cap_input_content_is_scanned_as_json_or_text(served: Served) -> None:
    for content, kind in (
        (f'{{"env": {{"GH": "{SECRET}"}}}}'.encode(), "application/json; charset=utf-8"),
        (f"export GH={SECRET}".encode(), "text/plain"),
    ):
        request = safety_pb2.PolicyCheckRequest(
            topic="job.read.file", input_content=content, input_content_type=kind
        )
        response, _ = await raw_call(served.target, "Check", request)
        assert (response.decision, response.rule_id) == (
            safety_pb2.DECISION_TYPE_DENY,
            "no-secrets",
        )
    opaque = safety_pb2.PolicyCheckRequest(
        topic="job.read.file", input_content=b"\x00\x01", input_content_type="image/png"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_call(served.target, "Check", opaque)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "image/png" in (caught.value.details() or "")


async def test_requests_out_of_place_are_invalid_arguments(served: Served) -> None:
    job = wire.request_for_job(JOBS["allow"])
    for method, metadata in (
        ("Check", ((wire.MODE_KEY, wire.MODE_RECHECK),)),
        ("Evaluate", ((wire.MODE_KEY, "sideways"),)),
        ("Evaluate", ((wire.MODE_KEY, wire.MODE_OUTPUT),)),  # a job, not an output envelope
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw_call(served.target, method, job, metadata)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, metadata)
    fields = wire.request_for_fields({"topic": "job.read.file"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_call(served.target, "Check", fields)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- errors ---------------------------------------------------------------------------------


async def test_invalid_jobs_are_invalid_job_errors(served: Served) -> None:
    for fields in ({"topic": 5}, {"topic": "job.a", "risk_tag": ["x"]}, {"labels": {}}):
        with pytest.raises(InvalidJobError) as remote:
            await served.remote.simulate(fields)
        with pytest.raises(InvalidJobError) as local:
            await served.local.simulate(fields)
        assert (remote.value.field, str(remote.value)) == (local.value.field, str(local.value))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_call(served.target, "Check", safety_pb2.PolicyCheckRequest(topic=""))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "topic" in (caught.value.details() or "")


async def test_an_invalid_job_is_the_callers_mistake_not_an_outage(served: Served) -> None:
    """The safety client lets InvalidJobError through (a 4xx) and its breaker stays closed."""
    bad = Job.model_construct(topic="")  # what a validated Job never is
    client = safety_client(served.remote, FailMode.CLOSED)
    for _ in range(4):
        with pytest.raises(InvalidJobError, match="topic"):
            await client.check(bad)
    assert client.breaker.state is BreakerState.CLOSED


class BrokenKernel(LocalKernel):
    """A kernel whose evaluation fails with details that must not reach callers."""

    async def evaluate(self, job: Job) -> DecisionRecord:
        raise RuntimeError("database password is hunter2")


async def test_kernel_failures_are_internal_without_details() -> None:
    kernel = BrokenKernel(PolicyHolder(build_policy()))
    async with KernelServer(kernel) as server, RemoteKernel(f"127.0.0.1:{server.port}") as remote:
        with pytest.raises(RemoteKernelError, match="INTERNAL") as caught:
            await remote.evaluate(JOBS["allow"])
        assert "hunter2" not in str(caught.value)


async def test_a_missing_or_wrong_token_is_refused(served: Served) -> None:
    for token in (None, "wrong", TOKEN + "x"):
        remote = RemoteKernel(served.target, token=token)
        with pytest.raises(RemoteKernelError, match="UNAUTHENTICATED"):
            await remote.connect()
        with pytest.raises(RemoteKernelError, match="UNAUTHENTICATED"):
            await remote.explain(JOBS["allow"])
        with pytest.raises(SafetyUnavailableError, match="UNAUTHENTICATED"):
            await safety_client(remote, FailMode.CLOSED).check(JOBS["allow"])
        await remote.close()
    assert (await served.remote.evaluate(JOBS["allow"])).decision is Decision.ALLOW


async def test_list_snapshots_answers_the_active_one_first() -> None:
    kernel = LocalKernel(PolicyHolder(build_policy()))
    active = kernel.snapshot_id()

    async def history() -> list[str]:
        return ["v3:abc", active, "v1:def"]

    async with KernelServer(kernel, snapshots=history) as server:
        remote = RemoteKernel(f"127.0.0.1:{server.port}")
        assert remote.snapshot_id() == ""
        await remote.connect()
        assert remote.snapshot_id() == active
        assert await remote.snapshots() == [active, "v3:abc", "v1:def"]
        await remote.close()


# --- unavailable kernels --------------------------------------------------------------------


async def test_a_stopped_kernel_fails_closed_and_opens_the_breaker() -> None:
    server = KernelServer(LocalKernel(PolicyHolder(build_policy())))
    await server.start()
    remote = RemoteKernel(f"127.0.0.1:{server.port}", timeout=2)
    client = safety_client(remote, FailMode.CLOSED)
    assert (await client.check(JOBS["allow"])).record.decision is Decision.ALLOW
    await server.stop()
    for _ in range(3):
        with pytest.raises(SafetyUnavailableError, match="UNAVAILABLE"):
            await client.check(JOBS["allow"])
    assert client.breaker.state is BreakerState.OPEN
    with pytest.raises(SafetyUnavailableError, match="circuit breaker is open"):
        await client.check(JOBS["allow"])
    await remote.close()


async def test_a_stopped_kernel_with_fail_mode_open_bypasses() -> None:
    server = KernelServer(LocalKernel(PolicyHolder(build_policy())))
    await server.start()
    await server.stop()
    remote = RemoteKernel(f"127.0.0.1:{server.port}", timeout=2)
    verdict = await safety_client(remote, FailMode.OPEN).check(JOBS["deny with remediations"])
    assert verdict.bypassed
    assert verdict.record.decision is Decision.ALLOW
    await remote.close()


class SlowKernel(LocalKernel):
    """A kernel that takes its time to decide."""

    async def evaluate(self, job: Job) -> DecisionRecord:
        await asyncio.sleep(2)
        return await super().evaluate(job)


async def test_a_slow_kernel_times_out_and_is_unavailable() -> None:
    kernel = SlowKernel(PolicyHolder(build_policy()))
    async with KernelServer(kernel) as server:
        target = f"127.0.0.1:{server.port}"
        async with RemoteKernel(target, timeout=0.2) as remote:
            with pytest.raises(TimeoutError):
                await remote.evaluate(JOBS["allow"])
            with pytest.raises(SafetyUnavailableError, match="timed out"):
                await safety_client(remote, FailMode.CLOSED, timeout=5).check(JOBS["allow"])
        async with RemoteKernel(target, timeout=5) as remote:
            client = safety_client(remote, FailMode.CLOSED, timeout=0.2)
            with pytest.raises(SafetyUnavailableError, match="timed out"):
                await client.check(JOBS["allow"])
            verdict = await safety_client(remote, FailMode.OPEN, timeout=0.2).check(JOBS["allow"])
            assert verdict.bypassed
