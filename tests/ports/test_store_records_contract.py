"""The Store contract beyond jobs: approvals, policy records, API keys and the audit chain.

Run against every registered adapter, through the Store protocol only. Pinned here:
approvals are written with the job change they belong to, listed newest request first
with cursors and tenant/status/expiry filters, and a pending approval is settled when its
job leaves APPROVAL_REQUIRED without a human's answer (cancelled, expired, invalidated);
policy bundles and numbered snapshots with one active snapshot, where adding or activating
a snapshot can replace every draft bundle in the same write (all of it or nothing) and
fills the version it assigns into its audit events; API key records; and the audit
invariant: every job event, decision and approval change is sealed into its tenant's
chain in the write that makes it, each chain numbered from 1 without gaps and
hash-linked from GENESIS_HASH, verifiable with ``verify_chain``, and untouched by a write
that fails. A Hypothesis property drives random legal traffic across jobs and tenants and
checks every chain against the job histories.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cordum.models import Decision
from cordum.models.approval import ApprovalRecord, ApprovalStatus
from cordum.models.audit import GENESIS_HASH, AuditCheckpoint, AuditDraft, AuditEvent, ChainHasher
from cordum.models.keys import ApiKeyRecord, Role
from cordum.models.pipeline import Gate, JobRecord
from cordum.models.policy_records import PolicyBundleRecord, PolicySnapshotRecord
from cordum.models.state import TRANSITIONS, IllegalTransitionError, JobState
from cordum.ports import ApprovalFilter, AuditFilter
from cordum.ports.store import SNAPSHOT_VERSION, ConflictError, JobNotFoundError, Store
from cordum.services.audit import verify_chain
from tests.ports.adapters import STORE_ADAPTERS, StoreAdapter, StoreHarness
from tests.ports.factories import (
    make_decision,
    make_dlq,
    make_idempotency,
    make_job,
    new_id,
    next_time,
)

pytestmark = pytest.mark.anyio

S = JobState
A = ApprovalStatus

# --- record factories ----------------------------------------------------------------------


def make_approval(job: JobRecord, **overrides: Any) -> ApprovalRecord:
    """A pending gate-A approval request for ``job``; ``overrides`` replace fields."""
    fields: dict[str, Any] = {
        "job_id": job.id,
        "tenant_id": job.tenant_id,
        "topic": job.topic,
        "gate": Gate.SUBMIT.value,
        "rule_id": "needs-a-human",
        "reason": "production write",
        "policy_snapshot": "1:abc",
        "job_hash": "ab" * 32,
        "requested_by": "agent-7",
        "requested_key": "ck_agent",
        "created_at": next_time(),
    }
    fields.update(overrides)
    return ApprovalRecord(**fields)


def resolved(approval: ApprovalRecord, status: ApprovalStatus, **overrides: Any) -> ApprovalRecord:
    """``approval`` answered by a human."""
    fields: dict[str, Any] = {
        "status": status,
        "resolved_by": "alice",
        "resolved_key": "ck_alice",
        "resolved_at": next_time(),
        "resolution_reason": f"{status.value} by alice",
        "note": "checked the diff",
        "resolved_snapshot": "1:abc",
    }
    fields.update(overrides)
    return approval.model_copy(update=fields)


def make_bundle(bundle_id: str, **overrides: Any) -> PolicyBundleRecord:
    fields: dict[str, Any] = {
        "bundle_id": bundle_id,
        "text": f"version: 1\n# bundle {bundle_id} ✓\nrules: []\n",
        "updated_at": next_time(),
        "updated_by": "alice",
    }
    fields.update(overrides)
    return PolicyBundleRecord(**fields)


def make_snapshot(**overrides: Any) -> PolicySnapshotRecord:
    fields: dict[str, Any] = {
        "snapshot_id": f"0:{new_id()}",
        "policy_version": "2024-01",
        "author": "alice",
        "message": "publish",
        "created_at": next_time(),
        "bundles": {"base": "version: 1\nrules: []\n", "extra": "rules: []\n"},
    }
    fields.update(overrides)
    return PolicySnapshotRecord(**fields)


def make_key(key_id: str | None = None, **overrides: Any) -> ApiKeyRecord:
    fields: dict[str, Any] = {
        "key_id": key_id or f"ck_{new_id()[:12]}",
        "name": "ci bot",
        "role": Role.OPERATOR,
        "tenants": ("acme", "globex"),
        "secret_hash": new_id() + new_id(),
        "created_at": next_time(),
        "created_by": "admin",
    }
    fields.update(overrides)
    return ApiKeyRecord(**fields)


def draft(tenant: str = "_system", kind: str = "test.note", **overrides: Any) -> AuditDraft:
    fields: dict[str, Any] = {"tenant_id": tenant, "kind": kind}
    fields.update(overrides)
    return AuditDraft(**fields)


# --- helpers -------------------------------------------------------------------------------


async def create(store: Store, job: JobRecord, approval: ApprovalRecord | None = None) -> JobRecord:
    """Create ``job`` with a gate-A decision (REQUIRE_APPROVAL when it waits for a human)."""
    verdict = Decision.REQUIRE_APPROVAL if job.state is S.APPROVAL_REQUIRED else Decision.ALLOW
    outcome = await store.create_job(job, make_decision(job, decision=verdict), approval=approval)
    assert outcome.created
    return job


async def awaiting(
    store: Store, tenant: str = "default", **approval: Any
) -> tuple[JobRecord, ApprovalRecord]:
    """A job created in APPROVAL_REQUIRED with its pending approval."""
    job = make_job(state=S.APPROVAL_REQUIRED, tenant_id=tenant)
    request = make_approval(job, **approval)
    await create(store, job, request)
    return job, request


async def chain(store: Store, tenant: str, **filters: Any) -> list[AuditEvent]:
    """Events of one chain, oldest first."""
    return await store.list_audit(AuditFilter(tenant_id=tenant, **filters), limit=100_000)


async def kinds(store: Store, tenant: str, subject: str | None = None) -> list[str]:
    return [e.kind for e in await chain(store, tenant, subject=subject)]


def assert_linked(events: list[AuditEvent], tenant: str) -> None:
    """Seqs 1..n without gaps, each event after the previous one's hash, from GENESIS_HASH."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    previous = GENESIS_HASH
    for event in events:
        assert event.tenant_id == tenant
        assert event.prev_hash == previous, f"event {event.seq} does not follow its predecessor"
        previous = event.event_hash
    assert len({e.event_hash for e in events}) == len(events)


