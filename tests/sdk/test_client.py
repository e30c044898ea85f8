"""The agent-side clients: what ``submit``/``wait`` return and what they raise.

Pinned against a real server (the async client in the test's loop, the sync client
against ``cordum up`` in a subprocess):
- ``submit(wait=True)`` returns the handler's result; without ``wait`` the acceptance.
- DENY raises PolicyDenied with decision, reason, rule, snapshot, remediations and the
  job id; ``as_tool_result()`` is JSON with status ``blocked``, the remediations and a
  message telling the model not to retry unchanged.
- REQUIRE_APPROVAL raises ApprovalRequired even with ``wait=False``; after ``approve``,
  ``wait(job_id)`` returns the result; after ``reject`` it raises PolicyDenied.
- THROTTLE raises Throttled with ``retry_after``.
- A repeated idempotency key answers with the same job (accepted or denied).
- A DENY at gate B (policy changed between submit and dispatch) surfaces from ``wait``
  as PolicyDenied with the gate-B rule, snapshot and remediations.
- A failing handler is JobFailed (retried per budget; FatalError is not retried), a
  cancelled job JobCancelled, a job past its deadline JobTimedOut, a short wait
  WaitTimeout.
- Nothing listening is CordumUnavailable: one clear line, no chained traceback.
- ``CORDUM_URL`` and ``CORDUM_TENANT_ID`` are read when no argument is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import cordum.policy
from cordum.demo import demo_policy_text
from cordum.demo.workers import build_demo_worker
from cordum.sdk import (
    ApprovalRequired,
    AsyncClient,
    Client,
    CordumAPIError,
    CordumError,
    CordumUnavailable,
    FatalError,
    JobCancelled,
    JobContext,
    JobFailed,
    JobTimedOut,
    PolicyDenied,
    PolicyViolationError,
    Throttled,
    WaitTimeout,
    Worker,
)
from tests.pipeline.harness import Harness, running_plane
from tests.sdk.servers import CordumUp, free_port

ARCHIVE_REMEDIATION = {
    "id": "archive-instead",
    "title": "Archive the items instead of deleting them",
    "summary": "Same effect for users, and reversible.",
    "replacement_topic": "job.demo.archive",
}

SDK_POLICY = """
version: "sdk-1"
default_decision: deny
rules:
  - id: post-rate
    match: {topics: [job.sdk.post]}
    velocity: {max_requests: 1, window_seconds: 60, key: tenant}
    decision: throttle
    reason: at most one post a minute
  - id: allow-sdk
    match: {topics: ["job.sdk.*"]}
    decision: allow
    reason: sdk test jobs
"""

GREETINGS_PAUSED = """
version: "demo-paused"
default_decision: deny
rules:
  - id: greetings-paused
    match: {topics: [job.demo.greet]}
    decision: deny
    reason: Greetings are paused during the incident.
    remediations:
      - {id: wait-it-out, title: Try again after the incident, replacement_topic: job.demo.archive}
"""

FAST = {"backoff_base_s": 0.02, "backoff_max_s": 0.05}


def demo_text() -> str:
    text, _ = demo_policy_text()
    return text


@pytest.fixture
async def client(demo: Harness) -> AsyncIterator[AsyncClient]:
    """An async client for the in-loop demo plane."""
    async with AsyncClient(demo.url) as agent:
        yield agent


async def until(check: Any, timeout: float = 5.0) -> Any:
    """Poll an async ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def served(
    tmp_path: Path, policy_text: str, **settings: Any
) -> AsyncIterator[tuple[Harness, AsyncClient]]:
    """A plane with ``policy_text`` (no worker) and an async client for it."""
    async with (
        running_plane(tmp_path, policy_text=policy_text, **settings) as harness,
        AsyncClient(harness.url) as agent,
    ):
        yield harness, agent


