"""The circuit breaker's state, in memory and shared by replicas in Redis.

Pinned:
- both backends follow the same rules (reference section 4): 3 consecutive failures
  open it, a success resets the count, it refuses while open, turns half-open after the
  open period, lets at most 3 probes through, 2 successes close it, a failure reopens it;
- two breakers on one Redis key are one breaker: failures add up across replicas, an
  open breaker refuses on every replica, the half-open probe budget is global, and a
  safety client on replica 2 stops calling a kernel replica 1 found dead;
- a half-open round whose probes never report starts over after the open period;
- a closed breaker leaves no key behind, an open one expires; Redis down: calls pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from tests import backing
from tests.policy.helpers import FakeClock

from cordum.models import DecisionRecord, Job
from cordum.ports.redis_breaker import RedisBreakerBackend
from cordum.services.breaker import BreakerState, CircuitBreaker, InMemoryBreakerBackend
from cordum.services.metrics import Metrics
from cordum.services.safety import FailMode, SafetyClient, SafetyUnavailableError

OPEN_S = 0.3


@dataclass
class Shared:
    """Breakers that share one state, and how to let the open period pass."""

    make: Callable[[], CircuitBreaker]
    wait_open_period: Callable[[], None]


@pytest.fixture
def url() -> str:
    return backing.redis().require()


@pytest.fixture
def prefix(url: str) -> Iterator[str]:
    with backing.redis_namespace(url, "breaker") as name:
        yield name


def in_memory() -> Shared:
    clock = FakeClock()
    backend = InMemoryBreakerBackend(clock)
    return Shared(
        lambda: CircuitBreaker(open_seconds=OPEN_S, backend=backend),
        lambda: clock.advance(OPEN_S + 0.01),
    )


def in_redis(url: str, prefix: str) -> Shared:
    def make() -> CircuitBreaker:
        return CircuitBreaker(
            open_seconds=OPEN_S, backend=RedisBreakerBackend(url, "kernel", prefix=prefix)
        )

    return Shared(make, lambda: time.sleep(OPEN_S + 0.05))


@pytest.fixture(params=["memory", "redis"])
def shared(request: pytest.FixtureRequest) -> Shared:
    if request.param == "memory":
        return in_memory()
    url = request.getfixturevalue("url")
    return in_redis(url, request.getfixturevalue("prefix"))


# --- the rules, on both backends ------------------------------------------------------------


def test_three_consecutive_failures_open_it(shared: Shared) -> None:
    breaker = shared.make()
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # the count is of consecutive failures
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_half_open_probes_and_closing(shared: Shared) -> None:
    breaker = shared.make()
    for _ in range(3):
        breaker.record_failure()
    shared.wait_open_period()
    assert breaker.state is BreakerState.HALF_OPEN
    assert [breaker.allow() for _ in range(4)] == [True, True, True, False]
    breaker.record_success()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


def test_a_failed_probe_reopens_it(shared: Shared) -> None:
    breaker = shared.make()
    for _ in range(3):
        breaker.record_failure()
    shared.wait_open_period()
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    shared.wait_open_period()
    assert breaker.allow()


# --- shared by replicas ---------------------------------------------------------------------


def test_failures_add_up_and_an_open_breaker_refuses_everywhere(url: str, prefix: str) -> None:
    shared = in_redis(url, prefix)
    one, two = shared.make(), shared.make()
    one.record_failure()
    two.record_failure()
    one.record_failure()
    assert two.state is BreakerState.OPEN
    assert not two.allow()
    assert not one.allow()


def test_the_probe_budget_is_global(url: str, prefix: str) -> None:
    shared = in_redis(url, prefix)
    one, two = shared.make(), shared.make()
    for _ in range(3):
        one.record_failure()
    shared.wait_open_period()
    assert [one.allow(), two.allow(), one.allow(), two.allow(), one.allow()] == [
        True,
        True,
        True,
        False,
        False,
    ]
    one.record_success()
    two.record_success()
    assert one.state is BreakerState.CLOSED
    assert two.allow()


def test_a_round_whose_probes_never_report_starts_over(url: str, prefix: str) -> None:
    shared = in_redis(url, prefix)
    breaker = shared.make()
    for _ in range(3):
        breaker.record_failure()
    shared.wait_open_period()
    assert [breaker.allow() for _ in range(4)] == [True, True, True, False]
    shared.wait_open_period()  # the replica that took them died: no outcome ever comes
    assert breaker.allow()


def test_keys_are_left_only_while_they_matter(url: str, prefix: str) -> None:
    breaker = in_redis(url, prefix).make()
    key = f"{prefix}:kernel"
    client = redis.Redis.from_url(url)
    breaker.allow()
    assert client.exists(key) == 0
    breaker.record_failure()
    assert client.hget(key, "failures") == b"1"
    assert client.pttl(key) > 0
    breaker.record_success()
    assert client.exists(key) == 0
    client.close()


def test_redis_down_lets_calls_pass(caplog: pytest.LogCaptureFixture) -> None:
    backend = RedisBreakerBackend(
        f"redis://127.0.0.1:{backing.free_port()}/0", "kernel", timeout=0.2
    )
    breaker = CircuitBreaker(backend=backend)
    with caplog.at_level(logging.WARNING, logger="cordum.ports.redis_breaker"):
        for _ in range(5):
            breaker.record_failure()
            assert breaker.allow()
        assert breaker.state is BreakerState.CLOSED
    assert len(caplog.records) == 1  # logged once, not once per call


class DeadKernel:
    """A remote kernel that is down: every call fails, and is counted."""

    remote = True

    def __init__(self) -> None:
        self.calls = 0

    async def evaluate(self, job: Job) -> DecisionRecord:
        self.calls += 1
        raise ConnectionError("kernel unreachable")

    recheck = evaluate

    async def simulate(self, job: Any) -> DecisionRecord:
        raise NotImplementedError

    async def explain(self, job: Any) -> Any:
        raise NotImplementedError

    async def evaluate_output(self, job: Job, output: Any, *, failed: bool) -> Any:
        raise NotImplementedError

    def snapshot_id(self) -> str:
        return ""


def test_replica_two_stops_calling_a_kernel_replica_one_found_dead(url: str, prefix: str) -> None:
    shared = in_redis(url, prefix)
    kernels = [DeadKernel(), DeadKernel()]
    clients = [
        SafetyClient(
            kernel,
            gate="gate_a",
            fail_mode=FailMode.CLOSED,
            timeout=1,
            breaker=shared.make(),
            metrics=Metrics(),
        )
        for kernel in kernels
    ]
    job = Job(topic="job.a")

    async def run() -> None:
        for _ in range(3):
            with pytest.raises(SafetyUnavailableError, match="unreachable"):
                await clients[0].check(job)
        with pytest.raises(SafetyUnavailableError, match="circuit breaker is open"):
            await clients[1].check(job)

    asyncio.run(run())
    assert [kernel.calls for kernel in kernels] == [3, 0]


def test_a_trusted_closed_answer_saves_round_trips_and_expires(url: str, prefix: str) -> None:
    """A replica that saw "closed" lets calls through without asking Redis for
    ``trust_closed_s``; another replica's opening reaches it once that has passed, and a
    failure of its own is shared at once and ends the trust."""
    clock = FakeClock()
    calls = 0

    def replica(name: str) -> tuple[CircuitBreaker, RedisBreakerBackend]:
        backend = RedisBreakerBackend(url, name, prefix=prefix, trust_closed_s=1.0, clock=clock)
        return CircuitBreaker(failure_threshold=1, open_seconds=60, backend=backend), backend

    watcher, backend = replica("kernel")
    opener, _ = replica("kernel")
    original = backend._script

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    backend._script = counted  # type: ignore[method-assign]
    assert watcher.allow()
    watcher.record_success()
    assert calls == 1  # one allow; the success of a trusted closed breaker is not sent
    for _ in range(10):
        assert watcher.allow()
        watcher.record_success()
    assert calls == 1
    opener.record_failure()  # replica 2 opens the shared breaker
    assert watcher.allow()  # still trusted here...
    clock.advance(1.1)
    assert not watcher.allow()  # ...until the trust runs out
    watcher.record_failure()
    assert calls == 3
    assert not watcher.allow()
