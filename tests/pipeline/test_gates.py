"""Gate A and gate B are both real (invariant 3), and the fail mode decides outages.

- A policy change between submit and dispatch is caught at gate B; both decisions are
  recorded with their snapshots, and nothing is dispatched.
- Fail closed (the default): with the kernel unavailable nothing is dispatched, submits
  get 503, queued jobs are requeued; the breaker opens after 3 failures and recovers.
- Fail open: jobs pass, are labelled ``safety_bypassed``, and the metrics count them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cordum.models.state import JobState
from cordum.services.breaker import BreakerState
from tests.pipeline.harness import POLICY, Harness, policy, running_plane
from tests.pipeline.kernels import SwitchableKernel
from tests.pipeline.workers import BareWorker

pytestmark = pytest.mark.anyio

FAST = {"backoff_base_s": 0.02, "backoff_max_s": 0.05, "pools": {"job.test.>": "p"}}

RUN_DENIED = POLICY.replace(
    "  - id: allow-test\n",
    "  - id: run-now-denied\n"
    "    match: {topics: [job.test.run]}\n"
    "    decision: deny\n"
    "    reason: runs were stopped after submission\n"
    "  - id: allow-test\n",
).replace('version: "test-1"', 'version: "test-2"')


async def wait_until(predicate: object, timeout: float = 5.0) -> None:
    """Poll an async predicate until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def submitted(harness: Harness, topic: str = "job.test.run") -> str:
    """Submit and return the job id of an accepted job."""
    response = await harness.submit(topic)
    assert response.status_code == 200, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def test_policy_change_between_submit_and_dispatch_is_denied_at_gate_b(
    tmp_path: Path,
) -> None:
    async with running_plane(tmp_path, **FAST) as harness:
        job_id = await submitted(harness)

        async def waited() -> bool:  # no worker yet: the job waits
            return (await harness.job(job_id)).scheduling_attempts >= 1

        await wait_until(waited)
        before = harness.plane.kernel.snapshot_id()
        harness.plane.holder.swap(policy(RUN_DENIED))
        after = harness.plane.kernel.snapshot_id()
        assert before != after
        worker = await BareWorker.register(harness.http)

        job = await harness.wait_state(job_id, "DENIED")
        assert job.safety_rule_id == "run-now-denied"
        assert job.error is not None
        assert job.error.code == "policy_denied"
        decisions = await harness.plane.store.job_decisions(job_id)
        assert [(d.gate.value, d.decision.value, d.policy_snapshot) for d in decisions] == [
            ("A", "ALLOW", before),
            ("B", "DENY", after),
        ]
        states = [e.to_state for e in await harness.plane.store.job_events(job_id)]
        assert JobState.DISPATCHED not in states
        assert await worker.poll(wait_s=0.2) == []
        dlq = await harness.plane.store.get_dlq(job_id)
        assert dlq is not None
        assert dlq.reason_code == "safety_denied"
        listed = (await harness.http.get(f"/api/v1/jobs/{job_id}/decisions")).json()
        assert [d["gate"] for d in listed["decisions"]] == ["A", "B"]


async def test_allowed_job_records_both_gates_with_the_snapshot(harness: Harness) -> None:
    worker = await BareWorker.register(harness.http)
    job_id = await submitted(harness)
    (claimed,) = await worker.poll()
    assert claimed["job_id"] == job_id
    await worker.succeed(job_id, {"ok": True})
    job = await harness.wait_state(job_id, "SUCCEEDED")
    decisions = await harness.plane.store.job_decisions(job_id)
    assert [d.gate.value for d in decisions] == ["A", "B"]
    assert {d.policy_snapshot for d in decisions} == {harness.plane.kernel.snapshot_id()}
    assert job.result == {"ok": True}


