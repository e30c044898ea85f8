"""The Store contract (``cordum.ports.store``), run against every registered adapter.

Pinned here: creation writes the job, its first event and its gate-A decision together;
records round-trip every field; idempotency keys are per tenant and a taken key writes
nothing; ``transition`` follows ``TRANSITIONS`` exactly and writes nothing when it refuses
(illegal move, ``expect`` mismatch, unknown job); repeats are no-ops; terminal jobs never
change; decisions and DLQ entries go with their transition; ``update_job`` never emits an
event; listings filter, order newest first and paginate every job exactly once; DLQ and
worker bookkeeping; the per-minute decision tally agrees with the decisions every write
records; data survives close/reopen (adapters that persist); and concurrent
transitions on one job leave a single legal history.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import pytest

from cordum.models import Decision
from cordum.models.pipeline import DecisionEntry, DLQReason, Gate, JobError, JobRecord
from cordum.models.state import (
    TERMINAL_STATES,
    TRANSITIONS,
    IllegalTransitionError,
    JobState,
    can_transition,
)
from cordum.ports.store import (
    TALLY_RETENTION_S,
    ConflictError,
    CreateOutcome,
    DecisionCount,
    JobFilter,
    JobNotFoundError,
    Store,
    TransitionOutcome,
    decision_minute,
)
from tests.ports.adapters import StoreHarness
from tests.ports.factories import (
    make_decision,
    make_dlq,
    make_full_decision,
    make_full_job,
    make_idempotency,
    make_job,
    make_worker,
    new_id,
    next_time,
    path_to,
)

pytestmark = pytest.mark.anyio

S = JobState
ALL_PAIRS = [(a, b) for a in JobState for b in JobState]


def pair_id(pair: tuple[JobState, JobState]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


async def create(store: Store, job: JobRecord | None = None, **overrides: Any) -> JobRecord:
    """Create ``job`` (or a fresh one) with a decision; assert it was created."""
    job = job or make_job(**overrides)
    outcome = await store.create_job(job, make_decision(job))
    assert outcome.created
    return job


async def create_in(store: Store, state: JobState, **overrides: Any) -> JobRecord:
    """A job brought to ``state`` along the shortest legal path."""
    first, *rest = path_to(state)
    job = await create(store, make_job(state=first, **overrides))
    for step in rest:
        await store.transition(job.id, step, reason=f"to {step.value}")
    current = await store.get_job(job.id)
    assert current is not None
    assert current.state is state
    return current


async def snapshot(store: Store, job_id: str) -> tuple[Any, ...]:
    """Everything the store holds about one job, to check that nothing was written."""
    return (
        await store.get_job(job_id),
        await store.job_events(job_id),
        await store.job_decisions(job_id),
        await store.get_dlq(job_id),
        await store.count_dlq(),
        await store.count_jobs_by_state(),
    )


async def list_all(store: Store, filters: JobFilter | None = None, limit: int = 7) -> list[str]:
    """Every job id a full pagination returns, in order."""
    filters = filters or JobFilter()
    ids: list[str] = []
    cursor: str | None = None
    for _ in range(1000):
        page = await store.list_jobs(filters, cursor=cursor, limit=limit)
        assert len(page.jobs) <= limit
        ids.extend(j.id for j in page.jobs)
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor
    raise AssertionError("pagination never ended")


def assert_legal_chain(events: list[Any], final: JobState) -> None:
    """Events start at creation, are contiguous, follow the table and end in ``final``."""
    assert events, "a job always has its creation event"
    assert events[0].from_state is None
    previous = None
    for event in events:
        assert event.from_state == previous, f"gap in the chain: {events}"
        assert can_transition(event.from_state, event.to_state), f"illegal event {event}"
        previous = event.to_state
    assert previous is final


# --- create_job --------------------------------------------------------------------------


async def test_create_job_writes_the_job_its_first_event_and_its_decision(store):
    job = make_job()
    decision = make_full_decision(job)
    outcome = await store.create_job(job, decision, event_reason="submitted")
    assert outcome == CreateOutcome(created=True, job=job, existing=None)
    assert await store.get_job(job.id) == job
    events = await store.job_events(job.id)
    assert [(e.job_id, e.from_state, e.to_state, e.reason) for e in events] == [
        (job.id, None, S.PENDING, "submitted")
    ]
    assert await store.job_decisions(job.id) == [decision]
    assert await store.count_jobs_by_state() == {S.PENDING: 1}


@pytest.mark.parametrize("state", sorted(TRANSITIONS[None]), ids=str)
async def test_a_job_can_be_created_in_each_initial_state(store, state):
    job = await create(store, make_job(state=state))
    assert (await store.get_job(job.id)).state is state
    assert [(e.from_state, e.to_state) for e in await store.job_events(job.id)] == [(None, state)]


@pytest.mark.parametrize("state", sorted(set(JobState) - TRANSITIONS[None]), ids=str)
async def test_creating_a_job_in_a_non_initial_state_is_refused_and_writes_nothing(store, state):
    job = make_job(state=state)
    with pytest.raises(IllegalTransitionError):
        await store.create_job(job, make_decision(job))
    assert await store.get_job(job.id) is None
    assert await store.job_events(job.id) == []
    assert await store.job_decisions(job.id) == []
    assert await store.count_jobs_by_state() == {}


RESULTS = [
    None,
    True,
    False,
    0,
    -7,
    2**53 + 1,
    1.5,
    -0.25,
    "",
    'text ✓ with "quotes" and \n newline',
    [],
    [1, "a", None, 2.5, [True, {"k": []}]],
    {},
    {"nested": {"list": [1, 2, {"x": None}], "flag": False, "ünï": "çødé"}},
]


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__ + ":" + repr(r)[:12])
async def test_get_job_and_list_jobs_round_trip_every_field(store, result):
    job = make_full_job(result=result)
    decision = make_full_decision(job)
    await store.create_job(job, decision)
    assert await store.get_job(job.id) == job
    # list_jobs reads the stored form (no write-through cache to hide a lossy encoding).
    (listed,) = (await store.list_jobs(JobFilter(tenant_id="acme"))).jobs
    assert listed == job
    assert listed.model_dump() == job.model_dump()
    assert type(listed.result) is type(job.result)
    assert await store.job_decisions(job.id) == [decision]


async def test_unknown_job_ids(store):
    unknown = new_id()
    assert await store.get_job(unknown) is None
    with pytest.raises(JobNotFoundError) as caught:
        await store.transition(unknown, S.SCHEDULED)
    assert caught.value.job_id == unknown
    with pytest.raises(JobNotFoundError):
        await store.update_job(unknown, expect={S.PENDING}, changes={"attempts": 1})
    assert await store.count_jobs_by_state() == {}


# --- idempotency -------------------------------------------------------------------------


async def test_a_taken_idempotency_key_returns_the_first_answer_and_writes_nothing(store):
    first = make_job()
    entry = make_idempotency(first, "key-1")
    created = await store.create_job(first, make_decision(first), entry)
    assert created.created
    assert await store.get_idempotency("default", "key-1") == entry

    second = make_job()
    repeat = make_idempotency(second, "key-1", response={"status": "other"})
    before = await snapshot(store, first.id)
    outcome = await store.create_job(second, make_decision(second), repeat)
    assert outcome.created is False
    assert outcome.existing == entry
    assert outcome.job is None
    assert await store.get_job(second.id) is None
    assert await store.job_events(second.id) == []
    assert await store.job_decisions(second.id) == []
    assert await store.get_idempotency("default", "key-1") == entry
    assert await snapshot(store, first.id) == before
    assert await list_all(store) == [first.id]


async def test_idempotency_keys_are_per_tenant(store):
    ours = make_job(tenant_id="tenant-a")
    theirs = make_job(tenant_id="tenant-b")
    ours_entry = make_idempotency(ours, "shared-key")
    theirs_entry = make_idempotency(theirs, "shared-key")
    assert (await store.create_job(ours, make_decision(ours), ours_entry)).created
    assert (await store.create_job(theirs, make_decision(theirs), theirs_entry)).created
    assert await store.get_idempotency("tenant-a", "shared-key") == ours_entry
    assert await store.get_idempotency("tenant-b", "shared-key") == theirs_entry
    assert await store.get_idempotency("tenant-c", "shared-key") is None
    assert await store.get_idempotency("tenant-a", "other-key") is None
    assert sorted(await list_all(store)) == sorted([ours.id, theirs.id])


async def test_a_job_without_idempotency_entry_takes_no_key(store):
    job = make_job(spec=make_job().spec.model_copy(update={"idempotency_key": "k"}))
    await create(store, job)
    assert await store.get_idempotency("default", "k") is None


# --- transition --------------------------------------------------------------------------


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=pair_id)
async def test_transition_follows_the_table_exactly(store, pair):
    source, target = pair
    job = await create_in(store, source)
    events_before = await store.job_events(job.id)
    decision = make_decision(job, gate=Gate.DISPATCH)
    dlq = make_dlq(job)
    at = next_time()
    if target is source:
        before = await snapshot(store, job.id)
        outcome = await store.transition(
            job.id, target, changes={"attempts": 99}, decision=decision, dlq=dlq, now=at
        )
        assert outcome == TransitionOutcome(job=job, changed=False, previous=source)
        assert await snapshot(store, job.id) == before
    elif can_transition(source, target):
        outcome = await store.transition(job.id, target, reason="legal", now=at)
        assert outcome.changed is True
        assert outcome.previous is source
        assert outcome.job.state is target
        assert outcome.job.updated_at == at
        assert await store.get_job(job.id) == outcome.job
        events = await store.job_events(job.id)
        assert events[:-1] == events_before
        last = events[-1]
        assert (last.job_id, last.from_state, last.to_state, last.reason, last.at) == (
            job.id,
            source,
            target,
            "legal",
            at,
        )
    else:
        before = await snapshot(store, job.id)
        with pytest.raises(IllegalTransitionError) as caught:
            await store.transition(
                job.id, target, changes={"attempts": 99}, decision=decision, dlq=dlq, now=at
            )
        assert (caught.value.job_id, caught.value.current, caught.value.target) == (
            job.id,
            source,
            target,
        )
        assert await snapshot(store, job.id) == before


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES), ids=str)
async def test_terminal_jobs_never_change(store, terminal):
    job = await create_in(store, terminal)
    before = await snapshot(store, job.id)
    for target in JobState:
        if target is terminal:
            outcome = await store.transition(job.id, target, changes={"worker_id": "late"})
            assert outcome.changed is False
        else:
            with pytest.raises(IllegalTransitionError):
                await store.transition(job.id, target, changes={"worker_id": "late"})
    assert await snapshot(store, job.id) == before


async def test_repeating_the_current_state_changes_nothing(store):
    job = await create_in(store, S.RUNNING)
    before = await snapshot(store, job.id)
    for _ in range(3):
        outcome = await store.transition(
            job.id, S.RUNNING, changes={"progress": {"p": 1}}, reason="again", now=next_time()
        )
        assert outcome.changed is False
        assert outcome.previous is S.RUNNING
        assert outcome.job == job
    assert await snapshot(store, job.id) == before


async def test_expect_mismatch_raises_conflict_and_writes_nothing(store):
    job = await create_in(store, S.SCHEDULED)
    before = await snapshot(store, job.id)
    with pytest.raises(ConflictError) as caught:
        await store.transition(
            job.id,
            S.DISPATCHED,
            expect={S.PENDING, S.RETRYING},
            changes={"worker_id": "w"},
            decision=make_decision(job),
            dlq=make_dlq(job),
        )
    assert caught.value.job_id == job.id
    assert caught.value.current is S.SCHEDULED
    assert caught.value.expected == {S.PENDING, S.RETRYING}
    assert await snapshot(store, job.id) == before


async def test_expect_mismatch_wins_over_a_legal_target(store):
    job = await create_in(store, S.PENDING)
    before = await snapshot(store, job.id)
    with pytest.raises(ConflictError):
        await store.transition(job.id, S.CANCELLED, expect={S.RUNNING})
    with pytest.raises(ConflictError):
        await store.transition(job.id, S.CANCELLED, expect=set())
    assert await snapshot(store, job.id) == before


async def test_expect_match_lets_the_transition_through(store):
    job = await create_in(store, S.DISPATCHED)
    outcome = await store.transition(job.id, S.RUNNING, expect={S.DISPATCHED, S.SCHEDULED})
    assert outcome.changed
    assert (await store.get_job(job.id)).state is S.RUNNING


async def test_changes_are_applied_with_the_transition(store):
    job = await create_in(store, S.SCHEDULED, topic="job.test.changes")
    at = next_time()
    outcome = await store.transition(
        job.id,
        S.DISPATCHED,
        changes={
            "worker_id": "worker-9",
            "pool": "gpu",
            "attempts": 1,
            "dispatched_at": at,
            "next_attempt_at": None,
            "waiting_reason": None,
        },
        now=at,
    )
    expected = job.model_copy(
        update={
            "state": S.DISPATCHED,
            "worker_id": "worker-9",
            "pool": "gpu",
            "attempts": 1,
            "dispatched_at": at,
            "next_attempt_at": None,
            "waiting_reason": None,
            "updated_at": at,
        }
    )
    assert outcome.job == expected
    assert await store.get_job(job.id) == expected
    (listed,) = (await store.list_jobs(JobFilter(topic="job.test.changes"))).jobs
    assert listed == expected
    error = JobError(code="worker_error", message="exit 1")
    outcome = await store.transition(
        job.id, S.FAILED, changes={"error": error, "result": {"partial": [1, 2]}}, now=at + 1
    )
    (listed,) = (await store.list_jobs(JobFilter(topic="job.test.changes"))).jobs
    assert listed.error == error
    assert listed.result == {"partial": [1, 2]}
    assert listed.state is S.FAILED
    assert listed == await store.get_job(job.id)


async def test_via_takes_two_steps_in_one_write_with_an_event_each(store):
    job = await create_in(store, S.PENDING)
    decision = make_decision(job, gate=Gate.DISPATCH)
    at = next_time()
    outcome = await store.transition(
        job.id,
        S.DISPATCHED,
        expect={S.PENDING},
        via=S.SCHEDULED,
        via_reason="gate B: ALLOW",
        reason="dispatched to w-1",
        changes={"worker_id": "w-1"},
        decision=decision,
        now=at,
    )
    assert outcome.changed
    assert outcome.previous is S.PENDING
    assert outcome.job.state is S.DISPATCHED
    assert outcome.job.worker_id == "w-1"
    assert await store.get_job(job.id) == outcome.job
    events = await store.job_events(job.id)
    assert [(e.from_state, e.to_state, e.reason, e.at) for e in events[-2:]] == [
        (S.PENDING, S.SCHEDULED, "gate B: ALLOW", at),
        (S.SCHEDULED, S.DISPATCHED, "dispatched to w-1", at),
    ]
    assert_legal_chain(events, S.DISPATCHED)
    assert (await store.job_decisions(job.id))[-1] == decision
    assert len(await store.job_decisions(job.id)) == 2


@pytest.mark.parametrize(
    ("start", "via", "target"),
    [
        (S.PENDING, S.RUNNING, S.SUCCEEDED),  # first step illegal
        (S.PENDING, S.SCHEDULED, S.SUCCEEDED),  # second step illegal
        (S.SUCCEEDED, S.PENDING, S.SCHEDULED),  # out of a terminal state
    ],
)
async def test_via_with_an_illegal_step_raises_and_writes_nothing(store, start, via, target):
    job = await create_in(store, start)
    before = await snapshot(store, job.id)
    with pytest.raises(IllegalTransitionError):
        await store.transition(
            job.id, target, via=via, decision=make_decision(job), dlq=make_dlq(job)
        )
    assert await snapshot(store, job.id) == before


async def test_via_respects_expect_and_repeats(store):
    job = await create_in(store, S.SCHEDULED)
    before = await snapshot(store, job.id)
    with pytest.raises(ConflictError):
        await store.transition(job.id, S.DISPATCHED, expect={S.PENDING}, via=S.SCHEDULED)
    assert await snapshot(store, job.id) == before
    dispatched = await create_in(store, S.DISPATCHED)
    before = await snapshot(store, dispatched.id)
    outcome = await store.transition(
        dispatched.id, S.DISPATCHED, expect={S.PENDING}, via=S.SCHEDULED
    )
    assert outcome.changed is False
    assert await snapshot(store, dispatched.id) == before


async def test_decision_and_dlq_entry_are_written_with_the_transition(store):
    job = await create_in(store, S.PENDING)
    decision = make_decision(job, gate=Gate.DISPATCH, decision=Decision.DENY, reason="no")
    dlq = make_dlq(job, reason_code=DLQReason.SAFETY_DENIED, message="denied at dispatch")
    await store.transition(job.id, S.FAILED, decision=decision, dlq=dlq, reason="denied")
    decisions = await store.job_decisions(job.id)
    assert decisions[-1] == decision
    assert len(decisions) == 2
    assert await store.get_dlq(job.id) == dlq
    assert (await store.list_dlq()).entries == [dlq]
    assert await store.count_dlq() == 1


async def test_a_dlq_entry_is_claimed_once_and_can_be_put_back(store):
    job = await create_in(store, S.PENDING)
    entry = make_dlq(job)
    await store.transition(job.id, S.FAILED, dlq=entry)
    claims = await asyncio.gather(*(store.delete_dlq(job.id) for _ in range(5)))
    assert sorted(claims) == [False] * 4 + [True]
    assert await store.get_dlq(job.id) is None
    await store.put_dlq(entry)
    assert await store.get_dlq(job.id) == entry
    assert (await store.list_dlq()).entries == [entry]
    assert await store.count_dlq() == 1


async def test_dlq_listing_is_newest_first_and_pages_with_a_cursor(store):
    entries = []
    for _ in range(7):
        job = await create_in(store, S.PENDING)
        entry = make_dlq(job)
        await store.transition(job.id, S.FAILED, dlq=entry)
        entries.append(entry)
    assert (await store.list_dlq()).entries == entries[::-1]
    assert await store.count_dlq() == 7
    seen, cursor = [], None
    while True:
        page = await store.list_dlq(cursor=cursor, limit=3)
        seen.extend(page.entries)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == entries[::-1]


async def test_dlq_pagination_goes_on_when_the_cursor_entry_was_deleted(store):
    # An operator retrying (deleting) each entry of a page, then asking for the next page
    # with the page's cursor, must still get the older entries.
    entries = []
    for _ in range(6):
        job = await create_in(store, S.PENDING)
        entry = make_dlq(job)
        await store.transition(job.id, S.FAILED, dlq=entry)
        entries.append(entry)
    first_page = await store.list_dlq(limit=3)
    assert first_page.entries == entries[:2:-1]
    for entry in first_page.entries:
        assert await store.delete_dlq(entry.job_id)
    rest = await store.list_dlq(cursor=first_page.next_cursor, limit=3)
    assert rest.entries == entries[2::-1]


async def test_dlq_delete(store):
    job = await create_in(store, S.PENDING)
    other = await create_in(store, S.PENDING)
    await store.transition(job.id, S.FAILED, dlq=make_dlq(job))
    await store.transition(other.id, S.TIMEOUT, dlq=make_dlq(other))
    assert await store.delete_dlq(job.id) is True
    assert await store.get_dlq(job.id) is None
    assert await store.delete_dlq(job.id) is False
    assert await store.delete_dlq(new_id()) is False
    assert await store.count_dlq() == 1
    assert [e.job_id for e in (await store.list_dlq()).entries] == [other.id]
    assert (await store.get_job(job.id)).state is S.FAILED


async def test_dlq_listing_filters_by_tenant(store):
    ids = {}
    for tenant in ("acme", "globex", "acme"):
        job = await create_in(store, S.PENDING, tenant_id=tenant)
        await store.transition(job.id, S.FAILED, dlq=make_dlq(job))
        ids.setdefault(tenant, []).append(job.id)
    acme = await store.list_dlq(tenant_ids=frozenset({"acme"}))
    assert [e.job_id for e in acme.entries] == ids["acme"][::-1]
    first = await store.list_dlq(tenant_ids=frozenset({"acme"}), limit=1)
    rest = await store.list_dlq(tenant_ids=frozenset({"acme"}), cursor=first.next_cursor)
    assert [e.job_id for e in first.entries + rest.entries] == ids["acme"][::-1]
    both = await store.list_dlq(tenant_ids=frozenset({"acme", "globex"}))
    assert len(both.entries) == 3
    assert (await store.list_dlq(tenant_ids=frozenset())).entries == []


# --- update_job --------------------------------------------------------------------------


async def test_update_job_changes_fields_without_an_event(store):
    job = await create_in(store, S.RUNNING)
    events = await store.job_events(job.id)
    decision = make_decision(job, gate=Gate.DISPATCH, decision=Decision.THROTTLE, reason="slow")
    updated = await store.update_job(
        job.id,
        expect={S.RUNNING, S.DISPATCHED},
        changes={"progress": {"percent": 50}, "scheduling_attempts": 4, "updated_at": 123.5},
        decision=decision,
    )
    assert updated.state is S.RUNNING
    assert updated.progress == {"percent": 50}
    assert updated.scheduling_attempts == 4
    assert updated == job.model_copy(
        update={"progress": {"percent": 50}, "scheduling_attempts": 4, "updated_at": 123.5}
    )
    assert await store.get_job(job.id) == updated
    assert (await store.list_jobs(JobFilter())).jobs == [updated]
    assert await store.job_events(job.id) == events
    assert (await store.job_decisions(job.id))[-1] == decision


async def test_update_job_respects_expect(store):
    job = await create_in(store, S.PENDING)
    before = await snapshot(store, job.id)
    with pytest.raises(ConflictError) as caught:
        await store.update_job(
            job.id,
            expect={S.RUNNING},
            changes={"attempts": 5},
            decision=make_decision(job),
        )
    assert caught.value.current is S.PENDING
    assert await snapshot(store, job.id) == before


async def test_update_job_never_changes_the_state(store):
    job = await create_in(store, S.PENDING)
    events = await store.job_events(job.id)
    with contextlib.suppress(ValueError):
        await store.update_job(job.id, expect={S.PENDING}, changes={"state": S.SUCCEEDED})
    assert (await store.get_job(job.id)).state is S.PENDING
    assert await store.job_events(job.id) == events
    assert await store.count_jobs_by_state() == {S.PENDING: 1}


# --- list_jobs and counts ----------------------------------------------------------------


async def test_list_jobs_is_newest_first_and_pagination_covers_every_job_once(store):
    created = [(await create(store)).id for _ in range(23)]
    newest_first = created[::-1]
    assert [j.id for j in (await store.list_jobs(JobFilter(), limit=100)).jobs] == newest_first
    for limit in (1, 5, 23, 24):
        assert await list_all(store, limit=limit) == newest_first
    page = await store.list_jobs(JobFilter(), limit=23)
    assert page.next_cursor is None


async def test_pagination_is_stable_while_jobs_change(store):
    created = [(await create(store)).id for _ in range(12)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await store.list_jobs(JobFilter(), cursor=cursor, limit=4)
        for job in page.jobs:
            seen.append(job.id)
            await store.transition(job.id, S.SCHEDULED)
            await store.update_job(job.id, expect={S.SCHEDULED}, changes={"attempts": 1})
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == created[::-1]


async def test_list_jobs_filters(store):
    t0 = next_time()
    a = await create(store, tenant_id="a", topic="job.t.one")
    b = await create(store, tenant_id="b", topic="job.t.one")
    c = await create(store, tenant_id="a", topic="job.t.two")
    d = await create(store, tenant_id="a", topic="job.t.one", state=S.APPROVAL_REQUIRED)
    await store.transition(c.id, S.SCHEDULED, now=t0 + 1000)
    await store.transition(b.id, S.CANCELLED, now=t0 + 2000)

    async def ids(**kwargs: Any) -> set[str]:
        return set(await list_all(store, JobFilter(**kwargs), limit=2))

    assert await ids() == {a.id, b.id, c.id, d.id}
    assert await ids(tenant_id="a") == {a.id, c.id, d.id}
    assert await ids(tenant_id="nobody") == set()
    assert await ids(topic="job.t.one") == {a.id, b.id, d.id}
    assert await ids(states=frozenset({S.PENDING})) == {a.id}
    assert await ids(states=frozenset({S.SCHEDULED, S.CANCELLED})) == {b.id, c.id}
    assert await ids(tenant_id="a", topic="job.t.one", states=frozenset({S.PENDING})) == {a.id}
    assert await ids(updated_before=t0 + 500) == {a.id, d.id}
    assert await ids(updated_before=t0 + 1500) == {a.id, c.id, d.id}
    assert await ids(updated_before=t0 + 1500, tenant_id="b") == set()


async def test_list_jobs_due_before(store):
    now = next_time()
    early = await create(store, next_attempt_at=now - 10)
    exact = await create(store, next_attempt_at=now)
    late = await create(store, next_attempt_at=now + 10)
    await create(store)  # never deferred: not due
    moved = await create(store)
    await store.update_job(moved.id, expect={S.PENDING}, changes={"next_attempt_at": now - 1})
    cleared = await create(store, next_attempt_at=now - 5)
    await store.transition(cleared.id, S.SCHEDULED, changes={"next_attempt_at": None})

    assert set(await list_all(store, JobFilter(due_before=now))) == {early.id, exact.id, moved.id}
    assert set(await list_all(store, JobFilter(due_before=now + 10))) == {
        early.id,
        exact.id,
        late.id,
        moved.id,
    }
    assert await list_all(store, JobFilter(due_before=now - 100)) == []
    due_pending = JobFilter(due_before=now, states=frozenset({S.PENDING}))
    assert set(await list_all(store, due_pending)) == {early.id, exact.id, moved.id}


async def test_count_jobs_by_state(store):
    assert await store.count_jobs_by_state() == {}
    for state, n in [(S.PENDING, 3), (S.RUNNING, 2), (S.DENIED, 1), (S.SUCCEEDED, 4)]:
        for _ in range(n):
            await create_in(store, state)
    assert await store.count_jobs_by_state() == {
        S.PENDING: 3,
        S.RUNNING: 2,
        S.DENIED: 1,
        S.SUCCEEDED: 4,
    }


# --- decision tallies --------------------------------------------------------------------


def minutes_ago(n: int) -> int:
    """The start of the minute ``n`` minutes before the current one."""
    return decision_minute(time.time()) - 60 * n


def tally(minute: int, decision: Decision, count: int, *, fail_open: bool = False) -> DecisionCount:
    """The count ``decision_counts`` should report."""
    return DecisionCount(minute=minute, decision=decision, fail_open=fail_open, count=count)


async def decided(
    store: Store,
    at: float,
    decision: Decision = Decision.ALLOW,
    *,
    fail_open: bool = False,
    **job_fields: Any,
) -> JobRecord:
    """A new job whose gate-A decision was taken at ``at``."""
    job = make_job(**job_fields)
    entry = make_decision(job, decision=decision, at=at, safety_bypassed=fail_open)
    assert (await store.create_job(job, entry)).created
    return job


async def test_decision_counts_of_an_empty_store_are_empty(store):
    assert await store.decision_counts(0) == []
    assert await store.decision_counts(minutes_ago(60), tenant_ids=frozenset({"default"})) == []


async def test_decision_counts_tally_each_minute_by_type_with_fail_open_apart(store):
    first, second = minutes_ago(10), minutes_ago(3)
    for offset in (0, 20.5, 59.999):
        await decided(store, first + offset)
    await decided(store, first + 30, Decision.DENY)
    await decided(store, first + 31, fail_open=True)
    await decided(store, first + 32, fail_open=True)
    await decided(store, second + 1, Decision.THROTTLE)
    await decided(store, second + 2, Decision.ALLOW_WITH_CONSTRAINTS)
    await decided(store, second + 3, Decision.REQUIRE_APPROVAL, state=S.APPROVAL_REQUIRED)
    await decided(store, second + 60)  # the first instant of the next minute
    assert await store.decision_counts(minutes_ago(60)) == [
        tally(first, Decision.ALLOW, 3),
        tally(first, Decision.ALLOW, 2, fail_open=True),
        tally(first, Decision.DENY, 1),
        tally(second, Decision.ALLOW_WITH_CONSTRAINTS, 1),
        tally(second, Decision.REQUIRE_APPROVAL, 1),
        tally(second, Decision.THROTTLE, 1),
        tally(second + 60, Decision.ALLOW, 1),
    ]


async def test_decision_counts_count_what_every_write_records_and_nothing_else(store):
    minute = minutes_ago(5)
    at = minute + 7

    def decision(job: JobRecord, value: Decision, **fields: Any) -> DecisionEntry:
        return make_decision(job, gate=Gate.DISPATCH, decision=value, at=at, **fields)

    # create_job, with and without an idempotency key.
    held = await decided(store, at, Decision.REQUIRE_APPROVAL, state=S.APPROVAL_REQUIRED)
    keyed = make_job()
    await store.create_job(keyed, decision(keyed, Decision.ALLOW), make_idempotency(keyed, "k"))
    denied = await decided(store, at, Decision.DENY, state=S.DENIED)
    # transition, plain and through an intermediate state.
    await store.transition(held.id, S.PENDING, decision=decision(held, Decision.ALLOW))
    await store.transition(
        keyed.id, S.DISPATCHED, via=S.SCHEDULED, decision=decision(keyed, Decision.THROTTLE)
    )
    # update_job.
    await store.update_job(
        held.id,
        expect={S.PENDING},
        changes={"scheduling_attempts": 1},
        decision=decision(held, Decision.ALLOW, safety_bypassed=True),
    )
    counted = [
        tally(minute, Decision.ALLOW, 2),
        tally(minute, Decision.ALLOW, 1, fail_open=True),
        tally(minute, Decision.DENY, 1),
        tally(minute, Decision.REQUIRE_APPROVAL, 1),
        tally(minute, Decision.THROTTLE, 1),
    ]
    assert await store.decision_counts(minute) == counted

    # Writes that record nothing count nothing: a repeat, refusals, a taken key, a failure.
    repeat = await store.transition(
        keyed.id, S.DISPATCHED, decision=decision(keyed, Decision.ALLOW)
    )
    assert repeat.changed is False
    with pytest.raises(ConflictError):
        await store.update_job(
            held.id, expect={S.RUNNING}, changes={}, decision=decision(held, Decision.ALLOW)
        )
    with pytest.raises(IllegalTransitionError):
        await store.transition(denied.id, S.PENDING, decision=decision(denied, Decision.ALLOW))
    again = make_job()
    taken = await store.create_job(
        again, decision(again, Decision.ALLOW), make_idempotency(again, "k")
    )
    assert taken.created is False
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the adapter's encoder raises
        await store.transition(
            keyed.id,
            S.RUNNING,
            changes={"result": object()},
            decision=decision(keyed, Decision.ALLOW),
        )
    assert await store.decision_counts(minute) == counted
    recorded = [await store.job_decisions(j.id) for j in (held, keyed, denied)]
    assert sum(c.count for c in counted) == sum(map(len, recorded))


async def test_decision_counts_are_per_tenant(store):
    minute = minutes_ago(2)
    await decided(store, minute + 1, tenant_id="acme")
    await decided(store, minute + 2, tenant_id="acme", fail_open=True)
    await decided(store, minute + 3, Decision.DENY, tenant_id="globex")
    await decided(store, minute + 4, tenant_id="globex|odd:näme")  # the separators, in a name
    since = minutes_ago(60)

    async def counts(*tenants: str) -> list[DecisionCount]:
        return await store.decision_counts(since, tenant_ids=frozenset(tenants))

    assert await store.decision_counts(since) == [
        tally(minute, Decision.ALLOW, 2),
        tally(minute, Decision.ALLOW, 1, fail_open=True),
        tally(minute, Decision.DENY, 1),
    ]
    assert await counts("acme") == [
        tally(minute, Decision.ALLOW, 1),
        tally(minute, Decision.ALLOW, 1, fail_open=True),
    ]
    assert await counts("globex") == [tally(minute, Decision.DENY, 1)]
    assert await counts("globex|odd:näme") == [tally(minute, Decision.ALLOW, 1)]
    assert await counts("acme", "globex", "nobody") == [
        tally(minute, Decision.ALLOW, 1),
        tally(minute, Decision.ALLOW, 1, fail_open=True),
        tally(minute, Decision.DENY, 1),
    ]
    assert await counts("nobody") == []
    assert await counts() == []


async def test_decision_counts_start_with_the_whole_minute_containing_since(store):
    old, recent = minutes_ago(30), minutes_ago(4)
    await decided(store, old + 10)
    await decided(store, recent + 1)
    await decided(store, recent + 50, Decision.DENY)
    both = [
        tally(old, Decision.ALLOW, 1),
        tally(recent, Decision.ALLOW, 1),
        tally(recent, Decision.DENY, 1),
    ]
    assert await store.decision_counts(old) == both
    assert await store.decision_counts(old + 59.9) == both
    assert await store.decision_counts(old + 60) == both[1:]
    assert await store.decision_counts(recent + 30) == both[1:]
    assert await store.decision_counts(recent + 60) == []


async def test_decision_counts_reach_back_24_hours_and_not_past_the_current_minute(store):
    now = time.time()
    await decided(store, now - TALLY_RETENTION_S - 3600)
    await decided(store, now - TALLY_RETENTION_S + 3600, Decision.THROTTLE)
    await decided(store, now + 600, Decision.DENY)  # stamped by a clock running ahead
    kept = decision_minute(now - TALLY_RETENTION_S + 3600)
    assert await store.decision_counts(0) == [tally(kept, Decision.THROTTLE, 1)]
    assert await store.decision_counts(now - 3600) == []


# --- workers -----------------------------------------------------------------------------


async def test_workers_upsert_list_remove(store):
    assert await store.list_workers() == []
    one = make_worker("w-1")
    two = make_worker("w-2", pool="gpu", topics=("job.gpu.*", "job.>"), transport="http")
    await store.upsert_worker(one)
    await store.upsert_worker(two)
    assert sorted(await store.list_workers(), key=lambda w: w.worker_id) == [one, two]

    refreshed = one.model_copy(update={"last_heartbeat": one.last_heartbeat + 5, "active_jobs": 2})
    await store.upsert_worker(refreshed)
    assert sorted(await store.list_workers(), key=lambda w: w.worker_id) == [refreshed, two]

    assert await store.remove_worker("w-1") is True
    assert await store.remove_worker("w-1") is False
    assert await store.remove_worker("never") is False
    assert await store.list_workers() == [two]


# --- durability --------------------------------------------------------------------------


async def test_everything_survives_close_and_reopen(store_harness: StoreHarness):
    if store_harness.reopen_unsupported:
        pytest.skip(store_harness.reopen_unsupported)
    store = store_harness.store
    full = make_full_job(result={"deep": [1, {"x": None}]})
    idem = make_idempotency(full, "durable-key")
    full_decision = make_full_decision(full)
    await store.create_job(full, full_decision, idem, event_reason="created")
    running = await create_in(store, S.RUNNING)
    failed = await create_in(store, S.PENDING)
    dlq = make_dlq(failed)
    await store.transition(failed.id, S.FAILED, dlq=dlq, reason="gave up")
    worker = make_worker("w-durable")
    await store.upsert_worker(worker)

    ids = [full.id, running.id, failed.id]
    before = {job_id: await snapshot(store, job_id) for job_id in ids}
    listed = await store.list_jobs(JobFilter())
    counts = await store.decision_counts(0)

    store = await store_harness.reopen()
    assert {job_id: await snapshot(store, job_id) for job_id in ids} == before
    assert await store.get_job(full.id) == full
    assert await store.job_decisions(full.id) == [full_decision]
    assert await store.list_jobs(JobFilter()) == listed
    assert await store.decision_counts(0) == counts
    assert await store.get_idempotency("acme", "durable-key") == idem
    assert (await store.list_dlq()).entries == [dlq]
    assert await store.list_workers() == [worker]
    assert_legal_chain(await store.job_events(running.id), S.RUNNING)

    # The reopened store is fully usable, and remembers the idempotency key.
    await store.transition(running.id, S.SUCCEEDED, changes={"result": 7})
    assert (await store.get_job(running.id)).result == 7
    again = make_job(tenant_id="acme")
    repeat = await store.create_job(
        again, make_decision(again), make_idempotency(again, "durable-key")
    )
    assert repeat.created is False
    assert repeat.existing == idem


# --- concurrency -------------------------------------------------------------------------


async def test_racing_transitions_out_of_pending_with_expect_have_one_winner(store):
    job = await create_in(store, S.PENDING)
    targets = sorted(TRANSITIONS[S.PENDING])
    calls = [
        store.transition(job.id, targets[i % len(targets)], expect={S.PENDING}, reason=f"r{i}")
        for i in range(50)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    winners = [r for r in results if isinstance(r, TransitionOutcome) and r.changed]
    assert len(winners) == 1
    winner = winners[0].job.state
    assert winners[0].previous is S.PENDING
    for result in results:
        if isinstance(result, BaseException):
            assert isinstance(result, ConflictError), repr(result)
            assert result.current is winner
        elif not result.changed:
            assert result.job.state is winner
    events = await store.job_events(job.id)
    assert [(e.from_state, e.to_state) for e in events] == [(None, S.PENDING), (S.PENDING, winner)]
    assert (await store.get_job(job.id)).state is winner


@pytest.mark.parametrize("seed", range(5))
async def test_racing_transitions_leave_one_legal_history(store, seed):
    rng = random.Random(seed)
    job = await create_in(store, S.PENDING)
    # Without PENDING as a target the table has no cycles, so a state is left at most once.
    targets = [rng.choice([s for s in JobState if s is not S.PENDING]) for _ in range(50)]
    results = await asyncio.gather(
        *(store.transition(job.id, t, reason=str(i)) for i, t in enumerate(targets)),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            assert isinstance(result, IllegalTransitionError), repr(result)
    changed = [r for r in results if isinstance(r, TransitionOutcome) and r.changed]
    final = (await store.get_job(job.id)).state
    events = await store.job_events(job.id)
    assert_legal_chain(events, final)
    assert len(events) == 1 + len(changed)
    sources = [e.from_state for e in events]
    assert len(sources) == len(set(sources)), f"a state was left twice: {events}"
    assert sorted((r.previous, r.job.state) for r in changed) == sorted(
        (e.from_state, e.to_state) for e in events[1:]
    )


async def test_racing_creates_with_one_idempotency_key_create_one_job(store):
    jobs = [make_job() for _ in range(50)]
    outcomes = await asyncio.gather(
        *(store.create_job(j, make_decision(j), make_idempotency(j, "race-key")) for j in jobs)
    )
    created = [o for o in outcomes if o.created]
    assert len(created) == 1
    winner = created[0].job
    stored = await store.get_idempotency("default", "race-key")
    assert stored is not None
    assert stored.job_id == winner.id
    assert all(o.existing == stored for o in outcomes if not o.created)
    assert await list_all(store) == [winner.id]
    assert await store.count_jobs_by_state() == {S.PENDING: 1}


async def test_a_failing_write_leaves_nothing_and_does_not_undo_writes_in_flight(
    store_harness: StoreHarness,
):
    store = store_harness.store
    a, b, c = [await create_in(store, S.PENDING) for _ in range(3)]
    before_b = await snapshot(store, b.id)
    results = await asyncio.gather(
        store.transition(a.id, S.SCHEDULED, reason="a"),
        # A result that cannot be encoded: this write must fail as a whole.
        store.transition(b.id, S.FAILED, changes={"result": object()}, dlq=make_dlq(b)),
        store.transition(c.id, S.CANCELLED, reason="c"),
        return_exceptions=True,
    )
    assert isinstance(results[1], Exception), results[1]
    assert not isinstance(results[0], BaseException)
    assert not isinstance(results[2], BaseException)
    for _ in range(2):
        assert (await store.get_job(a.id)).state is S.SCHEDULED
        assert (await store.get_job(c.id)).state is S.CANCELLED
        assert_legal_chain(await store.job_events(a.id), S.SCHEDULED)
        assert_legal_chain(await store.job_events(c.id), S.CANCELLED)
        assert (await store.get_job(b.id)) == before_b[0]
        assert (await store.job_events(b.id)) == before_b[1]
        assert await store.get_dlq(b.id) is None
        if store_harness.reopen_unsupported:
            break
        store = await store_harness.reopen()
