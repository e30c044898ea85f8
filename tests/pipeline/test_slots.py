"""Worker slots: never over-filled, refilled as they free up, waiting jobs by priority.

Jobs waiting for a free slot are woken in batches, several scheduled at once, when
results come in; these tests pin that the batching never puts more jobs on a worker than
its capacity, leaves no slot idle while jobs wait, and keeps the priority order. They
also pin that a poll claims everything already queued for the worker in one answer, and
that a claim asked again is confirmed only to the worker holding the job.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cordum.models.pipeline import JobRecord
from cordum.models.state import JobState
from cordum.ports import JobFilter
from tests.pipeline.harness import Harness
from tests.pipeline.workers import BareWorker

pytestmark = pytest.mark.anyio

HELD = frozenset({JobState.DISPATCHED, JobState.RUNNING})


async def submit(harness: Harness, **fields: Any) -> str:
    """Submit an allowed job; its id."""
    response = await harness.submit("job.test.run", **fields)
    assert response.status_code == 200, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def held(harness: Harness) -> list[JobRecord]:
    """Jobs dispatched or running, on any worker."""
    page = await harness.plane.store.list_jobs(JobFilter(states=HELD), limit=500)
    return page.jobs


async def eventually(check: Any, timeout: float = 5.0) -> None:
    """Poll an async predicate until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def most_at_once(jobs: list[JobRecord], worker_id: str) -> int:
    """The largest number of jobs ``worker_id`` held at the same moment."""
    edges: list[tuple[float, int]] = []
    for job in jobs:
        if job.worker_id == worker_id:
            assert job.dispatched_at is not None
            assert job.finished_at is not None
            edges += [(job.dispatched_at, 1), (job.finished_at, -1)]
    most = current = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        current += step
        most = max(most, current)
    return most


async def test_slots_are_refilled_as_results_arrive_and_never_overfilled(harness: Harness):
    capacity, total = 3, 30
    workers = [await BareWorker.register(harness.http, capacity=capacity) for _ in range(2)]
    ids = [await submit(harness) for _ in range(total)]
    finished = 0
    while finished < total:
        outstanding = total - finished

        async def refilled(outstanding: int = outstanding) -> bool:
            return len(await held(harness)) == min(outstanding, capacity * len(workers))

        await eventually(refilled)  # no slot stays idle while jobs wait
        for worker in workers:
            on_worker = [j for j in await held(harness) if j.worker_id == worker.worker_id]
            assert len(on_worker) <= capacity
        polled = await asyncio.gather(*(w.poll(wait_s=0.5) for w in workers))
        # every result at once, so the scheduler wakes waiting jobs concurrently
        pairs = zip(workers, polled, strict=True)
        await asyncio.gather(*(w.succeed(job["job_id"]) for w, jobs in pairs for job in jobs))
        finished += sum(len(jobs) for jobs in polled)
    jobs = [await harness.wait_state(job_id, "SUCCEEDED") for job_id in ids]
    for worker in workers:
        assert most_at_once(jobs, worker.worker_id) <= capacity
    assert sum(j.attempts for j in jobs) == total, "a job was dispatched twice"


async def dispatched_to_one_worker(harness: Harness, count: int) -> tuple[BareWorker, list[str]]:
    """A worker with ``count`` slots and ``count`` jobs dispatched to it, none claimed."""
    worker = await BareWorker.register(harness.http, capacity=count)
    ids = [await submit(harness) for _ in range(count)]
    for job_id in ids:
        await harness.wait_state(job_id, "DISPATCHED")
    return worker, ids


async def test_a_poll_claims_every_job_already_queued_for_the_worker(harness: Harness):
    worker, ids = await dispatched_to_one_worker(harness, 5)
    claimed = await worker.poll(wait_s=0.5, max_jobs=10)
    assert sorted(job["job_id"] for job in claimed) == sorted(ids)
    for job_id in ids:
        assert (await harness.job(job_id)).state is JobState.RUNNING


async def test_a_poll_claims_no_more_than_max_jobs(harness: Harness):
    worker, ids = await dispatched_to_one_worker(harness, 5)
    first = await worker.poll(wait_s=0.5, max_jobs=2)
    second = await worker.poll(wait_s=0.5, max_jobs=10)
    assert len(first) == 2
    assert sorted(job["job_id"] for job in first + second) == sorted(ids)


async def test_a_claim_asked_again_is_answered_only_for_the_worker_it_went_to(
    harness: Harness,
):
    """A bus worker whose claim answer was lost asks ``again``: the job it already holds
    is confirmed to it, never to another worker, and a plain second claim is refused."""
    worker, (job_id,) = await dispatched_to_one_worker(harness, 1)
    execution = harness.plane.execution
    assert await execution.claim("someone-else", job_id, again=True) is None
    first = await execution.claim(worker.worker_id, job_id)
    assert first is not None
    assert first.job_id == job_id
    assert await execution.claim(worker.worker_id, job_id) is None
    assert await execution.claim(worker.worker_id, job_id, again=True) == first
    assert await execution.claim("someone-else", job_id, again=True) is None
    await worker.succeed(job_id)
    await harness.wait_state(job_id, "SUCCEEDED")
    assert await execution.claim(worker.worker_id, job_id, again=True) is None


async def test_a_claim_asked_again_before_the_first_arrived_claims_the_job(harness: Harness):
    worker, (job_id,) = await dispatched_to_one_worker(harness, 1)
    claimed = await harness.plane.execution.claim(worker.worker_id, job_id, again=True)
    assert claimed is not None
    assert (await harness.job(job_id)).state is JobState.RUNNING


async def test_waiting_jobs_leave_by_priority_then_in_submission_order(harness: Harness):
    worker = await BareWorker.register(harness.http, capacity=1)
    blocker = await submit(harness)
    await harness.wait_state(blocker, "DISPATCHED")
    priorities = ["batch", "batch", "interactive", "critical", "interactive"]
    waiting = {await submit(harness, priority=p): p for p in priorities}

    async def all_parked() -> bool:
        return harness.plane.scheduler.waiting_count() == len(waiting)

    await eventually(all_parked)
    (job,) = await worker.poll(wait_s=1.0)
    assert job["job_id"] == blocker
    await worker.succeed(blocker)
    order: list[str] = []
    for _ in waiting:
        (job,) = await worker.poll(wait_s=2.0)
        order.append(job["job_id"])
        await worker.succeed(job["job_id"])
    rank = ["critical", "interactive", "batch"]
    assert order == sorted(waiting, key=lambda job_id: rank.index(waiting[job_id]))
