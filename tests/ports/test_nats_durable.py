"""What the NATS bus adds beyond the Bus contract: JetStream durability, request/reply, the
wire codec and subject prefix, and surviving a server restart.

Pinned here: a queue group's messages on a durable subject wait on the server while the
group has no member and go to the next member (but nothing from before the group first
subscribed); a member that dies holding a message has it redelivered to another member
after ``ack_wait``; members of a group split the messages, each handled and acked once;
request/reply round trips (and times out without a responder); undecodable payloads are
logged and dropped without stopping the subscription; codecs see subjects without the
prefix; after the server restarts, with or without its JetStream state, core and durable
subscriptions receive again.

Each test has its own subject prefix, hence its own stream, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import nats
import pytest
from nats.js.errors import NotFoundError

from cordum.ports.bus import Message
from cordum.ports.nats_bus import JsonCodec, NatsBus
from cordum.ports.nats_jetstream import durable_name, stream_name
from tests import backing

DURABLE = ("dur.>",)
TIMEOUT = 5.0

OpenBus = Callable[..., Awaitable[NatsBus]]


class Inbox:
    """A handler recording what it gets, with a wait for a condition on it."""

    def __init__(self, on_message: Callable[[Message], Awaitable[None]] | None = None) -> None:
        self.messages: list[Message] = []
        self._changed = asyncio.Event()
        self._on_message = on_message

    async def handler(self, message: Message) -> None:
        self.messages.append(message)
        self._changed.set()
        if self._on_message is not None:
            await self._on_message(message)

    def numbers(self) -> list[int]:
        return [m.data["n"] for m in self.messages]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async def wait() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)


@pytest.fixture
def nats_url() -> str:
    return backing.nats().require()


@pytest.fixture
async def namespace(nats_url: str) -> AsyncIterator[str]:
    """A subject prefix of the test's own; its stream is deleted afterwards."""
    prefix = backing.unique_prefix("dur")
    yield prefix
    nc = await nats.connect(nats_url)
    try:
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_stream(stream_name("CORDUM", prefix))
    finally:
        await nc.close()


@pytest.fixture
async def open_bus(nats_url: str, namespace: str) -> AsyncIterator[OpenBus]:
    """Opens buses in the test's namespace (``dur.>`` durable unless told); closes them."""
    opened: list[NatsBus] = []

    async def open_one(**options: Any) -> NatsBus:
        options.setdefault("durable_subjects", DURABLE)
        options.setdefault("url", nats_url)
        bus = await NatsBus.connect(subject_prefix=namespace, **options)
        opened.append(bus)
        return bus

    yield open_one
    for bus in opened:
        await bus.close()


async def consumer_state(nats_url: str, namespace: str, queue: str, subject: str) -> Any:
    """The server's view of a queue group's consumer (acks pending, redeliveries)."""
    nc = await nats.connect(nats_url)
    try:
        stream = stream_name("CORDUM", namespace)
        return await nc.jetstream().consumer_info(stream, durable_name(queue, subject))
    finally:
        await nc.close()


# --- durable queue groups ------------------------------------------------------------------


@pytest.mark.anyio
async def test_messages_wait_while_the_queue_group_has_no_member(open_bus: OpenBus):
    publisher = await open_bus()
    await publisher.publish("dur.jobs", {"n": -1})  # before the group ever subscribed
    first = await open_bus()
    inbox = Inbox()
    subscription = await first.subscribe("dur.jobs", inbox.handler, queue="workers")
    await publisher.publish("dur.jobs", {"n": 0})
    await inbox.wait_for(lambda: len(inbox.messages) >= 1)
    await subscription.unsubscribe()
    await first.close()

    for n in (1, 2, 3):
        await publisher.publish("dur.jobs", {"n": n})
    later = Inbox()
    second = await open_bus()
    await second.subscribe("dur.jobs", later.handler, queue="workers")
    await later.wait_for(lambda: len(later.messages) >= 3)
    await publisher.publish("dur.jobs", {"n": 4})
    await later.wait_for(lambda: len(later.messages) >= 4)
    assert inbox.numbers() == [0], "nothing from before the group first subscribed"
    assert later.numbers() == [1, 2, 3, 4]


