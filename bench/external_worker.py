"""An external SDK worker for bench/pipeline.py --external: echoes its input.

python bench/external_worker.py URL {websocket|http}
"""

from __future__ import annotations

import sys
from typing import Any

from cordum.sdk import JobContext, Worker


def main() -> None:
    url, transport = sys.argv[1], sys.argv[2]
    worker = Worker(pool="bench", topics=["job.bench.*"], url=url, transport=transport)

    @worker.handle("job.bench.echo")
    async def echo(ctx: JobContext) -> Any:
        return ctx.input

    worker.run()


if __name__ == "__main__":
    main()
