"""The event loop Cordum's processes run on: uvloop where it is installed.

uvloop's transports and scheduling are written in C; the roles of distributed mode spend
much of their time in socket writes and callbacks (Redis commands, NATS messages), so
the same work costs noticeably less CPU on it. uvicorn picks it the same way for
``cordum up``. Without uvloop (it does not support Windows), the standard loop runs.

It lives in the SDK because :meth:`Worker.run <cordum.sdk.Worker.run>` uses it and the
SDK imports nothing of the server; the server's roles (``cordum gateway`` ...) use it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new event loop, as :func:`asyncio.run` does."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