async def assert_verifies(store: Store, tenant: str) -> int:
    """The chain verifies, from its stored rows and from its listed events; its length."""
    rows = await store.audit_rows(tenant)
    report = verify_chain(tenant, rows, ChainHasher())
    assert report.ok, report
    assert report.checked == len(rows)
    listed = verify_chain(tenant, await chain(store, tenant), ChainHasher())
    assert listed.ok, listed
    assert_linked(await chain(store, tenant), tenant)
    expected_head = (rows[-1].seq, rows[-1].event_hash) if rows else (0, GENESIS_HASH)
    assert await store.audit_head(tenant) == expected_head
    return len(rows)


async def audit_state(store: Store) -> tuple[Any, ...]:
    """Every chain, its head and its rows: to check that nothing was appended."""
    tenants = await store.audit_chains()
    return (
        tenants,
        [await store.audit_head(t) for t in tenants],
        [await store.audit_rows(t) for t in tenants],
    )


async def raised(call: Awaitable[Any]) -> BaseException:
    """The exception ``call`` raises (it must raise something)."""
    try:
        await call
    except Exception as error:
        return error
    raise AssertionError("the call was expected to fail")


async def all_approvals(store: Store, filters: ApprovalFilter, limit: int) -> list[str]:
    """Job ids of every approval a full pagination returns, in order."""
    ids: list[str] = []
    cursor: str | None = None
    for _ in range(1000):
        page = await store.list_approvals(filters, cursor=cursor, limit=limit)
        assert len(page.approvals) <= limit
        ids.extend(a.job_id for a in page.approvals)
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor
    raise AssertionError("pagination never ended")


# --- approvals -----------------------------------------------------------------------------


async def test_create_job_stores_its_approval(store):
    job, request = await awaiting(store, expires_at=next_time() + 600)
    assert await store.get_approval(job.id) == request
    assert (await store.list_approvals(ApprovalFilter())).approvals == [request]
    plain = await create(store, make_job())
    assert await store.get_approval(plain.id) is None
    assert await store.get_approval(new_id()) is None


async def test_transition_replaces_the_approval(store):
    job, request = await awaiting(store)
    approved = resolved(request, A.APPROVED)
    outcome = await store.transition(job.id, S.PENDING, approval=approved, reason="approved")
    assert outcome.changed
    assert await store.get_approval(job.id) == approved
    assert (await store.list_approvals(ApprovalFilter())).approvals == [approved]


async def test_transition_into_approval_required_creates_the_approval(store):
    job = await create(store, make_job())
    await store.transition(job.id, S.SCHEDULED)
    request = make_approval(job, gate=Gate.DISPATCH.value, expires_at=next_time() + 60)
    await store.transition(job.id, S.APPROVAL_REQUIRED, via=S.PENDING, approval=request)
    assert await store.get_approval(job.id) == request


async def test_a_second_request_replaces_the_first_answer(store):
    job, first = await awaiting(store)
    await store.transition(job.id, S.PENDING, approval=resolved(first, A.APPROVED))
    second = make_approval(job, gate=Gate.DISPATCH.value, rule_id="gate-b")
    await store.transition(job.id, S.APPROVAL_REQUIRED, approval=second)
    assert await store.get_approval(job.id) == second
    assert [a.job_id for a in (await store.list_approvals(ApprovalFilter())).approvals] == [job.id]


@pytest.mark.parametrize(
    ("target", "status"),
    [(S.CANCELLED, A.CANCELLED), (S.TIMEOUT, A.EXPIRED), (S.DENIED, A.INVALIDATED)],
    ids=str,
)
async def test_leaving_approval_required_without_an_answer_settles_the_approval(
    store, target, status
):
    job, request = await awaiting(store, tenant="acme")
    at = next_time()
    await store.transition(job.id, target, reason="operator said so", now=at)
    settled = await store.get_approval(job.id)
    assert settled == request.model_copy(
        update={"status": status, "resolved_at": at, "resolution_reason": "operator said so"}
    )
    assert (
        await store.list_approvals(ApprovalFilter(statuses=frozenset({A.PENDING})))
    ).approvals == []
    assert (await kinds(store, "acme"))[-2:] == ["job.transition", f"approval.{status.value}"]
    await assert_verifies(store, "acme")


async def test_an_explicit_approval_wins_over_the_automatic_settlement(store):
    job, request = await awaiting(store, tenant="acme")
    rejected = resolved(request, A.REJECTED)
    await store.transition(job.id, S.CANCELLED, approval=rejected)
    assert await store.get_approval(job.id) == rejected
    assert (await kinds(store, "acme"))[-2:] == ["job.transition", "approval.rejected"]
    assert (await kinds(store, "acme")).count("approval.cancelled") == 0


async def test_a_settled_approval_is_not_touched_by_later_transitions(store):
    job, request = await awaiting(store, tenant="acme")
    approved = resolved(request, A.APPROVED)
    await store.transition(job.id, S.PENDING, approval=approved)
    await store.transition(job.id, S.CANCELLED)
    assert await store.get_approval(job.id) == approved
    assert (await kinds(store, "acme")).count("approval.cancelled") == 0


async def test_leaving_approval_required_without_a_record_writes_no_approval(store):
    job = await create(store, make_job(state=S.APPROVAL_REQUIRED, tenant_id="acme"))
    await store.transition(job.id, S.CANCELLED)
    assert await store.get_approval(job.id) is None
    assert await kinds(store, "acme") == ["job.transition", "decision", "job.transition"]


async def test_a_repeated_transition_writes_neither_approval_nor_audit(store):
    job, request = await awaiting(store, tenant="acme")
    before = await audit_state(store)
    outcome = await store.transition(
        job.id,
        S.APPROVAL_REQUIRED,
        approval=resolved(request, A.APPROVED),
        decision=make_decision(job),
        audit=[draft("acme"), draft()],
    )
    assert outcome.changed is False
    assert await store.get_approval(job.id) == request
    assert await audit_state(store) == before


async def test_list_approvals_is_newest_first_and_pages_cover_each_once(store):
    ids = [(await awaiting(store))[0].id for _ in range(7)]
    newest_first = ids[::-1]
    listed = await store.list_approvals(ApprovalFilter(), limit=100)
    assert [a.job_id for a in listed.approvals] == newest_first
    assert listed.next_cursor is None
    for limit in (1, 2, 3, 6, 7, 8):
        assert await all_approvals(store, ApprovalFilter(), limit) == newest_first
    assert (await store.list_approvals(ApprovalFilter(), limit=7)).next_cursor is None


