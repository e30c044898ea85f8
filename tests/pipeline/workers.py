"""A bare HTTP worker for pipeline tests: register, poll, report, nothing clever.

Tests that pin the server's behaviour use this instead of the SDK so a bug in one
cannot hide a bug in the other.
"""

from __future__ import annotations

from typing import Any

import httpx


class BareWorker:
    """One worker speaking the long-poll wire protocol by hand."""

    def __init__(self, http: httpx.AsyncClient, worker_id: str) -> None:
        self.http = http
        self.worker_id = worker_id

    @classmethod
    async def register(
        cls,
        http: httpx.AsyncClient,
        pool: str = "p",
        topics: tuple[str, ...] = ("job.test.>",),
        capacity: int = 4,
    ) -> BareWorker:
        """Register a worker and return it."""
        response = await http.post(
            "/api/v1/workers", json={"pool": pool, "topics": list(topics), "capacity": capacity}
        )
        response.raise_for_status()
        return cls(http, response.json()["worker_id"])

    async def poll(self, wait_s: float = 1.0, max_jobs: int = 10) -> list[dict[str, Any]]:
        """Claimed jobs (RUNNING) handed to this worker."""
        response = await self.http.post(
            f"/api/v1/workers/{self.worker_id}/poll",
            json={"max_jobs": max_jobs, "wait_s": wait_s},
        )
        response.raise_for_status()
        jobs: list[dict[str, Any]] = response.json()["jobs"]
        return jobs

    async def succeed(self, job_id: str, result: Any = None) -> dict[str, Any]:
        """Report success."""
        return await self._result(job_id, {"status": "succeeded", "result": result})

    async def fail(self, job_id: str, message: str, retryable: bool = True) -> dict[str, Any]:
        """Report failure."""
        error = {"code": "Boom", "message": message}
        return await self._result(
            job_id, {"status": "failed", "error": error, "retryable": retryable}
        )

    async def _result(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(
            f"/api/v1/workers/{self.worker_id}/jobs/{job_id}/result", json=body
        )
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data
