"""Builds a running control plane from Settings: picks adapters, connects the services.

This is the only module that names adapters. Embedded mode: SQLite store under the data
directory, in-process bus, in-process kernel, in-process demo workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from cordum.config import Settings
from cordum.models.audit import ChainHasher
from cordum.policy import Policy, VelocityStore, load, load_text
from cordum.policy.loader import BASE_BUNDLE
from cordum.ports import Bus, Store
from cordum.ports.breaker import BreakerBackend
from cordum.ports.memory_bus import MemoryBus
from cordum.ports.sqlite_store import SqliteStore
from cordum.services import subjects
from cordum.services.approvals import Approvals
from cordum.services.audit_trail import AuditTrail, hmac_key_bytes, load_signing_key
from cordum.services.breaker import CircuitBreaker
from cordum.services.bus_workers import BusWorkers
from cordum.services.connections import InProcessLink, WorkerConnections
from cordum.services.execution import Execution
from cordum.services.kernel import Kernel, LocalKernel, PolicyHolder
from cordum.services.keys import KeyService
from cordum.services.lease import Lease, SoleProcess
from cordum.services.metrics import Metrics
from cordum.services.notify import hub_from_settings
from cordum.services.policy_admin import (
    PolicyAdmin,
    PolicySource,
    source_from_path,
    source_from_policy,
)
from cordum.services.policy_follow import PolicyFollower
from cordum.services.reconciler import Reconciler
from cordum.services.safety import SafetyClient
from cordum.services.scheduler import Scheduler, SchedulerSettings
from cordum.services.submission import Submitter
from cordum.services.workers import WorkerDirectory, WorkerService

if TYPE_CHECKING:
    from cordum.ports.remote_kernel import RemoteKernel
    from cordum.sdk import Worker

log = logging.getLogger(__name__)

DENY_ALL_POLICY = """\
version: "none"
description: No policy was given; every job is denied until one is.
default_decision: deny
rules: []
"""


def load_policy(settings: Settings) -> Policy:
    """The policy of ``--policy``, else the demo pack's, else deny-all (a loud default)."""
    if settings.policy is not None:
        return load(settings.policy)
    if settings.demo:
        from cordum.demo import demo_policy_text  # the demo pack is loaded only when used

        text, path = demo_policy_text()
        return load_text(text, name=str(path))
    log.warning("no --policy given and the demo pack is off: every job will be denied")
    return load_text(DENY_ALL_POLICY, name="<deny-all>")


def policy_source(settings: Settings) -> PolicySource:
    """The bundle texts of the policy :func:`load_policy` picks, to publish at start-up."""
    if settings.policy is not None:
        return source_from_path(settings.policy)
    if settings.demo:
        from cordum.demo import demo_policy_text

        text, _ = demo_policy_text()
        return PolicySource({BASE_BUNDLE: text}, "the demo pack")
    return PolicySource({BASE_BUNDLE: DENY_ALL_POLICY}, "deny-all (no --policy given)")


def open_store(settings: Settings, hasher: ChainHasher | None = None) -> SqliteStore:
    """The embedded store, sealing audit events with ``hasher`` (else the one ``settings``
    configure: ``CORDUM_AUDIT_HMAC_KEY``).

    Also for commands that work on a stopped server's data (``cordum keys --data-dir``);
    raises :class:`~cordum.ports.sqlite_store.StoreLockedError` while a server holds it.
    """
    return SqliteStore(
        settings.store_path,
        durable=settings.durable_writes,
        hasher=hasher or ChainHasher(hmac_key_bytes(settings.audit_hmac_key)),
    )


