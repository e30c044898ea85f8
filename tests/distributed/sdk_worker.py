"""An SDK worker over NATS for the distributed tests: records each handler call.

Usage: sdk_worker.py NATS_URL REDIS_URL SUBJECT_PREFIX WORKER_ID INVOCATIONS_FILE

Serves ``job.test.*``; the handler appends the job id to INVOCATIONS_FILE (one line per
call, written before it returns) and echoes its input.
"""

import asyncio
import sys
from typing import Any

from cordum.sdk import JobContext, Worker
from cordum.sdk.natslink import NatsLink


def main() -> None:
    nats_url, redis_url, prefix, worker_id, invocations = sys.argv[1:6]
    worker = Worker(
        pool="test",
        topics=["job.test.*"],
        concurrency=128,
        worker_id=worker_id,
        nats_url=nats_url,
        redis_url=redis_url,
    )
    log = open(invocations, "a", buffering=1)  # noqa: SIM115 - open for the worker's life

    @worker.handle("job.test.echo")
    async def echo(ctx: JobContext) -> Any:
        log.write(ctx.job_id + "\n")
        return {"echo": ctx.input}

    link = NatsLink(nats_url, redis_url, subject_prefix=prefix)
    asyncio.run(worker.serve(link=link))


if __name__ == "__main__":
    main()
