"""An SDK worker over NATS for bench/pipeline.py --distributed: echoes its input.

python bench/nats_worker.py NATS_URL REDIS_URL SUBJECT_PREFIX
"""

from __future__ import annotations

import sys
from typing import Any

from cordum.sdk import JobContext, Worker, eventloop
from cordum.sdk.natslink import NatsLink


def main() -> None:
    nats_url, redis_url, prefix = sys.argv[1:4]
    worker = Worker(
        pool="bench",
        topics=["job.bench.*"],
        concurrency=256,
        nats_url=nats_url,
        redis_url=redis_url,
    )

    @worker.handle("job.bench.echo")
    async def echo(ctx: JobContext) -> Any:
        return ctx.input

    eventloop.run(worker.serve(link=NatsLink(nats_url, redis_url, subject_prefix=prefix)))


if __name__ == "__main__":
    main()
