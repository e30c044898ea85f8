"""The job state machine table, pinned literally against reference section 3.

The expected table below is written out by hand from the reference text, so a change to
``cordum.models.state.TRANSITIONS`` (an added edge, a lost one, a state made non-terminal)
fails here rather than silently changing what every store adapter enforces.
"""

from __future__ import annotations

import pytest

from cordum.models.state import (
    TERMINAL_STATES,
    TRANSITIONS,
    IllegalTransitionError,
    JobState,
    can_transition,
)

PENDING = JobState.PENDING
APPROVAL_REQUIRED = JobState.APPROVAL_REQUIRED
SCHEDULED = JobState.SCHEDULED
DISPATCHED = JobState.DISPATCHED
RUNNING = JobState.RUNNING
RETRYING = JobState.RETRYING
SUCCEEDED = JobState.SUCCEEDED
FAILED = JobState.FAILED
CANCELLED = JobState.CANCELLED
TIMEOUT = JobState.TIMEOUT
DENIED = JobState.DENIED
OUTPUT_QUARANTINED = JobState.OUTPUT_QUARANTINED

REFERENCE: dict[JobState | None, set[JobState]] = {
    None: {PENDING, APPROVAL_REQUIRED, DENIED},
    PENDING: {APPROVAL_REQUIRED, SCHEDULED, DENIED, FAILED, TIMEOUT, CANCELLED},
    APPROVAL_REQUIRED: {PENDING, DENIED, TIMEOUT, CANCELLED},
    SCHEDULED: {DISPATCHED, DENIED, FAILED, TIMEOUT, CANCELLED, PENDING},
    DISPATCHED: {RUNNING, SUCCEEDED, FAILED, TIMEOUT, CANCELLED, RETRYING, OUTPUT_QUARANTINED},
    RUNNING: {SUCCEEDED, FAILED, TIMEOUT, CANCELLED, RETRYING, OUTPUT_QUARANTINED},
    RETRYING: {PENDING},
    SUCCEEDED: set(),
    FAILED: set(),
    CANCELLED: set(),
    TIMEOUT: set(),
    DENIED: set(),
    OUTPUT_QUARANTINED: set(),
}

REFERENCE_TERMINAL = {SUCCEEDED, FAILED, CANCELLED, TIMEOUT, DENIED, OUTPUT_QUARANTINED}

ALL_SOURCES: list[JobState | None] = [None, *JobState]


def test_the_table_has_exactly_one_row_per_state_and_one_for_new_jobs():
    assert set(TRANSITIONS) == set(REFERENCE)
    assert len(TRANSITIONS) == len(JobState) + 1


@pytest.mark.parametrize("source", ALL_SOURCES, ids=lambda s: "new" if s is None else s.value)
def test_each_row_matches_the_reference(source):
    assert set(TRANSITIONS[source]) == REFERENCE[source]


def test_terminal_states_are_exactly_the_reference_ones():
    assert set(TERMINAL_STATES) == REFERENCE_TERMINAL
    assert {s for s in JobState if s.terminal} == REFERENCE_TERMINAL


def test_no_state_moves_to_itself():
    for source, targets in TRANSITIONS.items():
        assert source not in targets


def test_the_only_edges_into_pending_are_the_explicit_requeues():
    into_pending = {s for s, targets in TRANSITIONS.items() if PENDING in targets}
    assert into_pending == {None, APPROVAL_REQUIRED, SCHEDULED, RETRYING}


@pytest.mark.parametrize("source", ALL_SOURCES, ids=lambda s: "new" if s is None else s.value)
@pytest.mark.parametrize("target", list(JobState), ids=lambda s: s.value)
def test_can_transition_agrees_with_the_reference(source, target):
    assert can_transition(source, target) is (target in REFERENCE[source])


def test_illegal_transition_error_carries_the_job_and_both_states():
    error = IllegalTransitionError("job-1", SUCCEEDED, RUNNING)
    assert isinstance(error, ValueError)
    assert (error.job_id, error.current, error.target) == ("job-1", SUCCEEDED, RUNNING)
    assert "job-1" in str(error)
    assert "SUCCEEDED" in str(error)
    assert "RUNNING" in str(error)
    assert "a new job" in str(IllegalTransitionError("job-2", None, RUNNING))
