"""A distributed control plane of real processes, on private Redis and NATS servers.

One kernel service, two scheduler replicas, two gateway replicas (both given the same
``--policy``) and two SDK workers on NATS, each its own process with its own log, all on
a Redis and a NATS server of the suite's own (:mod:`tests.chaos.servers`): scenarios
kill and restart those servers, which no other test may see.

Timers are short (reconcile every second, dispatch timeout 5 s, running timeout 30 s, a
worker is lost after 3 s without a heartbeat) so that what a fault breaks is repaired
within a scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

import httpx
import redis

from cordum.cli.cluster import stop_processes
from cordum.ports.redis_store import RedisStore
from tests.backing import free_port, unique_prefix
from tests.chaos.servers import NatsServer, RedisServer, listening, tail
from tests.distributed.harness import RoleProcess
from tests.pipeline.harness import ADMIN_KEY, AUTH

HERE = Path(__file__).parent
T = TypeVar("T")

POLICY = """
version: "chaos-1"
default_decision: deny
rules:
  - id: no-forbidden
    match: {topics: ["job.chaos.*.forbidden"]}
    decision: deny
    reason: forbidden chaos jobs are denied
  - id: allow-chaos
    match: {topics: ["job.chaos.*.run"]}
    decision: allow
    reason: chaos test jobs are allowed
"""

TIMERS = {
    "CORDUM_RECONCILE_INTERVAL_S": "1",
    "CORDUM_DISPATCH_TIMEOUT_S": "5",
    "CORDUM_RUNNING_TIMEOUT_S": "30",
    "CORDUM_WORKER_LOST_AFTER_S": "3",
    "CORDUM_HEARTBEAT_INTERVAL_S": "0.5",
    # Deferred jobs are re-driven within half a second and the kernel's breaker probes
    # again after a second, so a scenario sees the recovery rather than the back-off.
    "CORDUM_BACKOFF_BASE_S": "0.05",
    "CORDUM_BACKOFF_MAX_S": "0.5",
    "CORDUM_BREAKER_OPEN_S": "1",
    # With back-off capped at 0.5 s, the default 50 attempts would give up on a job after
    # ~25 s of outage (with the default back-off, after ~20 minutes): keep a margin.
    "CORDUM_MAX_SCHEDULING_ATTEMPTS": "1000",
}

LEASE = "reconciler"
KEEP = "CORDUM_CHAOS_KEEP"
"""Set it to keep the logs and data of a run (the directory is printed at the end)."""
WORKERS = 2
SCHEDULERS = 2
GATEWAYS = 2


def chaos_env(prefix: str, redis_url: str, nats_url: str, kernel_port: int) -> dict[str, str]:
    """``CORDUM_*`` of every role.

    The variables of :func:`tests.distributed.harness.cluster_env`, but on the private
    servers (that helper resolves the shared ones, which this suite never touches), plus
    the kernel service and the short timers. The servers are private, so there is no
    subject prefix: workers use the bare CAP subjects, as in production.
    """
    return {
        "CORDUM_STORE_URL": redis_url,
        "CORDUM_BUS_URL": nats_url,
        "CORDUM_REDIS_PREFIX": f"{prefix}:",
        "CORDUM_BUS_STREAM": "CHAOS",
        "CORDUM_API_KEY": ADMIN_KEY,
        "CORDUM_AUDIT_CHECKPOINT_S": "0",
        "CORDUM_DEMO": "false",
        "CORDUM_KERNEL_URL": f"127.0.0.1:{kernel_port}",
        "CORDUM_KERNEL_LISTEN": f"127.0.0.1:{kernel_port}",
        "CORDUM_KERNEL_TOKEN": "chaos-kernel-token",
        **TIMERS,
    }


class Role:
    """One ``cordum <role>`` process, restartable, that knows when it is ready."""

    def __init__(self, name: str, process: RoleProcess, ready: Callable[[Role], bool]) -> None:
        self.name = name
        self.process = process
        self._ready = ready
        self.log_start = 0
        """Where this run's output starts in the (appended) log."""

    @property
    def log(self) -> Path:
        return self.process.log

    @property
    def alive(self) -> bool:
        popen = self.process.process
        return popen is not None and popen.poll() is None

    def launch(self) -> None:
        """Start without waiting (see :meth:`ready`)."""
        self.log_start = self.log.stat().st_size if self.log.exists() else 0
        self.process.start()

    def output(self) -> str:
        """What this run of the process has written."""
        with self.log.open("rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")

    def ready(self) -> bool:
        """Whether this run of the process is ready; raises if it exited."""
        popen = self.process.process
        if popen is None or popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited\n{tail(self.log)}")
        return self._ready(self)

    def kill(self) -> None:
        """SIGKILL."""
        self.process.kill()


