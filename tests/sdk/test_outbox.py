"""The worker's outbox: each job's reports in order, different jobs' reports together.

Pinned: a job's progress never overtakes its result; a slow delivery for one job does not
hold up another job's result; a result stays owed (listed in heartbeats) until its
delivery returns; ``flushed`` waits for everything queued.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from cordum.sdk._outbox import Outbox, ProgressReport, Report, ResultReport

pytestmark = pytest.mark.anyio


def progress(job_id: str, n: int) -> ProgressReport:
    """Progress report number ``n``."""
    return ProgressReport(job_id, f"step {n}", None, {"n": n})


def result(job_id: str) -> ResultReport:
    """A successful result."""
    return ResultReport(job_id, "succeeded", {"job": job_id}, None, False)


async def test_each_jobs_reports_arrive_in_order_while_jobs_interleave():
    outbox = Outbox()
    delivered: list[Report] = []
    rng = random.Random(7)

    async def deliver(report: Report) -> None:
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        delivered.append(report)

    pump = asyncio.create_task(outbox.pump(deliver))
    jobs = [f"job-{n}" for n in range(20)]
    for step in range(3):
        for job_id in jobs:
            outbox.put(progress(job_id, step))
    for job_id in jobs:
        outbox.put(result(job_id))
    await asyncio.wait_for(outbox.flushed(), 5)
    pump.cancel()
    assert len(delivered) == len(jobs) * 4
    for job_id in jobs:
        mine = [r for r in delivered if r.job_id == job_id]
        assert mine == [
            progress(job_id, 0),
            progress(job_id, 1),
            progress(job_id, 2),
            result(job_id),
        ]
    first_reports = [r.job_id for r in delivered[: len(jobs)]]
    assert len(set(first_reports)) > 1, "jobs were delivered one after another, not together"


async def test_a_slow_delivery_does_not_hold_up_another_jobs_result():
    outbox = Outbox()
    slow_may_finish = asyncio.Event()
    delivered: list[str] = []

    async def deliver(report: Report) -> None:
        if report.job_id == "slow":
            await slow_may_finish.wait()
        delivered.append(report.job_id)

    pump = asyncio.create_task(outbox.pump(deliver))
    outbox.put(result("slow"))
    outbox.put(result("fast"))
    while "fast" not in delivered:
        await asyncio.sleep(0)
    assert delivered == ["fast"]
    assert outbox.pending_result_ids() == ["slow", "fast"]  # owed until the batch settles
    assert outbox.results_pending == 2
    slow_may_finish.set()
    await asyncio.wait_for(outbox.flushed(), 5)
    assert delivered == ["fast", "slow"]
    assert outbox.pending_result_ids() == []
    pump.cancel()


async def test_reports_queued_during_a_delivery_are_sent_after_it():
    outbox = Outbox()
    gate = asyncio.Event()
    delivered: list[Report] = []

    async def deliver(report: Report) -> None:
        if report == progress("a", 0):
            await gate.wait()
        delivered.append(report)

    pump = asyncio.create_task(outbox.pump(deliver))
    outbox.put(progress("a", 0))
    await asyncio.sleep(0)
    outbox.put(result("a"))  # arrives while the progress is still being delivered
    for _ in range(5):
        await asyncio.sleep(0)
    assert delivered == []
    gate.set()
    await asyncio.wait_for(outbox.flushed(), 5)
    assert delivered == [progress("a", 0), result("a")]
    pump.cancel()
