"""Velocity rules: a sliding window per rule and key; simulate only looks."""

from __future__ import annotations

import pytest

from cordum.models import Decision
from cordum.policy.velocity import InMemoryVelocityStore
from tests.policy.helpers import FakeClock, decide, policy


def throttle(key: str = "tenant", max_requests: int = 2, window: float = 60) -> dict:
    return {
        "id": "rate",
        "match": {"topics": ["job.slack.*"]},
        "decision": "throttle",
        "reason": "slow down",
        "velocity": {"max_requests": max_requests, "window_seconds": window, "key": key},
    }


ALLOW = {"id": "ok", "decision": "allow"}


def test_the_rule_fires_only_above_max_requests():
    loaded = policy(throttle(), ALLOW)
    job = {"topic": "job.slack.post", "tenant_id": "acme"}
    assert [decide(loaded, **job) for _ in range(3)] == [
        ("ALLOW", "ok"),
        ("ALLOW", "ok"),
        ("THROTTLE", "rate"),
    ]


def test_the_window_slides():
    clock = FakeClock()
    loaded = policy(throttle(max_requests=1, window=10), ALLOW, clock=clock)
    job = {"topic": "job.slack.post", "tenant_id": "acme"}
    assert decide(loaded, **job)[0] == "ALLOW"
    clock.advance(5)
    assert decide(loaded, **job)[0] == "THROTTLE"
    clock.advance(5.5)  # the first arrival left the window; the throttled one has not
    assert decide(loaded, **job)[0] == "THROTTLE"
    clock.advance(10)
    assert decide(loaded, **job)[0] == "ALLOW"


def test_throttled_record_says_when_to_retry():
    clock = FakeClock()
    loaded = policy(throttle(max_requests=2, window=60), ALLOW, clock=clock)
    job = {"topic": "job.slack.post", "tenant_id": "acme"}
    loaded.evaluate(job)
    clock.advance(10)
    loaded.evaluate(job)
    clock.advance(5)
    record = loaded.evaluate(job)
    assert record.decision is Decision.THROTTLE
    assert record.retry_after_seconds == pytest.approx(55.0)  # when the 2nd arrival leaves
    clock.advance(55)
    assert loaded.evaluate(job).decision is Decision.ALLOW


def test_keys_count_separately():
    loaded = policy(throttle(key="tenant:topic", max_requests=1), ALLOW)
    assert decide(loaded, topic="job.slack.post", tenant_id="a")[0] == "ALLOW"
    assert decide(loaded, topic="job.slack.dm", tenant_id="a")[0] == "ALLOW"
    assert decide(loaded, topic="job.slack.post", tenant_id="b")[0] == "ALLOW"
    assert decide(loaded, topic="job.slack.post", tenant_id="a")[0] == "THROTTLE"


def test_label_keys_and_jobs_without_the_key_share_one_bucket():
    loaded = policy(throttle(key="labels.session", max_requests=1), ALLOW)
    assert decide(loaded, topic="job.slack.post", labels={"session": "s1"})[0] == "ALLOW"
    assert decide(loaded, topic="job.slack.post", labels={"session": "s2"})[0] == "ALLOW"
    assert decide(loaded, topic="job.slack.post")[0] == "ALLOW"
    # Leaving the key out is not a way around the limit.
    assert decide(loaded, topic="job.slack.post")[0] == "THROTTLE"


def test_only_jobs_matching_the_rule_are_counted():
    loaded = policy(throttle(max_requests=1), ALLOW)
    for _ in range(5):
        assert decide(loaded, topic="job.db.read", tenant_id="acme")[0] == "ALLOW"
    assert decide(loaded, topic="job.slack.post", tenant_id="acme")[0] == "ALLOW"


def test_simulate_and_explain_read_but_never_count():
    loaded = policy(throttle(max_requests=1), ALLOW)
    job = {"topic": "job.slack.post", "tenant_id": "acme"}
    for _ in range(10):
        assert loaded.simulate(job).decision is Decision.ALLOW
        assert loaded.explain(job).record.decision is Decision.ALLOW
    loaded.evaluate(job)
    assert loaded.simulate(job).decision is Decision.THROTTLE  # the next one would be throttled
    assert loaded.evaluate(job).decision is Decision.THROTTLE


def test_a_velocity_rule_can_deny_instead_of_throttle():
    rule = {**throttle(max_requests=1), "decision": "deny", "reason": "too many"}
    loaded = policy(rule, ALLOW)
    job = {"topic": "job.slack.post", "tenant_id": "acme"}
    assert [decide(loaded, **job)[0] for _ in range(2)] == ["ALLOW", "DENY"]


def test_policies_can_share_one_store_so_a_reload_keeps_the_counts():
    store = InMemoryVelocityStore(clock=FakeClock())
    first = policy(throttle(max_requests=1), ALLOW).with_velocity_store(store)
    second = policy(throttle(max_requests=1), ALLOW).with_velocity_store(store)
    job = {"topic": "job.slack.post", "tenant_id": "acme"}
    assert first.evaluate(job).decision is Decision.ALLOW
    assert second.evaluate(job).decision is Decision.THROTTLE


class TestInMemoryVelocityStore:
    def test_counts_cap_at_limit_plus_one(self):
        store = InMemoryVelocityStore(clock=FakeClock())
        counts = [store.hit("b", limit=2, window_seconds=60).count for _ in range(5)]
        assert counts == [1, 2, 3, 3, 3]

    def test_peek_is_what_hit_would_say(self):
        store = InMemoryVelocityStore(clock=FakeClock())
        store.hit("b", limit=1, window_seconds=60)
        peeked = store.peek("b", limit=1, window_seconds=60)
        assert peeked == store.hit("b", limit=1, window_seconds=60)
        assert peeked.exceeded

    def test_a_changed_limit_keeps_recent_arrivals(self):
        store = InMemoryVelocityStore(clock=FakeClock())
        for _ in range(3):
            store.hit("b", limit=5, window_seconds=60)
        assert store.hit("b", limit=2, window_seconds=60).exceeded

    def test_stale_buckets_are_swept(self):
        clock = FakeClock()
        store = InMemoryVelocityStore(clock=clock)
        for index in range(10_000):
            store.hit(f"b{index}", limit=1, window_seconds=1)
        clock.advance(5)
        for _ in range(10_000):
            store.hit("fresh", limit=1, window_seconds=1)
        assert set(store._buckets) == {"fresh"}
