"""The event loop the roles and SDK workers run on: uvloop when installed, else asyncio's.

Pinned: ``run`` returns the coroutine's value and raises its exception, like
``asyncio.run``; it runs on uvloop where it is installed, and on the standard loop when
it is not (Windows, or a slimmed install).
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from cordum.sdk import eventloop


async def loop_type() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_it_runs_on_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert eventloop.run(loop_type()).startswith("uvloop")


def test_without_uvloop_it_runs_on_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert eventloop.run(loop_type()).startswith("asyncio")


def test_the_coroutine_value_and_errors_come_back() -> None:
    async def fails() -> None:
        raise LookupError("nope")

    assert eventloop.run(asyncio.sleep(0, "done")) == "done"
    with pytest.raises(LookupError, match="nope"):
        eventloop.run(fails())