def wait_ready(roles: Iterable[Role], timeout: float = 30) -> None:
    """Wait until every role of ``roles`` is ready."""
    pending = list(roles)
    deadline = time.monotonic() + timeout
    while pending:
        pending = [role for role in pending if not role.ready()]
        if pending and time.monotonic() > deadline:
            logs = "\n".join(tail(role.log) for role in pending)
            raise RuntimeError(f"not ready in {timeout}s: {[r.name for r in pending]}\n{logs}")
        time.sleep(0.05)


class ChaosCluster:
    """Servers, roles and workers of one chaos run, under a temporary directory."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="cordum-chaos-"))
        self.redis = RedisServer(self.workdir)
        self.nats = NatsServer(self.workdir)
        self.prefix = unique_prefix("chaos")
        self.kernel_port = free_port()
        self.policy = self.workdir / "policy.yaml"
        self.policy.write_text(textwrap.dedent(POLICY))
        self.env = chaos_env(self.prefix, self.redis.url, self.nats.url, self.kernel_port)
        self.gateway_ports = [free_port() for _ in range(GATEWAYS)]
        self.gateways = [self._gateway(i, port) for i, port in enumerate(self.gateway_ports)]
        self.schedulers = [
            self._role("scheduler", i, lambda role: "Cordum scheduler" in role.output())
            for i in range(SCHEDULERS)
        ]
        self.kernel = self._role("kernel", 0, lambda _: listening(self.kernel_port))
        self.invocations = self.workdir / "invocations"
        self.invocations.mkdir()
        self.worker_ids = [f"chaos-worker-{i}" for i in range(WORKERS)]
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * WORKERS
        self.reconciler_holder = 0
        """Index of the scheduler holding the reconciler lease (the first one started)."""

    def _role(self, role: str, index: int, ready: Callable[[Role], bool], *args: str) -> Role:
        log = self.workdir / f"{role}-{index}.log"
        return Role(f"{role}-{index}", RoleProcess(role, self.env, *args, log=log), ready)

    def _gateway(self, index: int, port: int) -> Role:
        url = f"http://127.0.0.1:{port}/readyz"

        def ready(_: Role) -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url, timeout=1).status_code == 200
            return False

        args = ("--port", str(port), "--policy", str(self.policy))
        return self._role("gateway", index, ready, *args)

    # --- what tests use -----------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        """Base URLs of the gateways."""
        return [f"http://127.0.0.1:{port}" for port in self.gateway_ports]

    @property
    def lease_key(self) -> str:
        """The Redis key of the reconciler lease."""
        return f"{self.prefix}:lease:{LEASE}"

    def lease_token(self) -> str | None:
        """Who holds the reconciler lease (an opaque token), or None."""
        client = redis.Redis.from_url(self.redis.url, socket_timeout=2, decode_responses=True)
        try:
            value = client.get(self.lease_key)
        finally:
            client.close()
        return None if value is None else str(value)

    def tails(self, chars: int = 2500) -> str:
        """The end of every log, for assertion messages."""
        return "\n".join(tail(path, chars) for path in sorted(self.workdir.glob("*.log")))

    def store_call(self, read: Callable[[RedisStore], Awaitable[T]]) -> T:
        """Run ``read`` on a store of the cluster's namespace (opened and closed here)."""

        async def run() -> T:
            store = await RedisStore.connect(self.redis.url, prefix=f"{self.prefix}:")
            try:
                return await read(store)
            finally:
                await store.close()

        return asyncio.run(run())

    def invocation_lines(self) -> list[tuple[str, str]]:
        """Every handler run so far: ``(idempotency key, job id)``."""
        runs = []
        for path in sorted(self.invocations.glob("*.txt")):
            for line in path.read_text().splitlines():
                key, _, job_id = line.partition(" ")
                runs.append((key, job_id))
        return runs

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Servers, then every role and worker; returns once a job runs end to end."""
        self.redis.start()
        self.nats.start()
        first_gateway, *other_gateways = self.gateways
        first_scheduler, *other_schedulers = self.schedulers
        # The first gateway publishes the policy; the kernel follows the store's active
        # snapshot; the first scheduler alone takes the reconciler lease.
        for role in (first_gateway, self.kernel, first_scheduler):
            role.launch()
        for index in range(WORKERS):
            self.start_worker(index)
        wait_ready([first_gateway])
        for role in other_gateways:
            role.launch()
        deadline = time.monotonic() + 30
        while self.lease_token() is None:
            first_scheduler.ready()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no scheduler took the reconciler lease\n{self.tails()}")
            time.sleep(0.05)
        self.reconciler_holder = 0
        for role in other_schedulers:
            role.launch()
        wait_ready(self.roles)
        self.wait_workers()
        self.warm_up()

    @property
    def roles(self) -> list[Role]:
        """Every ``cordum`` process."""
        return [*self.gateways, *self.schedulers, self.kernel]

    def start_worker(self, index: int) -> None:
        """Start SDK worker ``index`` (its invocations go to a file of its own)."""
        log = self.workdir / f"worker-{index}.log"
        command = [
            sys.executable,
            str(HERE / "chaos_worker.py"),
            self.nats.url,
            self.redis.url,
            self.worker_ids[index],
            str(self.invocations / f"worker-{index}.txt"),
        ]
        with log.open("ab") as out:
            self.workers[index] = subprocess.Popen(command, stdout=out, stderr=out)

    def wait_workers(self, timeout: float = 30) -> None:
        """Wait until every worker has registered."""
        deadline = time.monotonic() + timeout
        wanted = set(self.worker_ids)
        while True:
            for index, process in enumerate(self.workers):
                if process is None or process.poll() is not None:
                    raise RuntimeError(f"worker {index} exited\n{self.tails()}")
            workers = self.store_call(lambda store: store.list_workers())
            if wanted <= {w.worker_id for w in workers}:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not register\n{self.tails()}")
            time.sleep(0.1)

    def warm_up(self, timeout: float = 30) -> None:
        """One job through every role: the kernel has the policy, workers get jobs."""
        deadline = time.monotonic() + timeout
        attempt = 0
        with httpx.Client(timeout=5, headers=AUTH) as http:
            while time.monotonic() < deadline:
                attempt += 1
                key = f"warm-up-{attempt}"
                body = {"topic": "job.chaos.warmup.run", "context": {"key": key}}
                body["idempotency_key"] = key
                try:
                    answer = http.post(f"{self.urls[attempt % GATEWAYS]}/api/v1/jobs", json=body)
                except httpx.HTTPError:
                    time.sleep(0.2)
                    continue
                if answer.status_code != 200:  # e.g. the kernel has not followed the policy
                    time.sleep(0.2)
                    continue
                job_url = f"{self.urls[0]}/api/v1/jobs/{answer.json()['job_id']}"
                while time.monotonic() < deadline:
                    state = http.get(job_url).json()["state"]
                    if state == "SUCCEEDED":
                        return
                    if state not in ("PENDING", "SCHEDULED", "DISPATCHED", "RUNNING"):
                        break
                    time.sleep(0.05)
        raise RuntimeError(f"no job ran end to end in {timeout}s\n{self.tails()}")

    def heal(self) -> None:
        """Start whatever a scenario left dead; wait until all is ready again."""
        for server in (self.redis, self.nats):
            if not server.alive:
                server.start()
        dead = [role for role in self.roles if not role.alive]
        for role in dead:
            role.launch()
        wait_ready(dead)
        for index, process in enumerate(self.workers):
            if process is None or process.poll() is not None:
                self.start_worker(index)
        self.wait_workers()

    def close(self) -> None:
        """Stop everything (workers, roles, servers) and delete the directory (unless
        :data:`KEEP` is set)."""
        try:
            stop_processes(self.workers)
            stop_processes(role.process.process for role in self.roles)
            stop_processes([self.redis.process, self.nats.process])
        finally:
            for server in (self.redis, self.nats):
                server.kill()
            if os.environ.get(KEEP):
                print(f"chaos logs kept in {self.workdir} ({KEEP} is set)")
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
