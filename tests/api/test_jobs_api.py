"""The HTTP API's behaviour, driven over real HTTP against a real control plane.

Pinned:

- submit answers per decision: 200 ``accepted`` (with constraints), 200
  ``approval_required``, 403 ``policy_denied`` with the full ``rejection``, 429
  ``throttled`` with ``Retry-After`` and ``rejection.retry_after``; refused jobs are kept as
  DENIED with the gate-A decision on record;
- idempotency: a replay returns the first answer (``Idempotent-Replayed: true``) and never
  a second job; another body under the key is 409; keys are per tenant; the header and the
  body field are one key; a throttled answer is not bound to the key;
- ``GET /jobs`` filters, limits, invalid states and cursors, and cursor paging; ``GET
  /jobs/{id}`` 404 and ``?wait=``; ``/decisions`` and ``/events`` shapes and order;
- cancel, remediate, approvals, DLQ, workers (list, bad registrations, unknown worker,
  progress on a non-running job, late results), the policy endpoints, health, metrics,
  OpenAPI, and the error shape of unknown paths and wrong methods;
- a DLQ retry claims its entry before submitting: two at once make exactly one new job
  (the other is 404), and a retry gate A cannot decide (503) leaves the entry in place.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cordum.models import DecisionRecord, Job
from cordum.models.state import JobState
from cordum.ports import JobFilter
from tests.api.support import (
    API_POLICY,
    accepted,
    assert_error,
    served,
    stored_job_count,
    wait_until,
)
from tests.pipeline.harness import Harness, policy
from tests.pipeline.kernels import SwitchableKernel
from tests.pipeline.workers import BareWorker

pytestmark = pytest.mark.anyio

JOBS = "/api/v1/jobs"
REMEDIATION_KEYS = {
    "id",
    "title",
    "summary",
    "replacement_topic",
    "replacement_capability",
    "add_labels",
    "remove_labels",
}
REJECTION_KEYS = {
    "status",
    "decision",
    "reason",
    "rule_id",
    "policy_snapshot",
    "remediations",
    "job_id",
    "trace_id",
}


@pytest.fixture(scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    """One plane for the tests that neither submit jobs nor register workers."""
    async with served(tmp_path_factory.mktemp("shared")) as harness:
        yield harness


async def get_json(harness: Harness, path: str, **params: Any) -> Any:
    """GET that must succeed; the JSON body."""
    response = await harness.http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def list_ids(harness: Harness, **params: Any) -> list[str]:
    """Job ids of ``GET /jobs`` with ``params`` (one page)."""
    return [j["job_id"] for j in (await get_json(harness, JOBS, **params))["jobs"]]


async def running_job(harness: Harness, worker: BareWorker, topic: str = "job.test.run") -> str:
    """Submit a job and have ``worker`` claim it (RUNNING)."""
    job_id = await accepted(harness, topic)
    (claimed,) = await worker.poll(wait_s=3)
    assert claimed["job_id"] == job_id
    return job_id


# --- submit: one answer per decision ----------------------------------------------------


async def test_allow_is_200_accepted_with_the_decision(harness: Harness) -> None:
    response = await harness.submit("job.test.run", context={"n": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "job_id",
        "trace_id",
        "status",
        "decision",
        "reason",
        "rule_id",
        "policy_snapshot",
        "constraints",
    }
    assert body["status"] == "accepted"
    assert body["decision"] == "ALLOW"
    assert body["rule_id"] == "allow-test"
    assert body["reason"] == "test jobs are allowed"
    assert body["policy_snapshot"] == harness.plane.kernel.snapshot_id()
    assert body["constraints"] == {}
    assert "Idempotent-Replayed" not in response.headers
    stored = await harness.job(body["job_id"])
    assert stored.trace_id == body["trace_id"]
    assert stored.state in (JobState.PENDING, JobState.SCHEDULED)


async def test_allow_with_constraints_is_200_accepted_with_the_constraints(
    harness: Harness,
) -> None:
    response = await harness.submit("job.test.constrained")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "accepted"
    assert body["decision"] == "ALLOW_WITH_CONSTRAINTS"
    assert body["rule_id"] == "constrained"
    expected = {
        "budgets": {"max_retries": 2},
        "sandbox": {"network_allowlist": ["api.example.com"]},
    }
    assert body["constraints"] == expected
    view = await get_json(harness, f"{JOBS}/{body['job_id']}")
    assert view["constraints"] == expected
    assert view["safety_decision"] == "ALLOW_WITH_CONSTRAINTS"


async def test_require_approval_is_200_approval_required(harness: Harness) -> None:
    response = await harness.submit("job.test.admin")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "approval_required"
    assert body["decision"] == "REQUIRE_APPROVAL"
    assert body["rule_id"] == "admin-approval"
    assert body["reason"] == "admin needs approval"
    assert body["policy_snapshot"] == harness.plane.kernel.snapshot_id()
    assert body["remediations"] == []
    assert "constraints" not in body
    assert (await harness.job(body["job_id"])).state is JobState.APPROVAL_REQUIRED


async def test_deny_is_403_with_a_rejection_to_replan_from(harness: Harness) -> None:
    response = await harness.submit("job.test.delete")
    error = assert_error(response, 403, "policy_denied")
    assert error["error"] == "deleting is not allowed"
    rejection = error["rejection"]
    assert set(rejection) >= REJECTION_KEYS
    assert rejection["status"] == "blocked"
    assert rejection["decision"] == "DENY"
    assert rejection["reason"] == "deleting is not allowed"
    assert rejection["rule_id"] == "no-delete"
    assert rejection["policy_snapshot"] == harness.plane.kernel.snapshot_id()
    (remediation,) = rejection["remediations"]
    assert set(remediation) == REMEDIATION_KEYS
    assert remediation["id"] == "archive"
    assert remediation["title"] == "Archive instead"
    assert remediation["replacement_topic"] == "job.test.archive"

    stored = await harness.job(rejection["job_id"])
    assert stored.trace_id == rejection["trace_id"]
    assert stored.state is JobState.DENIED
    assert stored.safety_decision is not None
    assert stored.safety_decision.value == "DENY"
    assert stored.safety_rule_id == "no-delete"
    assert stored.error is not None
    assert stored.error.code == "policy_denied"
    decisions = await harness.plane.store.job_decisions(stored.id)
    assert [(d.gate.value, d.decision.value, d.rule_id) for d in decisions] == [
        ("A", "DENY", "no-delete")
    ]


async def test_default_deny_has_no_rule(harness: Harness) -> None:
    response = await harness.submit("job.unknown.thing")
    rejection = assert_error(response, 403, "policy_denied")["rejection"]
    assert rejection["decision"] == "DENY"
    assert rejection["rule_id"] is None
    assert rejection["remediations"] == []
    assert (await harness.job(rejection["job_id"])).state is JobState.DENIED


async def test_throttle_is_429_with_retry_after(harness: Harness) -> None:
    response = await harness.submit("job.test.bulk")
    error = assert_error(response, 429, "throttled")
    assert response.headers["Retry-After"] == "5"
    rejection = error["rejection"]
    assert set(rejection) >= REJECTION_KEYS
    assert rejection["status"] == "throttled"
    assert rejection["decision"] == "THROTTLE"
    assert rejection["rule_id"] == "throttle-bulk"
    assert rejection["retry_after"] == 5.0
    stored = await harness.job(rejection["job_id"])
    assert stored.state is JobState.DENIED
    assert stored.error is not None
    assert stored.error.code == "throttled"
    decisions = await harness.plane.store.job_decisions(stored.id)
    assert [(d.gate.value, d.decision.value) for d in decisions] == [("A", "THROTTLE")]
    assert decisions[0].retry_after_seconds == 5.0


# --- idempotency --------------------------------------------------------------------------


async def test_same_key_same_body_replays_the_first_answer(harness: Harness) -> None:
    payload = {"topic": "job.test.run", "context": {"a": 1}, "idempotency_key": "k-1"}
    first = await harness.http.post(JOBS, json=payload)
    second = await harness.http.post(JOBS, json=payload)
    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert await stored_job_count(harness) == 1


async def test_a_refusal_is_bound_to_its_key_too(harness: Harness) -> None:
    payload = {"topic": "job.test.delete", "idempotency_key": "k-deny"}
    first = await harness.http.post(JOBS, json=payload)
    second = await harness.http.post(JOBS, json=payload)
    assert_error(first, 403, "policy_denied")
    assert_error(second, 403, "policy_denied")
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert await stored_job_count(harness) == 1


async def test_same_key_other_body_is_409(harness: Harness) -> None:
    first = await harness.http.post(JOBS, json={"topic": "job.test.run", "idempotency_key": "k"})
    assert first.status_code == 200, first.text
    conflict = await harness.http.post(
        JOBS, json={"topic": "job.test.run", "context": 2, "idempotency_key": "k"}
    )
    error = assert_error(conflict, 409, "idempotency_conflict")
    assert error["job_id"] == first.json()["job_id"]
    assert "'k'" in error["error"]
    assert await stored_job_count(harness) == 1


async def test_keys_are_per_tenant(harness: Harness) -> None:
    payload = {"topic": "job.test.run", "idempotency_key": "shared"}
    acme = await harness.http.post(JOBS, json=payload, headers={"X-Tenant-ID": "acme"})
    umbrella = await harness.http.post(JOBS, json={**payload, "tenant_id": "umbrella"})
    assert acme.status_code == 200, acme.text
    assert umbrella.status_code == 200, umbrella.text
    assert "Idempotent-Replayed" not in umbrella.headers
    assert acme.json()["job_id"] != umbrella.json()["job_id"]
    assert (await harness.job(acme.json()["job_id"])).tenant_id == "acme"
    assert (await harness.job(umbrella.json()["job_id"])).tenant_id == "umbrella"
    assert await stored_job_count(harness) == 2


async def test_the_header_and_the_body_field_are_one_key(harness: Harness) -> None:
    by_header = await harness.http.post(
        JOBS, json={"topic": "job.test.run"}, headers={"Idempotency-Key": "hk"}
    )
    by_body = await harness.http.post(JOBS, json={"topic": "job.test.run", "idempotency_key": "hk"})
    both = await harness.http.post(
        JOBS,
        json={"topic": "job.test.run", "idempotency_key": "hk"},
        headers={"Idempotency-Key": "hk"},
    )
    assert by_header.status_code == 200, by_header.text
    assert by_body.headers["Idempotent-Replayed"] == "true"
    assert both.headers["Idempotent-Replayed"] == "true"
    assert by_body.json()["job_id"] == by_header.json()["job_id"] == both.json()["job_id"]
    assert (await harness.job(by_header.json()["job_id"])).idempotency_key == "hk"
    assert await stored_job_count(harness) == 1


async def test_a_throttled_answer_is_not_bound_to_the_key(harness: Harness) -> None:
    bulk = {"topic": "job.test.bulk", "idempotency_key": "retry-me"}
    first = await harness.http.post(JOBS, json=bulk)
    again = await harness.http.post(JOBS, json=bulk)
    assert_error(first, 429, "throttled")
    assert_error(again, 429, "throttled")
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["rejection"]["job_id"] != first.json()["rejection"]["job_id"]
    # the key is still free: a different request may take it, and is then bound to it
    taken = await harness.http.post(
        JOBS, json={"topic": "job.test.run", "idempotency_key": "retry-me"}
    )
    assert taken.status_code == 200, taken.text
    replay = await harness.http.post(
        JOBS, json={"topic": "job.test.run", "idempotency_key": "retry-me"}
    )
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["job_id"] == taken.json()["job_id"]
    assert await stored_job_count(harness) == 3


# --- listing and reading jobs -------------------------------------------------------------


async def test_list_filters_by_state_topic_and_tenant(harness: Harness) -> None:
    pending = await accepted(harness, "job.test.run")
    denied = assert_error(await harness.submit("job.test.delete"), 403)["rejection"]["job_id"]
    waiting = (await harness.submit("job.test.admin")).json()["job_id"]
    acme = await accepted(harness, "job.test.run", tenant_id="acme")

    assert await list_ids(harness) == [acme, waiting, denied, pending]
    assert await list_ids(harness, state="DENIED") == [denied]
    assert await list_ids(harness, state="denied, approval_required") == [waiting, denied]
    assert await list_ids(harness, topic="job.test.admin") == [waiting]
    assert await list_ids(harness, topic="job.test.run") == [acme, pending]
    assert await list_ids(harness, tenant="acme") == [acme]
    assert await list_ids(harness, tenant="default", topic="job.test.run") == [pending]
    by_header = await harness.http.get(JOBS, headers={"X-Tenant-ID": "acme"})
    assert [j["job_id"] for j in by_header.json()["jobs"]] == [acme]
    assert await list_ids(harness, tenant="nobody") == []
    view = (await get_json(harness, JOBS, state="DENIED"))["jobs"][0]
    assert view["state"] == "DENIED"
    assert view["topic"] == "job.test.delete"
    assert view["safety_rule_id"] == "no-delete"


@pytest.mark.parametrize("limit", [0, -1, 501])
async def test_limit_out_of_bounds_is_422(shared: Harness, limit: int) -> None:
    error = assert_error(await shared.http.get(JOBS, params={"limit": limit}), 422)
    assert error["code"] == "invalid_request"
    assert "limit" in error["error"]
    assert [d["field"] for d in error["details"]] == ["limit"]


async def test_limit_bounds_are_inclusive(harness: Harness) -> None:
    await accepted(harness)
    assert len(await list_ids(harness, limit=1)) == 1
    assert len(await list_ids(harness, limit=500)) == 1


async def test_the_default_label_limit_is_128(harness: Harness) -> None:
    labels = {f"k{i}": str(i) for i in range(128)}
    assert (await harness.submit("job.test.run", labels=labels)).status_code == 200
    response = await harness.submit("job.test.run", labels={**labels, "one-more": "x"})
    error = assert_error(response, 422, "too_many_labels")
    assert "129" in error["error"]
    assert "128" in error["error"]
    assert await stored_job_count(harness) == 1


async def test_an_unknown_state_is_422_listing_the_states(shared: Harness) -> None:
    response = await shared.http.get(JOBS, params={"state": "PENDING,DONE"})
    error = assert_error(response, 422, "invalid_state")
    for state in JobState:
        assert state.value in error["error"]


@pytest.mark.parametrize("cursor", ["abc", "1.5", "-", "12abc"])
async def test_a_bad_cursor_is_422(shared: Harness, cursor: str) -> None:
    error = assert_error(await shared.http.get(JOBS, params={"cursor": cursor}), 422)
    assert error["code"] == "invalid_cursor"
    assert cursor in error["error"]


async def test_a_cursor_too_large_for_the_store_is_422_not_500(shared: Harness) -> None:
    response = await shared.http.get(JOBS, params={"cursor": "9" * 30})
    assert_error(response, 422, "invalid_cursor")


async def test_a_bad_approvals_cursor_is_422_not_500(shared: Harness) -> None:
    response = await shared.http.get("/api/v1/approvals", params={"cursor": "abc"})
    assert_error(response, 422, "invalid_cursor")


async def test_cursor_paging_covers_every_job_once_newest_first(harness: Harness) -> None:
    submitted = [await accepted(harness, f"job.test.p{i}") for i in range(7)]
    seen: list[str] = []
    pages = 0
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        page = await get_json(harness, JOBS, **params)
        pages += 1
        assert len(page["jobs"]) <= 3
        seen += [j["job_id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert pages == 3
    assert seen == list(reversed(submitted))


async def test_an_unknown_job_is_404_everywhere(shared: Harness) -> None:
    for method, path in (
        ("GET", f"{JOBS}/nope"),
        ("GET", f"{JOBS}/nope/decisions"),
        ("GET", f"{JOBS}/nope/events"),
        ("POST", f"{JOBS}/nope/cancel"),
    ):
        response = await shared.http.request(method, path)
        error = assert_error(response, 404, "job_not_found")
        assert "'nope'" in error["error"]
    for verb in ("approve", "reject"):
        response = await shared.http.post(f"/api/v1/approvals/nope/{verb}")
        error = assert_error(response, 404, "approval_not_found")
        assert "'nope'" in error["error"]
    remediate = await shared.http.post(f"{JOBS}/nope/remediate", json={"remediation_id": "x"})
    assert_error(remediate, 404, "job_not_found")


async def test_get_job_shows_the_documented_fields(harness: Harness) -> None:
    job_id = await accepted(
        harness, "job.test.run", context={"q": [1, 2]}, labels={"env": "dev"}, priority="batch"
    )
    view = await get_json(harness, f"{JOBS}/{job_id}")
    for key in (
        "state",
        "topic",
        "input",
        "labels",
        "safety_decision",
        "safety_reason",
        "safety_rule_id",
        "safety_snapshot",
        "constraints",
        "result",
        "error",
        "attempts",
        "scheduling_attempts",
        "waiting_reason",
        "worker_id",
        "created_at",
        "dispatched_at",
        "started_at",
        "finished_at",
    ):
        assert key in view, key
    assert view["job_id"] == job_id
    assert view["input"] == {"q": [1, 2]}
    assert view["labels"] == {"env": "dev"}
    assert view["priority"] == "batch"
    assert view["tenant_id"] == "default"
    assert view["created_at"].endswith("Z")


async def test_a_far_deadline_is_refused_or_readable(harness: Harness) -> None:
    """deadline_ms is an int > 0; whatever is accepted must be readable back."""
    response = await harness.submit("job.test.run", deadline_ms=10**15)
    if response.status_code != 200:
        assert_error(response, 422, "invalid_request")
        return
    job_id = response.json()["job_id"]
    single = await harness.http.get(f"{JOBS}/{job_id}")
    assert single.status_code == 200, single.text
    listing = await harness.http.get(JOBS)
    assert listing.status_code == 200, listing.text


async def test_wait_returns_as_soon_as_the_job_finishes(harness: Harness) -> None:
    worker = await BareWorker.register(harness.http)
    job_id = await accepted(harness)

    async def work() -> None:
        (claimed,) = await worker.poll(wait_s=3)
        await asyncio.sleep(0.2)
        await worker.succeed(claimed["job_id"], {"done": True})

    started = time.monotonic()
    working = asyncio.create_task(work())
    view = await get_json(harness, f"{JOBS}/{job_id}", wait=20)
    elapsed = time.monotonic() - started
    await working
    assert view["state"] == "SUCCEEDED"
    assert view["result"] == {"done": True}
    assert elapsed < 5


async def test_wait_gives_the_current_job_when_time_is_up(harness: Harness) -> None:
    job_id = await accepted(harness)  # no worker: it stays PENDING
    started = time.monotonic()
    view = await get_json(harness, f"{JOBS}/{job_id}", wait=0.3)
    elapsed = time.monotonic() - started
    assert view["state"] == "PENDING"
    assert 0.25 <= elapsed < 3


async def test_a_negative_wait_is_422(shared: Harness) -> None:
    error = assert_error(await shared.http.get(f"{JOBS}/any", params={"wait": -1}), 422)
    assert error["code"] == "invalid_request"
    assert "wait" in error["error"]


async def test_decisions_and_events_of_a_job_that_ran(harness: Harness) -> None:
    worker = await BareWorker.register(harness.http)
    job_id = await running_job(harness, worker)
    await worker.succeed(job_id, "ok")
    await harness.wait_state(job_id, "SUCCEEDED")

    decisions = await get_json(harness, f"{JOBS}/{job_id}/decisions")
    assert decisions["job_id"] == job_id
    snapshot = harness.plane.kernel.snapshot_id()
    assert [(d["gate"], d["decision"], d["rule_id"]) for d in decisions["decisions"]] == [
        ("A", "ALLOW", "allow-test"),
        ("B", "ALLOW", "allow-test"),
    ]
    for decision in decisions["decisions"]:
        assert decision["job_id"] == job_id
        assert decision["policy_snapshot"] == snapshot
        assert decision["reason"] == "test jobs are allowed"
        assert decision["remediations"] == []
        assert decision["constraints"] == {}
        assert decision["safety_bypassed"] is False
        assert decision["at"].endswith("Z")

    events = (await get_json(harness, f"{JOBS}/{job_id}/events"))["events"]
    assert [e["to"] for e in events] == [
        "PENDING",
        "SCHEDULED",
        "DISPATCHED",
        "RUNNING",
        "SUCCEEDED",
    ]
    assert [e["from"] for e in events] == [None, "PENDING", "SCHEDULED", "DISPATCHED", "RUNNING"]
    stamps = [e["at"] for e in events]
    assert stamps == sorted(stamps)
    assert all(isinstance(e["reason"], str) for e in events)


# --- cancel -------------------------------------------------------------------------------


async def test_cancel_a_pending_job(harness: Harness) -> None:
    job_id = await accepted(harness)
    response = await harness.http.post(f"{JOBS}/{job_id}/cancel", json={"reason": "not needed"})
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["state"] == "CANCELLED"
    assert view["error"] == {"code": "cancelled", "message": "not needed"}
    again = await harness.http.post(f"{JOBS}/{job_id}/cancel")
    assert again.status_code == 200, again.text
    assert again.json()["state"] == "CANCELLED"
    assert (await harness.job(job_id)).state is JobState.CANCELLED


async def test_cancel_a_running_job_tells_its_worker(harness: Harness) -> None:
    worker = await BareWorker.register(harness.http)
    job_id = await running_job(harness, worker)
    response = await harness.http.post(f"{JOBS}/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "CANCELLED"

    poll = await harness.http.post(
        f"/api/v1/workers/{worker.worker_id}/poll", json={"wait_s": 2, "max_jobs": 1}
    )
    assert poll.status_code == 200, poll.text
    assert poll.json() == {"jobs": [], "cancel": [job_id]}
    late = await worker.succeed(job_id, "too late")
    assert late == {"state": "CANCELLED", "ignored": True}
    assert (await harness.job(job_id)).result is None


async def test_cancel_a_finished_job_is_409(harness: Harness) -> None:
    worker = await BareWorker.register(harness.http)
    job_id = await running_job(harness, worker)
    await worker.succeed(job_id)
    await harness.wait_state(job_id, "SUCCEEDED")
    error = assert_error(await harness.http.post(f"{JOBS}/{job_id}/cancel"), 409)
    assert error["code"] == "job_not_cancellable"
    assert error["state"] == "SUCCEEDED"
    assert "SUCCEEDED" in error["error"]


async def test_cancel_a_denied_job_is_409(harness: Harness) -> None:
    job_id = assert_error(await harness.submit("job.test.delete"), 403)["rejection"]["job_id"]
    error = assert_error(await harness.http.post(f"{JOBS}/{job_id}/cancel"), 409)
    assert error["code"] == "job_not_cancellable"
    assert error["state"] == "DENIED"


# --- remediate ----------------------------------------------------------------------------


async def test_remediate_submits_the_replacement_through_gate_a(harness: Harness) -> None:
    denied = assert_error(await harness.submit("job.test.delete", context={"id": 7}), 403)
    old_id = denied["rejection"]["job_id"]
    response = await harness.http.post(
        f"{JOBS}/{old_id}/remediate", json={"remediation_id": "archive"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "accepted"
    assert body["rule_id"] == "allow-test"
    assert body["job_id"] != old_id
    view = await get_json(harness, f"{JOBS}/{body['job_id']}")
    assert view["topic"] == "job.test.archive"
    assert view["retry_of"] == old_id
    assert view["input"] == {"id": 7}
    assert (await harness.job(old_id)).state is JobState.DENIED


async def test_an_unknown_remediation_is_404_listing_the_offered_ones(harness: Harness) -> None:
    old_id = assert_error(await harness.submit("job.test.delete"), 403)["rejection"]["job_id"]
    response = await harness.http.post(f"{JOBS}/{old_id}/remediate", json={"remediation_id": "x"})
    error = assert_error(response, 404, "remediation_not_found")
    assert "archive" in error["error"]
    assert "'x'" in error["error"]
    assert await stored_job_count(harness) == 1


@pytest.mark.parametrize("payload", [{}, {"remediation_id": ""}, {"remediation_id": 5}])
async def test_remediate_needs_a_remediation_id(harness: Harness, payload: Any) -> None:
    old_id = assert_error(await harness.submit("job.test.delete"), 403)["rejection"]["job_id"]
    response = await harness.http.post(f"{JOBS}/{old_id}/remediate", json=payload)
    error = assert_error(response, 422, "invalid_request")
    assert "remediation_id" in error["error"]
    assert await stored_job_count(harness) == 1


# --- DLQ ----------------------------------------------------------------------------------


async def test_a_non_retryable_failure_lands_in_the_dlq_and_can_be_retried(
    harness: Harness,
) -> None:
    worker = await BareWorker.register(harness.http)
    job_id = await running_job(harness, worker)
    answer = await worker.fail(job_id, "disk full", retryable=False)
    assert answer == {"state": "FAILED", "ignored": False}

    entries = (await get_json(harness, "/api/v1/dlq"))["entries"]
    (entry,) = entries
    assert set(entry) == {
        "job_id",
        "tenant_id",
        "topic",
        "reason_code",
        "message",
        "attempts",
        "at",
    }
    assert entry["job_id"] == job_id
    assert entry["reason_code"] == "max_retries_exceeded"
    assert entry["topic"] == "job.test.run"
    assert entry["tenant_id"] == "default"
    assert entry["attempts"] == 1
    assert "disk full" in entry["message"]

    retry = await harness.http.post(f"/api/v1/dlq/{job_id}/retry")
    assert retry.status_code == 200, retry.text
    new_id = retry.json()["job_id"]
    assert new_id != job_id
    assert retry.json()["status"] == "accepted"
    assert (await harness.job(new_id)).retry_of == job_id
    assert (await get_json(harness, "/api/v1/dlq"))["entries"] == []
    assert (await harness.job(job_id)).state is JobState.FAILED
    assert_error(await harness.http.post(f"/api/v1/dlq/{job_id}/retry"), 404)
    (claimed,) = await worker.poll(wait_s=3)
    assert claimed["job_id"] == new_id


async def test_delete_a_dlq_entry(harness: Harness) -> None:
    worker = await BareWorker.register(harness.http)
    job_id = await running_job(harness, worker)
    await worker.fail(job_id, "nope", retryable=False)
    assert (await harness.http.delete(f"/api/v1/dlq/{job_id}")).status_code == 204
    assert (await get_json(harness, "/api/v1/dlq"))["entries"] == []
    gone = await harness.http.delete(f"/api/v1/dlq/{job_id}")
    assert_error(gone, 404, "dlq_entry_not_found")
    assert (await harness.job(job_id)).state is JobState.FAILED


class HeldKernel(SwitchableKernel):
    """Gate A waits for ``release`` while ``held``: a slow kernel, to open race windows."""

    def __init__(self) -> None:
        super().__init__(policy(API_POLICY))
        self.held = False
        self.release = asyncio.Event()

    async def evaluate(self, job: Job) -> DecisionRecord:
        if self.held:
            self.calls += 1
            await self.release.wait()
        return await super().evaluate(job)


@pytest.fixture
async def held(tmp_path: Path) -> AsyncIterator[tuple[Harness, HeldKernel]]:
    kernel = HeldKernel()
    async with served(tmp_path, kernel=kernel) as plane:
        yield plane, kernel


async def dead_job(harness: Harness) -> str:
    """A job that failed for good: its id is in the DLQ."""
    worker = await BareWorker.register(harness.http)
    job_id = await running_job(harness, worker)
    await worker.fail(job_id, "nope", retryable=False)
    assert await harness.plane.store.get_dlq(job_id) is not None
    return job_id


async def retries_of(harness: Harness, job_id: str) -> list[str]:
    page = await harness.plane.store.list_jobs(JobFilter(), limit=10_000)
    return [job.id for job in page.jobs if job.retry_of == job_id]


async def test_concurrent_retries_of_one_dlq_entry_submit_one_job(
    held: tuple[Harness, HeldKernel],
) -> None:
    harness, kernel = held
    dead = await dead_job(harness)
    kernel.held = True
    retries = [
        asyncio.create_task(harness.http.post(f"/api/v1/dlq/{dead}/retry")) for _ in range(2)
    ]
    # both would be in gate A now, were the entry not taken before submitting

    async def in_gate_a_or_refused() -> bool:
        return kernel.calls >= 2 or any(retry.done() for retry in retries)

    await wait_until(in_gate_a_or_refused, what="both retries in gate A, or one refused")
    kernel.release.set()
    answers = await asyncio.gather(*retries)
    assert sorted(r.status_code for r in answers) == [200, 404], [r.text for r in answers]
    (refused,) = [r for r in answers if r.status_code == 404]
    assert_error(refused, 404, "dlq_entry_not_found")
    assert len(await retries_of(harness, dead)) == 1
    assert await harness.plane.store.get_dlq(dead) is None


async def test_a_retry_gate_a_cannot_decide_leaves_the_dlq_entry(
    held: tuple[Harness, HeldKernel],
) -> None:
    harness, kernel = held
    dead = await dead_job(harness)
    kernel.down = True
    refused = await harness.http.post(f"/api/v1/dlq/{dead}/retry")
    assert_error(refused, 503, "policy_unavailable")
    assert await retries_of(harness, dead) == []
    assert await harness.plane.store.get_dlq(dead) is not None, "the entry was put back"
    kernel.down = False
    retried = await harness.http.post(f"/api/v1/dlq/{dead}/retry")
    assert retried.status_code == 200, retried.text
    assert await retries_of(harness, dead) == [retried.json()["job_id"]]


# --- workers ------------------------------------------------------------------------------


async def test_a_registered_worker_is_listed_live(harness: Harness) -> None:
    worker = await BareWorker.register(harness.http, capacity=3)
    (listed,) = (await get_json(harness, "/api/v1/workers"))["workers"]
    assert listed["worker_id"] == worker.worker_id
    assert listed["live"] is True
    assert listed["pool"] == "p"
    assert listed["topics"] == ["job.test.>"]
    assert listed["capacity"] == 3
    assert listed["transport"] == "http"
    assert listed["active_jobs"] == 0
    assert listed["last_heartbeat"].endswith("Z")


async def test_register_answers_the_heartbeat_settings(harness: Harness) -> None:
    response = await harness.http.post(
        "/api/v1/workers", json={"worker_id": "named-1", "pool": "p", "topics": ["job.test.*"]}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "worker_id": "named-1",
        "heartbeat_interval_s": harness.plane.settings.heartbeat_interval_s,
        "lost_after_s": harness.plane.settings.worker_lost_after_s,
    }


@pytest.mark.parametrize(
    ("registration", "mentions"),
    [
        ({"worker_id": "a b", "pool": "p", "topics": ["job.test.>"]}, "a b"),
        ({"worker_id": "x" * 129, "pool": "p", "topics": ["job.test.>"]}, "worker_id"),
        ({"pool": "p", "topics": ["job..x"]}, "job..x"),
        ({"pool": "p", "topics": ["job.>.x"]}, "job.>.x"),
        ({"pool": "p", "topics": ["job.te*st"]}, "job.te*st"),
        ({"pool": " ", "topics": ["job.test.>"]}, "pool"),
    ],
)
async def test_a_bad_registration_is_422(
    shared: Harness, registration: dict[str, Any], mentions: str
) -> None:
    error = assert_error(await shared.http.post("/api/v1/workers", json=registration), 422)
    assert error["code"] == "invalid_worker"
    assert mentions in error["error"]
    assert await shared.plane.store.list_workers() == []


async def test_an_unknown_worker_is_404(shared: Harness) -> None:
    for path, payload in (
        ("/api/v1/workers/ghost/heartbeat", {"active_jobs": 0}),
        ("/api/v1/workers/ghost/poll", {"wait_s": 0}),
        ("/api/v1/workers/ghost/drain", None),
    ):
        response = await shared.http.post(path, json=payload)
        error = assert_error(response, 404, "unknown_worker")
        assert error["worker_id"] == "ghost"
        assert "register" in error["error"]
    assert_error(await shared.http.delete("/api/v1/workers/ghost"), 404, "unknown_worker")


async def test_heartbeat_of_a_known_worker(harness: Harness) -> None:
    worker = await BareWorker.register(harness.http)
    response = await harness.http.post(
        f"/api/v1/workers/{worker.worker_id}/heartbeat", json={"active_jobs": 0, "job_ids": []}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"cancel": []}


async def test_progress_on_a_job_that_is_not_running_is_409(harness: Harness) -> None:
    worker = await BareWorker.register(harness.http)
    job_id = (await harness.submit("job.test.admin")).json()["job_id"]
    response = await harness.http.post(
        f"/api/v1/workers/{worker.worker_id}/jobs/{job_id}/progress", json={"message": "hi"}
    )
    error = assert_error(response, 409, "job_not_running")
    assert error["state"] == "APPROVAL_REQUIRED"


async def test_progress_on_a_running_job_is_stored(harness: Harness) -> None:
    worker = await BareWorker.register(harness.http)
    job_id = await running_job(harness, worker)
    response = await harness.http.post(
        f"/api/v1/workers/{worker.worker_id}/jobs/{job_id}/progress",
        json={"message": "half way", "percent": 50, "data": {"rows": 10}},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"state": "RUNNING"}
    progress = (await get_json(harness, f"{JOBS}/{job_id}"))["progress"]
    assert progress["message"] == "half way"
    assert progress["percent"] == 50
    assert progress["data"] == {"rows": 10}


async def test_a_late_or_repeated_result_is_acknowledged_and_ignored(harness: Harness) -> None:
    worker = await BareWorker.register(harness.http)
    job_id = await running_job(harness, worker)
    assert await worker.succeed(job_id, 1) == {"state": "SUCCEEDED", "ignored": False}
    assert await worker.succeed(job_id, 2) == {"state": "SUCCEEDED", "ignored": True}
    assert await worker.fail(job_id, "late") == {"state": "SUCCEEDED", "ignored": True}
    other = await BareWorker.register(harness.http)  # a worker may only speak as itself
    assert await other.succeed(job_id, 3) == {"state": "SUCCEEDED", "ignored": True}
    assert (await harness.job(job_id)).result == 1


async def test_a_result_for_an_unknown_job_is_404(harness: Harness) -> None:
    worker = await BareWorker.register(harness.http)
    response = await harness.http.post(
        f"/api/v1/workers/{worker.worker_id}/jobs/nope/result", json={"status": "succeeded"}
    )
    assert_error(response, 404, "job_not_found")


# --- policy -------------------------------------------------------------------------------

RECORD_KEYS = {
    "decision",
    "reason",
    "rule_id",
    "policy_snapshot",
    "constraints",
    "remediations",
    "approval_required",
}


@pytest.mark.parametrize("endpoint", ["evaluate", "simulate", "explain"])
async def test_policy_endpoints_answer_a_decision_record(shared: Harness, endpoint: str) -> None:
    response = await shared.http.post(
        f"/api/v1/policy/{endpoint}", json={"topic": "job.test.delete"}
    )
    assert response.status_code == 200, response.text
    record = response.json()
    assert set(record) >= RECORD_KEYS
    assert record["decision"] == "DENY"
    assert record["rule_id"] == "no-delete"
    assert record["policy_snapshot"] == shared.plane.kernel.snapshot_id()
    assert [r["id"] for r in record["remediations"]] == ["archive"]
    assert await stored_job_count(shared) == 0


async def test_simulate_reports_constraints_and_approval(shared: Harness) -> None:
    constrained = await shared.http.post(
        "/api/v1/policy/simulate", json={"topic": "job.test.constrained"}
    )
    assert constrained.json()["decision"] == "ALLOW_WITH_CONSTRAINTS"
    assert constrained.json()["constraints"]["budgets"] == {"max_retries": 2}
    admin = await shared.http.post("/api/v1/policy/simulate", json={"topic": "job.test.admin"})
    assert admin.json()["decision"] == "REQUIRE_APPROVAL"
    assert admin.json()["approval_required"] is True


async def test_explain_has_a_trace_of_every_rule(shared: Harness) -> None:
    response = await shared.http.post("/api/v1/policy/explain", json={"topic": "job.test.run"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decision"] == "ALLOW"
    assert body["default_applied"] is False
    assert isinstance(body["input_trace"], list)
    trace = {t["rule_id"]: t["outcome"] for t in body["trace"]}
    assert trace["allow-test"] == "selected"
    assert trace["no-delete"] == "no_match"
    assert [t["position"] for t in body["trace"]] == sorted(t["position"] for t in body["trace"])


async def test_explain_of_an_unmatched_job_applies_the_default(shared: Harness) -> None:
    response = await shared.http.post("/api/v1/policy/explain", json={"topic": "job.other"})
    body = response.json()
    assert body["decision"] == "DENY"
    assert body["default_applied"] is True
    assert body["rule_id"] is None
    assert "selected" not in {t["outcome"] for t in body["trace"]}


# --- health, metrics, OpenAPI, routing errors ---------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/healthz"])
async def test_health(shared: Harness, path: str) -> None:
    response = await shared.http.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready(shared: Harness) -> None:
    response = await shared.http.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, keyed by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_decisions_jobs_and_gate_latency(harness: Harness) -> None:
    await accepted(harness)
    await harness.submit("job.test.delete")
    await harness.submit("job.test.delete")
    response = await harness.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("cordum_decisions_total", (("decision", "ALLOW"), ("gate", "A")))] == 1
    assert found[("cordum_decisions_total", (("decision", "DENY"), ("gate", "A")))] == 2
    assert found[("cordum_jobs", (("state", "DENIED"),))] == 2
    assert found[("cordum_jobs", (("state", "PENDING"),))] == 1
    assert found[("cordum_jobs", (("state", "SUCCEEDED"),))] == 0
    assert found[("cordum_gate_latency_seconds_count", (("gate", "A"),))] == 3
    assert ("cordum_gate_latency_seconds_bucket", (("gate", "A"), ("le", "+Inf"))) in found
    assert found[("cordum_dlq_entries", ())] == 0
    assert found[("cordum_safety_breaker_open", (("gate", "A"),))] == 0


async def test_openapi_lists_submit_with_a_request_body_schema(shared: Harness) -> None:
    response = await shared.http.get("/openapi.json")
    assert response.status_code == 200
    document = json.loads(response.text)
    post = document["paths"]["/api/v1/jobs"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert post["requestBody"]["required"] is True
    assert "topic" in schema["properties"]
    assert schema["required"] == ["topic"]
    assert schema["additionalProperties"] is False
    for path in ("/api/v1/policy/simulate", "/api/v1/workers", "/api/v1/jobs/{job_id}/cancel"):
        assert "post" in document["paths"][path], path
    assert "get" in document["paths"]["/api/v1/jobs/{job_id}"]


def refs_in(node: Any) -> list[str]:
    """Every ``$ref`` value in a JSON document."""
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs_in(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs_in(value)]
    return []


async def test_every_openapi_reference_resolves(shared: Harness) -> None:
    document = (await shared.http.get("/openapi.json")).json()
    dangling = []
    for ref in sorted(set(refs_in(document))):
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            dangling.append(ref)
    assert dangling == [], f"$ref targets missing from /openapi.json: {dangling}"


async def test_an_unknown_path_is_404_in_the_error_shape(shared: Harness) -> None:
    error = assert_error(await shared.http.get("/api/v1/nothing-here"), 404, "not_found")
    assert "/api/v1/nothing-here" in error["error"]


async def test_a_wrong_method_is_405_in_the_error_shape(shared: Harness) -> None:
    assert_error(await shared.http.put(JOBS, json={}), 405, "method_not_allowed")
    assert_error(await shared.http.delete(f"{JOBS}/x"), 405, "method_not_allowed")


async def test_a_405_says_which_methods_are_allowed(shared: Harness) -> None:
    response = await shared.http.put(JOBS, json={})
    assert response.status_code == 405
    assert "allow" in response.headers, "RFC 9110: a 405 must carry an Allow header"
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    response = await shared.http.delete(f"{JOBS}/some-job")  # a path with a parameter
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert "use GET" in response.json()["error"]
