"""Job states and the one table that says which changes between them are allowed.

Reference section 3, exactly. ``None`` stands for "no job yet": gate A creates a job in
PENDING, APPROVAL_REQUIRED or DENIED. Terminal states have no way out, and there are no
backward edges except the explicit requeues (SCHEDULED -> PENDING, RETRYING -> PENDING).
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life."""

    PENDING = "PENDING"
    APPROVAL_REQUIRED = "APPROVAL_REQUIRED"
    SCHEDULED = "SCHEDULED"
    DISPATCHED = "DISPATCHED"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    DENIED = "DENIED"
    OUTPUT_QUARANTINED = "OUTPUT_QUARANTINED"

    @property
    def terminal(self) -> bool:
        """True when the job can never change again."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.DENIED,
        JobState.OUTPUT_QUARANTINED,
    }
)

S = JobState
TRANSITIONS: dict[JobState | None, frozenset[JobState]] = {
    None: frozenset({S.PENDING, S.APPROVAL_REQUIRED, S.DENIED}),
    S.PENDING: frozenset(
        {S.APPROVAL_REQUIRED, S.SCHEDULED, S.DENIED, S.FAILED, S.TIMEOUT, S.CANCELLED}
    ),
    S.APPROVAL_REQUIRED: frozenset({S.PENDING, S.DENIED, S.TIMEOUT, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.DISPATCHED, S.DENIED, S.FAILED, S.TIMEOUT, S.CANCELLED, S.PENDING}),
    S.DISPATCHED: frozenset(
        {S.RUNNING, S.SUCCEEDED, S.FAILED, S.TIMEOUT, S.CANCELLED, S.RETRYING, S.OUTPUT_QUARANTINED}
    ),
    S.RUNNING: frozenset(
        {S.SUCCEEDED, S.FAILED, S.TIMEOUT, S.CANCELLED, S.RETRYING, S.OUTPUT_QUARANTINED}
    ),
    S.RETRYING: frozenset({S.PENDING}),
    **{state: frozenset() for state in TERMINAL_STATES},
}
del S

ACTIVE_STATES = frozenset({JobState.SCHEDULED, JobState.DISPATCHED, JobState.RUNNING})
"""States in which a job holds a worker slot (or is about to)."""


def can_transition(current: JobState | None, target: JobState) -> bool:
    """Whether the table allows ``current -> target`` (``None`` is a job not yet created)."""
    return target in TRANSITIONS[current]


class IllegalTransitionError(ValueError):
    """A state change the table forbids; nothing was written."""

    def __init__(self, job_id: str, current: JobState | None, target: JobState) -> None:
        where = "a new job" if current is None else f"{current.value}"
        super().__init__(f"job {job_id}: {where} cannot move to {target.value}")
        self.job_id = job_id
        self.current = current
        self.target = target
