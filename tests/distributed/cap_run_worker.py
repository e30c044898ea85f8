"""An unmodified CAP ``run_worker`` (cap-sdk-python): the handler is the user's code.

Usage: cap_run_worker.py NATS_URL REDIS_URL SUBJECT WORKER_ID INVOCATIONS_FILE

It queue-subscribes to the pool subject, as CAP pool workers do, and sends no heartbeat.
The handler reads the job's input from ``context_ptr`` (Redis), writes its output to
``res:<job_id>``, appends the job id to INVOCATIONS_FILE (so the test can count handler
runs), and answers with ``result_ptr``. Inputs with ``{"fail": true}`` fail.
"""

import asyncio
import json
import sys

import redis.asyncio as aioredis
from cap import worker
from cap.pb.cordum.agent.v1 import job_pb2


async def main() -> None:
    nats_url, redis_url, subject, worker_id, invocations = sys.argv[1:6]
    blobs = aioredis.from_url(redis_url)

    async def handle(request: job_pb2.JobRequest) -> job_pb2.JobResult:
        with open(invocations, "a") as out:
            out.write(request.job_id + "\n")
        raw = await blobs.get(request.context_ptr.removeprefix("redis://"))
        data = json.loads(raw) if raw else None
        if isinstance(data, dict) and data.get("fail"):
            return job_pb2.JobResult(
                job_id=request.job_id,
                status=job_pb2.JOB_STATUS_FAILED_FATAL,
                error_code="refused",
                error_message="asked to fail",
                worker_id=worker_id,
            )
        key = f"res:{request.job_id}"
        await blobs.set(key, json.dumps({"echo": data, "by": worker_id}))
        return job_pb2.JobResult(
            job_id=request.job_id,
            status=job_pb2.JOB_STATUS_SUCCEEDED,
            result_ptr=f"redis://{key}",
            worker_id=worker_id,
        )

    print("ready", flush=True)
    await worker.run_worker(nats_url, subject, handle, sender_id=worker_id)


if __name__ == "__main__":
    asyncio.run(main())
