"""Keeping a worker registered through server restarts and network trouble.

Every loop of a serving worker (receive, heartbeat, reports) may notice that the server
is gone. They all call :meth:`Registration.recover` with the generation they last saw;
exactly one re-registers (under the same worker id), the others find the generation moved
on and carry on.
"""

from __future__ import annotations

import asyncio
import logging
from enum import Enum

from cordum.sdk.errors import CordumAPIError, CordumUnavailable
from cordum.sdk.links import WorkerLink

log = logging.getLogger("cordum.sdk.worker")

BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 5.0
TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})


class Backoff:
    """Sleeps of 0.2 s doubling up to 5 s between attempts."""

    def __init__(self) -> None:
        self.failures = 0

    async def failed(self) -> None:
        """Count a failure and sleep before the next attempt."""
        self.failures += 1
        await asyncio.sleep(min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** (self.failures - 1)))

    def reset(self) -> None:
        """Start again from the shortest sleep."""
        self.failures = 0


class Failure(Enum):
    """What a failed call to the server means for retrying it."""

    DISCONNECTED = "disconnected"
    """Unreachable, restarting or forgot us: re-register and retry for as long as it takes."""
    REFUSED = "refused"
    """The server understood and said no: retrying the same thing cannot help."""
    UNEXPECTED = "unexpected"
    """Anything else: worth a few more tries."""


def classify(exc: Exception) -> Failure:
    """How to treat ``exc`` raised by a link."""
    if isinstance(exc, CordumUnavailable | OSError | TimeoutError):
        return Failure.DISCONNECTED
    if isinstance(exc, CordumAPIError):
        if exc.code == "unknown_worker" or exc.status in TRANSIENT_STATUSES:
            return Failure.DISCONNECTED
        if 400 <= exc.status < 500:
            return Failure.REFUSED
    return Failure.UNEXPECTED


class Registration:
    """A worker's registration, renewed under the same id whenever the link is lost."""

    def __init__(
        self,
        link: WorkerLink,
        *,
        worker_id: str | None,
        pool: str,
        topics: list[str],
        capacity: int,
        labels: dict[str, str],
    ) -> None:
        self.link = link
        self.worker_id = worker_id
        self.pool = pool
        self.topics = topics
        self.capacity = capacity
        self.labels = labels
        self.generation = 0
        self.draining = False
        self._lock = asyncio.Lock()

    @property
    def current_id(self) -> str:
        """The worker id; only valid once registered."""
        if self.worker_id is None:
            raise RuntimeError("the worker is not registered yet")
        return self.worker_id

    async def _register(self) -> None:
        self.worker_id = await self.link.register(
            self.worker_id, self.pool, list(self.topics), self.capacity, dict(self.labels)
        )
        self.generation += 1
        if self.draining:  # a re-registration must not undo a drain
            await self.link.drain(self.worker_id)

    async def connect(self) -> None:
        """First registration: retried while the server is unreachable, raised if refused."""
        backoff = Backoff()
        while True:
            try:
                await self._register()
            except Exception as exc:
                if classify(exc) is Failure.REFUSED:
                    raise
                _log_retry(backoff, "registering", exc)
                await backoff.failed()
                continue
            log.info("worker %s registered (pool %s)", self.worker_id, self.pool)
            return

    async def recover(self, seen: int) -> None:
        """Re-register after a failure seen under generation ``seen``, unless already done."""
        async with self._lock:
            if self.generation != seen:
                return
            backoff = Backoff()
            while True:
                try:
                    await self._register()
                except Exception as exc:
                    _log_retry(backoff, "re-registering", exc)
                    await backoff.failed()
                    continue
                log.info("worker %s re-registered", self.worker_id)
                return


def _log_retry(backoff: Backoff, doing: str, exc: Exception) -> None:
    """Warn once per outage; further attempts only at debug level."""
    level = logging.WARNING if backoff.failures == 0 else logging.DEBUG
    log.log(level, "%s failed (%s); retrying with backoff", doing, exc)
