"""The audit chain as the SQLite store writes it: atomic with each change, and every kind
of tampering done directly in the database found by ``verify`` with the right position."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cordum.models import Decision
from cordum.models.audit import AuditDraft, ChainHasher, TamperKind
from cordum.models.job import Job
from cordum.models.pipeline import DecisionEntry, Gate, JobRecord
from cordum.models.state import IllegalTransitionError, JobState
from cordum.ports import AuditFilter
from cordum.ports.sqlite_audit import AuditKeyMismatchError
from cordum.ports.sqlite_store import SqliteStore
from cordum.services.audit import CheckpointSigner
from cordum.services.audit_trail import (
    AuditTrail,
    ExportFormatError,
    load_signing_key,
    read_export,
    verify_export,
)

pytestmark = pytest.mark.anyio

SEED = bytes(range(32))
TENANT = "acme"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "cordum.db")
    yield opened
    await opened.close()


def trail_of(store: SqliteStore, hasher: ChainHasher | None = None) -> AuditTrail:
    return AuditTrail(store, hasher or ChainHasher(), CheckpointSigner(SEED))


async def fill(store: SqliteStore, count: int, tenant: str = TENANT) -> None:
    drafts = [
        AuditDraft(tenant_id=tenant, kind="test.event", subject=f"s{i}", data={"n": i})
        for i in range(count)
    ]
    await store.append_audit(drafts)


def raw(store: SqliteStore) -> sqlite3.Connection:
    """The database underneath, as an attacker with file access would use it."""
    return store._db


def job(job_id: str = "j1", tenant: str = TENANT) -> JobRecord:
    now = time.time()
    return JobRecord(
        id=job_id,
        trace_id="t",
        tenant_id=tenant,
        spec=Job(topic="job.test.run", tenant_id=tenant),
        state=JobState.PENDING,
        submitter="bot",
        created_at=now,
        updated_at=now,
    )


def decision(job_id: str = "j1", gate: Gate = Gate.SUBMIT) -> DecisionEntry:
    return DecisionEntry(
        job_id=job_id,
        gate=gate,
        decision=Decision.ALLOW,
        reason="allowed",
        rule_id="r1",
        policy_snapshot="v1:abc",
        at=time.time(),
    )


# --- written with the change, or not at all -------------------------------------------------


async def test_every_job_event_and_decision_is_sealed_into_the_tenants_chain(
    store: SqliteStore,
) -> None:
    await store.create_job(job(), decision())
    await store.transition(
        "j1", JobState.DISPATCHED, via=JobState.SCHEDULED, decision=decision(gate=Gate.DISPATCH)
    )
    events = await store.list_audit(AuditFilter(tenant_id=TENANT))
    assert [(e.seq, e.kind) for e in events] == [
        (1, "job.transition"),
        (2, "decision"),
        (3, "job.transition"),
        (4, "job.transition"),
        (5, "decision"),
    ]
    assert events[0].data == {
        "from": None,
        "to": "PENDING",
        "reason": "",
        "topic": "job.test.run",
    }
    assert events[0].actor == "bot"
    assert events[1].data["policy_snapshot"] == "v1:abc"
    assert {e.subject for e in events} == {"j1"}
    report = await trail_of(store).verify(TENANT)
    assert report.ok, report


async def test_a_refused_transition_leaves_no_audit_event(store: SqliteStore) -> None:
    await store.create_job(job(), decision())
    with pytest.raises(IllegalTransitionError):
        await store.transition("j1", JobState.SUCCEEDED)
    repeat = await store.transition("j1", JobState.PENDING)
    assert not repeat.changed
    assert len(await store.list_audit(AuditFilter(tenant_id=TENANT))) == 2


async def test_a_write_that_fails_midway_rolls_back_its_events_and_the_chain_goes_on(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.create_job(job(), decision())

    def broken(*args: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with monkeypatch.context() as patch:
        # Fails after the job row and its sealed event are written, before the decision.
        patch.setattr(store, "_insert_decision", broken)
        with pytest.raises(sqlite3.OperationalError):
            await store.create_job(job("lost"), decision("lost"))
    assert await store.get_job("lost") is None
    await store.create_job(job("j2"), decision("j2"))
    events = await store.list_audit(AuditFilter(tenant_id=TENANT))
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [e.subject for e in events] == ["j1", "j1", "j2", "j2"]
    assert (await trail_of(store).verify(TENANT)).ok


async def test_chains_are_per_tenant_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "cordum.db"
    first = SqliteStore(path)
    await fill(first, 3, "a")
    await fill(first, 2, "b")
    await first.close()
    second = SqliteStore(path)
    try:
        await fill(second, 2, "a")
        assert await second.audit_chains() == ["a", "b"]
        assert (await second.audit_head("a"))[0] == 5
        assert (await second.audit_head("b"))[0] == 2
        trail = trail_of(second)
        assert (await trail.verify("a")).ok
        assert (await trail.verify("b")).ok
    finally:
        await second.close()


# --- tampering in the database --------------------------------------------------------------


async def test_a_modified_body_is_found_at_its_position(store: SqliteStore) -> None:
    await fill(store, 10)
    raw(store).execute(
        "UPDATE audit_events SET body = replace(body, '\"n\":4', '\"n\":40') WHERE seq = 5"
    )
    report = await trail_of(store).verify(TENANT)
    assert (report.ok, report.kind, report.first_bad_seq) == (False, TamperKind.MODIFIED, 5)


async def test_a_modified_column_is_found_at_its_position(store: SqliteStore) -> None:
    await fill(store, 10)
    raw(store).execute("UPDATE audit_events SET subject = 'someone-else' WHERE seq = 7")
    report = await trail_of(store).verify(TENANT)
    assert (report.kind, report.first_bad_seq) == (TamperKind.MODIFIED, 7)


async def test_a_resealed_event_is_found_when_the_chain_is_keyed(tmp_path: Path) -> None:
    hasher = ChainHasher(b"k" * 32)
    store = SqliteStore(tmp_path / "cordum.db", hasher=hasher)
    try:
        await fill(store, 10)
        (body, prev) = (
            raw(store).execute("SELECT body, prev_hash FROM audit_events WHERE seq = 5").fetchone()
        )
        forged_body = body.replace('"n":4', '"n":40')
        forged_hash = ChainHasher().digest(prev, forged_body)  # the attacker lacks the key
        raw(store).execute(
            "UPDATE audit_events SET body=?, event_hash=? WHERE seq = 5", (forged_body, forged_hash)
        )
        report = await trail_of(store, hasher).verify(TENANT)
        assert (report.kind, report.first_bad_seq) == (TamperKind.MODIFIED, 5)
    finally:
        await store.close()


async def test_a_deleted_event_is_missing_at_its_position(store: SqliteStore) -> None:
    await fill(store, 10)
    raw(store).execute("DELETE FROM audit_events WHERE seq = 4")
    report = await trail_of(store).verify(TENANT)
    assert (report.kind, report.first_bad_seq) == (TamperKind.MISSING, 4)
    assert report.last_seq == 3


async def test_swapped_events_are_reordered_at_the_first_position(store: SqliteStore) -> None:
    await fill(store, 10)
    db = raw(store)
    db.execute("UPDATE audit_events SET seq = -1 WHERE seq = 6")
    db.execute("UPDATE audit_events SET seq = 6 WHERE seq = 7")
    db.execute("UPDATE audit_events SET seq = 7 WHERE seq = -1")
    report = await trail_of(store).verify(TENANT)
    assert (report.kind, report.first_bad_seq) == (TamperKind.REORDERED, 6)


async def test_cutting_off_the_newest_events_is_truncation_after_a_checkpoint(
    store: SqliteStore,
) -> None:
    await fill(store, 10)
    trail = trail_of(store)
    (checkpoint,) = await trail.checkpoint()
    assert checkpoint.seq == 10
    raw(store).execute("DELETE FROM audit_events WHERE seq > 7")
    store._audit.forget()
    report = await trail.verify(TENANT)
    assert (report.kind, report.first_bad_seq) == (TamperKind.TRUNCATED, 8)
    assert report.checkpoints == 1


async def test_a_forged_checkpoint_is_refused(store: SqliteStore) -> None:
    await fill(store, 5)
    trail = trail_of(store)
    await trail.checkpoint()
    (data,) = raw(store).execute("SELECT data FROM audit_checkpoints").fetchone()
    forged = json.loads(data)
    forged["signature"] = "00" * 64
    raw(store).execute("UPDATE audit_checkpoints SET data = ?", (json.dumps(forged),))
    report = await trail.verify(TENANT)
    assert (report.ok, report.kind) == (False, TamperKind.MODIFIED)


async def test_checkpoints_are_signed_only_for_chains_that_moved(store: SqliteStore) -> None:
    trail = trail_of(store)
    assert await trail.checkpoint() == []
    await fill(store, 3, "a")
    await fill(store, 2, "b")
    assert sorted(c.tenant_id for c in await trail.checkpoint()) == ["a", "b"]
    assert await trail.checkpoint() == []
    await fill(store, 1, "b")
    assert [(c.tenant_id, c.seq) for c in await trail.checkpoint()] == [("b", 3)]


# --- export and offline verification --------------------------------------------------------


async def exported(trail: AuditTrail, tenant: str = TENANT) -> list[str]:
    return [line async for line in trail.export(tenant)]


async def test_an_export_verifies_offline_and_a_changed_line_does_not(store: SqliteStore) -> None:
    await fill(store, 20)
    trail = trail_of(store)
    await trail.checkpoint()
    lines = await exported(trail)
    assert len(lines) == 1 + 20 + 1
    chain = read_export(lines)
    pinned = {trail.signer.key_id: trail.signer.public_key} if trail.signer else {}
    assert verify_export(chain, trusted_keys=pinned).ok

    event = json.loads(lines[9])
    event["data"] = {"n": 999}
    lines[9] = json.dumps(event)
    report = verify_export(read_export(lines))
    assert (report.ok, report.kind, report.first_bad_seq) == (False, TamperKind.MODIFIED, 9)

    other = CheckpointSigner(bytes(32))
    untrusted = verify_export(chain, trusted_keys={other.key_id: other.public_key})
    assert not untrusted.ok


async def test_an_hmac_chain_needs_its_key_offline(tmp_path: Path) -> None:
    hasher = ChainHasher(b"secret-key")
    store = SqliteStore(tmp_path / "cordum.db", hasher=hasher)
    try:
        await fill(store, 5)
        chain = read_export(await exported(trail_of(store, hasher)))
        assert chain.algorithm == "hmac-sha256"
        with pytest.raises(ValueError, match="HMAC key"):
            verify_export(chain)
        assert verify_export(chain, hmac_key=b"secret-key").ok
        assert not verify_export(chain, hmac_key=b"wrong").ok
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "empty"),
        (["not json"], ":1: not JSON"),
        (['{"type": "event"}'], "first line must be the chain line"),
        (['{"type": "chain", "format": "other/9"}'], "is not 'cordum-audit/1'"),
        (['{"type": "chain", "format": "cordum-audit/1"}', '{"type": "event", "seq": 0}'], ":2:"),
    ],
)
def test_a_broken_export_file_names_the_line(lines: list[str], message: str) -> None:
    with pytest.raises(ExportFormatError, match=message):
        read_export(lines)


def test_the_signing_key_is_created_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit-signing.key"
    first = load_signing_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_signing_key(path).key_id == first.key_id
    path.write_text("not hex")
    with pytest.raises(ValueError, match="64 hex characters"):
        load_signing_key(path)


async def test_an_export_resealed_without_the_hmac_key_fails_with_the_key(tmp_path: Path) -> None:
    hasher = ChainHasher(b"the-real-key")
    store = SqliteStore(tmp_path / "cordum.db", hasher=hasher)
    try:
        await fill(store, 5)
        lines = await exported(trail_of(store, hasher))
    finally:
        await store.close()
    header = json.loads(lines[0])
    header["algorithm"] = "sha256"  # the forger claims a plain chain and re-seals it
    forged = [json.dumps(header)]
    prev = "0" * 64
    for line in lines[1:6]:
        event = json.loads(line)
        body = event["body"].replace('"n":2', '"n":20')
        event.update(body=body, prev_hash=prev, event_hash=ChainHasher().digest(prev, body))
        event["data"] = json.loads(body)["data"]
        event["body"] = body
        prev = event["event_hash"]
        forged.append(json.dumps(event))
    chain = read_export(forged)
    assert verify_export(chain).ok is False  # and without any checkpoint: truncated
    report = verify_export(chain, hmac_key=b"the-real-key")
    assert (report.ok, report.kind, report.first_bad_seq) == (False, TamperKind.MODIFIED, 1)


async def test_an_export_cut_short_is_truncated(store: SqliteStore) -> None:
    await fill(store, 10)
    trail = trail_of(store)
    lines = await exported(trail)
    assert verify_export(read_export(lines)).ok
    cut = lines[:-4]  # the checkpoint and the last three events
    report = verify_export(read_export(cut))
    assert (report.ok, report.kind, report.first_bad_seq) == (False, TamperKind.TRUNCATED, 8)


async def test_an_event_moved_in_from_another_chain_is_found(store: SqliteStore) -> None:
    await fill(store, 3, "other")
    await fill(store, 3)
    trail = trail_of(store)
    mine = await exported(trail)
    theirs = await exported(trail, "other")
    mixed = [mine[0], theirs[1], *mine[2:]]
    report = verify_export(read_export(mixed))
    assert (report.ok, report.first_bad_seq) == (False, 1)


async def test_events_written_during_an_export_wait_for_the_next_one(store: SqliteStore) -> None:
    await fill(store, 3)
    trail = trail_of(store)
    lines = []
    async for line in trail.export(TENANT):
        lines.append(line)
        if len(lines) == 2:
            await fill(store, 2)  # arrives while the export is being streamed
    chain = read_export(lines)
    assert [e.seq for e in chain.events] == [1, 2, 3]
    assert verify_export(chain).ok


async def test_a_store_refuses_to_continue_its_chains_with_another_key(tmp_path: Path) -> None:
    path = tmp_path / "cordum.db"
    store = SqliteStore(path, hasher=ChainHasher(b"first-key"))
    await fill(store, 2)
    await store.close()
    for other in (ChainHasher(), ChainHasher(b"second-key")):
        with pytest.raises(AuditKeyMismatchError, match="CORDUM_AUDIT_HMAC_KEY"):
            SqliteStore(path, hasher=other)
    reopened = SqliteStore(path, hasher=ChainHasher(b"first-key"))
    try:
        await fill(reopened, 1)
        assert (await trail_of(reopened, ChainHasher(b"first-key")).verify(TENANT)).ok
    finally:
        await reopened.close()