def assert_demo_denial(exc: PolicyDenied, snapshot: str) -> None:
    assert exc.decision == "DENY"
    assert exc.rule_id == "demo-no-mass-delete"
    assert exc.reason.startswith("Deleting everything is never automated.")
    assert exc.policy_snapshot == snapshot
    assert len(exc.remediations) == 1
    assert exc.remediations[0].items() >= ARCHIVE_REMEDIATION.items()
    assert exc.job_id
    tool = exc.as_tool_result()
    assert json.loads(json.dumps(tool)) == tool
    assert tool["status"] == "blocked"
    assert tool["decision"] == "DENY"
    assert tool["rule_id"] == "demo-no-mass-delete"
    assert tool["policy_snapshot"] == snapshot
    assert tool["remediations"] == exc.remediations
    assert tool["job_id"] == exc.job_id
    assert "demo-no-mass-delete" in tool["message"]
    assert "archive-instead" in tool["message"]
    assert "Do not retry the same action unchanged" in tool["message"]


# --- async client, server in the test's loop -------------------------------------------


@pytest.mark.anyio
async def test_submit_with_wait_returns_the_handlers_result(client: AsyncClient) -> None:
    result = await client.submit("job.demo.greet", {"name": "Ada"}, wait=True, timeout=10)
    assert result == {"message": "Hello, Ada!"}


@pytest.mark.anyio
async def test_submit_without_wait_returns_the_acceptance(client: AsyncClient) -> None:
    answer = await client.submit("job.demo.greet", {"name": "Bo"})
    assert answer["status"] == "accepted"
    assert answer["decision"] == "ALLOW"
    assert answer["rule_id"] == "demo-greet"
    assert await client.wait(answer["job_id"], timeout=10) == {"message": "Hello, Bo!"}
    job = await client.get_job(answer["job_id"])
    assert job["state"] == "SUCCEEDED"
    assert job["input"] == {"name": "Bo"}


@pytest.mark.anyio
async def test_policy_denied_carries_the_rejection(demo: Harness, client: AsyncClient) -> None:
    with pytest.raises(PolicyDenied) as caught:
        await client.submit("job.demo.delete-all", {"scope": "all-customers"}, wait=True)
    assert isinstance(caught.value, PolicyViolationError)
    assert_demo_denial(caught.value, demo.plane.kernel.snapshot_id())
    job = await client.get_job(str(caught.value.job_id))
    assert job["state"] == "DENIED"
    assert job["result"] is None


@pytest.mark.anyio
async def test_a_denied_job_can_be_remediated(client: AsyncClient) -> None:
    with pytest.raises(PolicyDenied) as caught:
        await client.submit("job.demo.delete-all", {"scope": "all-customers"})
    answer = await client.remediate(str(caught.value.job_id), "archive-instead")
    assert answer["decision"] == "ALLOW_WITH_CONSTRAINTS"
    assert answer["rule_id"] == "demo-archive-bounded"
    result = await client.wait(answer["job_id"], timeout=10)
    assert result == {"archived": True, "restorable": True}


@pytest.mark.anyio
@pytest.mark.parametrize("wait", [False, True])
async def test_approval_required_is_raised_then_approve_and_wait(
    demo: Harness, client: AsyncClient, wait: bool
) -> None:
    started = time.monotonic()
    with pytest.raises(ApprovalRequired) as caught:
        await client.submit("job.demo.admin", {"user": "ada"}, wait=wait, timeout=30)
    assert time.monotonic() - started < 5, "must not wait for a human"
    exc = caught.value
    assert isinstance(exc, PolicyViolationError)
    assert exc.decision == "REQUIRE_APPROVAL"
    assert exc.rule_id == "demo-admin-needs-approval"
    assert exc.job_id
    tool = exc.as_tool_result()
    assert tool["status"] == "approval_required"
    assert exc.job_id in tool["message"]
    assert (await client.get_job(exc.job_id))["state"] == "APPROVAL_REQUIRED"

    async with AsyncClient(demo.url, api_key=await demo.new_key("operator")) as human:
        approved = await human.approve(exc.job_id, reason="looks fine")  # not the submitter
    assert approved["status"] == "approved"
    assert await client.wait(exc.job_id, timeout=10) == {"granted": "admin", "user": "ada"}
    gates = [(d["gate"], d["decision"]) for d in await client.job_decisions(exc.job_id)]
    assert gates == [("A", "REQUIRE_APPROVAL"), ("approval", "ALLOW"), ("B", "REQUIRE_APPROVAL")]


