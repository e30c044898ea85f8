"""The policy lifecycle service: bundles, publish, rollback, audit, start-up sync.

Pinned:
- a bundle that does not load is refused with the loader's issues (file = bundle id,
  line), and so is one that loads alone but not with the others; nothing is written;
- publish makes version n+1 active and swaps the kernel: a decision taken after it
  carries the new snapshot id; drafts that compile to the active snapshot (a comment
  changed) make no version; the publish event and the snapshot commit together or not
  at all, and a failed write leaves the kernel on the old policy;
- rollback (by version or id) re-activates, swaps back, resets the drafts and is
  audited; rolling back to the active snapshot is a no-op; unknown snapshots are errors;
- the last bundle cannot be deleted; concurrent publishes leave store and kernel agreeing;
- start-up: the first start publishes the given policy as version 1 and seeds the drafts
  (one bundle per file of a directory); a restart keeps the store's active snapshot over
  a policy that was not named explicitly, and publishes an explicit one that differs;
  a stored snapshot that no longer loads stops the start with a clear error.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cordum.models import Job
from cordum.models.audit import SYSTEM_CHAIN
from cordum.policy import PolicyLoadError, load, load_bundles, load_text
from cordum.ports.sqlite_store import SqliteStore
from cordum.ports.store import AuditFilter
from cordum.services import policy_admin
from cordum.services.kernel import LocalKernel, PolicyHolder
from cordum.services.policy_admin import (
    InvalidBundleIdError,
    LastBundleError,
    PolicyAdmin,
    PolicySource,
    StartupPolicyError,
    UnknownBundleError,
    UnknownSnapshotError,
    source_from_path,
    source_from_policy,
)

pytestmark = pytest.mark.anyio

BASE = textwrap.dedent(
    """\
    version: "lc-1"
    default_decision: deny
    rules:
      - id: allow-reads
        match: {topics: ["job.read.*"]}
        decision: allow
        reason: reads are fine
    """
)
FRAGMENT = textwrap.dedent(
    """\
    rules:
      - id: deny-prod-writes
        match: {topics: ["job.write.*"], risk_tags: [prod]}
        decision: deny
        reason: no production writes
    """
)
DENY_READS = BASE.replace("decision: allow", "decision: deny").replace("fine", "closed today")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "cordum.db")
    try:
        yield opened
    finally:
        await opened.close()


async def started(store: SqliteStore, bundles: dict[str, str] | None = None) -> PolicyAdmin:
    """A PolicyAdmin after the first start-up sync with ``bundles`` (default: the base)."""
    source = PolicySource(bundles or {"base": BASE}, "test")
    holder = PolicyHolder(load_bundles(source.bundles))
    admin = PolicyAdmin(store, holder)
    await admin.sync_at_startup(source)
    return admin


async def policy_events(store: SqliteStore) -> list[tuple[str, str | None]]:
    events = await store.list_audit(AuditFilter(tenant_id=SYSTEM_CHAIN, kind_prefix="policy."))
    return [(event.kind, event.subject) for event in events]


async def decide(admin: PolicyAdmin, topic: str) -> tuple[str, str | None]:
    """(decision, snapshot id) of a job as gate A would decide it now."""
    record = await LocalKernel(admin.holder).evaluate(Job(topic=topic))
    return record.decision.value, record.policy_snapshot


def unsealable_events(kind_prefix: str):
    """A stand-in for ``policy_admin._event`` whose events of these kinds cannot be sealed
    (a float has no canonical JSON form), so the write that carries them fails inside."""
    original = policy_admin._event

    def event(kind, subject, actor, data):
        if kind.startswith(kind_prefix):
            data = {**data, "ratio": 0.5}
        return original(kind, subject, actor, data)

    return event


# --- bundles --------------------------------------------------------------------------------


async def test_an_invalid_bundle_is_refused_with_the_line_and_nothing_is_written(store):
    admin = await started(store)
    before = await policy_events(store)
    broken = "rules:\n  - id: oops\n    match: {topics: [job.x]}\n    decision: allow-ish\n"
    with pytest.raises(PolicyLoadError) as caught:
        await admin.put_bundle("team/oops", broken, "alice")
    issue = caught.value.issues[0]
    assert issue.file == "team/oops"
    assert issue.line == 4
    assert issue.rule_id == "oops"
    assert await store.get_policy_bundle("team/oops") is None
    assert await policy_events(store) == before


async def test_a_bundle_that_conflicts_with_the_others_is_refused(store):
    admin = await started(store)
    with pytest.raises(PolicyLoadError) as caught:
        await admin.put_bundle("team/lax", "default_decision: allow\nrules: []\n", "alice")
    assert [issue.code for issue in caught.value.issues] == ["conflicting_default_decision"]
    assert await store.get_policy_bundle("team/lax") is None


@pytest.mark.parametrize("bad", ["", "../etc", "a//b", "a/./b", " base", "tab\there", "a\\b"])
async def test_unusable_bundle_ids_are_refused(store, bad):
    admin = await started(store)
    with pytest.raises(InvalidBundleIdError):
        await admin.put_bundle(bad, FRAGMENT, "alice")


async def test_put_creates_updates_and_recognises_an_unchanged_bundle(store):
    admin = await started(store)
    created = await admin.put_bundle("secops/prod", FRAGMENT, "alice")
    assert (created.created, created.changed) == (True, True)
    assert created.bundle.updated_by == "alice"
    same = await admin.put_bundle("secops/prod", FRAGMENT, "bob")
    assert (same.created, same.changed) == (False, False)
    assert same.bundle.updated_by == "alice"
    updated = await admin.put_bundle("secops/prod", FRAGMENT + "# reviewed\n", "bob")
    assert (updated.created, updated.changed) == (False, True)
    kinds = [kind for kind, subject in await policy_events(store) if subject == "secops/prod"]
    assert kinds == ["policy.bundle.put", "policy.bundle.put"]


async def test_delete_keeps_the_last_bundle_and_reports_unknown_ones(store):
    admin = await started(store)
    await admin.put_bundle("secops/prod", FRAGMENT, "alice")
    with pytest.raises(UnknownBundleError):
        await admin.delete_bundle("nope", "alice")
    await admin.delete_bundle("secops/prod", "alice")
    with pytest.raises(LastBundleError):
        await admin.delete_bundle("base", "alice")
    assert [b.bundle_id for b in await admin.list_bundles()] == ["base"]
    assert ("policy.bundle.deleted", "secops/prod") in await policy_events(store)


# --- publish --------------------------------------------------------------------------------


async def test_publish_makes_a_new_active_version_and_swaps_the_kernel(store):
    admin = await started(store)
    first = await decide(admin, "job.read.file")
    assert first[0] == "ALLOW"
    await admin.put_bundle("base", DENY_READS, "alice")
    assert await decide(admin, "job.read.file") == first  # drafts decide nothing

    outcome = await admin.publish("alice", "close reads")

    assert outcome.changed
    snapshot = outcome.snapshot
    assert (snapshot.version, snapshot.author, snapshot.message) == (2, "alice", "close reads")
    assert snapshot.snapshot_id == load_text(DENY_READS).snapshot_id
    assert snapshot.bundles == {"base": DENY_READS}
    assert (await store.active_policy_snapshot()) == snapshot
    assert await decide(admin, "job.read.file") == ("DENY", snapshot.snapshot_id)
    assert ("policy.publish", snapshot.snapshot_id) in await policy_events(store)


async def test_the_publish_event_names_the_version_it_made(store):
    admin = await started(store)
    v1 = admin.holder.policy.snapshot_id
    await admin.put_bundle("base", DENY_READS, "alice")
    v2 = (await admin.publish("alice", "close reads")).snapshot.snapshot_id
    filters = AuditFilter(tenant_id=SYSTEM_CHAIN, kind_prefix="policy.publish")
    publishes = await store.list_audit(filters)
    assert [(e.subject, e.data["version"]) for e in publishes] == [(v1, 1), (v2, 2)]
    assert publishes[1].data["from_version"] == 1


async def test_a_publish_that_changes_no_decision_makes_no_version(store):
    admin = await started(store)
    await admin.put_bundle("base", "# only a comment changed\n" + BASE, "alice")
    before = await policy_events(store)
    outcome = await admin.publish("alice", "cosmetic")
    assert not outcome.changed
    assert outcome.snapshot.version == 1
    assert [s.version for s in await admin.snapshots()] == [1]
    assert await policy_events(store) == before


async def test_the_publish_event_and_the_snapshot_commit_together_or_not_at_all(store, monkeypatch):
    admin = await started(store)
    old = admin.holder.policy.snapshot_id
    await admin.put_bundle("base", DENY_READS, "alice")
    events = await policy_events(store)
    original = policy_admin._event

    def unsealable(kind, subject, actor, data):
        # A float has no canonical JSON form: sealing the event fails inside the write.
        return original(kind, subject, actor, {**data, "ratio": 0.5})

    monkeypatch.setattr(policy_admin, "_event", unsealable)
    with pytest.raises(TypeError):
        await admin.publish("alice", "doomed")
    assert [s.version for s in await admin.snapshots()] == [1]
    assert (await store.active_policy_snapshot()).version == 1
    assert await policy_events(store) == events
    assert admin.holder.policy.snapshot_id == old  # the kernel never saw it


async def test_concurrent_publishes_leave_store_and_kernel_agreeing(store, monkeypatch):
    admin = await started(store)
    write = store.add_policy_snapshot
    calls = 0

    async def slow_first_answer(snapshot, audit=(), bundles=None):
        # The first publish is committed but answers late: without serialising, the
        # second would commit and swap meanwhile, and the first would then swap the
        # kernel back to a snapshot the store no longer calls active.
        nonlocal calls
        stored = await write(snapshot, audit, bundles)
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.2)
        return stored

    monkeypatch.setattr(store, "add_policy_snapshot", slow_first_answer)

    await admin.put_bundle("team/t0", FRAGMENT, "a")
    first = asyncio.create_task(admin.publish("a", "first"))
    while calls == 0:
        await asyncio.sleep(0.005)
    await admin.put_bundle("team/t1", FRAGMENT.replace("deny-prod", "other"), "a")
    await admin.publish("a", "second")
    await first

    active = await store.active_policy_snapshot()
    assert (active.version, active.message) == (3, "second")
    assert active.snapshot_id == admin.holder.policy.snapshot_id


# --- rollback -------------------------------------------------------------------------------


async def test_rollback_reactivates_swaps_back_resets_the_drafts_and_is_audited(store):
    admin = await started(store)
    v1 = (await store.active_policy_snapshot()).snapshot_id
    await admin.put_bundle("base", DENY_READS, "alice")
    await admin.put_bundle("secops/prod", FRAGMENT, "alice")
    await admin.publish("alice", "v2")

    outcome = await admin.rollback(v1, "bob", "reads are needed")

    assert outcome.changed
    assert (outcome.snapshot.version, outcome.snapshot.snapshot_id) == (1, v1)
    assert (await store.active_policy_snapshot()).version == 1
    assert admin.holder.policy.snapshot_id == v1
    assert {b.bundle_id: b.text for b in await admin.list_bundles()} == {"base": BASE}
    events = await store.list_audit(AuditFilter(tenant_id=SYSTEM_CHAIN, kind_prefix="policy."))
    rollback = next(e for e in events if e.kind == "policy.rollback")
    assert rollback.subject == v1
    assert rollback.actor == "bob"
    assert rollback.data["version"] == 1
    assert rollback.data["from_version"] == 2
    assert rollback.data["message"] == "reads are needed"
    resets = [e for e in events if e.seq > rollback.seq]
    assert {(e.kind, e.subject) for e in resets} == {
        ("policy.bundle.put", "base"),
        ("policy.bundle.deleted", "secops/prod"),
    }
    # A publish right after the rollback publishes what is active: nothing.
    assert not (await admin.publish("bob", "again")).changed


async def rolled_forward(store: SqliteStore) -> PolicyAdmin:
    """Started on BASE (v1), then v2 = DENY_READS plus a fragment, published."""
    admin = await started(store)
    await admin.put_bundle("base", DENY_READS, "alice")
    await admin.put_bundle("secops/prod", FRAGMENT, "alice")
    await admin.publish("alice", "v2")
    return admin


async def test_a_rollback_whose_draft_reset_fails_changes_nothing(store, monkeypatch):
    admin = await rolled_forward(store)
    v2 = admin.holder.policy.snapshot_id
    drafts = await store.list_policy_bundles()
    events = await policy_events(store)
    monkeypatch.setattr(policy_admin, "_event", unsealable_events("policy.bundle."))

    with pytest.raises(TypeError):
        await admin.rollback(1, "bob", "reads are needed")

    # Not half a rollback: still v2 in the store and the kernel, and the v2 drafts.
    assert (await store.active_policy_snapshot()).version == 2
    assert admin.holder.policy.snapshot_id == v2
    assert await store.list_policy_bundles() == drafts
    assert await policy_events(store) == events


async def test_a_crash_between_the_rollback_commit_and_the_swap_restarts_rolled_back(
    tmp_path, monkeypatch
):
    """The store commits the activation and the reset drafts together; the kernel swaps
    after. Dying in between (here: the swap fails) leaves the store ahead, and the next
    start decides with the rolled-back snapshot, whose bundles the drafts already hold:
    the next publish does not bring back what was rolled back."""
    store = SqliteStore(tmp_path / "cordum.db")
    admin = await rolled_forward(store)
    v1 = (await store.get_policy_snapshot(1)).snapshot_id

    def crash(policy):
        raise RuntimeError("the process died here")

    monkeypatch.setattr(admin.holder, "swap", crash)
    with pytest.raises(RuntimeError, match="died"):
        await admin.rollback(1, "bob")
    await store.close()

    store = SqliteStore(tmp_path / "cordum.db")
    try:
        holder = PolicyHolder(load_text(DENY_READS))
        again = PolicyAdmin(store, holder)
        await again.sync_at_startup(PolicySource({"base": DENY_READS}, "demo"))
        assert holder.policy.snapshot_id == v1
        assert {b.bundle_id: b.text for b in await again.list_bundles()} == {"base": BASE}
        assert not (await again.publish("carol", "after the restart")).changed
    finally:
        await store.close()


async def test_rollback_by_version_to_the_active_one_is_a_no_op(store):
    admin = await started(store)
    before = await policy_events(store)
    for ref in (1, "1", "v1"):
        outcome = await admin.rollback(ref, "bob")
        assert not outcome.changed
        assert outcome.snapshot.version == 1
    assert await policy_events(store) == before


@pytest.mark.parametrize("ref", [7, "7", "lc-1:" + "0" * 64, "nonsense"])
async def test_rollback_to_an_unknown_snapshot_is_refused(store, ref):
    admin = await started(store)
    with pytest.raises(UnknownSnapshotError):
        await admin.rollback(ref, "bob")


async def test_an_id_published_twice_names_its_newest_version(store):
    admin = await started(store)
    v1 = admin.holder.policy.snapshot_id
    await admin.put_bundle("base", DENY_READS, "a")
    await admin.publish("a", "v2")
    await admin.put_bundle("base", BASE, "a")
    await admin.publish("a", "v3 = v1 again")
    assert (await admin.find_snapshot(v1)).version == 3


# --- start-up -------------------------------------------------------------------------------


async def test_the_first_start_publishes_version_1_and_seeds_the_drafts(store):
    admin = await started(store, {"base": BASE, "secops/prod": FRAGMENT})
    (snapshot,) = await admin.snapshots()
    assert (snapshot.version, snapshot.author) == (1, "cordum up")
    assert snapshot.message == "initial policy from test"
    assert snapshot.bundles == {"base": BASE, "secops/prod": FRAGMENT}
    assert [b.bundle_id for b in await admin.list_bundles()] == ["base", "secops/prod"]
    kinds = [kind for kind, _ in await policy_events(store)]
    assert kinds == ["policy.bundle.put", "policy.bundle.put", "policy.publish"]


async def test_a_restart_keeps_the_active_snapshot_over_an_implicit_policy(tmp_path):
    store = SqliteStore(tmp_path / "cordum.db")
    admin = await started(store)
    await admin.put_bundle("base", DENY_READS, "alice")
    published = (await admin.publish("alice", "close reads")).snapshot
    await store.close()

    store = SqliteStore(tmp_path / "cordum.db")
    try:
        # Restarted with the default policy (e.g. the demo pack): the store wins.
        holder = PolicyHolder(load_text(BASE))
        again = PolicyAdmin(store, holder)
        outcome = await again.sync_at_startup(PolicySource({"base": BASE}, "demo"))
        assert not outcome.changed
        assert outcome.snapshot == published
        assert holder.policy.snapshot_id == published.snapshot_id
        assert [s.version for s in await again.snapshots()] == [2, 1]
    finally:
        await store.close()


async def test_a_restart_with_a_differing_explicit_policy_publishes_it(tmp_path):
    store = SqliteStore(tmp_path / "cordum.db")
    await started(store)
    await store.close()

    policy_file = tmp_path / "strict.yaml"
    policy_file.write_text(DENY_READS)
    store = SqliteStore(tmp_path / "cordum.db")
    try:
        holder = PolicyHolder(load(policy_file))
        admin = PolicyAdmin(store, holder)
        outcome = await admin.sync_at_startup(source_from_path(policy_file))
        assert outcome.changed
        assert outcome.snapshot.version == 2
        assert outcome.snapshot.message == f"loaded from {policy_file} at startup"
        assert outcome.snapshot.snapshot_id == holder.policy.snapshot_id
        # A single file is the base bundle, so fragments added later extend it.
        assert {b.bundle_id: b.text for b in await admin.list_bundles()} == {"base": DENY_READS}
        # The same file again: nothing new.
        assert not (await admin.sync_at_startup(source_from_path(policy_file))).changed
        assert len(await admin.snapshots()) == 2
    finally:
        await store.close()


async def test_a_stored_snapshot_that_no_longer_loads_stops_the_start(store, monkeypatch):
    await started(store)
    await store.close()
    store = SqliteStore(store.path)
    try:
        # As if a newer release validated more strictly than the one that published it.
        def refuse(*args, **kwargs):
            raise PolicyLoadError([])

        monkeypatch.setattr(policy_admin, "load_bundles", refuse)
        admin = PolicyAdmin(store, PolicyHolder(load_text(DENY_READS)))
        with pytest.raises(StartupPolicyError, match="start with --policy"):
            await admin.sync_at_startup(PolicySource({"base": DENY_READS}, "demo"))
    finally:
        await store.close()


async def test_a_start_up_publish_that_fails_leaves_the_drafts_untouched(tmp_path, monkeypatch):
    store = SqliteStore(tmp_path / "cordum.db")
    await started(store, {"base": BASE, "secops/prod": FRAGMENT})
    await store.close()

    policy_file = tmp_path / "strict.yaml"
    policy_file.write_text(DENY_READS)
    store = SqliteStore(tmp_path / "cordum.db")
    try:
        drafts = await store.list_policy_bundles()
        events = await policy_events(store)
        monkeypatch.setattr(policy_admin, "_event", unsealable_events("policy.publish"))
        admin = PolicyAdmin(store, PolicyHolder(load(policy_file)))
        with pytest.raises(TypeError):
            await admin.sync_at_startup(source_from_path(policy_file))
        # Neither half of the publish: no version, and the drafts are not the new policy's.
        assert [s.version for s in await admin.snapshots()] == [1]
        assert await store.list_policy_bundles() == drafts
        assert await policy_events(store) == events
    finally:
        await store.close()


def test_a_directory_source_has_one_bundle_per_file_and_the_same_snapshot(tmp_path):
    (tmp_path / "secops").mkdir()
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "secops" / "prod.yaml").write_text(FRAGMENT)
    (tmp_path / "secops" / "prod_test.yaml").write_text("cases: []\n")
    source = source_from_path(tmp_path)
    assert source.bundles == {"base": BASE, "secops/prod": FRAGMENT}
    assert source.explicit
    assert load_bundles(source.bundles).snapshot_id == load(tmp_path).snapshot_id


def test_a_policy_without_its_text_is_stored_as_its_canonical_form():
    policy = load_text(BASE + FRAGMENT.replace("rules:\n", ""))
    source = source_from_policy(policy, "embedded")
    assert load_bundles(source.bundles).snapshot_id == policy.snapshot_id