async def test_fail_closed_dispatches_nothing_and_requeues(tmp_path: Path) -> None:
    kernel = SwitchableKernel(policy())
    async with running_plane(tmp_path, kernel=kernel, breaker_open_s=0.3, **FAST) as harness:
        job_id = await submitted(harness)
        kernel.down = True
        refused = await harness.submit("job.test.run")
        assert refused.status_code == 503
        assert refused.json()["code"] == "policy_unavailable"
        assert "Retry-After" in refused.headers

        worker = await BareWorker.register(harness.http)

        async def requeued() -> bool:
            return (await harness.job(job_id)).scheduling_attempts >= 4

        await wait_until(requeued)
        job = await harness.job(job_id)
        assert job.state is JobState.PENDING
        assert job.waiting_reason is not None
        assert "safety_unknown" in job.waiting_reason
        assert await worker.poll(wait_s=0.1) == []
        assert harness.plane.gate_b.breaker.state is BreakerState.OPEN

        kernel.down = False
        (claimed,) = await worker.poll(wait_s=3)
        assert claimed["job_id"] == job_id
        await worker.succeed(job_id)
        await harness.wait_state(job_id, "SUCCEEDED")

        async def closed() -> bool:
            if harness.plane.gate_b.breaker.state is BreakerState.CLOSED:
                return True
            await harness.submit("job.test.run")  # traffic drives the half-open probes
            return False

        await wait_until(closed)
        decisions = await harness.plane.store.job_decisions(job_id)
        assert [d.gate.value for d in decisions] == ["A", "B"]
        assert not any(d.safety_bypassed for d in decisions)


async def test_breaker_opens_after_three_failures_and_stops_calling(tmp_path: Path) -> None:
    kernel = SwitchableKernel(policy())
    async with running_plane(tmp_path, kernel=kernel, **FAST) as harness:
        kernel.down = True
        for _ in range(3):
            assert (await harness.submit("job.test.run")).status_code == 503
        assert harness.plane.gate_a.breaker.state is BreakerState.OPEN
        calls = kernel.calls
        assert (await harness.submit("job.test.run")).status_code == 503
        assert kernel.calls == calls, "an open breaker must not call the kernel"
        metrics = (await harness.http.get("/metrics")).text
        assert 'cordum_safety_breaker_open{gate="A"} 1.0' in metrics


async def test_fail_open_passes_labels_and_counts(tmp_path: Path) -> None:
    kernel = SwitchableKernel(policy())
    async with running_plane(tmp_path, kernel=kernel, fail_mode="open", **FAST) as harness:
        kernel.down = True
        worker = await BareWorker.register(harness.http)
        response = await harness.submit("job.test.delete")  # would be DENIED if checked
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]
        (claimed,) = await worker.poll(wait_s=3)
        assert claimed["labels"]["safety_bypassed"] == "true"
        await worker.succeed(job_id)
        job = await harness.wait_state(job_id, "SUCCEEDED")
        assert job.labels["safety_bypassed"] == "true"
        decisions = await harness.plane.store.job_decisions(job_id)
        assert [(d.gate.value, d.safety_bypassed) for d in decisions] == [
            ("A", True),
            ("B", True),
        ]
        metrics = (await harness.http.get("/metrics")).text
        assert 'cordum_scheduler_input_fail_open_total{topic="job.test.delete"} 1.0' in metrics
        assert 'cordum_gateway_input_fail_open_total{topic="job.test.delete"} 1.0' in metrics


VELOCITY = """
version: "velocity-1"
default_decision: deny
rules:
  - id: two-a-minute
    match: {topics: ["job.test.run"]}
    velocity: {max_requests: 2, window_seconds: 60, key: tenant}
    decision: throttle
    reason: at most two runs a minute
  - id: allow-test
    match: {topics: ["job.test.*"]}
    decision: allow
    reason: test jobs are allowed
"""


async def test_gate_b_does_not_count_velocity_twice(tmp_path: Path) -> None:
    async with running_plane(tmp_path, policy_text=VELOCITY, **FAST) as harness:
        worker = await BareWorker.register(harness.http)
        first, second = await submitted(harness), await submitted(harness)
        claimed = await worker.poll(wait_s=2)
        while len(claimed) < 2:
            claimed += await worker.poll(wait_s=2)
        assert {j["job_id"] for j in claimed} == {first, second}
        third = await harness.submit("job.test.run")
        assert third.status_code == 429
        gates = [
            (d.gate.value, d.decision.value)
            for d in await harness.plane.store.job_decisions(second)
        ]
        assert gates == [("A", "ALLOW"), ("B", "ALLOW")]
