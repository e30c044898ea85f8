"""A real control plane, served over HTTP from a thread of its own, for browser tests.

Playwright's sync API runs in the test's thread; the plane, its uvicorn server and an SDK
worker (which runs every allowed ``job.test.*`` job, and fails ``job.test.fail`` ones for
good) run on an event loop in a second thread. Tests act as users do: through the
browser, or through the JSON API with httpx.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from cordum.api import create_app
from cordum.config import Settings
from cordum.models.keys import Role
from cordum.sdk import FatalError, JobContext, Worker
from cordum.wiring import ControlPlane
from tests.pipeline.harness import ADMIN_KEY, AUTH, free_socket, policy

POLICY = """
version: "dash-1"
default_decision: deny
rules:
  - id: no-delete
    match: {topics: ["job.test.delete"]}
    decision: deny
    reason: deleting is not allowed
  - id: admin-approval
    match: {topics: ["job.test.admin"]}
    decision: require_approval
    reason: admin changes need a human
  - id: allow-test
    match: {topics: ["job.test.*"]}
    decision: allow
    reason: test jobs are allowed
"""

START_S = 20.0
FAILING_TOPIC = "job.test.fail"
"""The worker fails jobs of this topic without retries: they land in the DLQ."""


class DashboardServer:
    """The plane, served at :attr:`url`, until :meth:`stop`."""

    def __init__(self, data_dir: Path, **settings: Any) -> None:
        settings.setdefault("api_key", ADMIN_KEY)
        self.config = Settings.load(environ={}, data_dir=data_dir, demo=False, **settings)
        self.plane = ControlPlane(self.config, policy=policy(POLICY))
        self.url = ""
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="dashboard-server", daemon=True)

    def start(self) -> DashboardServer:
        """Serve, and return once the plane answers (with its worker registered)."""
        self._thread.start()
        if not self._ready.wait(START_S) or self._failed is not None:
            raise RuntimeError(f"the test plane did not start: {self._failed!r}")
        return self

    def stop(self) -> None:
        """Stop the worker and the server, and wait for the thread."""
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_S)

    def call(self, coroutine: Any) -> Any:
        """Run ``coroutine`` on the plane's loop (to read the store, say) and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(START_S)

    def http(self, key: str = ADMIN_KEY) -> httpx.Client:
        """A JSON API client authenticated with ``key``."""
        return httpx.Client(base_url=self.url, timeout=10, headers={"X-API-Key": key})

    def new_key(self, role: str, name: str, tenants: tuple[str, ...] = ("*",)) -> str:
        """A fresh key of ``role`` (an approver, say: nobody approves their own job)."""
        secret, _ = self.call(self.plane.keys.create(name=name, role=Role(role), tenants=tenants))
        return str(secret)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start()
            self._failed = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = create_app(self.plane)
        sock = free_socket()
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        await self.plane.keys.ensure_bootstrap(self.config.api_key)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        worker = Worker(
            pool="dash",
            topics=["job.test.*"],
            url=self.url,
            api_key=ADMIN_KEY,
            transport="http",
            heartbeat_interval=1.0,
        )

        @worker.handle("job.test.*")
        async def run(ctx: JobContext) -> dict[str, Any]:
            if ctx.topic == FAILING_TOPIC:
                raise FatalError("the test worker fails this topic for good")
            return {"done": ctx.topic, "input": ctx.input}

        serving = asyncio.create_task(worker.serve())
        await _until_worker_online(self.url)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            worker.stop()
            await asyncio.wait_for(serving, START_S)
            server.should_exit = True
            await task
            sock.close()


async def _until_worker_online(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=5) as http:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            workers = (await http.get("/api/v1/workers")).json()["workers"]
            if any(w["live"] for w in workers):
                return
            await asyncio.sleep(0.05)
    raise RuntimeError("the test worker did not come online")
