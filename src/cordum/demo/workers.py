"""The demo pack's workers: what would really run if the policy let it."""

from __future__ import annotations

from typing import Any

from cordum.sdk import JobContext, Worker

DEMO_POOL = "demo"


def build_demo_worker(worker_id: str | None = None) -> Worker:
    """One in-process worker serving every ``job.demo.*`` topic."""
    worker = Worker(pool=DEMO_POOL, topics=["job.demo.*"], concurrency=128, worker_id=worker_id)

    @worker.handle("job.demo.greet")
    async def greet(ctx: JobContext) -> dict[str, Any]:
        name = (ctx.input or {}).get("name", "world") if isinstance(ctx.input, dict) else "world"
        return {"message": f"Hello, {name}!"}

    @worker.handle("job.demo.delete-all")
    async def delete_all(ctx: JobContext) -> dict[str, Any]:
        return {"deleted": "everything"}  # only reachable if a policy allowed it

    @worker.handle("job.demo.admin")
    async def grant_admin(ctx: JobContext) -> dict[str, Any]:
        user = ctx.input.get("user", "someone") if isinstance(ctx.input, dict) else "someone"
        return {"granted": "admin", "user": user}

    @worker.handle("job.demo.archive")
    async def archive(ctx: JobContext) -> dict[str, Any]:
        return {"archived": True, "restorable": True}

    return worker
