"""Workers: run the jobs Cordum allowed, report their outcome, survive server restarts.

>>> worker = Worker(pool="hello", topics=["job.hello.*"])
>>> @worker.handle("job.hello.greet")
... async def greet(ctx):
...     return {"message": f"hello {ctx.input['name']}"}
>>> worker.run()  # doctest: +SKIP

``run()`` blocks until SIGTERM or SIGINT, then drains: no new jobs, running ones finish
(up to ``drain_timeout``), their results are delivered, and the worker deregisters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from cordum.models.subjects import valid_subject
from cordum.sdk import eventloop
from cordum.sdk._registration import Registration
from cordum.sdk._session import Session
from cordum.sdk._wire import Settings
from cordum.sdk.handlers import Handler, Handlers
from cordum.sdk.links import HttpLink, WorkerLink
from cordum.sdk.wslink import WebSocketLink

log = logging.getLogger("cordum.sdk.worker")

H = TypeVar("H", bound=Handler)
TRANSPORTS = ("websocket", "http", "nats")
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class Worker:
    """A pool member that runs handlers for the topics it subscribes to.

    ``url``, ``api_key`` and ``tenant`` default to ``CORDUM_URL``, ``CORDUM_API_KEY`` and
    ``CORDUM_TENANT_ID``. At most ``concurrency`` handlers run at once; async handlers run
    on the event loop, plain functions in a thread.

    ``transport`` is ``"websocket"`` (the default), ``"http"`` or ``"nats"``. Over NATS
    the worker joins a distributed control plane without its HTTP gateway: it speaks CAP
    on the bus (:class:`~cordum.sdk.natslink.NatsLink`) and reads job input and writes
    results in the plane's Redis. Giving ``nats_url`` picks it; otherwise the URL comes
    from ``CORDUM_NATS_URL`` (default ``nats://127.0.0.1:4222``). ``redis_url`` defaults
    to ``CORDUM_REDIS_URL``, then ``REDIS_URL``, then ``redis://127.0.0.1:6379/0``.
    """

    def __init__(
        self,
        pool: str,
        topics: Iterable[str],
        url: str | None = None,
        *,
        concurrency: int = 4,
        transport: str | None = None,
        worker_id: str | None = None,
        heartbeat_interval: float = 5.0,
        drain_timeout: float = 30.0,
        labels: Mapping[str, str] | None = None,
        api_key: str | None = None,
        tenant: str | None = None,
        timeout: float = 10.0,
        nats_url: str | None = None,
        redis_url: str | None = None,
    ) -> None:
        self.topics = list(topics)
        bad = [t for t in self.topics if not valid_subject(t, pattern=True)]
        if not self.topics or bad:
            raise ValueError(f"topics must be valid topic patterns, got {bad or self.topics!r}")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        transport = transport or ("nats" if nats_url else "websocket")
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        if transport != "nats" and (nats_url or redis_url):
            raise ValueError(f"nats_url and redis_url are for transport='nats', not {transport!r}")
        self.pool = pool
        self.settings = Settings.resolve(url, api_key, tenant, timeout)
        self.concurrency = concurrency
        self.transport = transport
        self.nats_url: str | None = None
        self.redis_url: str | None = None
        if transport == "nats":
            self.nats_url = nats_url or os.environ.get("CORDUM_NATS_URL") or DEFAULT_NATS_URL
            self.redis_url = (
                redis_url
                or os.environ.get("CORDUM_REDIS_URL")
                or os.environ.get("REDIS_URL")
                or DEFAULT_REDIS_URL
            )
        self.worker_id = worker_id
        self.heartbeat_interval = heartbeat_interval
        self.drain_timeout = drain_timeout
        self.labels = dict(labels or {})
        self.handlers = Handlers()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._force: asyncio.Event | None = None
        self._stop_early = False

    def handle(self, pattern: str) -> Callable[[H], H]:
        """Decorator: run the function for jobs whose topic matches ``pattern``.

        ``pattern`` is an exact topic or uses ``*`` (one token) and a final ``>``. A
        handler returns a JSON value (the job's result); raising fails the job, and
        raising :class:`~cordum.sdk.errors.FatalError` also forbids a retry.
        """

        def register(handler: H) -> H:
            self.handlers.add(pattern, handler)
            return handler

        return register

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (a second one skips waiting for handlers), then return."""
        eventloop.run(self._serve_until_signalled())

    async def _serve_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
        try:
            await self.serve()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    async def serve(self, link: WorkerLink | None = None) -> None:
        """Serve until :meth:`stop`, then drain and deregister.

        ``link`` replaces the network transport (e.g. an in-process link); the worker
        closes it on the way out.
        """
        if not self.handlers:
            raise RuntimeError("add a handler with @worker.handle(...) before serving")
        if self._loop is not None:
            raise RuntimeError("this worker is already serving")
        link = link if link is not None else self._link()
        self._loop = asyncio.get_running_loop()
        self._stop, self._force = asyncio.Event(), asyncio.Event()
        if self._stop_early:
            self._stop.set()
        registration = Registration(
            link,
            worker_id=self.worker_id,
            pool=self.pool,
            topics=self.topics,
            capacity=self.concurrency,
            labels=self.labels,
        )
        session = Session(
            link,
            registration,
            self.handlers,
            concurrency=self.concurrency,
            heartbeat_interval=self.heartbeat_interval,
            drain_timeout=self.drain_timeout,
        )
        try:
            await session.run(self._stop, self._force)
        finally:
            self.worker_id = registration.worker_id
            self._loop = self._stop = self._force = None
            self._stop_early = False
            try:
                await link.close()
            except Exception as exc:
                log.debug("closing the link failed: %s", exc)

    def _link(self) -> WorkerLink:
        if self.nats_url is not None and self.redis_url is not None:
            # Imported here so that NATS, Redis and CAP load only in workers that use them.
            from cordum.sdk.natslink import NatsLink

            return NatsLink(self.nats_url, self.redis_url, timeout=self.settings.timeout)
        if self.transport == "http":
            return HttpLink(self.settings)
        return WebSocketLink(self.settings)

    def stop(self) -> None:
        """Ask the worker to drain and return; safe from any thread or a signal handler.

        A second call stops waiting for running handlers (they are given back to the
        server to retry).
        """
        loop = self._loop
        if loop is None:
            self._stop_early = True
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._on_stop)

    def _on_stop(self) -> None:
        if self._stop is None or self._force is None:
            return
        if self._stop.is_set():
            self._force.set()
        else:
            self._stop.set()
