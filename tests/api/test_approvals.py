"""Approvals over real HTTP: each rule of docs/approvals.md, with real keys and roles."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cordum.models.approval import ApprovalStatus
from cordum.models.keys import Role
from cordum.models.state import JobState
from cordum.ports import AuditFilter
from tests.api.support import API_POLICY, POOLS, assert_error, wait_until
from tests.pipeline.harness import Harness, policy, running_plane
from tests.pipeline.kernels import SwitchableKernel
from tests.pipeline.workers import BareWorker

pytestmark = pytest.mark.anyio

APPROVALS = "/api/v1/approvals"

TTL_POLICY = API_POLICY.replace(
    "    reason: admin needs approval\n",
    "    reason: admin needs approval\n    constraints: {approval_ttl_s: 1}\n",
)


@dataclass
class Keys:
    """One key per person in these stories."""

    admin: dict[str, str]
    agent: dict[str, str]
    alice: dict[str, str]
    bob: dict[str, str]
    viewer: dict[str, str]


@dataclass
class Scene:
    """A served plane and the keys of everyone involved."""

    harness: Harness
    keys: Keys

    async def request_approval(self, topic: str = "job.test.admin", **fields: Any) -> str:
        """The agent submits a job the policy sends to a human; its id."""
        response = await self.harness.http.post(
            "/api/v1/jobs", json={"topic": topic, **fields}, headers=self.keys.agent
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "approval_required"
        job_id: str = response.json()["job_id"]
        return job_id

    async def answer(
        self, job_id: str, verb: str, key: dict[str, str], **body: Any
    ) -> dict[str, Any]:
        """POST approve/reject and return the response body, whatever the status."""
        response = await self.harness.http.post(
            f"{APPROVALS}/{job_id}/{verb}", json=body, headers=key
        )
        result: dict[str, Any] = response.json()
        result["_status"] = response.status_code
        return result

    async def audit_kinds(self, job_id: str) -> list[str]:
        """The audit events recorded about a job, in order."""
        events = await self.harness.plane.store.list_audit(
            AuditFilter(tenant_id="default", subject=job_id)
        )
        return [event.kind for event in events]


async def _key(harness: Harness, name: str, role: Role) -> dict[str, str]:
    secret, _ = await harness.plane.keys.create(name=name, role=role, tenants=["default"])
    return {"X-API-Key": secret}


@pytest.fixture
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    """Auth on; an agent that submits, operators alice and bob, a viewer, an admin."""
    async with _scene(tmp_path) as built:
        yield built


@contextlib.asynccontextmanager
async def _scene(
    tmp_path: Path, policy_text: str = API_POLICY, **settings: Any
) -> AsyncIterator[Scene]:
    async with running_plane(
        tmp_path, policy_text=policy_text, pools=POOLS, auth=True, **settings
    ) as harness:
        admin = await _key(harness, "root", Role.ADMIN)
        harness.http.headers.update(admin)
        keys = Keys(
            admin=admin,
            agent=await _key(harness, "deploy-bot", Role.AGENT),
            alice=await _key(harness, "alice", Role.OPERATOR),
            bob=await _key(harness, "bob", Role.OPERATOR),
            viewer=await _key(harness, "val", Role.VIEWER),
        )
        yield Scene(harness, keys)


# --- the record -----------------------------------------------------------------------------


async def test_a_require_approval_decision_creates_a_bound_approval_record(scene: Scene) -> None:
    job_id = await scene.request_approval(context={"namespace": "prod"})
    plane = scene.harness.plane
    approval = await plane.store.get_approval(job_id)
    assert approval is not None
    assert approval.status is ApprovalStatus.PENDING
    assert approval.gate == "A"
    assert approval.rule_id == "admin-approval"
    assert approval.policy_snapshot == plane.kernel.snapshot_id()
    assert approval.requested_by == "deploy-bot"
    assert approval.requested_key is not None
    assert len(approval.job_hash) == 64
    assert approval.expires_at is not None
    assert approval.expires_at - approval.created_at == pytest.approx(86_400)

    listed = (await scene.harness.http.get(APPROVALS, headers=scene.keys.viewer)).json()
    assert [a["approval_id"] for a in listed["approvals"]] == [job_id]
    assert listed["approvals"][0]["status"] == "pending"
    one = (await scene.harness.http.get(f"{APPROVALS}/{job_id}")).json()
    assert one["job"]["input"] == {"namespace": "prod"}
    assert one["approval"]["job_hash"] == approval.job_hash
    assert await scene.audit_kinds(job_id) == ["job.transition", "decision", "approval.pending"]


async def test_the_submit_answer_names_the_approval(scene: Scene) -> None:
    response = await scene.harness.http.post(
        "/api/v1/jobs", json={"topic": "job.test.admin"}, headers=scene.keys.agent
    )
    body = response.json()
    assert body["approval_ref"] == body["job_id"]


async def test_gate_b_asking_for_approval_creates_the_record_too(scene: Scene) -> None:
    harness = scene.harness
    response = await harness.http.post(
        "/api/v1/jobs", json={"topic": "job.test.run"}, headers=scene.keys.agent
    )
    job_id = response.json()["job_id"]
    harness.plane.holder.swap(
        policy(API_POLICY.replace('topics: ["job.test.admin"]', 'topics: ["job.test.run"]'))
    )
    await BareWorker.register(harness.http)
    await harness.wait_state(job_id, "APPROVAL_REQUIRED")
    approval = await harness.plane.store.get_approval(job_id)
    assert approval is not None
    assert approval.gate == "B"
    assert approval.policy_snapshot == harness.plane.kernel.snapshot_id()


# --- who may approve ------------------------------------------------------------------------


async def test_the_requester_cannot_approve_their_own_job(scene: Scene) -> None:
    job_id = await scene.request_approval()
    harness = scene.harness
    own_operator_key = await _key(harness, "deploy-bot", Role.OPERATOR)
    for key in (own_operator_key,):
        result = await scene.answer(job_id, "approve", key)
        assert result["_status"] == 403, result
        assert result["code"] == "self_approval_denied"
    assert (await harness.job(job_id)).state is JobState.APPROVAL_REQUIRED


async def test_the_same_key_cannot_approve_what_it_submitted(scene: Scene) -> None:
    harness = scene.harness
    response = await harness.http.post(
        "/api/v1/jobs", json={"topic": "job.test.admin"}, headers=scene.keys.alice
    )
    job_id = response.json()["job_id"]
    result = await scene.answer(job_id, "approve", scene.keys.alice)
    assert result["_status"] == 403
    assert result["code"] == "self_approval_denied"
    assert (await scene.answer(job_id, "approve", scene.keys.bob))["status"] == "approved"


async def test_agents_and_viewers_may_not_approve(scene: Scene) -> None:
    job_id = await scene.request_approval()
    for key in (scene.keys.agent, scene.keys.viewer):
        response = await scene.harness.http.post(f"{APPROVALS}/{job_id}/approve", headers=key)
        assert_error(response, 403, "forbidden")
    assert (await scene.harness.job(job_id)).state is JobState.APPROVAL_REQUIRED


# --- approving, rejecting, repeats and races ------------------------------------------------


async def test_approval_records_who_when_why_and_resumes_the_job_within_a_second(
    scene: Scene,
) -> None:
    harness = scene.harness
    worker = await BareWorker.register(harness.http)
    job_id = await scene.request_approval()
    started = time.monotonic()
    result = await scene.answer(job_id, "approve", scene.keys.alice, reason="ok", note="CHG-1")
    assert result["status"] == "approved", result
    (claimed,) = await worker.poll(wait_s=1)
    assert claimed["job_id"] == job_id
    assert time.monotonic() - started < 1.0
    approval = await harness.plane.store.get_approval(job_id)
    assert approval is not None
    assert approval.status is ApprovalStatus.APPROVED
    assert approval.resolved_by == "alice"
    assert approval.resolution_reason == "ok"
    assert approval.note == "CHG-1"
    assert approval.resolved_at is not None
    assert approval.resolved_snapshot == approval.policy_snapshot


async def test_approving_twice_is_idempotent_and_audited_once(scene: Scene) -> None:
    job_id = await scene.request_approval()
    first = await scene.answer(job_id, "approve", scene.keys.alice)
    second = await scene.answer(job_id, "approve", scene.keys.bob)
    assert first["status"] == "approved"
    assert second["_status"] == 200
    assert second["status"] == "already_approved"
    assert second["approval"]["resolved_by"] == "alice"
    assert (await scene.audit_kinds(job_id)).count("approval.approved") == 1


async def test_reject_denies_and_then_approve_is_409(scene: Scene) -> None:
    job_id = await scene.request_approval()
    rejected = await scene.answer(job_id, "reject", scene.keys.alice, reason="too risky")
    assert rejected["status"] == "rejected"
    job = await scene.harness.job(job_id)
    assert job.state is JobState.DENIED
    assert job.error is not None
    assert job.error.code == "approval_rejected"
    assert (await scene.answer(job_id, "reject", scene.keys.bob))["status"] == "already_rejected"
    late = await scene.answer(job_id, "approve", scene.keys.bob)
    assert late["_status"] == 409
    assert late["code"] == "approval_already_resolved"
    assert late["approval"]["status"] == "rejected"


async def test_fifty_concurrent_answers_resolve_once(scene: Scene) -> None:
    job_id = await scene.request_approval()
    calls = [
        scene.answer(
            job_id, "approve" if i % 2 else "reject", scene.keys.bob if i % 3 else scene.keys.alice
        )
        for i in range(50)
    ]
    results = await asyncio.gather(*calls)
    winners = [r for r in results if r.get("status") in ("approved", "rejected")]
    assert len(winners) == 1, [r.get("status") or r.get("code") for r in results]
    verdict = winners[0]["status"]
    for result in results:
        if result is winners[0]:
            continue
        if result["_status"] == 200:
            assert result["status"] == f"already_{verdict}"
        else:
            assert result["_status"] == 409, result
            assert result["code"] == "approval_already_resolved"
    kinds = await scene.audit_kinds(job_id)
    resolutions = [k for k in kinds if k in ("approval.approved", "approval.rejected")]
    assert resolutions == [f"approval.{verdict}"]
    decisions = await scene.harness.plane.store.job_decisions(job_id)
    assert [d.gate.value for d in decisions].count("approval") == 1


async def test_answering_a_job_that_never_needed_approval_is_404(scene: Scene) -> None:
    response = await scene.harness.http.post(
        "/api/v1/jobs", json={"topic": "job.test.run"}, headers=scene.keys.agent
    )
    job_id = response.json()["job_id"]
    result = await scene.answer(job_id, "approve", scene.keys.alice)
    assert result["_status"] == 404
    assert result["code"] == "approval_not_found"
    unknown = await scene.answer("nope", "approve", scene.keys.alice)
    assert unknown["_status"] == 404


# --- bound to the policy and to the request -------------------------------------------------


async def test_a_policy_that_now_denies_makes_the_approval_stale(scene: Scene) -> None:
    harness = scene.harness
    job_id = await scene.request_approval()
    old = harness.plane.kernel.snapshot_id()
    harness.plane.holder.swap(
        policy(
            API_POLICY.replace("decision: require_approval", "decision: deny").replace(
                'version: "test-1"', 'version: "test-2"'
            )
        )
    )
    new = harness.plane.kernel.snapshot_id()
    assert new != old
    result = await scene.answer(job_id, "approve", scene.keys.alice)
    assert result["_status"] == 409, result
    assert result["code"] == "approval_stale_snapshot"
    assert result["approval"]["status"] == "invalidated"
    job = await harness.job(job_id)
    assert job.state is JobState.DENIED
    decisions = await harness.plane.store.job_decisions(job_id)
    assert (decisions[-1].gate.value, decisions[-1].decision.value) == ("approval", "DENY")
    assert decisions[-1].policy_snapshot == new


async def test_a_policy_that_still_asks_for_approval_proceeds_under_the_new_snapshot(
    scene: Scene,
) -> None:
    harness = scene.harness
    job_id = await scene.request_approval()
    harness.plane.holder.swap(
        policy(API_POLICY.replace("admin needs approval", "admin needs approval (v2)"))
    )
    new = harness.plane.kernel.snapshot_id()
    result = await scene.answer(job_id, "approve", scene.keys.alice)
    assert result["status"] == "approved", result
    assert result["approval"]["resolved_snapshot"] == new
    assert result["approval"]["policy_snapshot"] != new
    decisions = await harness.plane.store.job_decisions(job_id)
    assert decisions[-1].policy_snapshot == new


async def test_approving_a_request_other_than_the_one_reviewed_is_stale(scene: Scene) -> None:
    job_id = await scene.request_approval(context={"replicas": 3})
    result = await scene.answer(job_id, "approve", scene.keys.alice, job_hash="0" * 64)
    assert result["_status"] == 409
    assert result["code"] == "approval_stale_request"
    assert (await scene.harness.job(job_id)).state is JobState.APPROVAL_REQUIRED
    approval = await scene.harness.plane.store.get_approval(job_id)
    assert approval is not None
    ok = await scene.answer(job_id, "approve", scene.keys.alice, job_hash=approval.job_hash)
    assert ok["status"] == "approved"


async def test_a_job_changed_behind_the_approval_cannot_be_approved(scene: Scene) -> None:
    harness = scene.harness
    job_id = await scene.request_approval(context={"replicas": 3})
    store: Any = harness.plane.store
    (data,) = store._db.execute("SELECT data FROM jobs WHERE id=?", (job_id,)).fetchone()
    changed = json.loads(data)
    changed["spec"]["context"] = {"replicas": 300}
    store._db.execute("UPDATE jobs SET data=? WHERE id=?", (json.dumps(changed), job_id))
    store._cache.clear()  # the edit bypassed the store, as a database-level attacker would
    result = await scene.answer(job_id, "approve", scene.keys.alice)
    assert result["_status"] == 409
    assert result["code"] == "approval_stale_request"
    assert (await harness.job(job_id)).state is JobState.APPROVAL_REQUIRED


# --- silence is never consent ---------------------------------------------------------------


async def test_an_expired_approval_times_the_job_out_and_it_never_runs(tmp_path: Path) -> None:
    async with _scene(tmp_path, TTL_POLICY, approval_sweep_s=0.1) as scene:
        harness = scene.harness
        worker = await BareWorker.register(harness.http)
        job_id = await scene.request_approval()
        approval = await harness.plane.store.get_approval(job_id)
        assert approval is not None
        assert approval.expires_at is not None
        assert approval.expires_at - approval.created_at == pytest.approx(1)
        job = await harness.wait_state(job_id, "TIMEOUT", timeout=5)
        assert job.error is not None
        assert job.error.code == "approval_expired"
        expired = await harness.plane.store.get_approval(job_id)
        assert expired is not None
        assert expired.status is ApprovalStatus.EXPIRED
        late = await scene.answer(job_id, "approve", scene.keys.alice)
        assert late["_status"] == 409
        assert late["approval"]["status"] == "expired"
        assert await worker.poll(wait_s=0.3) == []
        events = await harness.plane.store.job_events(job_id)
        assert JobState.DISPATCHED not in [e.to_state for e in events]
        assert "approval.expired" in await scene.audit_kinds(job_id)


async def test_an_approval_answered_after_its_ttl_expires_instead(tmp_path: Path) -> None:
    async with _scene(tmp_path, TTL_POLICY, approval_sweep_s=3600) as scene:
        harness = scene.harness
        job_id = await scene.request_approval()
        await asyncio.sleep(1.05)
        result = await scene.answer(job_id, "approve", scene.keys.alice)
        assert result["_status"] == 409
        assert result["approval"]["status"] == "expired"
        assert (await harness.job(job_id)).state is JobState.TIMEOUT


async def test_cancelling_a_waiting_job_cancels_its_approval(scene: Scene) -> None:
    job_id = await scene.request_approval()
    response = await scene.harness.http.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    approval = await scene.harness.plane.store.get_approval(job_id)
    assert approval is not None
    assert approval.status is ApprovalStatus.CANCELLED
    late = await scene.answer(job_id, "approve", scene.keys.alice)
    assert late["_status"] == 409


async def test_listing_filters_by_status(scene: Scene) -> None:
    first = await scene.request_approval()
    second = await scene.request_approval()
    await scene.answer(first, "approve", scene.keys.alice)
    http = scene.harness.http
    pending = (await http.get(APPROVALS)).json()["approvals"]
    assert [a["approval_id"] for a in pending] == [second]
    everything = (await http.get(APPROVALS, params={"include_resolved": "true"})).json()
    assert [a["approval_id"] for a in everything["approvals"]] == [second, first]
    approved = (await http.get(APPROVALS, params={"status": "approved"})).json()
    assert [a["approval_id"] for a in approved["approvals"]] == [first]
    bad = await http.get(APPROVALS, params={"status": "maybe"})
    assert_error(bad, 422)


# --- races and failures around the re-check -------------------------------------------------

DENYING = API_POLICY.replace("decision: require_approval", "decision: deny").replace(
    'version: "test-1"', 'version: "test-2"'
)


async def test_an_answer_that_lands_during_the_recheck_wins_alone(tmp_path: Path) -> None:
    kernel = SwitchableKernel(policy(API_POLICY))
    async with _scene(tmp_path, kernel=kernel) as scene:
        job_id = await scene.request_approval()
        kernel.holder.swap(policy(DENYING))
        kernel.hold_rechecks = asyncio.Event()
        approving = asyncio.create_task(scene.answer(job_id, "approve", scene.keys.alice))
        await wait_until(lambda: _calls_reached(kernel, 2), what="the re-check to start")
        rejected = await scene.answer(job_id, "reject", scene.keys.bob, reason="no")
        assert rejected["status"] == "rejected"
        kernel.hold_rechecks.set()
        late = await approving
        assert late["_status"] == 409, late
        assert late["code"] == "approval_already_resolved"
        assert late["approval"]["status"] == "rejected"
        kinds = await scene.audit_kinds(job_id)
        assert [k for k in kinds if k.startswith("approval.")] == [
            "approval.pending",
            "approval.rejected",
        ]


async def _calls_reached(kernel: SwitchableKernel, count: int) -> bool:
    return kernel.calls >= count


async def test_a_recheck_without_a_kernel_approves_nothing(tmp_path: Path) -> None:
    kernel = SwitchableKernel(policy(API_POLICY))
    async with _scene(tmp_path, kernel=kernel) as scene:
        job_id = await scene.request_approval()
        kernel.holder.swap(policy(API_POLICY.replace("admin needs approval", "changed")))
        kernel.down = True
        result = await scene.answer(job_id, "approve", scene.keys.alice)
        assert result["_status"] == 503, result
        assert result["code"] == "kernel_unavailable"
        assert (await scene.harness.job(job_id)).state is JobState.APPROVAL_REQUIRED
        approval = await scene.harness.plane.store.get_approval(job_id)
        assert approval is not None
        assert approval.status is ApprovalStatus.PENDING


async def test_the_requester_is_refused_even_after_someone_else_approved(scene: Scene) -> None:
    job_id = await scene.request_approval()
    assert (await scene.answer(job_id, "approve", scene.keys.alice))["status"] == "approved"
    own_operator_key = await _key(scene.harness, "deploy-bot", Role.OPERATOR)
    result = await scene.answer(job_id, "approve", own_operator_key)
    assert result["_status"] == 403
    assert result["code"] == "self_approval_denied"


async def test_a_cancel_tells_the_approvers_the_approval_is_moot(scene: Scene) -> None:
    told: list[tuple[str, str]] = []

    class Recorder:
        def approval_requested(self, approval: Any, job: Any) -> None:
            told.append(("requested", approval.status.value))

        def approval_resolved(self, approval: Any, job: Any) -> None:
            told.append(("resolved", approval.status.value))

    scene.harness.plane.execution.approval_listener = Recorder()
    job_id = await scene.request_approval()
    response = await scene.harness.http.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert told == [("resolved", "cancelled")]
