"""What a worker handler gets: the job, a way to report progress, and a cancel flag."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

from cordum.models.pipeline import JobAssignment

MAX_MESSAGE = 4096

ProgressSink = Callable[[str, str | None, float | None, dict[str, Any]], None]
"""Receives ``(job_id, message, percent, data)`` on the worker's event loop."""


class JobContext:
    """One job as a handler sees it.

    Handlers may run on the event loop (async) or in a thread (sync); :meth:`progress`
    and :attr:`cancelled` work from both.
    """

    def __init__(
        self, assignment: JobAssignment, loop: asyncio.AbstractEventLoop, sink: ProgressSink
    ) -> None:
        self.assignment = assignment
        self.job_id = assignment.job_id
        self.trace_id = assignment.trace_id
        self.topic = assignment.topic
        self.tenant_id = assignment.tenant_id
        self.input: Any = assignment.input
        self.prompt = assignment.prompt
        self.labels = dict(assignment.labels)
        self.constraints = dict(assignment.constraints)
        self.attempt = assignment.attempt
        self.deadline_at = assignment.deadline_at
        self._loop = loop
        self._sink = sink
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled; a sync handler should check it and return early."""
        return self._cancelled.is_set()

    def mark_cancelled(self) -> None:
        """Called by the worker when the server cancels the job."""
        self._cancelled.set()

    def progress(
        self, message: str | None = None, percent: float | None = None, **data: Any
    ) -> None:
        """Report progress without blocking; reports are sent in order, best effort.

        Raises ValueError (or TypeError) at once for a percent outside 0-100 or data that
        is not JSON, so the mistake shows up in the handler, not as a lost report.
        """
        if percent is not None and not 0 <= percent <= 100:
            raise ValueError(f"percent must be between 0 and 100, not {percent}")
        json.dumps(data, allow_nan=False)
        if message is not None:
            message = str(message)[:MAX_MESSAGE]
        if self.cancelled:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._sink(self.job_id, message, percent, data)
            return
        try:
            self._loop.call_soon_threadsafe(self._sink, self.job_id, message, percent, data)
        except RuntimeError:  # the worker's loop is gone: nobody is listening any more
            return