@pytest.mark.anyio
async def test_a_member_dying_mid_message_has_it_redelivered_to_another(
    open_bus: OpenBus, caplog: pytest.LogCaptureFixture
):
    dying = await open_bus(ack_wait=1.0)

    async def die(message: Message) -> None:
        await dying.close()  # the connection goes before the handler returns: no ack

    doomed = Inbox(die)
    await dying.subscribe("dur.jobs", doomed.handler, queue="workers")
    publisher = await open_bus(ack_wait=1.0)
    await publisher.publish("dur.jobs", {"n": 7})
    await doomed.wait_for(lambda: len(doomed.messages) == 1)

    survivor = await open_bus(ack_wait=1.0)
    inbox = Inbox()
    with caplog.at_level(logging.WARNING):
        await survivor.subscribe("dur.jobs", inbox.handler, queue="workers")
        await inbox.wait_for(lambda: len(inbox.messages) >= 1)
    assert inbox.numbers() == [7]
    assert doomed.numbers() == [7]
    assert any("could not ack" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_members_split_the_messages_and_each_is_handled_once(
    open_bus: OpenBus, nats_url: str, namespace: str
):
    count = 100
    members = [Inbox(), Inbox()]
    for inbox, concurrency in zip(members, (1, 4), strict=True):
        bus = await open_bus()
        await bus.subscribe("dur.jobs", inbox.handler, queue="workers", concurrency=concurrency)
    publisher = await open_bus()
    for n in range(count):
        await publisher.publish("dur.jobs", {"n": n})

    async def all_in() -> None:
        while sum(len(m.messages) for m in members) < count:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(all_in(), TIMEOUT)
    assert sorted(n for m in members for n in m.numbers()) == list(range(count))
    assert all(m.messages for m in members), "both members took a share"

    async def acked() -> Any:
        while True:
            state = await consumer_state(nats_url, namespace, "workers", "dur.jobs")
            if not state.num_ack_pending:
                return state
            await asyncio.sleep(0.05)

    state = await asyncio.wait_for(acked(), TIMEOUT)
    assert state.num_redelivered == 0
    assert state.delivered.consumer_seq == count


@pytest.mark.anyio
async def test_a_leaving_member_hands_its_queued_messages_to_another_at_once(
    open_bus: OpenBus,
):
    release = asyncio.Event()

    async def hold(message: Message) -> None:
        await release.wait()

    leaving, staying = Inbox(hold), Inbox()
    first = await open_bus()  # ack_wait 30 s: a handover within TIMEOUT is no redelivery
    subscription = await first.subscribe("dur.jobs", leaving.handler, queue="workers")
    for n in range(5):
        await first.publish("dur.jobs", {"n": n})
    await leaving.wait_for(lambda: len(leaving.messages) == 1)
    second = await open_bus()
    await second.subscribe("dur.jobs", staying.handler, queue="workers")
    leave = asyncio.ensure_future(subscription.unsubscribe())
    await staying.wait_for(lambda: len(staying.messages) >= 4)
    assert not leave.done(), "unsubscribe waits for the running handler"
    release.set()
    await asyncio.wait_for(leave, TIMEOUT)
    assert leaving.numbers() == [0]
    assert staying.numbers() == [1, 2, 3, 4]


@pytest.mark.anyio
async def test_a_live_member_keeps_a_message_longer_than_ack_wait(
    open_bus: OpenBus, nats_url: str, namespace: str
):
    slow, other = Inbox(lambda _: asyncio.sleep(2.5)), Inbox()
    await (await open_bus(ack_wait=1.0)).subscribe("dur.jobs", slow.handler, queue="workers")
    publisher = await open_bus(ack_wait=1.0)
    await publisher.publish("dur.jobs", {"n": 1})
    await slow.wait_for(lambda: len(slow.messages) == 1)
    await (await open_bus(ack_wait=1.0)).subscribe("dur.jobs", other.handler, queue="workers")

    async def acked() -> Any:
        while True:
            state = await consumer_state(nats_url, namespace, "workers", "dur.jobs")
            if not state.num_ack_pending:
                return state
            await asyncio.sleep(0.1)

    state = await asyncio.wait_for(acked(), TIMEOUT)
    assert state.num_redelivered == 0, "progress acks kept the message with its member"
    assert other.messages == []


@pytest.mark.anyio
async def test_plain_subscribers_of_a_durable_subject_get_every_message(open_bus: OpenBus):
    bus = await open_bus()
    plain, grouped = Inbox(), Inbox()
    await bus.subscribe("dur.*", plain.handler)
    await bus.subscribe("dur.*", grouped.handler, queue="workers")
    for n in range(5):
        await bus.publish("dur.x", {"n": n})
    await plain.wait_for(lambda: len(plain.messages) >= 5)
    await grouped.wait_for(lambda: len(grouped.messages) >= 5)
    assert plain.numbers() == grouped.numbers() == list(range(5))


@pytest.mark.anyio
async def test_a_queue_pattern_only_partly_durable_is_refused(open_bus: OpenBus):
    bus = await open_bus()
    with pytest.raises(ValueError, match="partly durable"):
        await bus.subscribe(">", Inbox().handler, queue="workers")
    await bus.subscribe(">", Inbox().handler)  # a plain subscription may span both


# --- request/reply -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_request_reply_round_trips_between_processes(open_bus: OpenBus):
    server, client = await open_bus(), await open_bus()
    seen: list[Message] = []

    async def echo(message: Message) -> None:
        seen.append(message)
        assert message.reply is not None
        await server.publish(message.reply, {"echo": message.data})

    await server.subscribe("svc.echo", echo, queue="svc")
    answer = await client.request("svc.echo", {"x": 1, "text": "ünï"}, timeout=TIMEOUT)
    assert answer == {"echo": {"x": 1, "text": "ünï"}}
    assert seen[0].subject == "svc.echo"

    plain = Inbox()
    await server.subscribe("svc.note", plain.handler)
    await client.publish("svc.note", {"n": 1})
    await plain.wait_for(lambda: len(plain.messages) == 1)
    assert plain.messages[0].reply is None


@pytest.mark.anyio
async def test_a_request_nobody_answers_times_out(open_bus: OpenBus):
    bus = await open_bus()
    with pytest.raises(TimeoutError):
        await bus.request("svc.nobody", {}, timeout=0.5)

    async def silent(message: Message) -> None:
        return None

    await bus.subscribe("svc.silent", silent)
    with pytest.raises(TimeoutError):
        await bus.request("svc.silent", {}, timeout=0.3)


@pytest.mark.anyio
async def test_requests_on_durable_subjects_are_refused(open_bus: OpenBus):
    bus = await open_bus()
    with pytest.raises(ValueError, match="durable"):
        await bus.request("dur.x", {}, timeout=0.5)


# --- the wire ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("queue", [None, "workers"], ids=["core", "jetstream"])
async def test_undecodable_payloads_are_logged_and_dropped(
    open_bus: OpenBus,
    nats_url: str,
    namespace: str,
    queue: str | None,
    caplog: pytest.LogCaptureFixture,
):
    bus = await open_bus()
    inbox = Inbox()
    await bus.subscribe("dur.raw", inbox.handler, queue=queue)
    raw = await nats.connect(nats_url)
    try:
        with caplog.at_level(logging.WARNING):
            for payload in (b"not json", b"[1, 2]", b"\xff\xfe"):
                await raw.publish(f"{namespace}.dur.raw", payload)
            await raw.flush()
            await bus.publish("dur.raw", {"n": 1})
            await inbox.wait_for(lambda: len(inbox.messages) >= 1)
    finally:
        await raw.close()
    assert inbox.numbers() == [1]
    assert sum("dropped" in r.getMessage() for r in caplog.records) == 3


@pytest.mark.anyio
async def test_a_core_subscriber_too_far_behind_drops_and_says_so(
    open_bus: OpenBus, caplog: pytest.LogCaptureFixture
):
    release = asyncio.Event()

    async def hold(message: Message) -> None:
        await release.wait()

    bus = await open_bus(pending_limit=3)
    inbox = Inbox(hold)
    await bus.subscribe("core.x", inbox.handler)
    with caplog.at_level(logging.WARNING):
        await bus.publish("core.x", {"n": 0})
        await inbox.wait_for(lambda: len(inbox.messages) == 1)
        for n in range(1, 10):
            await bus.publish("core.x", {"n": n})
        marker = Inbox()
        await bus.subscribe("core.marker", marker.handler)
        await bus.publish("core.marker", {"n": -1})
        await marker.wait_for(lambda: len(marker.messages) == 1)  # the rest has arrived too
    release.set()
    await inbox.wait_for(lambda: len(inbox.messages) == 4)
    assert inbox.numbers() == [0, 1, 2, 3], "one running, three buffered, the rest dropped"
    assert any("too slow" in r.getMessage() for r in caplog.records)


class RecordingCodec(JsonCodec):
    """JSON, noting the subjects it is asked about."""

    def __init__(self) -> None:
        self.subjects: list[str] = []

    async def encode(self, subject: str, data: dict[str, Any]) -> bytes:
        self.subjects.append(subject)
        return await super().encode(subject, {**data, "via": "codec"})

    async def decode(self, subject: str, payload: bytes) -> dict[str, Any] | None:
        self.subjects.append(subject)
        return await super().decode(subject, payload)


@pytest.mark.anyio
async def test_the_codec_sees_subjects_without_the_prefix(
    open_bus: OpenBus, nats_url: str, namespace: str
):
    codec = RecordingCodec()
    bus = await open_bus(codec=codec)
    inbox = Inbox()
    await bus.subscribe("job.hello.*", inbox.handler)
    raw = await nats.connect(nats_url)
    try:
        wire = await raw.subscribe(f"{namespace}.job.>")
        await raw.flush()
        await bus.publish("job.hello.greet", {"n": 1})
        on_wire = await wire.next_msg(timeout=TIMEOUT)
    finally:
        await raw.close()
    await inbox.wait_for(lambda: len(inbox.messages) >= 1)
    assert on_wire.subject == f"{namespace}.job.hello.greet"
    assert inbox.messages == [Message("job.hello.greet", {"n": 1, "via": "codec"})]
    assert codec.subjects == ["job.hello.greet", "job.hello.greet"]


# --- server restarts -----------------------------------------------------------------------


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


class PrivateServer:
    """A nats-server of the test's own, to stop and start again on the same port."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = backing.free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._dirs: list[tempfile.TemporaryDirectory[str]] = []

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, *, fresh_store: bool = False) -> None:
        if fresh_store or not self._dirs:
            self._dirs.append(tempfile.TemporaryDirectory())
        command = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js"]
        command += ["-sd", self._dirs[-1].name]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not _listening(self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"nats-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def cleanup(self) -> None:
        self.stop()
        for directory in self._dirs:
            directory.cleanup()


@pytest.fixture
def private_server() -> Iterator[PrivateServer]:
    binary = shutil.which("nats-server")
    if binary is None:
        pytest.skip("no nats-server on PATH to restart")
    server = PrivateServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.mark.anyio
@pytest.mark.parametrize("fresh_store", [False, True], ids=["kept-state", "lost-state"])
async def test_subscriptions_receive_again_after_the_server_restarts(
    private_server: PrivateServer, fresh_store: bool
):
    bus = await NatsBus.connect(
        private_server.url, subject_prefix="t", durable_subjects=DURABLE, reconnect_wait=0.1
    )
    try:
        core, durable = Inbox(), Inbox()
        await bus.subscribe("core.x", core.handler)
        await bus.subscribe("dur.x", durable.handler, queue="workers")
        await bus.publish("core.x", {"n": 0})
        await bus.publish("dur.x", {"n": 0})
        await core.wait_for(lambda: len(core.messages) == 1)
        await durable.wait_for(lambda: len(durable.messages) == 1)

        private_server.stop()
        private_server.start(fresh_store=fresh_store)

        async def resend_until_both_arrive() -> None:
            n = 1
            while not (len(core.messages) > 1 and len(durable.messages) > 1):
                await bus.publish("core.x", {"n": n})
                await bus.publish("dur.x", {"n": n})
                n += 1
                await asyncio.sleep(0.1)

        await asyncio.wait_for(resend_until_both_arrive(), 15)
    finally:
        await bus.close()
