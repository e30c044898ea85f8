"""A Hypothesis state machine driving a real store through random (legal or not) transitions.

Rules create jobs, attempt any transition with a random ``expect`` and random field
changes, advance jobs along legal edges, and (for adapters that persist) close and reopen
the store; invariants checked after every step, for every job: each recorded event is a
``TRANSITIONS`` edge, the event chain is contiguous from creation, the job's state is the
last event's target (and the state the model predicts), terminal jobs never change again,
and the store's state counts agree with the model. Runs once per registered store adapter.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from cordum.models.pipeline import JobRecord
from cordum.models.state import TRANSITIONS, IllegalTransitionError, JobState, can_transition
from cordum.ports.store import ConflictError, TransitionOutcome
from tests.ports.adapters import STORE_ADAPTERS, StoreAdapter
from tests.ports.factories import make_decision, make_job

STATES = st.sampled_from(list(JobState))
EXPECT = st.none() | st.frozensets(STATES, max_size=3)
CHANGES = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "attempts": st.integers(min_value=0, max_value=5),
        "waiting_reason": st.none() | st.sampled_from(["no workers", "throttled"]),
        "result": st.none() | st.integers() | st.lists(st.booleans(), max_size=2),
    },
)


class StoreMachine(RuleBasedStateMachine):
    """Random traffic against one store; ``model`` is what the states should be."""

    adapter: StoreAdapter = STORE_ADAPTERS[0]

    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="cordum-store-machine-"))
        self.harness = self.run(self.adapter.open(self.tmp))
        self.store = self.harness.store
        self.model: dict[str, JobState] = {}
        self.frozen: dict[str, JobRecord] = {}  # terminal jobs as they first became terminal

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.harness.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(target=jobs, state=st.sampled_from(sorted(TRANSITIONS[None])))
    def create(self, state: JobState) -> str:
        job = make_job(state=state)
        outcome = self.run(self.store.create_job(job, make_decision(job)))
        assert outcome.created
        self.model[job.id] = state
        if state.terminal:
            self.frozen[job.id] = job
        return job.id

    @rule(job_id=jobs, to=STATES, expect=EXPECT, changes=CHANGES)
    def attempt(
        self,
        job_id: str,
        to: JobState,
        expect: frozenset[JobState] | None,
        changes: dict[str, Any] | None,
    ) -> None:
        """Any target at all: mostly illegal moves and conflicts."""
        self.check_transition(job_id, to, expect, changes)

    @rule(job_id=jobs, data=st.data())
    def advance(self, job_id: str, data: st.DataObject) -> None:
        """A move the table allows (a repeat for terminal jobs), usually with a fitting expect."""
        current = self.model[job_id]
        to = data.draw(st.sampled_from(sorted(TRANSITIONS[current]) or [current]))
        expect = data.draw(st.sampled_from([None, frozenset({current})]) | EXPECT)
        self.check_transition(job_id, to, expect, data.draw(CHANGES))

    def check_transition(
        self,
        job_id: str,
        to: JobState,
        expect: frozenset[JobState] | None,
        changes: dict[str, Any] | None,
    ) -> None:
        before, target = self.model[job_id], to
        refused: ConflictError | IllegalTransitionError | None = None
        try:
            outcome = self.run(
                self.store.transition(job_id, target, expect=expect, changes=changes)
            )
        except (ConflictError, IllegalTransitionError) as error:
            refused = error
        if isinstance(refused, ConflictError):
            assert expect is not None
            assert before not in expect
            assert refused.current is before
            return
        if isinstance(refused, IllegalTransitionError):
            assert not can_transition(before, target)
            assert target is not before
            assert (refused.current, refused.target) == (before, target)
            return
        assert isinstance(outcome, TransitionOutcome)
        assert outcome.previous is before
        if target is before:
            assert outcome.changed is False
        else:
            assert outcome.changed is True
            assert can_transition(before, target)
            assert expect is None or before in expect
            for field, value in (changes or {}).items():
                assert getattr(outcome.job, field) == value
        assert outcome.job.state is target
        self.model[job_id] = target
        if target.terminal and job_id not in self.frozen:
            self.frozen[job_id] = outcome.job

    @precondition(lambda self: self.harness.reopen_unsupported is None)
    @rule()
    def reopen(self) -> None:
        self.store = self.run(self.harness.reopen())

    @invariant()
    def histories_are_legal_and_match_the_model(self) -> None:
        for job_id, expected in self.model.items():
            job = self.run(self.store.get_job(job_id))
            events = self.run(self.store.job_events(job_id))
            assert job is not None
            assert events, "every job has its creation event"
            assert events[0].from_state is None
            previous = None
            for event in events:
                assert event.job_id == job_id
                assert event.from_state == previous, f"chain broken: {events}"
                assert event.to_state in TRANSITIONS[event.from_state], f"illegal: {event}"
                previous = event.to_state
            assert job.state is previous is expected

    @invariant()
    def terminal_jobs_never_change(self) -> None:
        for job_id, frozen in self.frozen.items():
            assert self.run(self.store.get_job(job_id)) == frozen

    @invariant()
    def counts_match_the_model(self) -> None:
        assert self.run(self.store.count_jobs_by_state()) == dict(Counter(self.model.values()))


SETTINGS = settings(max_examples=60, stateful_step_count=30, deadline=None)

# One collected TestCase per registered store adapter, e.g. TestSqliteStoreMachine.
for _adapter in STORE_ADAPTERS:
    _machine = type(f"{_adapter.name.title()}StoreMachine", (StoreMachine,), {"adapter": _adapter})
    _machine.TestCase.settings = SETTINGS
    globals()[f"Test{_adapter.name.title()}StoreMachine"] = _machine.TestCase
del _adapter, _machine