async def build_plane(
    settings: Settings,
    *,
    roles: frozenset[str] = frozenset({"gateway", "scheduler"}),
    component: str = "cordum",
    policy: Policy | None = None,
    source: PolicySource | None = None,
) -> ControlPlane:
    """The control plane ``settings`` describe: embedded (SQLite, in-process bus), or,
    with ``CORDUM_STORE_URL`` and ``CORDUM_BUS_URL``, ``roles`` of it on Redis and NATS.

    ``component`` names this process on the bus (the CAP ``sender_id`` of its packets).
    ``policy`` (with its ``source``) replaces the policy the settings name.
    """
    if policy is None:
        policy = load_policy(settings)
        source = policy_source(settings) if source is None else source
    if not settings.distributed:
        return ControlPlane(settings, policy=policy, policy_source=source, roles=roles)
    from cordum.ports.cap_codec import CapCodec
    from cordum.ports.nats_bus import NatsBus
    from cordum.ports.redis_breaker import RedisBreakerBackend
    from cordum.ports.redis_lease import RedisLease
    from cordum.ports.redis_pool import pooled_client
    from cordum.ports.redis_store import RedisStore
    from cordum.ports.redis_velocity import RedisVelocityStore

    store_url, bus_url = settings.store_url or "", settings.bus_url or ""
    prefix = settings.redis_prefix
    hasher = ChainHasher(hmac_key_bytes(settings.audit_hmac_key))
    store = await RedisStore.connect(
        store_url, prefix=prefix, hasher=hasher, commit_linger_s=settings.redis_commit_linger_s
    )
    blobs = pooled_client(store_url)
    try:
        bus = await NatsBus.connect(
            bus_url,
            name=component,
            subject_prefix=settings.bus_subject_prefix,
            codec=CapCodec(blobs, sender_id=component),
            durable_subjects=(subjects.SUBMIT, subjects.RESULT),
            stream=settings.bus_stream,
        )
    except BaseException:
        await store.close()
        await blobs.aclose()
        raise
    kernel = await _remote_kernel(settings)
    lease_ttl = max(3 * settings.reconcile_interval_s, 5.0)
    plane = ControlPlane(
        settings,
        policy=policy,
        policy_source=source,
        store=store,
        bus=bus,
        kernel=kernel,
        roles=roles,
        leases=lambda name: RedisLease(blobs, name, ttl_s=lease_ttl, prefix=prefix),
        shared_bus=True,
        velocity=RedisVelocityStore(store_url, f"{prefix}velocity"),
        breakers=lambda gate: RedisBreakerBackend(
            store_url, f"kernel-gate-{gate}", prefix=f"{prefix}breaker"
        ),
    )
    plane.on_stop(blobs.aclose)
    if kernel is not None:
        plane.on_stop(kernel.close)
    return plane


async def _remote_kernel(settings: Settings) -> RemoteKernel | None:
    """The kernel service of ``CORDUM_KERNEL_URL``, or None to decide in this process."""
    if not settings.kernel_url:
        return None
    from cordum.ports.remote_kernel import RemoteKernel

    kernel = RemoteKernel(
        settings.kernel_url, token=settings.kernel_token, timeout=settings.gate_b_timeout_s
    )
    try:
        await kernel.connect()
    except Exception as exc:  # not fatal: the fail mode decides while it is down
        log.warning("the kernel at %s is not answering yet: %s", settings.kernel_url, exc)
    return kernel


NOTIFY_DRAIN_S = 5.0
"""How long a stopping control plane waits for notifications still being delivered."""


GATEWAY = "gateway"
SCHEDULER = "scheduler"
ALL_ROLES = frozenset({GATEWAY, SCHEDULER})
"""The roles a :class:`ControlPlane` can play; the kernel service is its own process
(:mod:`cordum.api.kernel_grpc`)."""


