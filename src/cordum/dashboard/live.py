"""Live updates for open dashboard pages: the audit trail, tailed, as Server-Sent Events.

Every change the dashboard shows (a job's transition, a decision, an approval, a policy
publish) is an audit event sealed in the same write as the change, so tailing the audit
chains sees everything, in order, whichever replica or process made it. One poller per
gateway tails them while someone is watching (one store read per chain head per tick,
whatever the number of open pages) and fans the events out to each page's stream, each
filtered to the tenants its viewer may see. Pages refetch what they show when an event
they care about arrives; the stream carries only what happened, never the data itself.

A ``tick`` event every :data:`TICK_S` seconds lets pages refresh what is not audited
(worker heartbeats and load).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

from cordum.models.audit import AuditEvent
from cordum.models.keys import Principal
from cordum.ports import AuditFilter, Store

log = logging.getLogger(__name__)

POLL_S: Final = 0.4
"""How often the chain heads are read while a page is open: below half a second, so a
change shows up without a reload before anyone wonders."""
TICK_S: Final = 5.0
KEEPALIVE_S: Final = 15.0
"""A comment line this often keeps proxies from closing an idle stream."""
QUEUE_LIMIT: Final = 1000
BATCH_LIMIT: Final = 500


@dataclass(frozen=True)
class LiveEvent:
    """What a page is told: something of ``kind`` happened to ``subject`` in ``tenant_id``."""

    kind: str
    tenant_id: str
    subject: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def sse(self) -> str:
        """The event as one Server-Sent Events message."""
        body = {"kind": self.kind, "tenant": self.tenant_id, "subject": self.subject, **self.data}
        return f"event: change\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"


def summary(event: AuditEvent) -> LiveEvent:
    """The part of an audit event a page needs to decide whether to refresh."""
    keep = ("to", "decision", "gate")
    data = {name: event.data[name] for name in keep if name in event.data}
    return LiveEvent(event.kind, event.tenant_id, event.subject, data)


class LiveFeed:
    """Tails every audit chain of ``store`` while at least one page listens."""

    def __init__(self, store: Store, *, poll_s: float = POLL_S) -> None:
        self.store = store
        self.poll_s = poll_s
        self._listeners: set[asyncio.Queue[LiveEvent | None]] = set()
        self._heads: dict[str, int] = {}
        self._primed = False
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    async def stream(self, principal: Principal) -> AsyncIterator[str]:
        """Server-Sent Events for one page, until the feed stops or the page goes away."""
        queue: asyncio.Queue[LiveEvent | None] = asyncio.Queue(QUEUE_LIMIT)
        self._listeners.add(queue)
        self._ensure_polling()
        try:
            yield "retry: 2000\n\n"
            last_tick = last_sent = time.monotonic()
            while not self._stopped:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=min(TICK_S, 1.0))
                except TimeoutError:
                    event = None if self._stopped else LiveEvent("none", "")
                if event is None:
                    return
                now = time.monotonic()
                if event.kind != "none" and _may_see(principal, event):
                    yield event.sse()
                    last_sent = now
                if now - last_tick >= TICK_S:
                    yield LiveEvent("tick", "").sse()
                    last_tick = last_sent = now
                elif now - last_sent >= KEEPALIVE_S:
                    yield ": keepalive\n\n"
                    last_sent = now
        finally:
            self._listeners.discard(queue)

    @property
    def listeners(self) -> int:
        """How many pages are listening."""
        return len(self._listeners)

    async def stop(self) -> None:
        """End every stream (the server is shutting down) and stop polling."""
        self._stopped = True
        for queue in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _ensure_polling(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name="dashboard-live-feed")

    async def _poll(self) -> None:
        self._heads, self._primed = {}, False
        while self._listeners and not self._stopped:
            try:
                await self._read_new()
            except Exception as exc:  # a store outage: pages just stop updating meanwhile
                log.debug("live feed could not read the audit trail: %s", exc)
            await asyncio.sleep(self.poll_s)

    async def _read_new(self) -> None:
        primed = self._primed
        for chain in await self.store.audit_chains():
            head, _ = await self.store.audit_head(chain)
            # On the first read only what happens from now on counts; a chain that
            # appears later (a new tenant) is new, all of it.
            seen = self._heads.get(chain, 0 if primed else head)
            self._heads[chain] = head
            if head <= seen:
                continue
            events = await self.store.list_audit(
                AuditFilter(tenant_id=chain, after_seq=seen), limit=BATCH_LIMIT
            )
            if events:
                self._heads[chain] = events[-1].seq
            for event in events:
                self._publish(summary(event))
        self._primed = True

    def _publish(self, event: LiveEvent) -> None:
        for queue in list(self._listeners):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                log.debug("a dashboard page is not keeping up; dropping one of its events")


def _may_see(principal: Principal, event: LiveEvent) -> bool:
    """Pages see events of their viewer's tenants; agents, who see only their own jobs,
    get ticks only (telling them which jobs of their tenant moved would say too much)."""
    if principal.own_jobs_only:
        return False
    return principal.sees(event.tenant_id)