async def test_resolving_an_approval_keeps_its_place_in_the_listing(store):
    made = [await awaiting(store) for _ in range(4)]
    job, request = made[1]
    await store.transition(job.id, S.PENDING, approval=resolved(request, A.APPROVED))
    first = await store.list_approvals(ApprovalFilter(), limit=2)
    rest = await store.list_approvals(ApprovalFilter(), cursor=first.next_cursor, limit=2)
    assert [a.job_id for a in first.approvals + rest.approvals] == [j.id for j, _ in made[::-1]]
    assert rest.next_cursor is None


@pytest.mark.parametrize("cursor", ["nonsense", "-1", "1.5", ""])
async def test_a_bad_approval_cursor_is_a_value_error(store, cursor):
    await awaiting(store)
    with pytest.raises(ValueError):  # noqa: PT011 - the contract names the type only
        await store.list_approvals(ApprovalFilter(), cursor=cursor)


async def test_list_approvals_filters(store):
    now = next_time()
    a_soon, _ = await awaiting(store, tenant="a", expires_at=now + 10)
    a_late, _ = await awaiting(store, tenant="a", expires_at=now + 1000)
    b_soon, _ = await awaiting(store, tenant="b", expires_at=now + 20)
    a_never, _ = await awaiting(store, tenant="a")
    c_done, c_request = await awaiting(store, tenant="c", expires_at=now + 5)
    await store.transition(c_done.id, S.PENDING, approval=resolved(c_request, A.APPROVED))
    b_gone, _ = await awaiting(store, tenant="b", expires_at=now + 30)
    await store.transition(b_gone.id, S.TIMEOUT)

    async def ids(limit: int = 2, **fields: Any) -> list[str]:
        return await all_approvals(store, ApprovalFilter(**fields), limit)

    everything = [b_gone.id, c_done.id, a_never.id, b_soon.id, a_late.id, a_soon.id]
    assert await ids() == everything
    assert await ids(tenant_ids=None) == everything
    assert await ids(tenant_ids=frozenset()) == []
    assert await ids(tenant_ids=frozenset({"a"})) == [a_never.id, a_late.id, a_soon.id]
    assert await ids(tenant_ids=frozenset({"a", "c"}), limit=1) == [
        c_done.id,
        a_never.id,
        a_late.id,
        a_soon.id,
    ]
    assert await ids(tenant_ids=frozenset({"nobody"})) == []
    assert await ids(statuses=frozenset({A.PENDING})) == [
        a_never.id,
        b_soon.id,
        a_late.id,
        a_soon.id,
    ]
    assert await ids(statuses=frozenset({A.APPROVED, A.EXPIRED})) == [b_gone.id, c_done.id]
    assert await ids(statuses=frozenset({A.REJECTED})) == []
    assert await ids(expires_before=now + 100) == [b_gone.id, c_done.id, b_soon.id, a_soon.id]
    assert await ids(expires_before=now + 15, limit=1) == [c_done.id, a_soon.id]
    assert await ids(expires_before=now) == []
    due = await ids(statuses=frozenset({A.PENDING}), expires_before=now + 100)
    assert due == [b_soon.id, a_soon.id]
    assert await ids(
        tenant_ids=frozenset({"b"}), statuses=frozenset({A.PENDING}), expires_before=now + 100
    ) == [b_soon.id]


# --- policy records ------------------------------------------------------------------------


async def test_policy_bundles_put_get_list_delete(store):
    assert await store.list_policy_bundles() == []
    assert await store.get_policy_bundle("base") is None
    zeta, base = make_bundle("zeta"), make_bundle("base")
    await store.put_policy_bundle(zeta)
    await store.put_policy_bundle(base)
    assert await store.get_policy_bundle("base") == base
    assert await store.list_policy_bundles() == [base, zeta]

    edited = base.model_copy(update={"text": "rules: [edited]\n", "updated_at": next_time()})
    await store.put_policy_bundle(edited)
    assert await store.get_policy_bundle("base") == edited
    assert await store.list_policy_bundles() == [edited, zeta]

    assert await store.delete_policy_bundle("zeta") is True
    assert await store.get_policy_bundle("zeta") is None
    assert await store.delete_policy_bundle("zeta") is False
    assert await store.list_policy_bundles() == [edited]


async def test_deleting_an_unknown_bundle_writes_no_audit_event(store):
    await store.put_policy_bundle(make_bundle("base"), audit=[draft(kind="policy.bundle.put")])
    before = await audit_state(store)
    gone = await store.delete_policy_bundle("never", audit=[draft(kind="policy.bundle.delete")])
    assert gone is False
    assert await audit_state(store) == before
    assert await store.delete_policy_bundle("base", audit=[draft(kind="policy.bundle.delete")])
    assert await kinds(store, "_system") == ["policy.bundle.put", "policy.bundle.delete"]


async def test_policy_snapshots_are_numbered_and_the_newest_is_active(store):
    assert await store.active_policy_snapshot() is None
    assert await store.list_policy_snapshots() == []
    stored = []
    for n in (1, 2, 3):
        snapshot = make_snapshot(message=f"publish {n}")
        added = await store.add_policy_snapshot(snapshot)
        assert added == snapshot.model_copy(update={"version": n})
        assert await store.active_policy_snapshot() == added
        assert await store.get_policy_snapshot(n) == added
        stored.append(added)
    assert await store.list_policy_snapshots() == stored[::-1]
    assert await store.get_policy_snapshot(4) is None
    assert await store.get_policy_snapshot(0) is None


async def test_the_store_assigns_versions_whatever_the_snapshot_says(store):
    first = await store.add_policy_snapshot(make_snapshot(version=42))
    second = await store.add_policy_snapshot(make_snapshot(version=1))
    assert (first.version, second.version) == (1, 2)


async def test_activating_an_older_snapshot(store):
    one, two, three = [await store.add_policy_snapshot(make_snapshot()) for _ in range(3)]
    assert await store.activate_policy_snapshot(1) == one
    assert await store.active_policy_snapshot() == one
    assert await store.list_policy_snapshots() == [three, two, one]
    assert await store.activate_policy_snapshot(2) == two
    assert await store.active_policy_snapshot() == two
    four = await store.add_policy_snapshot(make_snapshot())
    assert four.version == 4
    assert await store.active_policy_snapshot() == four


