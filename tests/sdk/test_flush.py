"""SharedFlush: confirmed publishes share NATS flushes without confirming too early.

Pinned with a stand-in flush that records when it started, so each assertion is about
which callers a flush may confirm:
- callers that arrive together share one flush;
- a caller that arrives while a flush is being answered waits for a later one (its
  publish came after that flush's PING), and the callers arriving meanwhile share it;
- a failed flush fails every caller that waited on it, and the next flush runs;
- one caller giving up (cancelled) does not cancel the flush the others wait on.
"""

from __future__ import annotations

import asyncio

import pytest

from cordum.sdk._flush import SharedFlush

pytestmark = pytest.mark.anyio


class StandIn:
    """A flush the test answers by hand; counts how many started."""

    def __init__(self) -> None:
        self.started = 0
        self.answers: list[asyncio.Future[None]] = []

    async def __call__(self) -> None:
        self.started += 1
        answer = asyncio.get_running_loop().create_future()
        self.answers.append(answer)
        await answer

    def answer(self, exc: Exception | None = None) -> None:
        pending = [a for a in self.answers if not a.done()]
        assert len(pending) == 1, f"{len(pending)} flushes in flight, expected one"
        if exc is None:
            pending[0].set_result(None)
        else:
            pending[0].set_exception(exc)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_callers_arriving_together_share_one_flush() -> None:
    shared, flush = SharedFlush(), StandIn()
    callers = [asyncio.create_task(shared(flush)) for _ in range(50)]
    await settle()
    assert flush.started == 1
    flush.answer()
    await asyncio.gather(*callers)
    assert flush.started == 1


async def test_a_caller_arriving_mid_flush_waits_for_the_next_one() -> None:
    shared, flush = SharedFlush(), StandIn()
    first = asyncio.create_task(shared(flush))
    await settle()
    assert flush.started == 1
    late = [asyncio.create_task(shared(flush)) for _ in range(3)]
    await settle()
    assert flush.started == 1  # no second PING while the first is answered
    flush.answer()
    await first
    await settle()
    assert not any(task.done() for task in late)  # the first flush did not cover them
    assert flush.started == 2
    flush.answer()
    await asyncio.gather(*late)
    assert flush.started == 2


async def test_a_failed_flush_fails_its_callers_and_the_next_one_runs() -> None:
    shared, flush = SharedFlush(), StandIn()
    callers = [asyncio.create_task(shared(flush)) for _ in range(3)]
    await settle()
    flush.answer(TimeoutError("no PONG"))
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(outcome, TimeoutError) for outcome in outcomes)
    later = asyncio.create_task(shared(flush))
    await settle()
    flush.answer()
    await later
    assert flush.started == 2


async def test_a_cancelled_caller_leaves_the_flush_to_the_others() -> None:
    shared, flush = SharedFlush(), StandIn()
    leaving, staying = (asyncio.create_task(shared(flush)) for _ in range(2))
    await settle()
    leaving.cancel()
    await settle()
    assert leaving.cancelled()
    flush.answer()
    await staying
    assert flush.started == 1