@pytest.mark.anyio
async def test_a_rejected_approval_waits_into_policy_denied(client: AsyncClient) -> None:
    with pytest.raises(ApprovalRequired) as caught:
        await client.submit("job.demo.admin", {"user": "mallory"})
    job_id = str(caught.value.job_id)
    await client.reject(job_id, reason="not today")
    with pytest.raises(PolicyDenied) as denied:
        await client.wait(job_id, timeout=10)
    assert denied.value.decision == "DENY"
    assert denied.value.job_id == job_id
    assert "not today" in denied.value.reason
    assert denied.value.as_tool_result()["status"] == "blocked"


@pytest.mark.anyio
async def test_throttled_carries_retry_after(tmp_path: Path) -> None:
    async with served(tmp_path, SDK_POLICY) as (_, agent):
        first = await agent.submit("job.sdk.post", {"n": 1})
        assert first["status"] == "accepted"
        with pytest.raises(Throttled) as caught:
            await agent.submit("job.sdk.post", {"n": 2})
    exc = caught.value
    assert isinstance(exc, PolicyViolationError)
    assert exc.decision == "THROTTLE"
    assert exc.rule_id == "post-rate"
    assert exc.retry_after is not None
    assert 0 < exc.retry_after <= 60
    tool = exc.as_tool_result()
    assert tool["status"] == "throttled"
    assert tool["retry_after_seconds"] == exc.retry_after
    assert "Retry the same action after" in tool["message"]


@pytest.mark.anyio
async def test_a_repeated_idempotency_key_answers_with_the_same_job(client: AsyncClient) -> None:
    first = await client.submit("job.demo.greet", {"name": "x"}, idempotency_key="greet-1")
    again = await client.submit("job.demo.greet", {"name": "x"}, idempotency_key="greet-1")
    assert again["job_id"] == first["job_id"]
    page = await client.list_jobs(topic="job.demo.greet")
    assert [j["job_id"] for j in page["jobs"]] == [first["job_id"]]

    denials = []
    for _ in range(2):
        with pytest.raises(PolicyDenied) as caught:
            await client.submit("job.demo.delete-all", idempotency_key="delete-1")
        denials.append(caught.value.job_id)
    assert denials[0] == denials[1]

    with pytest.raises(CordumAPIError) as conflict:
        await client.submit("job.demo.greet", {"name": "y"}, idempotency_key="greet-1")
    assert conflict.value.status == 409
    assert conflict.value.code == "idempotency_conflict"


async def _accepted_while_no_worker_runs(harness: Harness, agent: AsyncClient) -> str:
    """Submit a greeting that is allowed at gate A and then waits for a worker."""
    answer = await agent.submit("job.demo.greet", {"name": "late"})
    job_id: str = answer["job_id"]

    async def deferred() -> bool:
        job = await agent.get_job(job_id)
        return job["state"] == "PENDING" and job["scheduling_attempts"] >= 1

    await until(deferred)
    return job_id


