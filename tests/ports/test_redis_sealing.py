"""Replicas of the Redis store sealing the same audit chains.

One process seals a namespace at a time (the sealer lock); the others wait rather than
hash events another process is sealing. Pinned here, on a real Redis: replicas writing
one chain at once leave it gapless, every event sealed once; a seal waits for a lock
another process holds and goes on once it is released; a lock left by a sealer that
died delays sealing by its expiry, nothing more; a lock that expired under a stalled
sealer never lets two sealers write the same events.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from cordum.models.audit import AuditDraft, ChainHasher, canonical
from cordum.ports import redis_audit
from cordum.ports.redis_store import RedisStore
from cordum.ports.store import AuditFilter
from cordum.services.audit import verify_chain
from tests import backing

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def replicas() -> AsyncIterator[list[RedisStore]]:
    """Three stores on one Redis key namespace, as three replicas would open it."""
    url = backing.redis().require()
    prefix = backing.unique_prefix("sealing") + ":"
    stores = [RedisStore(url, prefix=prefix) for _ in range(3)]
    try:
        yield stores
    finally:
        try:
            await stores[0].flush_namespace()
        finally:
            for store in stores:
                await store.close()


def note(n: int) -> AuditDraft:
    return AuditDraft(tenant_id="acme", kind="test.note", data={"n": n})


async def sealed_notes(store: RedisStore) -> list[int]:
    """The ``n`` of every note in the chain, which must verify; in chain order."""
    rows = await store.audit_rows("acme")
    report = verify_chain("acme", rows, ChainHasher())
    assert report.ok, report
    events = await store.list_audit(AuditFilter(tenant_id="acme"), limit=100_000)
    return [event.data["n"] for event in events]


async def test_replicas_sealing_one_chain_seal_every_event_once(
    replicas: list[RedisStore],
) -> None:
    batches = [[note(100 * b + i) for i in range(20)] for b in range(30)]
    await asyncio.gather(*(replicas[n % 3].append_audit(batch) for n, batch in enumerate(batches)))
    notes = await sealed_notes(replicas[0])
    assert sorted(notes) == sorted(d.data["n"] for batch in batches for d in batch)
    assert len(notes) == len(set(notes)) == 600


async def test_a_seal_waits_for_the_lock_another_process_holds(
    replicas: list[RedisStore],
) -> None:
    store = replicas[0]
    redis = await store._ready()
    await redis.set(store._keys.audit_sealer, "another process", px=60_000)
    sealing = asyncio.create_task(store.append_audit([note(1)]))
    await asyncio.sleep(0.2)
    assert not sealing.done(), "sealed while another process held the lock"
    await redis.delete(store._keys.audit_sealer)
    (event,) = await asyncio.wait_for(sealing, 5)
    assert (event.seq, event.data) == (1, {"n": 1})
    assert await redis.get(store._keys.audit_sealer) is None, "the lock is released"


async def test_a_lock_left_by_a_dead_sealer_only_delays_sealing(
    replicas: list[RedisStore],
) -> None:
    store = replicas[0]
    redis = await store._ready()
    await redis.set(store._keys.audit_sealer, "a sealer that died", px=300)
    started = time.monotonic()
    await store.append_audit([note(1), note(2)])
    assert 0.2 < time.monotonic() - started < 5
    assert await sealed_notes(store) == [1, 2]


async def test_a_seal_gives_up_on_a_lock_never_released_and_loses_nothing(
    replicas: list[RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_audit, "SEAL_PATIENCE_S", 0.3)
    first, second = replicas[0], replicas[1]
    redis = await first._ready()
    await first.append_audit([note(1)])
    await redis.set(first._keys.audit_sealer, "a stuck sealer", px=60_000)
    with pytest.raises(redis_audit.AuditSealingError, match="without sealing"):
        await second.append_audit([note(2)])
    await redis.delete(first._keys.audit_sealer)
    await second.append_audit([note(3)])
    assert await sealed_notes(first) == [1, 3]


async def test_a_seal_waits_as_long_as_the_lock_holder_makes_progress(
    replicas: list[RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_audit, "SEAL_PATIENCE_S", 0.3)
    store, holder = replicas[0], replicas[1]
    redis = await holder._ready()
    lock = holder._keys.audit_sealer
    await redis.set(lock, "a sealer with a backlog", px=60_000)
    waiting = asyncio.create_task(store.append_audit([note(1)]))
    for n in range(8):  # 0.8 s of sealing by the holder, well past the patience
        await asyncio.sleep(0.1)
        await redis.set(holder._keys.audit_head("acme"), f"{n} moved-on")
        assert not waiting.done()
    await redis.delete(lock, holder._keys.audit_head("acme"))
    (event,) = await asyncio.wait_for(waiting, 5)
    assert event.data == {"n": 1}


async def test_a_sealer_whose_lock_expired_writes_nothing_twice(
    replicas: list[RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sealer stalls between its read and its seal, long enough for its lock to expire,
    while another one seals the same pending events: the stalled seal is refused (the
    head moved) and it reads again, so each event is in the chain once."""
    stalled_store, other = replicas[0], replicas[1]
    await stalled_store.append_audit([note(1)])
    redis = await stalled_store._ready()
    entries = [json.dumps(["test.note", 1, None, None, canonical({"n": n})]) for n in (2, 3)]
    await redis.rpush(stalled_store._keys.audit_pending("acme"), *entries)
    chains = stalled_store._chains
    seal = chains._seal
    stalled, resume = asyncio.Event(), asyncio.Event()

    async def seal_after_a_stall(redis: Redis, plan: list[list[Any]], token: str) -> bool:
        if plan:
            stalled.set()
            await resume.wait()
        return await seal(redis, plan, token)

    monkeypatch.setattr(chains, "_seal", seal_after_a_stall)
    sealing = asyncio.create_task(chains.seal_pending(redis, ["acme"]))
    await asyncio.wait_for(stalled.wait(), 5)
    await redis.delete(stalled_store._keys.audit_sealer)  # as if it had expired
    await other.append_audit([note(4)])
    resume.set()
    await asyncio.wait_for(sealing, 5)
    assert await sealed_notes(other) == [1, 2, 3, 4]
