"""Cancels pushed by a link (WebSocket, in-process) reach the worker whatever it is doing.

Pinned with a scripted link, so the order of events is exact: a cancel pushed before its
job comes out of ``receive`` (the cancel overtook the job) means the job never starts;
other jobs are untouched.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cordum.models.pipeline import JobAssignment
from cordum.sdk import JobContext, Worker
from cordum.sdk.links import CancelListener

pytestmark = pytest.mark.anyio


def assignment(job_id: str) -> JobAssignment:
    """A job for the test topic."""
    return JobAssignment(job_id=job_id, trace_id=job_id, topic="job.t.run", tenant_id="default")


class ScriptedLink:
    """A WorkerLink handing out prepared batches, pushing a cancel before the first one."""

    def __init__(self, batches: list[list[JobAssignment]], cancel_first: str) -> None:
        self.batches = batches
        self.cancel_first = cancel_first
        self.listener: CancelListener | None = None
        self.results: dict[str, str] = {}
        self.all_handed_out = asyncio.Event()

    def listen_for_cancels(self, listener: CancelListener) -> None:
        self.listener = listener

    async def register(self, worker_id: str | None, *args: Any) -> str:
        return worker_id or "w-scripted"

    async def receive(self, max_jobs: int, wait_s: float) -> list[JobAssignment | str]:
        if not self.batches:
            self.all_handed_out.set()
            await asyncio.sleep(wait_s)
            return []
        batch = self.batches.pop(0)
        if self.cancel_first and self.listener is not None:
            self.listener(self.cancel_first)  # pushed while the job is still on its way
            self.cancel_first = ""
        return list(batch)

    async def heartbeat(self, worker_id: str, active_jobs: int, job_ids: list[str]) -> list[str]:
        return []

    async def progress(self, *args: Any) -> bool:
        return True

    async def result(self, worker_id: str, job_id: str, status: str, *args: Any) -> None:
        self.results[job_id] = status

    async def drain(self, worker_id: str) -> None:
        pass

    async def deregister(self, worker_id: str) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_a_cancel_that_overtakes_its_job_stops_it_from_starting():
    link = ScriptedLink([[assignment("cancelled")], [assignment("kept")]], "cancelled")
    worker = Worker(pool="t", topics=["job.t.*"], url="http://unused", heartbeat_interval=60)
    ran: list[str] = []

    @worker.handle("job.t.run")
    async def run(ctx: JobContext) -> str:
        ran.append(ctx.job_id)
        return "done"

    serving = asyncio.create_task(worker.serve(link=link))
    await asyncio.wait_for(link.all_handed_out.wait(), 5)
    for _ in range(100):
        if "kept" in link.results:
            break
        await asyncio.sleep(0.01)
    worker.stop()
    await asyncio.wait_for(serving, 5)
    assert ran == ["kept"]
    assert link.results == {"kept": "succeeded"}, "a cancelled job reports nothing"
