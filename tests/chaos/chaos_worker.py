"""An SDK worker over NATS for the chaos suite (run as a subprocess, killed by nobody).

Usage: ``python chaos_worker.py NATS_URL REDIS_URL WORKER_ID INVOCATIONS_FILE``

Its one handler appends ``<idempotency key> <job id>`` to the invocations file (one
``O_APPEND`` write per call: lines from concurrent handlers never interleave) before
doing its "side effect" (a short sleep), so the file records every time a handler ran,
including runs whose result was lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

from cordum.sdk import JobContext, Worker

WORK_S = 0.03
"""How long the side effect takes (unless the job's input says ``work_s``): jobs are in
flight at every fault."""


def main() -> None:
    nats_url, redis_url, worker_id, invocations = sys.argv[1:5]
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    worker = Worker(
        pool="chaos",
        topics=["job.chaos.>"],
        worker_id=worker_id,
        concurrency=16,
        heartbeat_interval=0.5,
        nats_url=nats_url,
        redis_url=redis_url,
        timeout=5.0,
    )
    fd = os.open(invocations, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @worker.handle("job.chaos.>")
    async def work(ctx: JobContext) -> dict[str, Any]:
        key = str(ctx.input["key"])
        os.write(fd, f"{key} {ctx.job_id}\n".encode())
        await asyncio.sleep(float(ctx.input.get("work_s", WORK_S)))
        return {"key": key, "by": worker_id}

    print(f"worker {worker_id} starting", flush=True)
    worker.run()


if __name__ == "__main__":
    main()