async def test_activating_an_unknown_snapshot_is_a_lookup_error_and_writes_nothing(store):
    with pytest.raises(LookupError):
        await store.activate_policy_snapshot(1)
    assert await store.active_policy_snapshot() is None
    one = await store.add_policy_snapshot(make_snapshot())
    before = await audit_state(store)
    for version in (0, 2, 99, -1):
        with pytest.raises(LookupError):
            await store.activate_policy_snapshot(version, audit=[draft(kind="policy.rollback")])
    assert await store.active_policy_snapshot() == one
    assert await audit_state(store) == before


async def policy_state(store: Store) -> tuple[Any, ...]:
    """Snapshots, the active one and the drafts: to check that nothing was written."""
    return (
        await store.list_policy_snapshots(),
        await store.active_policy_snapshot(),
        await store.list_policy_bundles(),
    )


async def test_activating_a_snapshot_can_replace_every_draft_in_the_same_write(store):
    one = await store.add_policy_snapshot(make_snapshot())
    await store.add_policy_snapshot(make_snapshot())
    for bundle_id in ("base", "team/a", "team/b"):
        await store.put_policy_bundle(make_bundle(bundle_id))
    base = make_bundle("base", text="rules: [rolled-back]\n")
    kept = make_bundle("team/c")

    events = [draft(kind="policy.rollback"), draft(kind="policy.bundle.put")]
    activated = await store.activate_policy_snapshot(1, audit=events, bundles=[kept, base])

    assert activated == one
    assert await store.active_policy_snapshot() == one
    assert await store.list_policy_bundles() == [base, kept]
    assert (await kinds(store, "_system"))[-2:] == ["policy.rollback", "policy.bundle.put"]
    # Without bundles the drafts are left alone.
    await store.activate_policy_snapshot(2)
    assert await store.list_policy_bundles() == [base, kept]
    await assert_verifies(store, "_system")


async def test_adding_a_snapshot_can_replace_every_draft_in_the_same_write(store):
    await store.put_policy_bundle(make_bundle("old"))
    fresh = [make_bundle("base"), make_bundle("secops/prod")]
    added = await store.add_policy_snapshot(
        make_snapshot(), audit=[draft(kind="policy.publish")], bundles=fresh
    )
    assert await store.active_policy_snapshot() == added
    assert await store.list_policy_bundles() == fresh
    assert await kinds(store, "_system") == ["policy.publish"]
    await store.add_policy_snapshot(make_snapshot())
    assert await store.list_policy_bundles() == fresh


@pytest.mark.parametrize("write", ["add", "activate"])
@pytest.mark.parametrize("broken", ["bundle", "audit"])
async def test_a_snapshot_write_that_fails_midway_leaves_snapshots_drafts_and_chain(
    store, write, broken
):
    """A bundle that cannot be stored (after the old drafts are gone and another bundle is
    written) or an event that cannot be sealed (after the bundles) fails the whole write:
    the active snapshot, the drafts and every chain stay as they were."""
    await store.add_policy_snapshot(make_snapshot(), audit=[draft(kind="policy.publish")])
    await store.add_policy_snapshot(make_snapshot(), audit=[draft(kind="policy.publish")])
    await store.put_policy_bundle(make_bundle("base"), audit=[draft(kind="policy.bundle.put")])
    before_policy = await policy_state(store)
    before_audit = await audit_state(store)
    bundles = [make_bundle("base", text="rules: [new]\n"), make_bundle("team/new")]
    audit = [draft(kind="policy.rollback"), draft(kind="policy.bundle.put")]
    if broken == "bundle":
        bundles.append(make_bundle("zeta").model_copy(update={"text": object()}))
    else:
        audit.append(draft(kind="policy.bundle.deleted", data={"ratio": 0.5}))

    if write == "add":
        call = store.add_policy_snapshot(make_snapshot(), audit=audit, bundles=bundles)
    else:
        call = store.activate_policy_snapshot(1, audit=audit, bundles=bundles)
    error = await raised(call)

    assert isinstance(error, Exception)
    assert await policy_state(store) == before_policy
    assert await audit_state(store) == before_audit
    # The store goes on from where it was.
    assert (await store.activate_policy_snapshot(1, bundles=bundles[:2])).version == 1
    assert await store.list_policy_bundles() == bundles[:2]
    assert (await store.add_policy_snapshot(make_snapshot())).version == 3
    await assert_verifies(store, "_system")


async def test_the_assigned_version_is_filled_into_the_snapshot_audit_events(store):
    def publish_event(message: str) -> AuditDraft:
        return draft(kind="policy.publish", data={"version": SNAPSHOT_VERSION, "note": message})

    first = await store.add_policy_snapshot(make_snapshot(), audit=[publish_event("first")])
    second = await store.add_policy_snapshot(
        make_snapshot(version=99), audit=[draft(kind="other"), publish_event("second")]
    )
    events = await chain(store, "_system")
    assert [(e.kind, e.data) for e in events] == [
        ("policy.publish", {"version": first.version, "note": "first"}),
        ("other", {}),
        ("policy.publish", {"version": second.version, "note": "second"}),
    ]
    assert (first.version, second.version) == (1, 2)
    await assert_verifies(store, "_system")


# --- API keys ------------------------------------------------------------------------------


async def test_api_keys_put_get_list(store):
    assert await store.list_api_keys() == []
    assert await store.get_api_key("ck_none") is None
    keys = [
        make_key("ck_zz", role=Role.ADMIN, tenants=("*",)),
        make_key("ck_aa", role=Role.AGENT, tenants=("acme",), created_by=None),
        make_key("ck_mm", role=Role.WORKER, name="wörker ✓"),
    ]
    for key in keys:
        await store.put_api_key(key)
    for key in keys:
        assert await store.get_api_key(key.key_id) == key
    assert await store.list_api_keys() == keys


async def test_replacing_a_key_revokes_it(store):
    key, other = make_key("ck_one"), make_key("ck_two")
    await store.put_api_key(key)
    await store.put_api_key(other)
    revoked = key.model_copy(update={"revoked_at": next_time()})
    await store.put_api_key(revoked)
    assert await store.get_api_key("ck_one") == revoked
    assert not (await store.get_api_key("ck_one")).active
    assert sorted(await store.list_api_keys(), key=lambda k: k.key_id) == [revoked, other]