@pytest.mark.anyio
async def test_a_deny_at_gate_b_surfaces_from_wait(tmp_path: Path) -> None:
    settings = {**FAST, "pools": {"job.demo.>": "demo"}}
    async with served(tmp_path, demo_text(), **settings) as (harness, agent):
        job_id = await _accepted_while_no_worker_runs(harness, agent)
        gate_a = harness.plane.kernel.snapshot_id()
        harness.plane.holder.swap(cordum.policy.load_text(GREETINGS_PAUSED, name="p.yaml"))
        gate_b = harness.plane.kernel.snapshot_id()
        await harness.plane.add_worker(build_demo_worker())
        with pytest.raises(PolicyDenied) as caught:
            await agent.wait(job_id, timeout=10)
        decisions = await agent.job_decisions(job_id)
    exc = caught.value
    assert exc.decision == "DENY"
    assert exc.job_id == job_id
    assert exc.rule_id == "greetings-paused"
    assert exc.reason == "Greetings are paused during the incident."
    assert exc.policy_snapshot == gate_b
    assert exc.as_tool_result()["status"] == "blocked"
    assert [(d["gate"], d["decision"], d["policy_snapshot"]) for d in decisions] == [
        ("A", "ALLOW", gate_a),
        ("B", "DENY", gate_b),
    ]


@pytest.mark.anyio
async def test_a_deny_at_gate_b_offers_the_rules_remediations(tmp_path: Path) -> None:
    """An agent refused at dispatch can re-plan exactly as one refused at submit."""
    settings = {**FAST, "pools": {"job.demo.>": "demo"}}
    async with served(tmp_path, demo_text(), **settings) as (harness, agent):
        job_id = await _accepted_while_no_worker_runs(harness, agent)
        harness.plane.holder.swap(cordum.policy.load_text(GREETINGS_PAUSED, name="p.yaml"))
        await harness.plane.add_worker(build_demo_worker())
        with pytest.raises(PolicyDenied) as caught:
            await agent.wait(job_id, timeout=10)
        decisions = await agent.job_decisions(job_id)
    offered = [r["id"] for r in decisions[-1]["remediations"]]
    assert offered == ["wait-it-out"], "the server recorded the gate-B remediations"
    assert [r["id"] for r in caught.value.remediations] == offered
    assert caught.value.as_tool_result()["remediations"] == caught.value.remediations


def failing_worker(url: str, calls: dict[str, int]) -> Worker:
    worker = Worker(pool="sdk", topics=["job.sdk.*"], url=url, transport="http")

    @worker.handle("job.sdk.boom")
    async def boom(ctx: JobContext) -> None:
        calls["boom"] = calls.get("boom", 0) + 1
        raise RuntimeError("the disk is on fire")

    @worker.handle("job.sdk.fatal")
    def fatal(ctx: JobContext) -> None:
        calls["fatal"] = calls.get("fatal", 0) + 1
        raise FatalError("the input can never work")

    return worker


@pytest.mark.anyio
async def test_failed_handlers_raise_job_failed_and_fatal_errors_are_not_retried(
    tmp_path: Path,
) -> None:
    calls: dict[str, int] = {}
    async with running_plane(
        tmp_path, policy_text=SDK_POLICY, default_max_retries=2, **FAST
    ) as harness:
        await harness.plane.add_worker(failing_worker(harness.url, calls))
        async with AsyncClient(harness.url) as agent:
            with pytest.raises(JobFailed) as boom:
                await agent.submit("job.sdk.boom", wait=True, timeout=15)
            with pytest.raises(JobFailed) as fatal:
                await agent.submit("job.sdk.fatal", wait=True, timeout=15)

    assert boom.value.code == "RuntimeError"
    assert boom.value.message == "the disk is on fire"
    assert boom.value.state == "FAILED"
    assert boom.value.job["attempts"] == 3
    assert calls["boom"] == 3, "retried twice, as the budget allows"
    tool = boom.value.as_tool_result()
    assert tool["status"] == "failed"
    assert tool["error"] == {"code": "RuntimeError", "message": "the disk is on fire"}

    assert fatal.value.code == "FatalError"
    assert fatal.value.message == "the input can never work"
    assert fatal.value.job["attempts"] == 1
    assert calls["fatal"] == 1, "a FatalError is never retried"


