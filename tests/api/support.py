"""Shared pieces of the HTTP API tests: the policy, the error-shape check, polling helpers."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from cordum.ports import JobFilter
from tests.pipeline.harness import AUTH, POLICY, Harness, running_plane

API_POLICY = POLICY.replace(
    "  - id: allow-test\n",
    "  - id: constrained\n"
    "    match: {topics: [job.test.constrained]}\n"
    "    decision: allow\n"
    "    reason: constrained jobs run with limits\n"
    "    constraints:\n"
    "      budgets: {max_retries: 2}\n"
    "      sandbox: {network_allowlist: [api.example.com]}\n"
    "  - id: allow-test\n",
)
"""The pipeline test policy plus an ALLOW_WITH_CONSTRAINTS rule for job.test.constrained."""

POOLS = {"job.test.>": "p"}
"""Static pool mapping: with no worker, a job waits PENDING instead of failing at once."""

SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Check the one error shape ``{error, code, status}`` and return the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str), body
    assert body["error"].strip(), body
    assert isinstance(body.get("code"), str), body
    assert SNAKE.match(body["code"]), body
    assert body.get("status") == status, body
    if code is not None:
        assert body["code"] == code, body
    return body


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll an async predicate with short sleeps until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.01)


async def stored_job_count(harness: Harness) -> int:
    """How many jobs the store holds (every state, every tenant)."""
    page = await harness.plane.store.list_jobs(JobFilter(), limit=10_000)
    return len(page.jobs)


async def accepted(harness: Harness, topic: str = "job.test.run", **fields: Any) -> str:
    """Submit a job that must be accepted; its id."""
    response = await harness.submit(topic, **fields)
    assert response.status_code == 200, response.text
    job_id: str = response.json()["job_id"]
    return job_id


@contextlib.asynccontextmanager
async def served(data_dir: Path, **settings: Any) -> AsyncIterator[Harness]:
    """``running_plane`` with the API test policy and pools, and a client without keep-alive.

    On loopback, a reused keep-alive connection to uvicorn answers ~40 ms late (a
    Nagle/delayed-ACK stall); a fresh connection per request answers in ~5 ms, which keeps
    this suite fast. Behaviour is otherwise identical.
    """
    settings = {"policy_text": API_POLICY, "pools": POOLS, **settings}
    async with running_plane(data_dir, **settings) as harness:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=harness.url, timeout=10, limits=limits, headers=AUTH
        ) as http:
            harness.http = http
            yield harness
