"""One serving run of a worker: receive jobs, run handlers, report, beat, drain.

Three background loops share a :class:`Registration`: the receiver (jobs and cancels),
the heartbeat, and the outbox pump (progress and results). Any of them that loses the
server waits with backoff and re-registers; results stay queued until delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cordum.models.pipeline import JobAssignment
from cordum.sdk._outbox import Outbox, ProgressReport, Report, ResultReport
from cordum.sdk._registration import Backoff, Failure, Registration, classify
from cordum.sdk.context import JobContext
from cordum.sdk.errors import FatalError
from cordum.sdk.handlers import Handler, Handlers, is_async
from cordum.sdk.links import WorkerLink

log = logging.getLogger("cordum.sdk.worker")

POLL_WAIT_S = 25.0
FINAL_GRACE_S = 5.0
"""After the drain: how long stragglers' reports and the goodbye may take."""
EARLY_CANCELS_KEPT = 10_000
"""Cancels for jobs not (yet) running that are remembered, oldest forgotten first."""
MAX_UNEXPECTED = 5
"""Tries for a result whose delivery fails in an unexpected way before it is dropped."""


@dataclass
class Running:
    """A job this worker holds."""

    ctx: JobContext
    task: asyncio.Task[None]
    in_thread: bool = False


def failed_report(job_id: str, code: str, message: str, *, retryable: bool) -> ResultReport:
    """A failed outcome."""
    error = {"code": code, "message": message}
    return ResultReport(job_id, "failed", None, error, retryable)