@pytest.mark.anyio
async def test_a_cancelled_job_raises_job_cancelled(client: AsyncClient) -> None:
    with pytest.raises(ApprovalRequired) as caught:
        await client.submit("job.demo.admin", {"user": "eve"})
    job_id = str(caught.value.job_id)
    cancelled = await client.cancel(job_id)
    assert cancelled["state"] == "CANCELLED"
    with pytest.raises(JobCancelled) as raised:
        await client.wait(job_id, timeout=10)
    assert raised.value.job_id == job_id
    assert raised.value.state == "CANCELLED"
    assert raised.value.as_tool_result()["status"] == "cancelled"


@pytest.mark.anyio
async def test_waiting_on_a_job_nobody_runs_raises_wait_timeout(tmp_path: Path) -> None:
    async with served(tmp_path, SDK_POLICY, pools={"job.sdk.>": "nobody"}) as (_, agent):
        answer = await agent.submit("job.sdk.idle")
        started = time.monotonic()
        with pytest.raises(WaitTimeout) as waited:
            await agent.wait(answer["job_id"], timeout=0.3)
        elapsed = time.monotonic() - started
        with pytest.raises(WaitTimeout):
            await agent.submit("job.sdk.idle", wait=True, timeout=0.2)
    assert 0.25 <= elapsed < 3
    exc = waited.value
    assert exc.job_id == answer["job_id"]
    assert exc.state == "PENDING"
    assert exc.waited == 0.3
    tool = exc.as_tool_result()
    assert tool["status"] == "pending"
    assert answer["job_id"] in tool["message"]
    assert "do not submit the action again" in tool["message"]


@pytest.mark.anyio
async def test_a_job_past_its_deadline_raises_job_timed_out(tmp_path: Path) -> None:
    settings = {**FAST, "pools": {"job.sdk.>": "nobody"}}
    async with served(tmp_path, SDK_POLICY, **settings) as (_, agent):
        with pytest.raises(JobTimedOut) as caught:
            await agent.submit("job.sdk.idle", deadline_ms=200, wait=True, timeout=10)
    assert caught.value.state == "TIMEOUT"
    assert caught.value.as_tool_result()["status"] == "timeout"


def assert_unavailable(exc: CordumUnavailable, path: str) -> None:
    assert isinstance(exc, CordumError)
    message = str(exc)
    assert "\n" not in message
    assert path in message
    assert "Traceback" not in message
    assert exc.__cause__ is None
    assert exc.__suppress_context__, "raised `from None`: no httpx traceback chained"
    tool = exc.as_tool_result()
    assert tool["status"] == "unavailable"
    assert "idempotency key" in tool["message"]


@pytest.mark.anyio
async def test_nothing_listening_is_cordum_unavailable() -> None:
    base = f"http://127.0.0.1:{free_port()}"
    async with AsyncClient(base, timeout=2) as agent:
        with pytest.raises(CordumUnavailable) as submitting:
            await agent.submit("job.demo.greet")
        with pytest.raises(CordumUnavailable) as waiting:
            await agent.wait("some-job", timeout=1)
    assert_unavailable(submitting.value, f"POST {base}/api/v1/jobs")
    assert_unavailable(waiting.value, f"GET {base}/api/v1/jobs/some-job")
    assert "CORDUM_URL" in str(submitting.value), "says which setting to check"