async def test_concurrent_key_lookups_each_get_their_own_key_and_see_a_revocation(store):
    """Every request looks its key up, many at once (the Redis store answers concurrent
    lookups with one HMGET): each gets its own record, and a lookup made after a
    revocation returned never sees the key active."""
    keys = [make_key(f"ck_c{n}") for n in range(40)]
    for key in keys:
        await store.put_api_key(key)
    wanted = [key.key_id for key in keys] * 3 + ["ck_unknown"] * 5
    found = await asyncio.gather(*(store.get_api_key(key_id) for key_id in wanted))
    assert found == [*(keys * 3), *([None] * 5)]
    revoked = keys[7].model_copy(update={"revoked_at": next_time()})
    await store.put_api_key(revoked)
    after = await asyncio.gather(*(store.get_api_key("ck_c7") for _ in range(10)))
    assert after == [revoked] * 10


async def test_revoking_a_key_keeps_its_place_in_the_oldest_first_listing(store):
    keys = [make_key(f"ck_{n}") for n in range(3)]
    for key in keys:
        await store.put_api_key(key)
    revoked = keys[0].model_copy(update={"revoked_at": next_time()})
    await store.put_api_key(revoked)
    assert await store.list_api_keys() == [revoked, keys[1], keys[2]]


# --- audit: the chain written with each change ---------------------------------------------


async def test_job_events_decisions_and_approvals_are_sealed_in_order(store):
    job = make_job(state=S.APPROVAL_REQUIRED, tenant_id="acme", submitter="agent-7")
    request = make_approval(job)
    await create(store, job, request)
    await store.transition(job.id, S.PENDING, approval=resolved(request, A.APPROVED), reason="ok")
    await store.transition(
        job.id, S.SCHEDULED, decision=make_decision(job, gate=Gate.DISPATCH), reason="placed"
    )
    await store.transition(job.id, S.RUNNING, via=S.DISPATCHED, via_reason="sent", reason="up")
    await store.update_job(
        job.id,
        expect={S.RUNNING},
        changes={"progress": {"percent": 50}},
        decision=make_decision(job, gate=Gate.DISPATCH, decision=Decision.THROTTLE),
    )
    await store.update_job(job.id, expect={S.RUNNING}, changes={"attempts": 1})
    await store.transition(job.id, S.SUCCEEDED, reason="done")

    events = await chain(store, "acme")
    assert [e.kind for e in events] == [
        "job.transition",
        "decision",
        "approval.pending",
        "job.transition",
        "approval.approved",
        "job.transition",
        "decision",
        "job.transition",
        "job.transition",
        "decision",
        "job.transition",
    ]
    assert {e.subject for e in events} == {job.id}
    moves = [e for e in events if e.kind == "job.transition"]
    assert [(e.data["from"], e.data["to"], e.data["reason"]) for e in moves] == [
        (None, "APPROVAL_REQUIRED", ""),
        ("APPROVAL_REQUIRED", "PENDING", "ok"),
        ("PENDING", "SCHEDULED", "placed"),
        ("SCHEDULED", "DISPATCHED", "sent"),
        ("DISPATCHED", "RUNNING", "up"),
        ("RUNNING", "SUCCEEDED", "done"),
    ]
    assert len(moves) == len(await store.job_events(job.id))
    decisions = [e for e in events if e.kind == "decision"]
    assert [(e.data["gate"], e.data["decision"]) for e in decisions] == [
        ("A", "REQUIRE_APPROVAL"),
        ("B", "ALLOW"),
        ("B", "THROTTLE"),
    ]
    assert len(decisions) == len(await store.job_decisions(job.id))
    assert events[0].actor == "agent-7"
    assert events[0].prev_hash == GENESIS_HASH
    assert_linked(events, "acme")
    assert await assert_verifies(store, "acme") == 11
    assert await store.audit_chains() == ["acme"]


async def test_transition_times_are_the_event_times(store):
    job = await create(store, make_job(tenant_id="acme"))
    at = next_time()
    await store.transition(job.id, S.SCHEDULED, now=at)
    (last,) = await chain(store, "acme", after_seq=2)
    assert last.at_ms == int(at * 1000)


async def test_each_tenant_has_its_own_chain(store):
    jobs = {t: await create(store, make_job(tenant_id=t)) for t in ("acme", "globex", "initech")}
    await store.transition(jobs["globex"].id, S.SCHEDULED)
    await store.transition(jobs["acme"].id, S.CANCELLED)
    await store.transition(jobs["globex"].id, S.DISPATCHED)
    await store.append_audit([draft("initech"), draft("acme")])
    assert sorted(await store.audit_chains()) == ["acme", "globex", "initech"]
    lengths = {t: await assert_verifies(store, t) for t in jobs}
    assert lengths == {"acme": 4, "globex": 4, "initech": 3}
    for tenant, job in jobs.items():
        events = await chain(store, tenant)
        assert events[0].prev_hash == GENESIS_HASH
        assert {e.subject for e in events if e.kind != "test.note"} == {job.id}
    assert await store.audit_head("nobody") == (0, GENESIS_HASH)
    assert await store.audit_rows("nobody") == []
    assert await chain(store, "nobody") == []


async def test_an_empty_store_has_no_chains(store):
    assert await store.audit_chains() == []
    assert await store.audit_head("_system") == (0, GENESIS_HASH)
    assert await store.append_audit([]) == []
    assert await store.audit_chains() == []


async def test_append_audit_returns_the_sealed_events(store):
    drafts = [
        draft("acme", "auth.failure", actor="ck_bad", data={"path": "/v1/jobs", "n": 1}),
        draft("_system", "key.create", subject="ck_new", data={"role": "admin"}, at_ms=1234),
        draft("acme", "auth.failure", data={"nested": {"ünï": ["ç", None, True]}}),
    ]
    sealed = await store.append_audit(drafts)
    assert [(e.tenant_id, e.seq, e.kind, e.subject, e.actor, e.data) for e in sealed] == [
        ("acme", 1, "auth.failure", None, "ck_bad", {"path": "/v1/jobs", "n": 1}),
        ("_system", 1, "key.create", "ck_new", None, {"role": "admin"}),
        ("acme", 2, "auth.failure", None, None, {"nested": {"ünï": ["ç", None, True]}}),
    ]
    assert sealed[1].at_ms == 1234
    assert sealed[0].prev_hash == sealed[1].prev_hash == GENESIS_HASH
    assert sealed[2].prev_hash == sealed[0].event_hash
    assert await chain(store, "acme") == [sealed[0], sealed[2]]
    assert await chain(store, "_system") == [sealed[1]]
    assert await store.audit_head("acme") == (2, sealed[2].event_hash)
    more = await store.append_audit([draft("acme")])
    assert (more[0].seq, more[0].prev_hash) == (3, sealed[2].event_hash)
    for tenant in ("acme", "_system"):
        await assert_verifies(store, tenant)


