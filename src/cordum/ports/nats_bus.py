"""The Bus port over NATS, for control planes and workers spread over several processes.

Core subjects are plain NATS: at most once, and what a disconnect loses the reconciler
re-drives from the store. Subjects listed as durable are also captured by a JetStream
stream, and a *queue* subscription on them is a durable consumer (see
:mod:`cordum.ports.nats_jetstream`), so work published while no member is up waits for
one, and a member that dies mid-message has it redelivered to another. Plain
subscriptions on durable subjects stay core subscriptions: they still see every message.

Publishing is a core publish even on durable subjects (the stream captures it): nats-py
buffers it and returns without a server round trip, which the throughput target needs.
The trade-off: no per-message confirmation that JetStream stored it, so a message sent
while JetStream is down or the stream is full is lost like a core one, left to the
reconciler (invariant 1), as for every bus.

With ``subject_prefix`` every subject is namespaced on the wire (``<prefix>.<subject>``)
and handlers see it without the prefix, so parallel test runs share one server. Production
runs without one: third-party CAP workers use the bare CAP subjects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient

from cordum.models.subjects import namespace_prefix, valid_subject
from cordum.ports.bus import BusHandler, Message
from cordum.ports.memory_bus import BusClosedError
from cordum.ports.nats_codec import JsonCodec, WireCodec
from cordum.ports.nats_jetstream import Durability, durable_name, stream_name
from cordum.ports.nats_subscription import DecodeLaterError, NatsSubscription
from cordum.ports.outage import is_outage

__all__ = ["BusClosedError", "JsonCodec", "NatsBus", "NatsSubscription", "WireCodec"]

log = logging.getLogger(__name__)

INBOX_PREFIX = "_INBOX"
_JSON = JsonCodec()


class NatsBus:
    """The Bus port over a NATS (JetStream) server; create it with :meth:`connect`."""

    def __init__(
        self,
        *,
        subject_prefix: str | None,
        codec: WireCodec,
        durability: Durability | None,
        pending_limit: int,
        reconnect_wait: float,
        delete_stream_on_close: bool,
    ) -> None:
        self._prefix = namespace_prefix(subject_prefix)
        self._codec = codec
        self._durability = durability
        self._pending_limit = pending_limit
        self._reconnect_wait = reconnect_wait
        self._delete_stream_on_close = delete_stream_on_close
        self._nc: Any = NatsClient()
        self._js: Any = None
        self._subs: list[NatsSubscription] = []
        self._restoring: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        name: str = "cordum",
        subject_prefix: str | None = None,
        codec: WireCodec | None = None,
        durable_subjects: Sequence[str] = (),
        stream: str = "CORDUM",
        max_age: float = 24 * 3600,
        ack_wait: float = 30.0,
        max_ack_pending: int = 1024,
        pending_limit: int = 65536,
        connect_timeout: float = 5.0,
        reconnect_wait: float = 0.5,
        delete_stream_on_close: bool = False,
    ) -> NatsBus:
        """Connect, and create or widen the stream when there are durable subjects.

        ``url``: one server or a cluster's seeds. ``durable_subjects``: patterns JetStream
        keeps (see the module docstring); every process sharing the stream should list
        the same ones. ``max_age``: how long the stream keeps an unconsumed message.
        ``ack_wait``: how soon a dead member's messages go to another member.
        ``max_ack_pending``: messages a queue group's consumer has out at once.
        ``pending_limit``: messages a core subscription buffers before dropping (a slow
        consumer). ``connect_timeout``: for the first connection only; after that the
        bus reconnects forever, ``reconnect_wait`` apart. ``delete_stream_on_close``: for
        tests, whose streams must not outlive them.
        """
        for pattern in durable_subjects:
            if not valid_subject(pattern, pattern=True):
                raise ValueError(f"invalid durable subject {pattern!r}")
        durability = None
        if durable_subjects:
            durability = Durability(
                stream=stream_name(stream, subject_prefix),
                subjects=tuple(durable_subjects),
                max_age=max_age,
                ack_wait=ack_wait,
                max_ack_pending=max_ack_pending,
            )
        bus = cls(
            subject_prefix=subject_prefix,
            codec=codec or JsonCodec(),
            durability=durability,
            pending_limit=pending_limit,
            reconnect_wait=reconnect_wait,
            delete_stream_on_close=delete_stream_on_close,
        )
        await bus._open([url] if isinstance(url, str) else list(url), name, connect_timeout)
        return bus

    async def _open(self, servers: list[str], name: str, timeout: float) -> None:
        connecting = self._nc.connect(
            servers,
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=self._reconnect_wait,
            connect_timeout=min(timeout, 2.0),
            inbox_prefix=INBOX_PREFIX,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        try:
            try:
                await asyncio.wait_for(connecting, timeout)
            except TimeoutError as exc:
                raise ConnectionError(f"no NATS at {servers} within {timeout}s") from exc
            if self._durability is not None:
                self._js = self._nc.jetstream()
                await self._durability.ensure_stream(self._js, self._wire_durable_subjects())
        except BaseException:
            await self._nc.close()
            raise

    @property
    def stream_name(self) -> str | None:
        """The JetStream stream holding the durable subjects (None: there are none)."""
        return None if self._durability is None else self._durability.stream

    # --- the Bus port ---------------------------------------------------------------------

    async def publish(self, subject: str, data: dict[str, Any]) -> None:
        """See :meth:`cordum.ports.bus.Bus.publish`.

        ``subject`` may be a :attr:`Message.reply` inbox: answers go there unprefixed, as
        JSON. A message the reconnect buffer has no room for is logged and dropped.
        """
        self._check_open()
        if not valid_subject(subject):
            raise ValueError(f"invalid subject {subject!r}")
        if subject.startswith(f"{INBOX_PREFIX}."):
            wire, payload = subject, await _JSON.encode(subject, data)
        else:
            wire, payload = self._prefix + subject, await self._codec.encode(subject, data)
        try:
            await self._nc.publish(wire, payload)
        except nats.errors.OutboundBufferLimitError:
            log.warning("NATS unreachable and its buffer full: dropped a message on %s", subject)
        except nats.errors.ConnectionClosedError as exc:
            raise BusClosedError("the NATS connection is closed") from exc

    async def subscribe(
        self,
        subject: str,
        handler: BusHandler,
        *,
        queue: str | None = None,
        concurrency: int = 1,
    ) -> NatsSubscription:
        """See :meth:`cordum.ports.bus.Bus.subscribe`.

        A queue subscription on a durable subject is a JetStream consumer; one on a
        pattern only partly durable is a ValueError (half of it would not be durable).
        """
        self._check_open()
        if not valid_subject(subject, pattern=True):
            raise ValueError(f"invalid subject pattern {subject!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if queue is not None and (not queue or any(c.isspace() for c in queue)):
            raise ValueError(f"invalid queue group name {queue!r}")
        durable = self._durable_for(subject, queue)
        sub = NatsSubscription(
            subject=subject,
            queue=queue,
            handler=handler,
            concurrency=concurrency,
            decode=self._decode_jetstream if durable else self._decode_core,
            forget=self._forget,
            durable=durable,
            keepalive=self._durability.ack_wait / 3 if self._durability else None,
            pending_limit=self._pending_limit,
        )
        try:
            if durable is None:
                listening = self._prefix + subject
            else:
                assert self._durability is not None
                assert queue is not None
                listening = self._durability.deliver_subject(durable)
                await self._durability.ensure_consumer(
                    self._js, durable, queue, self._prefix + subject
                )
            sub.attach(await self._nc.subscribe(listening, queue=queue or "", cb=sub.receive))
        except BaseException:
            await sub.unsubscribe()
            raise
        self._subs.append(sub)
        await self._sync()
        return sub

    async def close(self) -> None:
        """See :meth:`cordum.ports.bus.Bus.close`: subscriptions stop, then the connection."""
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            await sub.unsubscribe()
        if self._restoring is not None:
            self._restoring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restoring
        if self._delete_stream_on_close and self._durability is not None:
            try:
                await self._js.delete_stream(self._durability.stream)
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("could not delete stream %s: %s", self._durability.stream, exc)
        await self._sync()  # acks and answers the handlers sent
        await self._nc.close()

    # --- beyond the port ------------------------------------------------------------------

    async def request(
        self, subject: str, data: dict[str, Any], timeout: float = 5.0
    ) -> dict[str, Any]:
        """Publish ``data`` and wait for the first answer (a JSON dict).

        TimeoutError when none comes in ``timeout`` seconds, or nobody subscribes.
        Durable subjects are refused: their stream would answer with a storage receipt.
        """
        self._check_open()
        if not valid_subject(subject):
            raise ValueError(f"invalid subject {subject!r}")
        if self._durability is not None and self._durability.touches(subject):
            raise ValueError(f"no request/reply on durable subject {subject!r}")
        payload = await self._codec.encode(subject, data)
        try:
            answer = await self._nc.request(self._prefix + subject, payload, timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise TimeoutError(f"nobody answers requests on {subject}") from exc
        except nats.errors.TimeoutError as exc:
            raise TimeoutError(f"no answer on {subject} within {timeout}s") from exc
        decoded = await _JSON.decode(subject, answer.data)
        if decoded is None:
            raise ValueError(f"the answer on {subject} is not a JSON object")
        return decoded

    # --- internals ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosedError("the bus is closed")

    def _durable_for(self, subject: str, queue: str | None) -> str | None:
        """The consumer name for a queue subscription on a durable subject, else None."""
        if queue is None or self._durability is None or not self._durability.touches(subject):
            return None
        if not self._durability.covers(subject):
            raise ValueError(
                f"queue subscription on {subject!r} is only partly durable "
                f"(durable: {', '.join(self._durability.subjects)}): subscribe to each part"
            )
        return durable_name(queue, subject)

    def _wire_durable_subjects(self) -> list[str]:
        assert self._durability is not None
        return [self._prefix + pattern for pattern in self._durability.subjects]

    def _forget(self, sub: NatsSubscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    async def _decode_core(self, msg: Any) -> Message | None:
        return await self._decode(msg, msg.reply or None)

    async def _decode_jetstream(self, msg: Any) -> Message | None:
        return await self._decode(msg, None)  # its reply subject is the ack, not a requester

    async def _decode(self, msg: Any, reply: str | None) -> Message | None:
        subject = str(msg.subject).removeprefix(self._prefix)
        try:
            data = await self._codec.decode(subject, msg.data)
        except Exception as exc:
            if is_outage(exc):  # e.g. a result's output is in a Redis that is restarting
                log.warning("cannot decode a message on %s now: %s", subject, exc)
                raise DecodeLaterError(subject) from exc
            log.warning("dropped a message on %s: it does not decode", subject, exc_info=True)
            return None
        if data is None:
            log.warning("dropped a malformed message on %s", subject)
            return None
        return Message(subject, data, reply)

    async def _sync(self) -> None:
        """One round trip, so the server has what we sent (subscriptions, acks, answers)."""
        if self._nc.is_connected:
            try:
                await self._nc.flush(timeout=5)
            except nats.errors.Error as exc:
                log.warning("NATS flush failed: %s", exc)

    async def _on_error(self, exc: Exception) -> None:
        log.warning("NATS: %s", exc)

    async def _on_disconnected(self) -> None:
        if not self._closed:
            log.warning("NATS connection lost; reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("NATS reconnected to %s", self._nc.connected_url.netloc)
        if self._durability is not None and not self._closed:
            if self._restoring is not None:
                self._restoring.cancel()
            self._restoring = asyncio.get_running_loop().create_task(self._restore())

    async def _restore(self) -> None:
        """Re-create what a restarted server may have lost: the stream, our consumers.

        Both are idempotent; on a server that kept its state they change nothing. nats-py
        re-sends the subscriptions themselves, so delivery resumes once these exist.
        """
        assert self._durability is not None
        wait = self._reconnect_wait
        while True:
            try:
                await self._durability.ensure_stream(self._js, self._wire_durable_subjects())
                for sub in list(self._subs):
                    if sub.durable is not None and sub.queue is not None:
                        await self._durability.ensure_consumer(
                            self._js, sub.durable, sub.queue, self._prefix + sub.subject
                        )
                return
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("restoring JetStream after a reconnect: %s; retrying", exc)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 10.0)
