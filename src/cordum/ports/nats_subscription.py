"""One Bus subscription over NATS: a NATS subscription feeding ``concurrency`` workers.

nats-py runs a subscription's callback one message at a time and cancels that callback's
task on unsubscribe. So the callback only decodes and queues, and this subscription's own
workers run the handler: N handlers can overlap and start in arrival order, and a handler
may unsubscribe its own subscription without cancelling itself.

On a JetStream consumer a message is acked once its handler returns, or raises (a poison
message must not come back forever). Messages waiting or running are kept alive with
progress acks, so ``ack_wait`` only decides how soon a *dead* member's messages move on,
never how long a live one may queue or work; messages still queued when the subscription
stops are nak'ed, so the server hands them to another member at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import nats.errors

from cordum.ports.bus import BusHandler, Message

log = logging.getLogger(__name__)

REDELIVER_AFTER_OUTAGE_S = 1.0
"""When a durable message cannot be decoded for now (its payload is in a Redis that is
down), JetStream sends it again after this long."""


class DecodeLaterError(Exception):
    """A message that cannot be decoded now but may be later (a backing service is down)."""


Decoder = Callable[[Any], Awaitable[Message | None]]
_Settlement = Literal["ack", "nak", "term", "in_progress"]


class NatsSubscription:
    """A live subscription of :class:`~cordum.ports.nats_bus.NatsBus`."""

    def __init__(
        self,
        *,
        subject: str,
        queue: str | None,
        handler: BusHandler,
        concurrency: int,
        decode: Decoder,
        forget: Callable[[NatsSubscription], None],
        durable: str | None = None,
        keepalive: float | None = None,
        pending_limit: int = 0,
    ) -> None:
        self.subject = subject
        self.queue = queue
        self.durable = durable
        """The JetStream consumer behind this subscription, or None on core NATS."""
        self._handler = handler
        self._decode = decode
        self._forget = forget
        self._pending_limit = pending_limit
        self._dropped = 0
        self._nats_sub: Any = None
        self._stopping = False
        self._inbox: asyncio.Queue[tuple[Message, Any] | None] = asyncio.Queue()
        # JetStream messages received and not yet settled, by identity (Msg is unhashable).
        self._unsettled: dict[int, Any] = {}
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work()) for _ in range(concurrency)]
        self._keepalive: asyncio.Task[None] | None = None
        if durable is not None and keepalive is not None:
            self._keepalive = loop.create_task(self._keep_alive(keepalive))
            # Stops with the last worker, which may be the one running unsubscribe().
            done = asyncio.gather(*self._workers, return_exceptions=True)
            done.add_done_callback(self._stop_keepalive)

    def attach(self, nats_sub: Any) -> None:
        """Bind the nats-py subscription feeding this one (stopped by :meth:`unsubscribe`)."""
        self._nats_sub = nats_sub

    async def receive(self, msg: Any) -> None:
        """The nats-py callback: decode and queue for a worker, never run the handler."""
        if self.durable is not None and not str(msg.reply).startswith("$JS.ACK."):
            return  # a JetStream status notice, not a message
        try:
            message = await self._decode(msg)
        except DecodeLaterError:
            if self.durable is not None:  # kept by the stream: have it sent again shortly
                self._unsettled.pop(id(msg), None)
                try:
                    await msg.nak(delay=REDELIVER_AFTER_OUTAGE_S)
                except nats.errors.Error as exc:
                    log.warning("could not nak a message on %s: %s", self.subject, exc)
            return
        if self.durable is None:
            if message is None or self._stopping:
                return
            if self._pending_limit and self._inbox.qsize() >= self._pending_limit:
                self._dropped += 1
                if self._dropped % 1000 == 1:  # one line per burst, not one per message
                    log.warning("%s is too slow: %d messages dropped", self, self._dropped)
                return
            self._inbox.put_nowait((message, None))
        elif message is None:
            await self._settle(msg, "term")  # malformed: redelivering it cannot help
        elif self._stopping:
            await self._settle(msg, "nak")
        else:
            self._unsettled[id(msg)] = msg
            self._inbox.put_nowait((message, msg))

    async def _work(self) -> None:
        while (item := await self._inbox.get()) is not None:
            message, raw = item
            try:
                await self._handler(message)
            except Exception:
                log.exception("bus handler for %s failed on %s", self.subject, message.subject)
            if raw is not None:
                await self._settle(raw, "ack")

    async def _keep_alive(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for raw in list(self._unsettled.values()):
                await self._settle(raw, "in_progress")

    def _stop_keepalive(self, _: object) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()

    async def _settle(self, raw: Any, how: _Settlement) -> None:
        if how != "in_progress":
            self._unsettled.pop(id(raw), None)
        try:
            await getattr(raw, how)()
        except nats.errors.Error as exc:
            # Connection gone (or closing): the server redelivers after ack_wait.
            log.warning("could not %s a message on %s: %s", how, self.subject, exc)

    async def unsubscribe(self) -> None:
        """Stop delivery; running handlers finish (also when called from one of them)."""
        if not self._stopping:
            self._stopping = True
            self._forget(self)
            if self._nats_sub is not None:
                # Connection already closed, or unsubscribed: nothing more will arrive.
                try:
                    await self._nats_sub.unsubscribe()
                except nats.errors.Error as exc:
                    log.debug("unsubscribing %s: %s", self, exc)
            while not self._inbox.empty():
                queued = self._inbox.get_nowait()
                if queued is not None and queued[1] is not None:
                    await self._settle(queued[1], "nak")
            for _ in self._workers:
                self._inbox.put_nowait(None)
        others = [task for task in self._workers if task is not asyncio.current_task()]
        if others:
            await asyncio.shield(asyncio.gather(*others))

    def __repr__(self) -> str:
        queue = f" queue={self.queue}" if self.queue else ""
        return f"<NatsSubscription {self.subject}{queue}>"