async def test_audit_drafts_of_record_writes_land_in_the_chain(store):
    await store.put_policy_bundle(make_bundle("base"), audit=[draft(kind="policy.bundle.put")])
    await store.delete_policy_bundle("base", audit=[draft(kind="policy.bundle.delete")])
    await store.add_policy_snapshot(
        make_snapshot(), audit=[draft(kind="policy.publish", subject="1")]
    )
    await store.add_policy_snapshot(make_snapshot())
    await store.activate_policy_snapshot(1, audit=[draft(kind="policy.rollback", subject="1")])
    await store.put_api_key(make_key("ck_1"), audit=[draft(kind="key.create", subject="ck_1")])
    job = await create(store, make_job(tenant_id="acme"))
    await store.transition(
        job.id,
        S.SCHEDULED,
        decision=make_decision(job, gate=Gate.DISPATCH),
        audit=[draft("acme", "job.note", subject=job.id), draft(kind="ops.note")],
    )
    assert await kinds(store, "_system") == [
        "policy.bundle.put",
        "policy.bundle.delete",
        "policy.publish",
        "policy.rollback",
        "key.create",
        "ops.note",
    ]
    assert await kinds(store, "acme") == [
        "job.transition",
        "decision",
        "job.transition",
        "decision",
        "job.note",
    ]
    await assert_verifies(store, "_system")
    await assert_verifies(store, "acme")


async def test_writes_that_raise_leave_every_chain_untouched(store):
    pending = await create(store, make_job(tenant_id="acme"))
    waiting, request = await awaiting(store, tenant="acme")
    await store.append_audit([draft(), draft("globex")])
    taken = make_job(tenant_id="acme")
    await store.create_job(taken, make_decision(taken), make_idempotency(taken, "key-1"))
    before = await audit_state(store)
    notes = [draft("acme", subject=pending.id), draft(), draft("brand-new")]

    bad = make_job(state=S.RUNNING, tenant_id="acme")
    refusals: list[tuple[type[BaseException], Callable[[], Awaitable[Any]]]] = [
        (
            IllegalTransitionError,
            lambda: store.transition(
                pending.id,
                S.RUNNING,
                decision=make_decision(pending),
                approval=make_approval(pending),
                audit=notes,
            ),
        ),
        (
            IllegalTransitionError,
            lambda: store.transition(pending.id, S.RUNNING, via=S.SCHEDULED, audit=notes),
        ),
        (
            ConflictError,
            lambda: store.transition(
                waiting.id,
                S.PENDING,
                expect={S.SCHEDULED},
                approval=resolved(request, A.APPROVED),
                audit=notes,
            ),
        ),
        (
            ConflictError,
            lambda: store.transition(waiting.id, S.CANCELLED, expect=set(), audit=notes),
        ),
        (
            ConflictError,
            lambda: store.update_job(
                pending.id,
                expect={S.RUNNING},
                changes={"attempts": 2},
                decision=make_decision(pending),
            ),
        ),
        (JobNotFoundError, lambda: store.transition(new_id(), S.SCHEDULED, audit=notes)),
        (
            IllegalTransitionError,
            lambda: store.create_job(bad, make_decision(bad), approval=make_approval(bad)),
        ),
        (LookupError, lambda: store.activate_policy_snapshot(7, audit=notes)),
    ]
    for expected, call in refusals:
        error = await raised(call())
        assert isinstance(error, expected), repr(error)
        assert await audit_state(store) == before
    assert await store.get_job(bad.id) is None

    again = make_job(tenant_id="acme")
    repeat = await store.create_job(
        again, make_decision(again), make_idempotency(again, "key-1"), approval=make_approval(again)
    )
    assert repeat.created is False
    assert await store.get_approval(again.id) is None
    assert await store.delete_policy_bundle("never", audit=notes) is False
    assert await audit_state(store) == before
    assert await store.get_approval(waiting.id) == request


@pytest.mark.parametrize("broken", ["result", "approval", "dlq"])
async def test_a_write_that_fails_midway_leaves_the_chains_and_they_go_on(store, broken):
    """A part that cannot be stored (the job, the approval, the DLQ entry: early, middle or
    late in the write) fails the write as a whole, sealed events included."""
    job, request = await awaiting(store, tenant="acme")
    before = await audit_state(store)
    events = await store.job_events(job.id)
    unstorable = object()
    parts: dict[str, Any] = {"decision": make_decision(job), "audit": [draft("acme"), draft()]}
    if broken == "result":
        parts["changes"] = {"result": unstorable}
    elif broken == "approval":
        parts["approval"] = resolved(request, A.REJECTED).model_copy(update={"note": unstorable})
    else:
        parts["dlq"] = make_dlq(job).model_copy(update={"message": unstorable})
    error = await raised(store.transition(job.id, S.CANCELLED, reason="stop", **parts))
    assert isinstance(error, Exception)
    assert await audit_state(store) == before
    assert (await store.get_job(job.id)).state is S.APPROVAL_REQUIRED
    assert await store.job_events(job.id) == events
    assert await store.get_approval(job.id) == request
    assert await store.get_dlq(job.id) is None

    await store.transition(
        job.id, S.PENDING, approval=resolved(request, A.APPROVED), audit=[draft("acme")]
    )
    assert await kinds(store, "acme") == [
        "job.transition",
        "decision",
        "approval.pending",
        "job.transition",
        "approval.approved",
        "test.note",
    ]
    assert await assert_verifies(store, "acme") == 6
    assert await store.audit_chains() == ["acme"]


