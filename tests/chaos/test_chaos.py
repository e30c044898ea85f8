"""Chaos in distributed mode: kill or restart one part of a running cluster under load.

The cluster (:mod:`tests.chaos.cluster`) is real processes on a Redis and a NATS server
of its own: a kernel service, two schedulers, two gateways and two SDK workers on NATS.
A steady load of agents (:mod:`tests.chaos.load`) submits about 50 jobs a second, each
with its own idempotency key, alternating between the gateways and retrying the same
request against the other gateway on a connection error or a 5xx. One job in ten asks
for a topic the policy denies.

Scenarios, one fault each, under load:

1. SIGKILL the scheduler replica holding the reconciler lease; the survivor takes the
   lease over and carries on.
2. SIGKILL a gateway replica, restart it later.
3. SIGKILL the kernel service (fail mode closed) just after a burst of slow jobs has
   filled every worker slot: while it is down, gate A answers 503 and the jobs waiting
   for gate B wait (nothing is decided or dispatched); restarted, everything completes.
4. Restart NATS (SIGKILL, then start on the same port and JetStream store).
5. Restart Redis (SIGKILL, then start on the same append-only file).

After each: the load stops, every key gets its answer, every job becomes terminal, and
on the store (:mod:`tests.chaos.invariants`):

- every answered idempotency key maps to exactly one job, the one its answer named;
- every job reached exactly one terminal state, by exactly one transition into it;
- no handler ran twice for one key (the workers log every run) and every succeeded job's
  handler ran exactly once;
- no job was dispatched without a gate-B ALLOW decision recorded before its DISPATCHED
  event, with a policy snapshot id (and nothing was let through by a fail-open bypass);
- every key answered 200 ended SUCCEEDED (none lost: no scenario kills a worker), every
  key answered 403 ended DENIED without being dispatched.

Everything runs under one temporary directory, deleted at the end; set
``CORDUM_CHAOS_KEEP=1`` to keep the logs and data of a run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.chaos.cluster import ChaosCluster, wait_ready
from tests.chaos.invariants import JobFacts, collect, open_count, violations
from tests.chaos.load import Load

RATE = 50.0
"""Jobs submitted per second."""
WARM_S = 2.0
"""Load before the fault: jobs are in every state when it strikes."""
SETTLE_S = 30.0
"""How long every key may take to be answered, and then every job to finish."""
GRACE_S = 1.0
"""A kernel answer received just before its SIGKILL may be recorded just after it."""
BURST = 80
"""Slow jobs submitted just before the kernel dies: more than the schedulers dispatch at
once (2 schedulers x 2 workers x 16 slots), so some wait for gate B during the outage."""


@dataclass
class Run:
    """What one scenario did and found."""

    name: str
    load: Load
    jobs: list[JobFacts]
    settled_s: float

    def counts(self) -> str:
        states: dict[str, int] = {}
        for facts in self.jobs:
            states[facts.job.state.value] = states.get(facts.job.state.value, 0) + 1
        retried = sum(1 for o in self.load.outcomes.values() if o.failures)
        redriven = sum(1 for facts in self.jobs if len(facts.dispatches()) > 1)
        return (
            f"[{self.name}] {len(self.load.outcomes)} keys, {retried} retried;"
            f" {self.load.summary()}; jobs {states}, {redriven} dispatched more than once;"
            f" settled in {self.settled_s:.1f}s"
        )


def under_load(cluster: ChaosCluster, name: str, fault: Callable[[Load], None]) -> Run:
    """Run ``fault`` under load, wait until all is settled, check every invariant."""
    root = f"job.chaos.{name}"
    topics = [f"{root}.run", f"{root}.forbidden"]
    load = Load(cluster.urls, root, rate=RATE)
    load.start()
    try:
        time.sleep(WARM_S)
        fault(load)
    finally:
        load.stop(drain_s=SETTLE_S)
    started = time.monotonic()
    while (remaining := cluster.store_call(lambda store: open_count(store, topics))) > 0:
        if time.monotonic() - started > SETTLE_S:
            break
        time.sleep(0.2)
    settled = time.monotonic() - started
    jobs = cluster.store_call(lambda store: collect(store, topics))
    found = violations(load.outcomes, jobs, cluster.invocation_lines())
    run = Run(name, load, jobs, settled)
    print(run.counts())
    problems = [p.text for p in found]
    if remaining:
        problems.insert(0, f"{remaining} jobs still open {SETTLE_S}s after the load stopped")
    assert not problems, report(cluster, run, problems)
    return run


def report(cluster: ChaosCluster, run: Run, problems: list[str]) -> str:
    """An assertion message: the counts, the first problems, the end of every log."""
    listed = "\n".join(f"- {p}" for p in problems[:15])
    more = f"\n... and {len(problems) - 15} more" if len(problems) > 15 else ""
    return f"{run.counts()}\n{len(problems)} problems:\n{listed}{more}\n{cluster.tails()}"


def test_scheduler_holding_the_reconciler_lease_is_killed(healed: ChaosCluster) -> None:
    cluster = healed
    holder = cluster.reconciler_holder
    token = cluster.lease_token()
    assert token is not None
    took_over: list[float] = []

    def fault(load: Load) -> None:
        cluster.schedulers[holder].kill()
        killed = time.monotonic()
        while cluster.lease_token() in (token, None) and time.monotonic() - killed < 15:
            time.sleep(0.1)
        took_over.append(time.monotonic() - killed)
        cluster.reconciler_holder = 1 - holder
        time.sleep(1.0)

    run = under_load(cluster, "scheduler", fault)
    assert cluster.lease_token() not in (token, None), report(cluster, run, ["lease not moved"])
    print(f"[scheduler] the survivor took the reconciler lease {took_over[0]:.1f}s after the kill")


def test_gateway_replica_is_killed(healed: ChaosCluster) -> None:
    cluster = healed
    victim = cluster.gateways[1]
    window: dict[str, float] = {}

    def fault(load: Load) -> None:
        victim.kill()
        window["down"] = time.time()
        time.sleep(2.0)
        window["back"] = time.time()
        victim.launch()
        wait_ready([victim])
        time.sleep(1.0)

    run = under_load(cluster, "gateway", fault)
    dead_url = cluster.urls[1]
    refused = [
        a
        for a in run.load.attempts
        if a.url.rstrip("/") == dead_url and window["down"] < a.at < window["back"]
    ]
    assert refused, run.counts()
    assert not any(a.answered for a in refused), run.counts()
    print(f"[gateway] {len(refused)} attempts failed on the dead gateway and were retried")


def test_kernel_is_killed_and_nothing_is_dispatched_while_it_is_down(
    healed: ChaosCluster,
) -> None:
    cluster = healed
    window: dict[str, float] = {}

    def fault(load: Load) -> None:
        # Slow jobs fill every worker slot, so jobs wait for gate B when the kernel dies.
        load.burst(BURST, work_s=1.0)
        cluster.kernel.kill()
        window["down"] = time.time()
        time.sleep(3.0)
        window["back"] = time.time()
        cluster.kernel.launch()
        wait_ready([cluster.kernel])
        time.sleep(2.0)

    run = under_load(cluster, "kernel", fault)
    start, end = window["down"] + GRACE_S, window["back"]
    problems = []
    for facts in run.jobs:
        inside = [e for e in facts.dispatches() if start < e.at < end]
        decided = [d for d in facts.decisions if start < d.at < end]
        if inside or decided:
            problems.append(f"decided or dispatched while the kernel was down: {facts.history()}")
    answered = [
        o
        for o in run.load.outcomes.values()
        if o.answered_at is not None and start < o.answered_at < end and not o.replayed
    ]
    problems += [f"{o.key} answered {o.status} while the kernel was down" for o in answered]
    refused = [a for a in run.load.attempts if start < a.at < end and a.result == "503"]
    if not refused:
        problems.append("no submission was refused with 503 while the kernel was down")
    held = [
        f
        for f in run.jobs
        if f.job.created_at < window["down"] and f.dispatches() and f.dispatches()[0].at > end
    ]
    if not held:
        problems.append("no accepted job waited for gate B during the outage: nothing was tested")
    assert not problems, report(cluster, run, problems)
    print(
        f"[kernel] {len(refused)} submissions refused with 503 during the outage;"
        f" {len(held)} jobs accepted before it were dispatched only after the restart"
    )


def test_nats_restarts(healed: ChaosCluster) -> None:
    cluster = healed

    def fault(load: Load) -> None:
        cluster.nats.restart()
        time.sleep(3.0)

    under_load(cluster, "nats", fault)


def test_redis_restarts(healed: ChaosCluster) -> None:
    cluster = healed

    def fault(load: Load) -> None:
        cluster.redis.restart()
        time.sleep(3.0)

    under_load(cluster, "redis", fault)
