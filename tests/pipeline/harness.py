"""A real control plane behind real HTTP, inside the test's event loop.

``running_plane`` builds a ControlPlane on a temporary SQLite file, serves it with
uvicorn on a free port, and yields a :class:`Harness` with the base URL and an httpx
client. Tests drive it exactly as a user would, and may reach into ``harness.plane`` to
check the store or to swap the policy.

Auth is on, as in production: :data:`ADMIN_KEY` is every plane's bootstrap admin key, the
harness client sends it, and ``tests/conftest.py`` exports it as ``CORDUM_API_KEY`` so
SDK clients and workers created in a test find it the way a user's would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from cordum.api import create_app
from cordum.config import Settings
from cordum.models.keys import Role
from cordum.models.pipeline import DEFAULT_TENANT, JobRecord
from cordum.policy import Policy, load_text
from cordum.services.kernel import Kernel
from cordum.wiring import ControlPlane

POLICY = """
version: "test-1"
default_decision: deny
rules:
  - id: no-delete
    match: {topics: ["job.test.delete"]}
    decision: deny
    reason: deleting is not allowed
    remediations:
      - {id: archive, title: Archive instead, replacement_topic: job.test.archive}
  - id: admin-approval
    match: {topics: ["job.test.admin"]}
    decision: require_approval
    reason: admin needs approval
  - id: throttle-bulk
    match: {topics: ["job.test.bulk"]}
    decision: throttle
    reason: bulk jobs are throttled
  - id: allow-test
    match: {topics: ["job.test.*"]}
    decision: allow
    reason: test jobs are allowed
"""


ADMIN_KEY = "cordum_test-admin-key-0123456789abcdef"
"""The bootstrap admin key (every tenant) of every test plane."""


def auth(key: str) -> dict[str, str]:
    """Headers that authenticate as ``key``."""
    return {"X-API-Key": key}


AUTH = auth(ADMIN_KEY)
"""Headers that authenticate as :data:`ADMIN_KEY`."""


def policy(text: str = POLICY) -> Policy:
    """A policy from (dedented) YAML text."""
    return load_text(textwrap.dedent(text), name="test-policy.yaml")


@dataclass
class Harness:
    """A served control plane and a client for it."""

    plane: ControlPlane
    url: str
    http: httpx.AsyncClient

    async def submit(self, topic: str, **fields: Any) -> httpx.Response:
        """POST /api/v1/jobs."""
        return await self.http.post("/api/v1/jobs", json={"topic": topic, **fields})

    async def new_key(self, role: str, *tenants: str, name: str | None = None) -> str:
        """A fresh key of ``role`` in ``tenants`` (default: the default tenant; ``*``: all).

        Approving takes a key other than the submitter's: nobody approves their own job.
        """
        secret, _ = await self.plane.keys.create(
            name=name or f"test-{role}", role=Role(role), tenants=tenants or (DEFAULT_TENANT,)
        )
        return secret

    async def job(self, job_id: str) -> JobRecord:
        """The job as stored."""
        job = await self.plane.store.get_job(job_id)
        assert job is not None, job_id
        return job

    async def wait_state(self, job_id: str, *states: str, timeout: float = 5.0) -> JobRecord:
        """Poll the store until the job is in one of ``states``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            job = await self.job(job_id)
            if job.state.value in states:
                return job
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"job {job_id} is {job.state.value}, wanted {states}")
            await asyncio.sleep(0.01)


def free_socket() -> socket.socket:
    """A listening-ready socket on a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def running_plane(
    data_dir: Path,
    *,
    policy_text: str = POLICY,
    kernel: Kernel | None = None,
    **settings: Any,
) -> AsyncIterator[Harness]:
    """Serve a fresh control plane over HTTP for the duration of the block.

    ``settings`` override :class:`Settings`; ``api_key`` defaults to :data:`ADMIN_KEY`.
    """
    settings.setdefault("api_key", ADMIN_KEY)
    config = Settings.load(environ={}, data_dir=data_dir, demo=False, **settings)
    plane = ControlPlane(config, policy=policy(policy_text), kernel=kernel)
    app = create_app(plane)
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    await plane.keys.ensure_bootstrap(config.api_key)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10, headers=AUTH) as http:
            yield Harness(plane=plane, url=url, http=http)
    finally:
        server.should_exit = True
        await task
        sock.close()
