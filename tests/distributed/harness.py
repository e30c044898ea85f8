"""Distributed control planes for tests: real Redis, real NATS JetStream, real HTTP.

:func:`running_cluster` starts a gateway (served by uvicorn on a free port) and any number
of scheduler replicas as control planes inside the test's event loop, each built by the
same :func:`cordum.wiring.build_plane` that ``cordum gateway`` / ``cordum scheduler`` use.
:class:`RoleProcess` runs a role as its own ``cordum`` process instead, for tests that
kill it.

Isolation: every cluster has its own Redis key prefix. Tests whose workers are ours may
also prefix every NATS subject (``isolated_bus=True``) and get their own JetStream stream;
tests with third-party CAP workers cannot (those workers use the bare CAP subjects), so
they share the stream :data:`CAP_STREAM` and use topics and worker ids of their own.
Everything a test wrote to Redis, including the CAP ``ctx:``/``res:`` blobs of its jobs,
is deleted at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.js.errors
import redis.asyncio as aioredis
import uvicorn

from cordum.api import create_app
from cordum.cli.cluster import stop_processes
from cordum.config import Settings
from cordum.models import cap_packets
from cordum.ports.nats_jetstream import stream_name
from cordum.wiring import GATEWAY, SCHEDULER, ControlPlane, build_plane
from tests import backing
from tests.pipeline.harness import ADMIN_KEY, AUTH, POLICY, Harness, free_socket, policy

CAP_STREAM = "CORDUMTEST"
"""The stream of clusters on bare CAP subjects (one per NATS server: streams may not
overlap)."""


def cluster_env(prefix: str, *, isolated_bus: bool = True, **overrides: Any) -> dict[str, str]:
    """``CORDUM_*`` variables of a test cluster (also for role subprocesses)."""
    env = {
        "CORDUM_STORE_URL": backing.redis().require(),
        "CORDUM_BUS_URL": backing.nats().require(),
        "CORDUM_REDIS_PREFIX": f"{prefix}:",
        "CORDUM_BUS_STREAM": prefix.replace("-", "_").upper() if isolated_bus else CAP_STREAM,
        "CORDUM_API_KEY": ADMIN_KEY,
        "CORDUM_AUDIT_CHECKPOINT_S": "0",
        "CORDUM_DEMO": "false",
    }
    if isolated_bus:
        env["CORDUM_BUS_SUBJECT_PREFIX"] = prefix
    env.update({f"CORDUM_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


@dataclass
class Cluster(Harness):
    """A gateway served over HTTP, its scheduler replicas, and the shared Redis."""

    schedulers: list[ControlPlane] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    redis: aioredis.Redis | None = None

    async def add_scheduler(self) -> ControlPlane:
        """Start one more scheduler replica."""
        plane = await build_plane(
            Settings.load(environ=self.env),
            roles=frozenset({SCHEDULER}),
            component=f"test-scheduler-{len(self.schedulers)}",
            policy=policy(),
        )
        await plane.start()
        self.schedulers.append(plane)
        return plane

    async def stop_scheduler(self, plane: ControlPlane) -> None:
        """Stop a replica cleanly."""
        self.schedulers.remove(plane)
        await plane.stop()


@contextlib.asynccontextmanager
async def running_cluster(
    prefix: str | None = None,
    *,
    schedulers: int = 1,
    policy_text: str = POLICY,
    isolated_bus: bool = True,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> AsyncIterator[Cluster]:
    """A gateway and ``schedulers`` scheduler replicas on Redis + NATS for the block."""
    prefix = prefix or backing.unique_prefix("cluster")
    variables = {**cluster_env(prefix, isolated_bus=isolated_bus, **overrides), **(env or {})}
    settings = Settings.load(environ=variables)
    gateway = await build_plane(
        settings,
        roles=frozenset({GATEWAY}),
        component="test-gateway",
        policy=policy(policy_text),
    )
    app = create_app(gateway)
    sock = free_socket()
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    client = aioredis.from_url(variables["CORDUM_STORE_URL"])
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    cluster: Cluster | None = None
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        await gateway.keys.ensure_bootstrap(settings.api_key)
        async with httpx.AsyncClient(base_url=url, timeout=10, headers=AUTH) as http:
            cluster = Cluster(plane=gateway, url=url, http=http, env=variables, redis=client)
            for _ in range(schedulers):
                await cluster.add_scheduler()
            yield cluster
    finally:
        for plane in list(cluster.schedulers if cluster else []):
            await plane.stop()
        server.should_exit = True
        await task
        sock.close()
        await forget(client, prefix)
        await client.aclose()
        await forget_stream(variables)


async def forget_stream(env: Mapping[str, str]) -> None:
    """Delete the JetStream stream of a cluster with its own subject prefix (the servers
    are shared: streams left behind would pile up run after run)."""
    prefix = env.get("CORDUM_BUS_SUBJECT_PREFIX")
    if not prefix:
        return  # the shared stream of bare-subject clusters stays
    client = await nats.connect(env["CORDUM_BUS_URL"])
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await client.jetstream().delete_stream(stream_name(env["CORDUM_BUS_STREAM"], prefix))
    finally:
        await client.close()


async def forget(client: aioredis.Redis, prefix: str) -> None:
    """Delete every key of the cluster, and the CAP blobs of its jobs."""
    job_ids: set[str] = set()
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        text = key.decode()
        if ":job:" in text:
            job_ids.add(text.rsplit(":", 1)[-1])
        await client.unlink(key)
    blobs = [k for j in job_ids for k in (cap_packets.context_key(j), cap_packets.result_key(j))]
    for start in range(0, len(blobs), 1000):
        await client.unlink(*blobs[start : start + 1000])


class RoleProcess:
    """``cordum <role>`` as a subprocess with the cluster's environment."""

    def __init__(self, role: str, env: Mapping[str, str], *args: str, log: Path) -> None:
        self.role = role
        self.args = args
        self.env = {**os.environ, **env}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_url: str | None = None, timeout: float = 30) -> None:
        """Start; with ``ready_url``, wait until it answers 200."""
        command = [sys.executable, "-m", "cordum.cli.main", self.role, *self.args]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, env=self.env, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while ready_url is not None:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.role} exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.role} did not become ready: {self.log.read_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop within 20 s."""
        stop_processes([self.process], timeout=20)
