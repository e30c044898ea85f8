"""A SQLite store file written by an earlier version opens under the current schema.

Pinned here: the decisions table of a store from before the decision tally gets its tally
columns, filled from each row's data and its job, so :meth:`SqliteStore.decision_counts`
counts the decisions recorded before the upgrade as it counts those recorded after.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from cordum.models import Decision
from cordum.models.pipeline import Gate
from cordum.models.state import JobState
from cordum.ports.sqlite_store import SqliteStore
from cordum.ports.store import DecisionCount, decision_minute
from tests.ports.factories import make_decision, make_job

pytestmark = pytest.mark.anyio

PREVIOUS_DECISIONS = """
CREATE TABLE decisions_previous (
    seq INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    data TEXT NOT NULL
);
INSERT INTO decisions_previous (seq, job_id, data) SELECT seq, job_id, data FROM decisions;
DROP TABLE decisions;
ALTER TABLE decisions_previous RENAME TO decisions;
CREATE INDEX decisions_job ON decisions (job_id, seq);
"""
"""Turns the decisions table into the one the store had before the tally (rows kept)."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_decisions_of_a_store_from_before_the_tally_are_counted(tmp_path: Path):
    path = tmp_path / "cordum.db"
    minute = decision_minute(time.time()) - 300
    store = SqliteStore(path)
    acme = make_job(tenant_id="acme")
    await store.create_job(acme, make_decision(acme, at=minute + 1))
    await store.transition(
        acme.id,
        JobState.SCHEDULED,
        decision=make_decision(acme, gate=Gate.DISPATCH, decision=Decision.THROTTLE, at=minute + 2),
    )
    globex = make_job(tenant_id="globex", state=JobState.DENIED)
    await store.create_job(
        globex, make_decision(globex, decision=Decision.DENY, at=minute + 3, safety_bypassed=True)
    )
    recorded = await store.job_decisions(acme.id)
    await store.close()
    with sqlite3.connect(path) as db:
        db.executescript(PREVIOUS_DECISIONS)

    store = SqliteStore(path)
    try:
        assert await store.decision_counts(minute) == [
            DecisionCount(minute, Decision.ALLOW, False, 1),
            DecisionCount(minute, Decision.DENY, True, 1),
            DecisionCount(minute, Decision.THROTTLE, False, 1),
        ]
        assert await store.decision_counts(minute, tenant_ids=frozenset({"acme"})) == [
            DecisionCount(minute, Decision.ALLOW, False, 1),
            DecisionCount(minute, Decision.THROTTLE, False, 1),
        ]
        later = make_job(tenant_id="acme")
        await store.create_job(later, make_decision(later, at=minute + 4))
        assert await store.decision_counts(minute, tenant_ids=frozenset({"acme"})) == [
            DecisionCount(minute, Decision.ALLOW, False, 2),
            DecisionCount(minute, Decision.THROTTLE, False, 1),
        ]
        assert await store.job_decisions(acme.id) == recorded
    finally:
        await store.close()