async def test_audit_head_and_rows_match_the_listing(store):
    await store.append_audit([draft("acme", data={"n": n}) for n in range(9)])
    events = await chain(store, "acme")
    rows = await store.audit_rows("acme")
    fields = ("tenant_id", "seq", "kind", "at_ms", "actor", "subject", "prev_hash", "event_hash")
    assert [tuple(getattr(r, f) for f in (*fields, "body")) for r in rows] == [
        tuple(getattr(e, f) for f in (*fields, "body")) for e in events
    ]
    assert await store.audit_head("acme") == (9, events[-1].event_hash)
    assert [r.seq for r in await store.audit_rows("acme", after_seq=4)] == [5, 6, 7, 8, 9]
    assert [r.seq for r in await store.audit_rows("acme", after_seq=2, limit=3)] == [3, 4, 5]
    assert [r.seq for r in await store.audit_rows("acme", limit=2)] == [1, 2]
    assert await store.audit_rows("acme", after_seq=9) == []
    assert [e.seq for e in await store.list_audit(AuditFilter("acme"), limit=4)] == [1, 2, 3, 4]
    assert [e.seq for e in await chain(store, "acme", after_seq=7)] == [8, 9]


async def test_audit_filters(store):
    await store.append_audit(
        [
            draft("acme", "job.transition", subject="j1", actor="bot", at_ms=1_000),
            draft("acme", "decision", subject="j1", at_ms=2_000),
            draft("acme", "approval.approved", subject="j1", actor="alice", at_ms=3_000),
            draft("acme", "job.transition", subject="j2", actor="bot", at_ms=4_000),
            draft("acme", "jobs_x.odd", subject="j2", actor="alice", at_ms=5_000),
            draft("globex", "job.transition", subject="j1", actor="bot", at_ms=2_500),
        ]
    )

    async def seqs(**filters: Any) -> list[int]:
        return [e.seq for e in await chain(store, "acme", **filters)]

    assert await seqs() == [1, 2, 3, 4, 5]
    assert await seqs(kinds=frozenset({"job.transition"})) == [1, 4]
    assert await seqs(kinds=frozenset({"decision", "approval.approved"})) == [2, 3]
    assert await seqs(kinds=frozenset({"unknown"})) == []
    assert await seqs(kind_prefix="job.") == [1, 4]
    assert await seqs(kind_prefix="approval.") == [3]
    assert await seqs(kind_prefix="job") == [1, 4, 5]
    assert await seqs(kind_prefix="job_") == []  # a literal prefix, not a pattern
    assert await seqs(kind_prefix="%") == []
    assert await seqs(subject="j1") == [1, 2, 3]
    assert await seqs(subject="j3") == []
    assert await seqs(actor="alice") == [3, 5]
    assert await seqs(actor="bot", subject="j2") == [4]
    assert await seqs(since_ms=3_000) == [3, 4, 5]  # at or after
    assert await seqs(until_ms=3_000) == [1, 2]  # before
    assert await seqs(since_ms=2_000, until_ms=4_001) == [2, 3, 4]
    assert await seqs(since_ms=9_000) == []
    assert await seqs(after_seq=2, kind_prefix="job.") == [4]
    assert await seqs(after_seq=1, subject="j1", kinds=frozenset({"decision"})) == [2]
    globex = await chain(store, "globex", subject="j1")
    assert [(e.tenant_id, e.seq) for e in globex] == [("globex", 1)]


async def test_audit_checkpoints_are_listed_by_seq(store):
    await store.append_audit([draft("acme") for _ in range(6)] + [draft("globex")])
    rows = {r.seq: r for r in await store.audit_rows("acme")}

    def checkpoint(tenant: str, seq: int, event_hash: str) -> AuditCheckpoint:
        return AuditCheckpoint(
            tenant_id=tenant,
            seq=seq,
            event_hash=event_hash,
            at_ms=1_000 + seq,
            key_id="k1",
            signature="ab" * 64,
        )

    assert await store.list_audit_checkpoints("acme") == []
    late = checkpoint("acme", 6, rows[6].event_hash)
    early = checkpoint("acme", 2, rows[2].event_hash)
    middle = checkpoint("acme", 4, rows[4].event_hash)
    other = checkpoint("globex", 1, (await store.audit_head("globex"))[1])
    for item in (late, other, early, middle):
        await store.add_audit_checkpoint(item)
    assert await store.list_audit_checkpoints("acme") == [early, middle, late]
    assert await store.list_audit_checkpoints("globex") == [other]
    assert await store.list_audit_checkpoints("nobody") == []
    # Checkpoints are not events: the chains did not move.
    assert await store.audit_head("acme") == (6, rows[6].event_hash)
    assert sorted(await store.audit_chains()) == ["acme", "globex"]


async def test_racing_writes_keep_each_chain_gapless(store):
    jobs = [await create(store, make_job(tenant_id=t)) for t in ("acme", "globex") * 5]
    results = await asyncio.gather(
        *(store.transition(j.id, S.SCHEDULED, decision=make_decision(j)) for j in jobs),
        *(store.append_audit([draft("acme"), draft("globex")]) for _ in range(5)),
        *(store.transition(j.id, S.CANCELLED, audit=[draft(j.tenant_id)]) for j in jobs[:4]),
        return_exceptions=True,
    )
    for result in results:
        assert not isinstance(result, BaseException) or isinstance(result, IllegalTransitionError)
    for tenant in ("acme", "globex"):
        await assert_verifies(store, tenant)
        for job in jobs:
            if job.tenant_id == tenant:
                moves = await chain(store, tenant, subject=job.id)
                assert sum(e.kind == "job.transition" for e in moves) == len(
                    await store.job_events(job.id)
                )
                assert sum(e.kind == "decision" for e in moves) == len(
                    await store.job_decisions(job.id)
                )


# --- durability ----------------------------------------------------------------------------


async def test_records_and_chains_survive_close_and_reopen(store_harness: StoreHarness):
    if store_harness.reopen_unsupported:
        pytest.skip(store_harness.reopen_unsupported)
    store = store_harness.store
    job, request = await awaiting(store, tenant="acme", expires_at=next_time() + 60)
    bundle = make_bundle("base")
    await store.put_policy_bundle(bundle, audit=[draft(kind="policy.bundle.put")])
    snapshots = [await store.add_policy_snapshot(make_snapshot()) for _ in range(2)]
    await store.activate_policy_snapshot(1)
    key = make_key("ck_durable")
    await store.put_api_key(key)
    head = await store.audit_head("acme")
    checkpoint = AuditCheckpoint(
        tenant_id="acme", seq=head[0], event_hash=head[1], at_ms=1, key_id="k", signature="00"
    )
    await store.add_audit_checkpoint(checkpoint)
    chains = {t: await store.audit_rows(t) for t in await store.audit_chains()}

    store = await store_harness.reopen()
    assert await store.get_approval(job.id) == request
    assert (await store.list_approvals(ApprovalFilter())).approvals == [request]
    assert await store.list_policy_bundles() == [bundle]
    assert await store.list_policy_snapshots() == snapshots[::-1]
    assert await store.active_policy_snapshot() == snapshots[0]
    assert await store.list_api_keys() == [key]
    assert {t: await store.audit_rows(t) for t in await store.audit_chains()} == chains
    assert await store.audit_head("acme") == head
    assert await store.list_audit_checkpoints("acme") == [checkpoint]

    # The reopened store carries on each chain and numbering where they stopped.
    await store.transition(job.id, S.TIMEOUT)
    assert (await store.get_approval(job.id)).status is A.EXPIRED
    assert (await store.add_policy_snapshot(make_snapshot())).version == 3
    assert await assert_verifies(store, "acme") == head[0] + 2
    await assert_verifies(store, "_system")


