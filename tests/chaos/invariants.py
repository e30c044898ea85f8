"""The invariants every chaos scenario must keep, checked on the store afterwards.

:func:`collect` reads every job of a scenario (by topic) with its events, decisions and
idempotency binding; :func:`violations` lists every broken invariant in words, with the
job's history, so a failure says what happened rather than only that something did.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from cordum.models import Decision
from cordum.models.pipeline import (
    DecisionEntry,
    Gate,
    IdempotencyEntry,
    JobEvent,
    JobRecord,
)
from cordum.models.state import JobState
from cordum.ports import JobFilter
from cordum.ports.redis_store import RedisStore
from cordum.services.safety import UNAVAILABLE_SNAPSHOT
from tests.chaos.load import Outcome

ALLOWING = frozenset({Decision.ALLOW, Decision.ALLOW_WITH_CONSTRAINTS})


@dataclass(frozen=True)
class JobFacts:
    """A job as the store has it, with its history."""

    job: JobRecord
    events: list[JobEvent]
    decisions: list[DecisionEntry]
    binding: IdempotencyEntry | None

    @property
    def key(self) -> str:
        return self.job.idempotency_key or ""

    def dispatches(self) -> list[JobEvent]:
        """The job's DISPATCHED events, oldest first."""
        return [e for e in self.events if e.to_state is JobState.DISPATCHED]

    def gate_b_allows(self) -> list[DecisionEntry]:
        """Gate B decisions that allowed the job, oldest first."""
        return [d for d in self.decisions if d.gate is Gate.DISPATCH and d.decision in ALLOWING]

    def history(self) -> str:
        """Events and decisions, for messages."""
        steps = [
            f"{e.at:.3f} {e.from_state and e.from_state.value}->{e.to_state.value} ({e.reason})"
            for e in self.events
        ]
        steps += [
            f"{d.at:.3f} gate {d.gate.value}: {d.decision.value} @{d.policy_snapshot}"
            for d in self.decisions
        ]
        error = f" error={self.job.error.code}: {self.job.error.message}" if self.job.error else ""
        return f"job {self.job.id} key {self.key} {self.job.state.value}{error}: " + "; ".join(
            sorted(steps)
        )


async def collect(store: RedisStore, topics: Iterable[str]) -> list[JobFacts]:
    """Every job of ``topics`` with its events, decisions and idempotency binding."""
    jobs: list[JobRecord] = []
    for topic in topics:
        cursor: str | None = None
        while True:
            page = await store.list_jobs(JobFilter(topic=topic), cursor=cursor, limit=500)
            jobs.extend(page.jobs)
            cursor = page.next_cursor
            if cursor is None:
                break

    async def facts(job: JobRecord) -> JobFacts:
        events, decisions = await asyncio.gather(
            store.job_events(job.id), store.job_decisions(job.id)
        )
        binding = None
        if job.idempotency_key:
            binding = await store.get_idempotency(job.tenant_id, job.idempotency_key)
        return JobFacts(job, events, decisions, binding)

    found: list[JobFacts] = []
    for start in range(0, len(jobs), 100):
        found += await asyncio.gather(*(facts(job) for job in jobs[start : start + 100]))
    return found


async def open_count(store: RedisStore, topics: Iterable[str]) -> int:
    """How many jobs of ``topics`` are not terminal yet."""
    open_states = frozenset(s for s in JobState if not s.terminal)
    count = 0
    for topic in topics:
        cursor: str | None = None
        while True:
            page = await store.list_jobs(
                JobFilter(topic=topic, states=open_states), cursor=cursor, limit=500
            )
            count += len(page.jobs)
            cursor = page.next_cursor
            if cursor is None:
                break
    return count


@dataclass(frozen=True)
class Problem:
    """One broken invariant, in words."""

    text: str


def violations(
    outcomes: dict[str, Outcome], jobs: list[JobFacts], runs: list[tuple[str, str]]
) -> list[Problem]:
    """Every broken invariant (empty when all hold).

    ``runs`` are the handler runs the workers logged: ``(idempotency key, job id)``.
    """
    problems: list[Problem] = []
    by_key: dict[str, list[JobFacts]] = defaultdict(list)
    for facts in jobs:
        by_key[facts.key].append(facts)
    ran = Counter(key for key, _ in runs)
    ran_jobs = Counter(job_id for _, job_id in runs)

    # Idempotency: one job per key, the one the answer named.
    for key, outcome in outcomes.items():
        stored = by_key.get(key, [])
        if outcome.status is None:
            problems.append(Problem(f"{key}: never answered ({dict(outcome.failures)})"))
            continue
        if len(stored) != 1:
            ids = [f.job.id for f in stored]
            problems.append(Problem(f"{key}: answered {outcome.status}, {len(stored)} jobs {ids}"))
            continue
        [facts] = stored
        if outcome.job_id != facts.job.id:
            problems.append(Problem(f"{key}: answered job {outcome.job_id}, has {facts.job.id}"))
        if facts.binding is None or facts.binding.job_id != facts.job.id:
            problems.append(Problem(f"{key}: idempotency binding {facts.binding} != job"))
    strays = sorted(set(by_key) - set(outcomes))
    if strays:
        problems.append(Problem(f"jobs for keys nobody submitted: {strays[:10]}"))

    for facts in jobs:
        job, history = facts.job, facts.history()
        # One terminal state, reached once, never left.
        into_terminal = [e for e in facts.events if e.to_state.terminal]
        if not job.state.terminal:
            problems.append(Problem(f"not terminal: {history}"))
        elif len(into_terminal) != 1 or facts.events[-1] is not into_terminal[0]:
            problems.append(Problem(f"{len(into_terminal)} terminal transitions: {history}"))
        # Nothing dispatched without a gate-B ALLOW taken before it, under a snapshot.
        allows = facts.gate_b_allows()
        for number, dispatch in enumerate(facts.dispatches(), start=1):
            if len([d for d in allows if d.at <= dispatch.at]) < number:
                problems.append(Problem(f"dispatch #{number} without a gate-B allow: {history}"))
        for decision in allows:
            if (
                not decision.policy_snapshot
                or decision.policy_snapshot == UNAVAILABLE_SNAPSHOT
                or decision.safety_bypassed
            ):
                problems.append(Problem(f"gate B allowed without a policy snapshot: {history}"))
        if job.labels.get("safety_bypassed"):
            problems.append(Problem(f"safety bypassed (fail mode is closed): {history}"))
        # Handlers: at most once per key; exactly once for a job that succeeded.
        if ran[facts.key] > 1:
            problems.append(Problem(f"handler ran {ran[facts.key]} times: {history}"))
        elif job.state is JobState.SUCCEEDED and ran_jobs[job.id] != 1:
            problems.append(Problem(f"succeeded, handler ran {ran_jobs[job.id]} times: {history}"))
        # What the agent was told is what happened.
        answer = outcomes.get(facts.key)
        if answer is not None and answer.status == 200 and job.state is not JobState.SUCCEEDED:
            problems.append(Problem(f"answered 200 but not SUCCEEDED: {history}"))
        denied = job.state is JobState.DENIED and not facts.dispatches() and not ran[facts.key]
        if answer is not None and answer.status == 403 and not denied:
            problems.append(Problem(f"denied at gate A but went further: {history}"))
    return problems
