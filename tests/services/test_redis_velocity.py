"""Velocity counters in Redis, shared by replicas (ports/redis_velocity).

Pinned:
- two stores (two replicas, two connections) count one window; ``peek`` records nothing;
- the verdict is the in-memory store's: count capped at limit + 1, ``retry_after`` when
  the second oldest kept arrival leaves the window; the window slides and keys expire;
- a hit is atomic: concurrent hits from two stores let exactly ``limit`` through;
- two policies on one Redis store throttle as one kernel would;
- Redis down: VelocityStoreError, and the gate's fail mode decides (closed: unavailable).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from tests import backing
from tests.policy.helpers import FakeClock

from cordum.models import Decision, Job
from cordum.policy import InMemoryVelocityStore, load_text
from cordum.ports.redis_velocity import RedisVelocityStore, VelocityStoreError
from cordum.services.breaker import CircuitBreaker
from cordum.services.kernel import LocalKernel, PolicyHolder
from cordum.services.metrics import Metrics
from cordum.services.safety import FailMode, SafetyClient, SafetyUnavailableError

POLICY = """\
version: "vel-1"
default_decision: deny
rules:
  - id: rate
    match: {topics: ["job.slack.*"]}
    decision: throttle
    reason: slow down
    velocity: {max_requests: 2, window_seconds: 60, key: tenant}
  - id: ok
    match: {topics: ["job.slack.*"]}
    decision: allow
    reason: fine
"""


@pytest.fixture
def url() -> str:
    return backing.redis().require()


@pytest.fixture
def prefix(url: str) -> Iterator[str]:
    with backing.redis_namespace(url, "vel") as name:
        yield name


def test_two_stores_count_one_window(url: str, prefix: str) -> None:
    a, b = RedisVelocityStore(url, prefix), RedisVelocityStore(url, prefix)
    assert a.hit("acme", 2, 60).exceeded is False
    assert b.peek("acme", 2, 60).count == 2  # what the next hit would count
    assert b.hit("acme", 2, 60).exceeded is False
    third = a.hit("acme", 2, 60)
    assert (third.count, third.exceeded) == (3, True)
    fourth = b.hit("acme", 2, 60)
    assert fourth.count == 3  # capped at limit + 1, as in memory
    assert a.hit("other", 2, 60).count == 1


def test_peek_records_nothing(url: str, prefix: str) -> None:
    store = RedisVelocityStore(url, prefix)
    for _ in range(5):
        assert store.peek("acme", 1, 60).exceeded is False
    assert store.hit("acme", 1, 60).exceeded is False
    peeked = store.peek("acme", 1, 60)
    assert (peeked.count, peeked.exceeded) == (2, True)
    assert store.hit("acme", 1, 60).exceeded is True


def test_retry_after_is_when_the_second_oldest_arrival_leaves(url: str, prefix: str) -> None:
    store = RedisVelocityStore(url, prefix)
    store.hit("acme", 2, 60)
    time.sleep(0.2)
    store.hit("acme", 2, 60)
    time.sleep(0.1)
    counted = store.hit("acme", 2, 60)
    assert counted.exceeded
    assert counted.retry_after_seconds == pytest.approx(59.9, abs=0.05)
    # A peek now would be the 4th arrival: of the newest three kept, the 3rd is second.
    peeked = store.peek("acme", 2, 60)
    assert peeked.retry_after_seconds == pytest.approx(60, abs=0.05)


def test_the_window_slides_and_keys_expire(url: str, prefix: str) -> None:
    store = RedisVelocityStore(url, prefix)
    assert store.hit("acme", 1, 0.3).exceeded is False
    assert store.hit("acme", 1, 0.3).exceeded is True
    ttl = store.redis.pttl(f"{prefix}:acme")
    assert 0 < ttl <= 301
    time.sleep(0.35)
    assert store.hit("acme", 1, 0.3).exceeded is False
    time.sleep(0.4)
    assert store.redis.exists(f"{prefix}:acme") == 0


def test_a_lower_limit_keeps_the_newest_arrivals(url: str, prefix: str) -> None:
    store = RedisVelocityStore(url, prefix)
    for _ in range(5):
        store.hit("acme", 10, 60)
    assert store.hit("acme", 2, 60).count == 3
    assert store.redis.zcard(f"{prefix}:acme") == 3


def test_concurrent_hits_from_two_stores_let_exactly_the_limit_through(
    url: str, prefix: str
) -> None:
    stores = [RedisVelocityStore(url, prefix), RedisVelocityStore(url, prefix)]

    def hits(n: int) -> list[bool]:
        store = stores[n % 2]
        return [store.hit("acme", 50, 60).exceeded for _ in range(25)]

    with ThreadPoolExecutor(8) as pool:
        results = [flag for batch in pool.map(hits, range(8)) for flag in batch]
    assert results.count(False) == 50
    assert len(results) == 200


def test_two_policies_on_one_store_throttle_as_one_kernel(url: str, prefix: str) -> None:
    replicas = [load_text(POLICY, velocity_store=RedisVelocityStore(url, prefix)) for _ in "ab"]
    reference = load_text(POLICY, velocity_store=InMemoryVelocityStore(clock=FakeClock()))
    job = {"topic": "job.slack.post", "tenant_id": "acme"}
    shared = [replicas[n % 2].evaluate(job).decision for n in range(4)]
    alone = [reference.evaluate(job).decision for _ in range(4)]
    assert shared == alone == [Decision.ALLOW, Decision.ALLOW, Decision.THROTTLE, Decision.THROTTLE]
    assert replicas[0].simulate(job).decision is Decision.THROTTLE
    assert replicas[1].recheck(job).decision is Decision.ALLOW


def test_redis_down_raises_and_the_fail_mode_decides() -> None:
    store = RedisVelocityStore(f"redis://127.0.0.1:{backing.free_port()}/0", "down", timeout=0.2)
    with pytest.raises(VelocityStoreError, match="velocity counters unavailable"):
        store.hit("acme", 2, 60)
    with pytest.raises(VelocityStoreError):
        store.peek("acme", 2, 60)
    kernel = LocalKernel(PolicyHolder(load_text(POLICY), velocity=store))
    client = SafetyClient(
        kernel,
        gate="gate_a",
        fail_mode=FailMode.CLOSED,
        timeout=2,
        breaker=CircuitBreaker(),
        metrics=Metrics(),
    )
    job = Job(topic="job.slack.post", tenant_id="acme")
    with pytest.raises(SafetyUnavailableError, match="velocity counters unavailable"):
        asyncio.run(client.check(job))
    # Rules without a velocity condition still decide without Redis.
    assert load_text(POLICY, velocity_store=store).evaluate({"topic": "job.x"}).rule_id is None
