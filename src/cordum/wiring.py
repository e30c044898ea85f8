"""Builds a running control plane from Settings: picks adapters, connects the services.

This is the only module that names adapters. Embedded mode: SQLite store under the data
directory, in-process bus, in-process kernel, in-process demo workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from cordum.config import Settings
from cordum.models.audit import ChainHasher
from cordum.policy import Policy, load, load_text
from cordum.policy.loader import BASE_BUNDLE
from cordum.ports import Bus, Store
from cordum.ports.memory_bus import MemoryBus
from cordum.ports.sqlite_store import SqliteStore
from cordum.services.approvals import Approvals
from cordum.services.audit_trail import AuditTrail, hmac_key_bytes, load_signing_key
from cordum.services.breaker import CircuitBreaker
from cordum.services.connections import InProcessLink, WorkerConnections
from cordum.services.execution import Execution
from cordum.services.kernel import Kernel, LocalKernel, PolicyHolder
from cordum.services.keys import KeyService
from cordum.services.metrics import Metrics
from cordum.services.notify import hub_from_settings
from cordum.services.policy_admin import (
    PolicyAdmin,
    PolicySource,
    source_from_path,
    source_from_policy,
)
from cordum.services.reconciler import Reconciler
from cordum.services.safety import SafetyClient
from cordum.services.scheduler import Scheduler, SchedulerSettings
from cordum.services.submission import Submitter
from cordum.services.workers import WorkerDirectory, WorkerService

if TYPE_CHECKING:
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


NOTIFY_DRAIN_S = 5.0
"""How long a stopping control plane waits for notifications still being delivered."""


class ControlPlane:
    """Every role of Cordum in one process, sharing one store and one bus."""

    def __init__(
        self,
        settings: Settings,
        *,
        policy: Policy,
        store: Store | None = None,
        bus: Bus | None = None,
        kernel: Kernel | None = None,
        policy_source: PolicySource | None = None,
    ) -> None:
        """``policy`` decides until :meth:`start` syncs with the store's active snapshot.

        ``policy_source`` is its bundle texts (see :func:`policy_source`); without it the
        policy's canonical form is what the first start publishes.
        """
        self.settings = settings
        self.hasher = ChainHasher(hmac_key_bytes(settings.audit_hmac_key))
        self.store: Store = store if store is not None else open_store(settings, self.hasher)
        self.audit = AuditTrail(
            self.store,
            self.hasher,
            load_signing_key(settings.audit_signing_key_path),
            checkpoint_interval_s=settings.audit_checkpoint_s,
        )
        self.bus: Bus = bus if bus is not None else MemoryBus()
        self.bus_durable = False
        self.metrics = Metrics()
        self.holder = PolicyHolder(policy)
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
            lost_after=settings.worker_lost_after_s, static_pools=settings.pools
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
        )
        self.connections = WorkerConnections(self.bus, self.execution, self.workers)
        self.keys = KeyService(self.store)
        self.policy_admin = PolicyAdmin(self.store, self.holder)
        self.policy_source = policy_source or source_from_policy(
            policy, "the policy the control plane was built with"
        )
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._local_workers: list[Worker] = []
        self.started = False

    def _safety_client(self, gate: str, timeout: float, recheck: bool = False) -> SafetyClient:
        s = self.settings
        breaker = CircuitBreaker(
            failure_threshold=s.breaker_failures,
            open_seconds=s.breaker_open_s,
            half_open_probes=s.breaker_probes,
            close_after_successes=s.breaker_successes,
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
        """Start every role and re-drive whatever the last run left open."""
        # Before any role decides a job: the store's active snapshot is the one in force.
        await self.policy_admin.sync_at_startup(self.policy_source)
        await self.connections.start()
        await self.scheduler.start()
        await self.reconciler.recover(bus_durable=self.bus_durable)
        self.reconciler.start()
        self.approvals.start()
        self.audit.start()
        if self.hasher.algorithm == "sha256":
            log.warning(
                "the audit chain is sealed with plain SHA-256: anyone who can write the"
                " database can also re-seal it. Set CORDUM_AUDIT_HMAC_KEY (kept off this"
                " host's disk) to make changes by database access detectable"
            )
        self.started = True

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
        await self.scheduler.stop()
        await self.connections.stop()
        await self.audit.stop()
        await self.notifier.drain(NOTIFY_DRAIN_S)
        await self.bus.close()
        await self.store.close()
        self.started = False
