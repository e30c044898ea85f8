"""The store-independent half of changing a job: what every adapter checks and computes
before it writes, so the SQLite and Redis stores cannot drift apart on the rules.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from cordum.models.pipeline import JobRecord
from cordum.models.state import IllegalTransitionError, JobState, can_transition
from cordum.ports.store import ConflictError

JOB_FIELDS = frozenset(JobRecord.model_fields)

Step = tuple[JobState, JobState, str]
"""One event of a transition: from, to, reason."""


def checked_changes(changes: Mapping[str, Any] | None) -> dict[str, Any]:
    """``changes`` as a dict of JobRecord fields; ValueError for unknown or fixed ones."""
    update = dict(changes or {})
    unknown = set(update) - JOB_FIELDS
    if unknown:
        raise ValueError(f"unknown job fields: {', '.join(sorted(unknown))}")
    for fixed in ("id", "spec", "created_at", "tenant_id"):
        if fixed in update:
            raise ValueError(f"a job's `{fixed}` never changes")
    return update


def transition_steps(
    current: JobRecord,
    target: JobState,
    *,
    expect: Collection[JobState] | None,
    reason: str,
    via: JobState | None,
    via_reason: str,
) -> list[Step] | None:
    """The events a transition of ``current`` to ``target`` writes; None for a repeat.

    Raises :class:`~cordum.ports.store.ConflictError` and
    :class:`~cordum.models.state.IllegalTransitionError` as ``Store.transition`` does.
    """
    previous = current.state
    if expect is not None and previous not in expect and previous != target:
        raise ConflictError(current.id, previous, expect)
    if previous == target:
        return None
    steps: list[Step] = [(previous, target, reason)]
    if via is not None:
        steps = [(previous, via, via_reason), (via, target, reason)]
    for source, destination, _ in steps:
        if not can_transition(source, destination):
            raise IllegalTransitionError(current.id, source, destination)
    return steps


def moved(
    current: JobRecord, target: JobState, changes: Mapping[str, Any] | None, at: float
) -> JobRecord:
    """``current`` in ``target`` with ``changes``, stamped ``at`` (and finished if terminal)."""
    update = checked_changes(changes)
    update["state"] = target
    update["updated_at"] = at
    if target.terminal:
        update.setdefault("finished_at", at)
    return current.model_copy(update=update)


def updated(
    current: JobRecord, expect: Collection[JobState], changes: Mapping[str, Any], at: float
) -> JobRecord:
    """``current`` with ``changes`` and no state change (``Store.update_job``)."""
    if current.state not in expect:
        raise ConflictError(current.id, current.state, expect)
    update = checked_changes(changes)
    if "state" in update:
        raise ValueError("update_job cannot change the state; use transition()")
    update.setdefault("updated_at", at)
    return current.model_copy(update=update)