class ControlPlane:
    """Roles of Cordum in one process (all of them in embedded mode), on one store and bus."""

    def __init__(
        self,
        settings: Settings,
        *,
        policy: Policy,
        store: Store | None = None,
        bus: Bus | None = None,
        kernel: Kernel | None = None,
        policy_source: PolicySource | None = None,
        roles: frozenset[str] = ALL_ROLES,
        leases: Callable[[str], Lease] = SoleProcess,
        shared_bus: bool = False,
        velocity: VelocityStore | None = None,
        breakers: Callable[[str], BreakerBackend] | None = None,
    ) -> None:
        """``policy`` decides until :meth:`start` syncs with the store's active snapshot.

        ``policy_source`` is its bundle texts (see :func:`policy_source`); without it the
        policy's canonical form is what the first start publishes. ``roles`` picks what
        this process runs (gateway: API-side services; scheduler: gate B, dispatch, bus
        workers, reconciler). ``leases`` names the lease of work only one replica may do
        at a time. ``shared_bus``: other processes share the bus and store (distributed
        mode), so this process follows policy changes made elsewhere. ``velocity`` and
        ``breakers`` (by gate) are the counters and breaker states the replicas share.
        """
        unknown = roles - ALL_ROLES
        if unknown or not roles:
            raise ValueError(f"roles must be some of {sorted(ALL_ROLES)}, not {sorted(roles)}")
        self.roles = roles
        self.shared_bus = shared_bus
        self.settings = settings
        self.hasher = ChainHasher(hmac_key_bytes(settings.audit_hmac_key))
        self.store: Store = store if store is not None else open_store(settings, self.hasher)
        self.audit = AuditTrail(
            self.store,
            self.hasher,
            load_signing_key(settings.audit_signing_key_path),
            checkpoint_interval_s=settings.audit_checkpoint_s,
            lease=leases("audit-checkpoints"),
        )
        self.bus: Bus = bus if bus is not None else MemoryBus()
        self.bus_durable = shared_bus
        self.metrics = Metrics()
        self._breakers = breakers
        self.holder = PolicyHolder(policy, velocity)
        self.kernel: Kernel = kernel if kernel is not None else LocalKernel(self.holder)
        self.gate_a = self._safety_client("A", settings.gate_a_timeout_s)
        self.gate_b = self._safety_client("B", settings.gate_b_timeout_s, recheck=True)
        self.notifier = hub_from_settings(settings)
        self.approvals = Approvals(
            self.store,
            self.bus,
            self.kernel,
            self.metrics,
            recheck=self._safety_client("approval", settings.gate_b_timeout_s, recheck=True),
            default_ttl_s=settings.approval_ttl_s,
            sweep_interval_s=settings.approval_sweep_s,
            listener=self.notifier,
            lease=leases("approval-expiry"),
        )
        self.submitter = Submitter(
            self.store,
            self.bus,
            self.gate_a,
            self.metrics,
            approvals=self.approvals,
            throttle_retry_s=settings.throttle_requeue_s,
        )
        self.execution = Execution(
            self.store,
            self.bus,
            self.kernel,
            self.metrics,
            default_max_retries=settings.default_max_retries,
            backoff_base_s=settings.backoff_base_s,
            backoff_max_s=settings.backoff_max_s,
            approval_listener=self.notifier,
        )
        self.workers = WorkerService(self.store, self.bus, lost_after=settings.worker_lost_after_s)
        self.directory = WorkerDirectory(
            lost_after=settings.worker_lost_after_s,
            static_pools=settings.pools,
            pool_subjects=settings.pool_subjects,
            pool_subject_capacity=settings.pool_subject_capacity,
        )
        self.scheduler = Scheduler(
            self.store,
            self.bus,
            self.gate_b,
            self.execution,
            self.directory,
            self.metrics,
            SchedulerSettings(
                max_scheduling_attempts=settings.max_scheduling_attempts,
                backoff_base_s=settings.backoff_base_s,
                backoff_max_s=settings.backoff_max_s,
                throttle_requeue_s=settings.throttle_requeue_s,
                pool_queue_limit=settings.pool_queue_limit,
                unclaimed_grace_s=max(2.0, 2 * settings.heartbeat_interval_s),
            ),
            self.approvals,
        )
        self.reconciler = Reconciler(
            self.store,
            self.scheduler,
            self.execution,
            self.directory,
            interval=settings.reconcile_interval_s,
            dispatch_timeout=settings.dispatch_timeout_s,
            running_timeout=settings.running_timeout_s,
            lease=leases("reconciler"),
        )
        self.connections = WorkerConnections(self.bus, self.execution, self.workers)
        self.bus_workers = BusWorkers(self.bus, self.execution, self.workers)
        self.keys = KeyService(self.store)
        self.policy_admin = PolicyAdmin(self.store, self.holder)
        self.policy_follower = PolicyFollower(
            self.policy_admin, self.bus, interval=settings.policy_follow_s
        )
        self.policy_source = policy_source or source_from_policy(
            policy, "the policy the control plane was built with"
        )
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._local_workers: list[Worker] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.started = False

    def _safety_client(self, gate: str, timeout: float, recheck: bool = False) -> SafetyClient:
        s = self.settings
        breaker = CircuitBreaker(
            failure_threshold=s.breaker_failures,
            open_seconds=s.breaker_open_s,
            half_open_probes=s.breaker_probes,
            close_after_successes=s.breaker_successes,
            backend=None if self._breakers is None else self._breakers(gate),
        )
        return SafetyClient(
            self.kernel,
            gate=gate,
            fail_mode=s.fail_mode,
            timeout=timeout,
            breaker=breaker,
            metrics=self.metrics,
            recheck=recheck,
        )

    async def start(self) -> None:
        """Start this process's roles and re-drive whatever the last run left open."""
        # Before any role decides a job: the store's active snapshot is the one in force.
        if GATEWAY in self.roles:
            await self.policy_admin.sync_at_startup(self.policy_source)
        else:
            await self.policy_admin.follow()
        if self.shared_bus:
            await self.policy_follower.start()
        if GATEWAY in self.roles:
            await self.connections.start()
            self.audit.start()
        if SCHEDULER in self.roles:
            await self.scheduler.start()
            await self.bus_workers.start()
            await self.reconciler.recover(bus_durable=self.bus_durable)
            self.reconciler.start()
            self.approvals.start()
        if self.hasher.algorithm == "sha256":
            log.warning(
                "the audit chain is sealed with plain SHA-256: anyone who can write the"
                " database can also re-seal it. Set CORDUM_AUDIT_HMAC_KEY (kept off this"
                " host's disk) to make changes by database access detectable"
            )
        self.started = True

    def on_stop(self, close: Callable[[], Awaitable[None]]) -> None:
        """Run ``close`` last when the plane stops (resources the wiring opened for it)."""
        self._closers.append(close)

    async def add_worker(self, worker: Worker) -> None:
        """Run an SDK worker inside this process, on the same dispatch path as remote ones."""
        link = InProcessLink(self.connections)
        self._local_workers.append(worker)
        task = asyncio.create_task(worker.serve(link=link))
        self._worker_tasks.append(task)
        registered = asyncio.create_task(link.registered.wait())
        await asyncio.wait({task, registered}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            registered.cancel()
            task.result()  # serving ended before registering: raise why

    async def stop(self) -> None:
        """Drain local workers, stop the roles, close the store and bus."""
        for worker in self._local_workers:
            worker.stop()
        if self._worker_tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*self._worker_tasks), 10)
        await self.approvals.stop()
        await self.reconciler.stop()
        await self.bus_workers.stop()
        await self.scheduler.stop()
        await self.connections.stop()
        await self.policy_follower.stop()
        if GATEWAY in self.roles:
            await self.audit.stop()
        for lease in (self.reconciler.lease, self.approvals.lease, self.audit.lease):
            await lease.release()
        await self.notifier.drain(NOTIFY_DRAIN_S)
        await self.bus.close()
        await self.store.close()
        for close in self._closers:
            await close()
        self.started = False


