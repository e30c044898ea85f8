"""Keeping every replica's kernel on the active policy snapshot.

A publish or rollback happens in one gateway; the store records it, and that gateway
announces it on ``sys.policy.changed``. Every other process holding a policy (the kernel
service, gateways and schedulers deciding in-process) follows the store: at once on the
notice, and every ``interval`` seconds in case a notice was lost (the bus only carries
notifications, invariant 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cordum.models.policy_records import PolicySnapshotRecord
from cordum.ports import Bus, Message, Subscription
from cordum.services import subjects
from cordum.services.policy_admin import PolicyAdmin

log = logging.getLogger(__name__)


class PolicyFollower:
    """Swaps this process's kernel whenever the store's active snapshot changes."""

    def __init__(self, admin: PolicyAdmin, bus: Bus, *, interval: float = 2.0) -> None:
        self.admin = admin
        self.bus = bus
        self.interval = interval
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen for announcements, poll as a backstop, and announce our own changes."""
        self.admin.on_change = self.announce
        self._subscription = await self.bus.subscribe(subjects.POLICY_CHANGED, self._on_notice)
        self._task = asyncio.create_task(self._poll(), name="cordum-policy-follow")

    async def stop(self) -> None:
        """Stop following."""
        self.admin.on_change = None
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def announce(self, snapshot: PolicySnapshotRecord) -> None:
        """Tell the other replicas that ``snapshot`` is now active."""
        notice = {"version": snapshot.version, "snapshot_id": snapshot.snapshot_id}
        await self.bus.publish(subjects.POLICY_CHANGED, notice)

    async def _on_notice(self, message: Message) -> None:
        await self.admin.follow()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.admin.follow()
            except Exception as exc:
                log.warning("checking the active policy snapshot failed: %s", exc)
