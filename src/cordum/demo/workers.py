"""The demo pack's workers: what would really run if the policy let it."""

from __future__ import annotations

import logging
import os
from typing import Any

from cordum.sdk import JobContext, Worker

DEMO_POOL = "demo"


def build_demo_worker(worker_id: str | None = None, **transport: Any) -> Worker:
    """One worker serving every ``job.demo.*`` topic (in-process unless ``transport``
    says otherwise, e.g. ``nats_url=...`` for distributed mode)."""
    worker = Worker(
        pool=DEMO_POOL, topics=["job.demo.*"], concurrency=128, worker_id=worker_id, **transport
    )

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


def main() -> None:
    """Serve the demo topics over NATS and Redis: ``cordum up --distributed`` runs this."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    worker = build_demo_worker(
        worker_id="demo-worker",
        nats_url=os.environ.get("CORDUM_BUS_URL") or "nats://127.0.0.1:4222",
        redis_url=os.environ.get("CORDUM_STORE_URL") or "redis://127.0.0.1:6379/0",
    )
    worker.run()


if __name__ == "__main__":
    main()