# --- property: random legal traffic always leaves verifiable chains -------------------------

TENANTS = ("acme", "globex", "initech")
ACTIONS = ("move", "move", "move", "via", "repeat", "update", "note")
CLOSING = {S.CANCELLED: A.CANCELLED, S.TIMEOUT: A.EXPIRED, S.DENIED: A.INVALIDATED}


@dataclass
class Model:
    """What the store should hold about one job."""

    job: JobRecord
    state: JobState
    approval: ApprovalRecord | None = None
    events: int = 1
    decisions: int = 1
    approval_events: int = 0


JOBS = st.lists(
    st.tuples(st.sampled_from(TENANTS), st.sampled_from(sorted(TRANSITIONS[None])), st.booleans()),
    min_size=1,
    max_size=4,
)
STEPS = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from(ACTIONS), st.integers(0, 63), st.booleans()),
    max_size=25,
)


async def run_traffic(
    store: Store, jobs: list[tuple[str, JobState, bool]], steps: list[Any]
) -> None:
    """Create ``jobs``, play ``steps`` (each legal, or a repeat), then check every chain.

    A step is (job, action, pick, with a decision?): ``move`` to a legal target, ``via`` a
    legal intermediate state, ``repeat`` the current state (which writes nothing),
    ``update`` fields, or append a ``note`` draft. Approvals go with every move into
    APPROVAL_REQUIRED and every approval back to PENDING; other ways out settle it.
    """
    models: list[Model] = []
    notes: Counter[str] = Counter()
    for tenant, state, with_approval in jobs:
        job = make_job(tenant_id=tenant, state=state)
        model = Model(job, state)
        if state is S.APPROVAL_REQUIRED and with_approval:
            model.approval = make_approval(job)
            model.approval_events = 1
        await create(store, job, model.approval)
        models.append(model)

    for index, action, pick, with_decision in steps:
        model = models[index % len(models)]
        job, state = model.job, model.state
        decision = make_decision(job, gate=Gate.DISPATCH) if with_decision else None
        legal = sorted(TRANSITIONS[state])
        if action == "note":
            await store.append_audit([draft(job.tenant_id, subject=job.id)])
            notes[job.tenant_id] += 1
            continue
        if action == "update":
            await store.update_job(
                job.id, expect={state}, changes={"attempts": pick}, decision=decision
            )
            model.decisions += with_decision
            continue
        hops = [
            (mid, end)
            for mid in legal
            for end in sorted(TRANSITIONS[mid])
            if S.APPROVAL_REQUIRED not in (state, mid) and end is not state
        ]
        if action == "repeat" or not legal or (action == "via" and not hops):
            outcome = await store.transition(
                job.id, state, decision=decision, audit=[draft(job.tenant_id)]
            )
            assert outcome.changed is False
            continue
        via: JobState | None = None
        if action == "via":
            via, target = hops[pick % len(hops)]
        else:
            target = legal[pick % len(legal)]
        approval: ApprovalRecord | None = None
        if target is S.APPROVAL_REQUIRED:
            approval = make_approval(job, gate=Gate.DISPATCH.value)
        elif state is S.APPROVAL_REQUIRED and target is S.PENDING:
            approval = resolved(model.approval or make_approval(job), A.APPROVED)
        at = next_time()
        outcome = await store.transition(
            job.id, target, via=via, decision=decision, approval=approval, now=at, reason="r"
        )
        assert outcome.changed
        model.state = target
        model.events += 1 if via is None else 2
        model.decisions += with_decision
        if approval is not None:
            model.approval = approval
            model.approval_events += 1
        elif (
            state is S.APPROVAL_REQUIRED
            and model.approval is not None
            and model.approval.status is A.PENDING
        ):
            model.approval = model.approval.model_copy(
                update={"status": CLOSING[target], "resolved_at": at, "resolution_reason": "r"}
            )
            model.approval_events += 1

    for tenant in TENANTS:
        length = await assert_verifies(store, tenant)
        mine = [m for m in models if m.job.tenant_id == tenant]
        assert length == notes[tenant] + sum(
            m.events + m.decisions + m.approval_events for m in mine
        )
    for model in models:
        events = await chain(store, model.job.tenant_id, subject=model.job.id)
        counts = Counter(e.kind for e in events)
        assert counts["job.transition"] == len(await store.job_events(model.job.id))
        assert counts["job.transition"] == model.events
        assert counts["decision"] == len(await store.job_decisions(model.job.id))
        assert counts["decision"] == model.decisions
        approvals = sum(n for kind, n in counts.items() if kind.startswith("approval."))
        assert approvals == model.approval_events
        assert await store.get_approval(model.job.id) == model.approval
        assert (await store.get_job(model.job.id)).state is model.state
    assert sorted(await store.audit_chains()) == sorted(
        {m.job.tenant_id for m in models} | {t for t, n in notes.items() if n}
    )


@pytest.mark.parametrize("adapter", STORE_ADAPTERS, ids=[a.name for a in STORE_ADAPTERS])
@settings(max_examples=40, deadline=None)
@given(jobs=JOBS, steps=STEPS)
def test_random_legal_traffic_leaves_chains_that_verify(
    adapter: StoreAdapter, jobs: list[tuple[str, JobState, bool]], steps: list[Any]
) -> None:
    async def scenario(tmp: Path) -> None:
        harness = await adapter.open(tmp)
        try:
            await run_traffic(harness.store, jobs, steps)
        finally:
            await harness.close()

    with tempfile.TemporaryDirectory(prefix="cordum-audit-property-") as tmp:
        asyncio.run(scenario(Path(tmp)))
