"""An unmodified CAP ``Agent`` runtime (cap-sdk-python) with typed handlers.

Usage: cap_agent.py NATS_URL REDIS_URL TOPIC WORKER_ID INVOCATIONS_FILE

The Agent announces itself (handshake with its topics, heartbeats), so the scheduler
dispatches to ``worker.<id>.jobs``; it reads input from ``ctx:<job_id>`` and writes
output to ``res:<job_id>`` itself. A negative ``a`` makes the handler raise.
"""

import asyncio
import sys

from cap.runtime import Agent, Context
from pydantic import BaseModel


class Numbers(BaseModel):
    a: int
    b: int


class Total(BaseModel):
    total: int


def main() -> None:
    nats_url, redis_url, topic, worker_id, invocations = sys.argv[1:6]
    agent = Agent(
        nats_url=nats_url,
        redis_url=redis_url,
        worker_id=worker_id,
        max_parallel=4,
        heartbeat_interval=0.5,
    )

    @agent.job(topic, input_model=Numbers, output_model=Total)
    async def add(ctx: Context, data: Numbers) -> Total:
        with open(invocations, "a") as out:
            out.write(ctx.job_id + "\n")
        if data.a < 0:
            raise ValueError("negative numbers are refused")
        return Total(total=data.a + data.b)

    asyncio.run(agent.run())


if __name__ == "__main__":
    main()
