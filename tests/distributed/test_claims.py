"""The scheduler's side of ``sys.job.claim``: one request claims many jobs.

A raw NATS client plays an SDK worker (handshake and heartbeat as CAP packets, claims as
JSON request/reply) against a real cluster, so the wire itself is pinned: each job named
is answered yes or no in order, a yes moves it to RUNNING on that worker, ``again``
confirms a claim already committed for that very worker, and a malformed request is
answered with an error that names what is wrong and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from cordum.models import cap_packets as cap
from cordum.models.subjects import namespace_prefix
from cordum.sdk.natslink import CLAIM
from cordum.services.bus_workers import MAX_CLAIMS
from tests import backing
from tests.distributed.harness import Cluster, running_cluster

pytestmark = pytest.mark.anyio

TOPIC = "job.test.echo"


@contextlib.asynccontextmanager
async def claiming() -> AsyncIterator[tuple[Cluster, NatsClient, str]]:
    """A one-scheduler cluster, a raw NATS client to play its worker, and the subject
    prefix of the cluster's bus."""
    async with running_cluster(schedulers=1) as cluster:
        nc = NatsClient()
        await nc.connect(backing.nats().require())
        try:
            yield cluster, nc, namespace_prefix(cluster.env["CORDUM_BUS_SUBJECT_PREFIX"])
        finally:
            await nc.close()


async def ask(nc: NatsClient, prefix: str, request: dict[str, Any]) -> Any:
    """Send a claim request; the decoded answer."""
    reply = await nc.request(prefix + CLAIM, json.dumps(request).encode(), timeout=10)
    return json.loads(reply.data)


async def dispatched_to(nc: NatsClient, cluster: Cluster, prefix: str, jobs: int) -> list[str]:
    """Announce a worker, submit ``jobs`` jobs and wait until each is dispatched to it."""
    worker_id = "claimer"
    arrived: asyncio.Queue[str] = asyncio.Queue()

    async def on_job(message: Any) -> None:
        await arrived.put(cap.parse(message.data, "job_request").job_request.job_id)

    await nc.subscribe(f"{prefix}worker.{worker_id}.jobs", cb=on_job)
    profile = {"worker_id": worker_id, "pool": "default", "topics": [TOPIC], "max_parallel": 8}
    await nc.publish(prefix + cap.HANDSHAKE, cap.handshake_packet(profile).SerializeToString())
    beat = cap.heartbeat_packet({**profile, "active_jobs": 0, "job_ids": []})
    await nc.publish(prefix + cap.HEARTBEAT, beat.SerializeToString())
    await nc.flush()
    submitted = []
    for n in range(jobs):
        response = await cluster.submit(TOPIC, context={"n": n})
        assert response.status_code == 200, response.text
        submitted.append(response.json()["job_id"])
    received = [await asyncio.wait_for(arrived.get(), 10) for _ in submitted]
    assert sorted(received) == sorted(submitted)
    return submitted


async def test_one_request_claims_many_jobs_each_answered_in_order() -> None:
    async with claiming() as (cluster, nc, prefix):
        first, second, third = await dispatched_to(nc, cluster, prefix, 3)
        answer = await ask(
            nc, prefix, {"worker_id": "claimer", "job_ids": [first, "no-such-job", second]}
        )
        assert answer == {"claimed": [True, False, True]}
        for job_id in (first, second):
            job = await cluster.job(job_id)
            assert (job.state.value, job.worker_id) == ("RUNNING", "claimer")

        # Claimed already: no to a plain claim, yes when the first answer was lost.
        assert await ask(nc, prefix, {"worker_id": "claimer", "job_ids": [first]}) == {
            "claimed": [False]
        }
        again = {"worker_id": "claimer", "job_ids": [first], "again": True}
        assert await ask(nc, prefix, again) == {"claimed": [True]}

        # Another worker may not claim a job dispatched to this one, again or not.
        other = {"worker_id": "someone-else", "job_ids": [third], "again": True}
        assert await ask(nc, prefix, other) == {"claimed": [False]}
        assert (await cluster.job(third)).state.value == "DISPATCHED"


async def test_a_malformed_claim_is_answered_with_what_is_wrong_and_changes_nothing() -> None:
    async with claiming() as (cluster, nc, prefix):
        (job_id,) = await dispatched_to(nc, cluster, prefix, 1)
        malformed: list[dict[str, Any]] = [
            {"worker_id": "claimer"},
            {"worker_id": "claimer", "job_ids": []},
            {"worker_id": "claimer", "job_ids": job_id},
            {"worker_id": "claimer", "job_ids": [job_id, 7]},
            {"job_ids": [job_id]},
            {"worker_id": "claimer", "job_ids": [job_id] * (MAX_CLAIMS + 1)},
            {"worker_id": "claimer", "job_id": job_id},  # one job, but not in a list
        ]
        for body in malformed:
            answer = await ask(nc, prefix, body)
            assert "job_ids" in answer["error"], body
            assert "worker_id" in answer["error"], body
        assert (await cluster.job(job_id)).state.value == "DISPATCHED"