@pytest.mark.anyio
async def test_environment_variables_choose_the_server_and_tenant(
    demo: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORDUM_URL", demo.url + "/")
    monkeypatch.setenv("CORDUM_TENANT_ID", "acme")
    async with AsyncClient() as agent:
        assert agent.settings.url == demo.url
        answer = await agent.submit("job.demo.greet", {"name": "acme"})
        assert await agent.wait(answer["job_id"], timeout=10) == {"message": "Hello, acme!"}
        assert (await agent.get_job(answer["job_id"]))["tenant_id"] == "acme"
    async with AsyncClient(tenant="globex") as agent:
        answer = await agent.submit("job.demo.greet")
        assert (await agent.get_job(answer["job_id"]))["tenant_id"] == "globex"


# --- sync client, server in a subprocess ------------------------------------------------


@pytest.fixture
def sync_client(server: CordumUp) -> Iterator[Client]:
    with Client(server.url) as agent:
        yield agent


def test_sync_submit_with_wait_returns_the_handlers_result(sync_client: Client) -> None:
    assert sync_client.submit("job.demo.greet", {"name": "Sync"}, wait=True, timeout=10) == {
        "message": "Hello, Sync!"
    }


def test_sync_policy_denied_matches_the_async_client(server: CordumUp, sync_client: Client) -> None:
    with pytest.raises(PolicyDenied) as caught:
        sync_client.submit("job.demo.delete-all", {"scope": "all"})
    snapshot = str(caught.value.policy_snapshot)
    assert snapshot.startswith("demo-1:")
    assert_demo_denial(caught.value, snapshot)

    async def async_denial() -> PolicyDenied:
        async with AsyncClient(server.url) as agent:
            try:
                await agent.submit("job.demo.delete-all", {"scope": "all"})
            except PolicyDenied as exc:
                return exc
        raise AssertionError("not denied")

    other = asyncio.run(async_denial())
    assert other.job_id != caught.value.job_id
    same = {**caught.value.as_tool_result(), "job_id": None, "message": None}
    assert {**other.as_tool_result(), "job_id": None, "message": None} == same


def test_sync_approval_then_wait(sync_client: Client) -> None:
    with pytest.raises(ApprovalRequired) as caught:
        sync_client.submit("job.demo.admin", {"user": "sync"})
    job_id = str(caught.value.job_id)
    with pytest.raises(WaitTimeout) as waited:
        sync_client.wait(job_id, timeout=0.2)
    assert waited.value.state == "APPROVAL_REQUIRED"
    approver = sync_client.create_key("approver", "operator", ["*"])["key"]
    with Client(sync_client.settings.url, api_key=approver) as human:  # not the submitter
        human.approve(job_id)
    assert sync_client.wait(job_id, timeout=10) == {"granted": "admin", "user": "sync"}


def test_sync_idempotency_and_cancel(sync_client: Client) -> None:
    first = sync_client.submit("job.demo.greet", idempotency_key="sync-key")
    assert sync_client.submit("job.demo.greet", idempotency_key="sync-key") == first
    with pytest.raises(ApprovalRequired) as caught:
        sync_client.submit("job.demo.admin")
    job_id = str(caught.value.job_id)
    assert sync_client.cancel(job_id)["state"] == "CANCELLED"
    with pytest.raises(JobCancelled):
        sync_client.wait(job_id, timeout=5)


def test_sync_nothing_listening_is_cordum_unavailable() -> None:
    base = f"http://127.0.0.1:{free_port()}"
    with Client(base, timeout=2) as agent, pytest.raises(CordumUnavailable) as caught:
        agent.submit("job.demo.greet")
    assert_unavailable(caught.value, f"POST {base}/api/v1/jobs")


def test_sync_environment_variables(server: CordumUp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORDUM_URL", server.url)
    monkeypatch.setenv("CORDUM_TENANT_ID", "initech")
    with Client() as agent:
        answer = agent.submit("job.demo.greet", {"name": "env"})
        assert agent.wait(answer["job_id"], timeout=10) == {"message": "Hello, env!"}
        assert agent.get_job(answer["job_id"])["tenant_id"] == "initech"
        page = agent.list_jobs(topic="job.demo.greet", limit=200)
        assert answer["job_id"] in [j["job_id"] for j in page["jobs"]]


def test_policy_texts_are_valid() -> None:
    """The policies these tests swap in load (a typo would make a test pass vacuously)."""
    for text in (SDK_POLICY, GREETINGS_PAUSED):
        assert cordum.policy.load_text(textwrap.dedent(text)).snapshot_id