class KernelRole:
    """``cordum kernel``: the Safety Kernel as a gRPC service on the shared store's policy.

    It decides with the store's active snapshot (following every publish and rollback),
    counts velocity in Redis (shared by every kernel replica), and never writes policy:
    publishing is the gateway's job.
    """

    def __init__(self, settings: Settings, *, policy: Policy, component: str = "kernel") -> None:
        """Needs ``CORDUM_STORE_URL`` and ``CORDUM_BUS_URL`` (see :meth:`Settings.check`)."""
        from cordum.api.kernel_grpc import KernelServer
        from cordum.ports.redis_store import RedisStore
        from cordum.ports.redis_velocity import RedisVelocityStore

        if not settings.distributed:
            raise ValueError("the kernel service needs CORDUM_STORE_URL and CORDUM_BUS_URL")
        store_url = settings.store_url or ""
        self.settings = settings
        self.component = component
        self.store = RedisStore(
            store_url,
            prefix=settings.redis_prefix,
            hasher=ChainHasher(hmac_key_bytes(settings.audit_hmac_key)),
            commit_linger_s=settings.redis_commit_linger_s,
        )
        velocity = RedisVelocityStore(store_url, f"{settings.redis_prefix}velocity")
        self.holder = PolicyHolder(policy, velocity)
        self.admin = PolicyAdmin(self.store, self.holder)
        host, _, port = settings.kernel_listen.rpartition(":")
        self.server = KernelServer(
            LocalKernel(self.holder),
            host=host or "127.0.0.1",
            port=int(port),
            token=settings.kernel_token,
            snapshots=self._snapshot_ids,
        )
        self._bus: Bus | None = None
        self._follower: PolicyFollower | None = None

    async def _snapshot_ids(self) -> list[str]:
        return [s.snapshot_id for s in await self.store.list_policy_snapshots()]

    async def start(self) -> int:
        """Load the active snapshot, follow it, and serve; returns the port."""
        from cordum.ports.nats_bus import NatsBus

        await self.admin.follow()
        self._bus = await NatsBus.connect(
            self.settings.bus_url or "",
            name=self.component,
            subject_prefix=self.settings.bus_subject_prefix,
        )
        self._follower = PolicyFollower(
            self.admin, self._bus, interval=self.settings.policy_follow_s
        )
        await self._follower.start()
        return await self.server.start()

    async def stop(self) -> None:
        """Stop serving (calls in flight get a second) and following."""
        await self.server.stop(1.0)
        if self._follower is not None:
            await self._follower.stop()
        if self._bus is not None:
            await self._bus.close()
        await self.store.close()