class Session:
    """The machinery behind ``Worker.serve``; lives for one call."""

    def __init__(
        self,
        link: WorkerLink,
        registration: Registration,
        handlers: Handlers,
        *,
        concurrency: int,
        heartbeat_interval: float,
        drain_timeout: float,
    ) -> None:
        self.link = link
        self.registration = registration
        self.handlers = handlers
        self.concurrency = concurrency
        self.heartbeat_interval = heartbeat_interval
        self.drain_timeout = drain_timeout
        self.loop = asyncio.get_running_loop()
        self.active: dict[str, Running] = {}
        self.outbox = Outbox()
        self._slots = asyncio.Semaphore(concurrency)
        self._room = asyncio.Event()
        self._room.set()
        self._no_jobs = asyncio.Event()
        self._no_jobs.set()
        self._threads = ThreadPoolExecutor(concurrency, thread_name_prefix="cordum-handler")
        self._early_cancels: dict[str, None] = {}

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, force: asyncio.Event) -> None:
        """Register, serve until ``stop`` is set, drain (cut short by ``force``), leave."""
        background: list[asyncio.Task[Any]] = []
        try:
            self.link.listen_for_cancels(self.cancel)
            if not await _first(self.registration.connect(), stop.wait()):
                return
            receiver = asyncio.create_task(self._receive_loop())
            background = [
                receiver,
                asyncio.create_task(self._heartbeat_loop()),
                asyncio.create_task(self.outbox.pump(self._deliver)),
            ]
            await _first(stop.wait(), *(_crashed(task) for task in background))
            await self._drain(receiver, force)
            await self._leave()
        finally:
            for task in [*background, *(r.task for r in self.active.values())]:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            self._threads.shutdown(wait=False, cancel_futures=True)

    async def _drain(self, receiver: asyncio.Task[None], force: asyncio.Event) -> None:
        """Stop taking jobs, let running ones finish, deliver their results."""
        deadline = self.loop.time() + self.drain_timeout
        self.registration.draining = True
        log.info("draining: waiting up to %ss for %d job(s)", self.drain_timeout, len(self.active))
        try:
            await asyncio.wait_for(
                self.link.drain(self.registration.current_id), self.drain_timeout
            )
        except Exception as exc:
            log.warning("could not tell the server to stop dispatching (%s)", exc)
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        remaining = max(0.0, deadline - self.loop.time())
        await _first(self._settled(), force.wait(), asyncio.sleep(remaining))
        for job_id, running in list(self.active.items()):
            log.warning("job %s did not finish before the drain timeout; giving it back", job_id)
            running.ctx.mark_cancelled()
            running.task.cancel()
            message = f"the worker shut down before the handler finished ({self.drain_timeout}s)"
            self.outbox.put(failed_report(job_id, "worker_stopped", message, retryable=True))

    async def _settled(self) -> None:
        await self._no_jobs.wait()
        await self.outbox.flushed()

    async def _leave(self) -> None:
        """Give the last reports a moment, then deregister."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.outbox.flushed(), FINAL_GRACE_S)
        if self.outbox.results_pending:
            log.warning("%d result(s) could not be delivered", self.outbox.results_pending)
        try:
            await asyncio.wait_for(
                self.link.deregister(self.registration.current_id), FINAL_GRACE_S
            )
        except Exception as exc:
            log.warning("could not deregister (%s); the server will notice the worker is gone", exc)
        else:
            log.info("worker %s left", self.registration.worker_id)

    # --- receiving ------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        backoff = Backoff()
        while True:
            await self._room.wait()
            seen = self.registration.generation
            try:
                items = await self.link.receive(self.concurrency - len(self.active), POLL_WAIT_S)
            except Exception as exc:
                log.debug("receive failed: %s", exc)
                await backoff.failed()
                await self.registration.recover(seen)
                continue
            backoff.reset()
            for item in items:
                if isinstance(item, str):
                    self.cancel(item)
                else:
                    self._start(item)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            seen = self.registration.generation
            try:
                held = [*self.active, *self.outbox.pending_result_ids()]
                cancels = await self.link.heartbeat(
                    self.registration.current_id, len(self.active), held
                )
            except Exception as exc:
                log.debug("heartbeat failed: %s", exc)
                await self.registration.recover(seen)
                continue
            for job_id in cancels:
                self.cancel(job_id)

    def cancel(self, job_id: str) -> None:
        """The server cancelled a job: stop an async handler, flag a threaded one.

        A pushed cancel can overtake its job (still on its way through ``receive``); it
        is remembered so the job never starts.
        """
        running = self.active.get(job_id)
        if running is None:
            self._early_cancels[job_id] = None
            if len(self._early_cancels) > EARLY_CANCELS_KEPT:
                del self._early_cancels[next(iter(self._early_cancels))]
            return
        log.info("job %s was cancelled by the server", job_id)
        running.ctx.mark_cancelled()
        if not running.in_thread:
            running.task.cancel()

    # --- running jobs ---------------------------------------------------------------------

    def _start(self, assignment: JobAssignment) -> None:
        if assignment.job_id in self.active:
            return  # delivered twice; the first copy is already running
        if assignment.job_id in self._early_cancels:
            del self._early_cancels[assignment.job_id]
            log.info("job %s was cancelled before it started", assignment.job_id)
            return
        ctx = JobContext(assignment, self.loop, self._on_progress)
        task = self.loop.create_task(self._run_job(ctx))
        self.active[assignment.job_id] = Running(ctx, task)
        self._update_room()

    def _update_room(self) -> None:
        if len(self.active) < self.concurrency:
            self._room.set()
        else:
            self._room.clear()
        if self.active:
            self._no_jobs.clear()
        else:
            self._no_jobs.set()

    async def _run_job(self, ctx: JobContext) -> None:
        try:
            async with self._slots:
                report = await self._execute(ctx, self.handlers.find(ctx.topic))
        except asyncio.CancelledError:
            if not ctx.cancelled:
                raise
            return  # cancelled by the server: nothing more to say about this job
        finally:
            self.active.pop(ctx.job_id, None)
            self._update_room()
        if not ctx.cancelled:
            self.outbox.put(report)

    async def _execute(self, ctx: JobContext, handler: Handler | None) -> ResultReport:
        if handler is None:
            message = f"this worker has no handler for topic {ctx.topic!r}"
            return failed_report(ctx.job_id, "no_handler", message, retryable=False)
        try:
            if is_async(handler):
                value = await handler(ctx)
            else:
                self.active[ctx.job_id].in_thread = True
                call = contextvars.copy_context().run
                value = await self.loop.run_in_executor(self._threads, call, handler, ctx)
        except Exception as exc:
            fatal = isinstance(exc, FatalError)
            log.warning("job %s (%s) failed", ctx.job_id, ctx.topic, exc_info=not fatal)
            message = str(exc) or type(exc).__name__
            return failed_report(ctx.job_id, type(exc).__name__, message, retryable=not fatal)
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            message = f"the handler returned a value that is not JSON: {exc}"
            return failed_report(ctx.job_id, "invalid_result", message, retryable=False)
        return ResultReport(ctx.job_id, "succeeded", value, None, False)

    # --- reporting ------------------------------------------------------------------------

    def _on_progress(
        self, job_id: str, message: str | None, percent: float | None, data: dict[str, Any]
    ) -> None:
        running = self.active.get(job_id)
        if running is not None and not running.ctx.cancelled:
            self.outbox.put(ProgressReport(job_id, message, percent, data))

    async def _deliver(self, report: Report) -> None:
        """Send one report: progress once, a result until delivered or plainly refused."""
        backoff = Backoff()
        unexpected = 0
        while True:
            seen = self.registration.generation
            try:
                await self._send(report)
                return
            except Exception as exc:
                if isinstance(report, ProgressReport):
                    log.debug("progress for job %s dropped: %s", report.job_id, exc)
                    return
                kind = classify(exc)
                if kind is Failure.REFUSED and report.status == "succeeded":
                    # e.g. too large: say so, rather than leave the job running forever
                    message = f"the server refused the handler's result: {exc}"
                    report = failed_report(
                        report.job_id, "result_refused", message, retryable=False
                    )
                    continue
                unexpected += kind is Failure.UNEXPECTED
                if kind is Failure.REFUSED or unexpected >= MAX_UNEXPECTED:
                    log.error("result of job %s dropped: %s", report.job_id, exc)
                    return
                if backoff.failures == 0:
                    log.warning("result of job %s not delivered yet (%s)", report.job_id, exc)
                await backoff.failed()
                await self.registration.recover(seen)

    async def _send(self, report: Report) -> None:
        worker_id = self.registration.current_id
        if isinstance(report, ProgressReport):
            running = await self.link.progress(
                worker_id, report.job_id, report.message, report.percent, report.data
            )
            if not running:
                self.cancel(report.job_id)
            return
        await self.link.result(
            worker_id, report.job_id, report.status, report.result, report.error, report.retryable
        )


async def _crashed(task: asyncio.Task[Any]) -> None:
    """Return when a background loop ends (only a bug ends one), after logging why."""
    await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        log.error("worker loop crashed; draining", exc_info=task.exception())


async def _first(*awaitables: Any) -> bool:
    """Run until the first awaitable finishes; True if it was the first one given."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if tasks[0] in done:
        tasks[0].result()
    return tasks[0] in done
