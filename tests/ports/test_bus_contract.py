"""The Bus contract (``cordum.ports.bus``), run against every registered adapter.

Pinned here: a publish reaches every plain subscription whose pattern matches (exact,
``*``, ``>``) and no other; a queue group gets each message once, on exactly one member,
and distinct groups each get it; each subscription sees messages in publish order; a
handler that raises is logged and delivery goes on; ``concurrency`` N runs up to N
handlers at once (started in publish order), 1 (the default) exactly one; unsubscribe
stops delivery (also from inside the handler) and waits for running handlers; a closed
bus refuses to publish; payloads arrive equal. Also a property test of
``subject_matches`` against a reference matcher written here.

Negative checks ("nothing else arrived") never sleep: after the messages under test, each
subscription is sent a flush message it matches, and since a subscription sees messages
in publish order, once the flush is in, anything wrongly routed would be too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cordum.models.subjects import namespace_prefix, subject_matches, valid_subject
from cordum.ports.bus import Bus, Message
from tests.ports.adapters import BusAdapter

TIMEOUT = 2.0


async def until(changed: asyncio.Event, predicate: Callable[[], bool]) -> None:
    """Wait (at most TIMEOUT) until ``predicate`` holds, re-checking whenever ``changed`` fires."""

    async def wait() -> None:
        while not predicate():
            changed.clear()
            await changed.wait()

    await asyncio.wait_for(wait(), TIMEOUT)


class Inbox:
    """A handler that records what it gets and lets a test wait for it."""

    def __init__(self, on_message: Callable[[Message], Any] | None = None) -> None:
        self.messages: list[Message] = []
        self._changed = asyncio.Event()
        self._on_message = on_message

    async def handler(self, message: Message) -> None:
        self.messages.append(message)
        self._changed.set()
        if self._on_message is not None:
            result = self._on_message(message)
            if asyncio.iscoroutine(result):
                await result

    def data(self, *, flushes: bool = False) -> list[dict[str, Any]]:
        """Payloads received, without flush messages unless asked."""
        return [m.data for m in self.messages if flushes or "flush" not in m.data]

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        await until(self._changed, predicate)

    async def wait_for_count(self, count: int) -> None:
        await self.wait_until(lambda: len(self.data()) >= count)


async def group_until(members: list[Inbox], predicate: Callable[[], bool]) -> None:
    """Wait (at most TIMEOUT) until ``predicate`` holds, re-checking whenever any member
    of a queue group gets a message (the next one may land on any member)."""

    async def wait() -> None:
        while not predicate():
            for member in members:
                member._changed.clear()
            waiters = [asyncio.ensure_future(m._changed.wait()) for m in members]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    await asyncio.wait_for(wait(), TIMEOUT)


def concrete(pattern: str, filler: str = "f") -> str:
    """A subject matching ``pattern`` (wildcards replaced by ``filler``)."""
    return ".".join(filler if token in ("*", ">") else token for token in pattern.split("."))


async def flush(bus: Bus, inboxes: dict[str, Inbox]) -> None:
    """Send each inbox (keyed by its pattern) a flush it matches and wait for all of them."""
    for pattern in inboxes:
        await bus.publish(concrete(pattern), {"flush": pattern})
    for pattern, inbox in inboxes.items():
        await inbox.wait_until(lambda p=pattern, i=inbox: {"flush": p} in i.data(flushes=True))


async def flush_group(bus: Bus, subject: str, members: list[Inbox]) -> None:
    """Publish flushes on ``subject`` until every member of a queue group has had one."""
    for n in range(1000):
        if all(any("flush" in d for d in m.data(flushes=True)) for m in members):
            return
        before = sum(len(m.messages) for m in members)
        await bus.publish(subject, {"flush": n})
        await group_until(members, lambda b=before: sum(len(m.messages) for m in members) > b)
    raise AssertionError("some group member never got a flush")


# --- routing -------------------------------------------------------------------------------

# Literal expectations, independent of subject_matches: pattern -> subjects it receives.
ROUTES: dict[str, list[str]] = {
    "job.hello.greet": ["job.hello.greet"],
    "job.hello.*": ["job.hello.greet"],
    "job.*.greet": ["job.hello.greet"],
    "*.hello.greet": ["job.hello.greet"],
    "job.>": ["job.hello.greet", "job.hello", "job.bye.now"],
    ">": ["job.hello.greet", "job.hello", "job.bye.now", "other"],
    "*": ["other"],
    "job.hello": ["job.hello"],
    "job.bye.*": ["job.bye.now"],
    "job.hello.greet.extra": [],
    "job.hello.*.x": [],
    "job.*": ["job.hello"],
    "*.*.*": ["job.hello.greet", "job.bye.now"],
}
PUBLISHED = ["job.hello.greet", "job.hello", "job.bye.now", "other"]


@pytest.mark.anyio
async def test_publish_reaches_exactly_the_matching_plain_subscribers(bus):
    inboxes = {pattern: Inbox() for pattern in ROUTES}
    for pattern, inbox in inboxes.items():
        sub = await bus.subscribe(pattern, inbox.handler)
        assert sub.subject == pattern
        assert sub.queue is None
    for n, subject in enumerate(PUBLISHED):
        await bus.publish(subject, {"n": n, "subject": subject})
    await flush(bus, inboxes)
    for pattern, inbox in inboxes.items():
        received = [(m.subject, m.data["subject"]) for m in inbox.messages if "n" in m.data]
        assert received == [(s, s) for s in ROUTES[pattern]], pattern


@pytest.mark.anyio
async def test_payloads_arrive_equal(bus):
    payload = {
        "job_id": "abc",
        "n": 3,
        "big": 2**53 + 1,
        "x": 1.25,
        "ok": True,
        "no": False,
        "none": None,
        "text": 'ünïcødé ✓ "quoted"\nline',
        "list": [1, "two", [3.5, None], {"k": "v"}],
        "nested": {"a": {"b": {"c": []}}, "empty": {}},
    }
    inbox = Inbox()
    await bus.subscribe("job.payload.*", inbox.handler)
    await bus.publish("job.payload.one", payload)
    await bus.publish("job.payload.two", {})
    await inbox.wait_until(lambda: len(inbox.messages) >= 2)
    first, second = inbox.messages
    assert first == Message("job.payload.one", payload)
    assert second == Message("job.payload.two", {})


# --- queue groups ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_queue_groups_get_each_message_once_per_group(bus):
    count = 30
    plain = Inbox()
    g1 = [Inbox() for _ in range(3)]
    g2 = [Inbox() for _ in range(2)]
    other_subject = Inbox()
    await bus.subscribe("work.*", plain.handler)
    for inbox in g1:
        sub = await bus.subscribe("work.*", inbox.handler, queue="g1")
        assert sub.queue == "g1"
    for inbox in g2:
        await bus.subscribe("work.*", inbox.handler, queue="g2")
    await bus.subscribe("rest.*", other_subject.handler, queue="g1")

    for n in range(count):
        await bus.publish("work.item", {"n": n})

    def total(group: list[Inbox]) -> int:
        return sum(len(i.data()) for i in group)

    await plain.wait_for_count(count)
    for group in (g1, g2):
        await group_until(group, lambda g=group: total(g) >= count)
    await flush(bus, {"work.*": plain})
    await flush_group(bus, "work.flush", g1)
    await flush_group(bus, "work.flush", g2)
    assert [d["n"] for d in plain.data()] == list(range(count))
    for group in (g1, g2):
        got = sorted(d["n"] for inbox in group for d in inbox.data())
        assert got == list(range(count)), "each message goes to exactly one group member"
    await bus.publish("rest.x", {"n": -1})
    await other_subject.wait_for_count(1)
    assert other_subject.data() == [{"n": -1}]


@pytest.mark.anyio
async def test_queue_group_and_plain_subscribers_on_wildcards(bus):
    members = [Inbox() for _ in range(2)]
    for inbox in members:
        await bus.subscribe("evt.>", inbox.handler, queue="q")
    for n, subject in enumerate(["evt.a", "evt.a.b", "evt.c.d.e", "nope.a", "evt"]):
        await bus.publish(subject, {"n": n})
    await group_until(members, lambda: sum(len(m.data()) for m in members) >= 3)
    await flush_group(bus, "evt.flush", members)
    got = sorted(d["n"] for inbox in members for d in inbox.data())
    assert got == [0, 1, 2]


# --- ordering and failures -------------------------------------------------------------------


@pytest.mark.anyio
async def test_each_subscriber_sees_messages_in_publish_order(bus):
    count = 200

    async def slow(message: Message) -> None:
        if message.data["n"] % 7 == 0:
            await asyncio.sleep(0)

    fast = Inbox()
    slowed = Inbox(slow)
    members = [Inbox(slow), Inbox()]
    await bus.subscribe("order.*", fast.handler)
    await bus.subscribe("order.>", slowed.handler)
    for inbox in members:
        await bus.subscribe("order.*", inbox.handler, queue="workers")
    for n in range(count):
        await bus.publish(f"order.s{n % 3}", {"n": n})
    await fast.wait_for_count(count)
    await slowed.wait_for_count(count)
    await group_until(members, lambda: sum(len(m.data()) for m in members) >= count)
    assert [d["n"] for d in fast.data()] == list(range(count))
    assert [d["n"] for d in slowed.data()] == list(range(count))
    for inbox in members:
        seen = [d["n"] for d in inbox.data()]
        assert seen == sorted(seen)


@pytest.mark.anyio
async def test_a_handler_that_raises_is_logged_and_delivery_goes_on(bus, caplog):
    loop_errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    failure = ValueError("handler failed on purpose")

    def explode(message: Message) -> None:
        if message.data["n"] in (1, 3):
            raise failure

    failing = Inbox(explode)
    bystander = Inbox()
    try:
        with caplog.at_level(logging.WARNING):
            await bus.subscribe("fail.*", failing.handler)
            await bus.subscribe("fail.*", bystander.handler)
            for n in range(6):
                await bus.publish("fail.x", {"n": n})  # never raises for a handler's error
            await failing.wait_for_count(6)
            await bystander.wait_for_count(6)
            await flush(bus, {"fail.*": failing})
    finally:
        loop.set_exception_handler(previous_handler)
    assert [d["n"] for d in failing.data()] == list(range(6))
    assert [d["n"] for d in bystander.data()] == list(range(6))
    assert loop_errors == [], "a handler's exception escaped to the event loop"
    logged = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and (
            (r.exc_info is not None and r.exc_info[1] is failure)
            or "handler failed on purpose" in r.getMessage()
        )
    ]
    assert len(logged) == 2, [r.getMessage() for r in caplog.records]


# --- concurrency ---------------------------------------------------------------------------


class Overlap:
    """A handler that counts how many of its calls run at once, held until released."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: list[int] = []
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()
        self._changed = asyncio.Event()

    async def handler(self, message: Message) -> None:
        self.started.append(message.data["n"])
        self.running += 1
        self.most = max(self.most, self.running)
        self._changed.set()
        try:
            await self.release.wait()
            await asyncio.sleep(0)
        finally:
            self.running -= 1
            self.finished.append(message.data["n"])
            self._changed.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        await until(self._changed, predicate)


@pytest.mark.anyio
@pytest.mark.parametrize("queue", [None, "workers"])
async def test_concurrency_runs_up_to_that_many_handlers_at_once(bus, queue):
    overlap = Overlap()
    await bus.subscribe("conc.*", overlap.handler, queue=queue, concurrency=4)
    for n in range(10):
        await bus.publish("conc.x", {"n": n})
    await overlap.wait_until(lambda: overlap.running == 4)
    for _ in range(5):
        await asyncio.sleep(0)  # a fifth handler, if the bus wrongly started one, would be in
    assert overlap.running == 4
    overlap.release.set()
    await overlap.wait_until(lambda: len(overlap.finished) == 10)
    assert overlap.most == 4
    assert overlap.started == list(range(10)), "handlers start in publish order"


@pytest.mark.anyio
async def test_by_default_a_subscription_handles_one_message_at_a_time(bus):
    overlap = Overlap()
    overlap.release.set()
    await bus.subscribe("serial.*", overlap.handler)
    for n in range(20):
        await bus.publish("serial.x", {"n": n})
    await overlap.wait_until(lambda: len(overlap.finished) == 20)
    assert overlap.most == 1
    assert overlap.finished == list(range(20))


@pytest.mark.anyio
async def test_unsubscribe_waits_for_every_concurrent_handler(bus):
    overlap = Overlap()
    subscription = await bus.subscribe("uconc.*", overlap.handler, concurrency=3)
    for n in range(3):
        await bus.publish("uconc.x", {"n": n})
    await overlap.wait_until(lambda: overlap.running == 3)
    leaving = asyncio.ensure_future(subscription.unsubscribe())
    await asyncio.sleep(0)
    assert not leaving.done(), "unsubscribe returned while handlers were still running"
    overlap.release.set()
    await asyncio.wait_for(leaving, TIMEOUT)
    assert sorted(overlap.finished) == [0, 1, 2]
    await bus.publish("uconc.x", {"n": 3})
    probe = Inbox()
    await bus.subscribe("uconc.*", probe.handler)
    await flush(bus, {"uconc.*": probe})
    assert sorted(overlap.started) == [0, 1, 2]


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [0, -1])
async def test_a_concurrency_below_one_is_refused(bus, concurrency):
    with pytest.raises(ValueError, match="concurrency"):
        await bus.subscribe("bad.*", Inbox().handler, concurrency=concurrency)


# --- unsubscribe and close -------------------------------------------------------------------


@pytest.mark.anyio
async def test_unsubscribe_stops_delivery(bus):
    leaving = Inbox()
    staying = Inbox()
    leaving_sub = await bus.subscribe("unsub.*", leaving.handler)
    await bus.subscribe("unsub.*", staying.handler)
    await bus.publish("unsub.a", {"n": 0})
    await leaving.wait_for_count(1)
    await leaving_sub.unsubscribe()
    for n in range(1, 5):
        await bus.publish("unsub.a", {"n": n})
    await staying.wait_for_count(5)
    await flush(bus, {"unsub.*": staying})
    assert leaving.data() == [{"n": 0}]
    assert [d["n"] for d in staying.data()] == list(range(5))


@pytest.mark.anyio
async def test_an_unsubscribed_group_member_gets_nothing_more(bus):
    gone = Inbox()
    kept = Inbox()
    gone_sub = await bus.subscribe("grp.*", gone.handler, queue="q")
    await bus.subscribe("grp.*", kept.handler, queue="q")
    await gone_sub.unsubscribe()
    for n in range(10):
        await bus.publish("grp.x", {"n": n})
    await kept.wait_for_count(10)
    await flush_group(bus, "grp.flush", [kept])
    assert gone.data() == []
    assert [d["n"] for d in kept.data()] == list(range(10))


@pytest.mark.anyio
async def test_a_handler_can_unsubscribe_its_own_subscription(bus):
    subscription = None
    finished = asyncio.Event()

    async def one_shot(message: Message) -> None:
        assert subscription is not None
        await subscription.unsubscribe()
        finished.set()

    inbox = Inbox(one_shot)
    subscription = await bus.subscribe("once.*", inbox.handler)
    await bus.publish("once.a", {"n": 0})
    try:
        await asyncio.wait_for(finished.wait(), TIMEOUT)
    except TimeoutError:
        pytest.fail("unsubscribe() called from the subscription's own handler never returned")
    await bus.publish("once.a", {"n": 1})
    probe = Inbox()
    await bus.subscribe("once.*", probe.handler)
    await flush(bus, {"once.*": probe})
    assert inbox.data() == [{"n": 0}]


@pytest.mark.anyio
async def test_a_closed_bus_refuses_to_publish_and_delivers_nothing(bus_adapter: BusAdapter):
    bus = await bus_adapter.open()
    inbox = Inbox()
    await bus.subscribe("closing.*", inbox.handler)
    await bus.publish("closing.a", {"n": 0})
    await inbox.wait_for_count(1)
    await bus.close()
    with pytest.raises(bus_adapter.closed_error()):
        await bus.publish("closing.a", {"n": 1})
    with pytest.raises(bus_adapter.closed_error()):
        await bus.subscribe("closing.*", inbox.handler)
    assert inbox.data() == [{"n": 0}]


# --- subject matching ------------------------------------------------------------------------


def reference_match(pattern: list[str], subject: list[str]) -> bool:
    """Token-by-token NATS matching, written recursively from the definition."""
    if not pattern:
        return not subject
    head, rest = pattern[0], pattern[1:]
    if head == ">":
        return not rest and len(subject) >= 1
    if not subject:
        return False
    return (head in ("*", subject[0])) and reference_match(rest, subject[1:])


TOKENS = st.sampled_from(["a", "b", "job", "x1"])
SUBJECTS = st.lists(TOKENS, min_size=1, max_size=5)
PATTERNS = st.lists(st.one_of(TOKENS, st.just("*")), min_size=0, max_size=5).flatmap(
    lambda body: st.sampled_from([body, [*body, ">"]]).filter(bool)
)


@settings(max_examples=400, deadline=None)
@given(pattern=PATTERNS, subject=SUBJECTS)
def test_subject_matches_agrees_with_the_reference(pattern, subject):
    assert valid_subject(".".join(pattern), pattern=True)
    assert valid_subject(".".join(subject))
    assert subject_matches(".".join(pattern), ".".join(subject)) is reference_match(
        pattern, subject
    )


@settings(max_examples=200, deadline=None)
@given(subject=SUBJECTS, data=st.data())
def test_a_pattern_made_from_a_subject_matches_it(subject, data):
    # Replace some tokens with *, optionally cut the tail into >: always a match.
    pattern = [data.draw(st.sampled_from([token, "*"])) for token in subject]
    cut = data.draw(st.integers(min_value=0, max_value=len(subject) - 1))
    if data.draw(st.booleans()):
        pattern = [*pattern[:cut], ">"]
    assert subject_matches(".".join(pattern), ".".join(subject))
    assert not subject_matches(".".join(pattern), ".".join([*subject, "extra"])) or (
        pattern[-1] == ">"
    )


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("job.hello.*", "job.hello.greet", True),
        ("job.hello.*", "job.hello.a.b", False),
        ("job.hello.*", "job.hello", False),
        ("job.>", "job.hello.greet", True),
        ("job.>", "job.hello.a.b", True),
        ("job.>", "job", False),
        (">", "a", True),
        ("*", "a.b", False),
        ("a.b", "a.b", True),
        ("a.b", "a.bb", False),
    ],
)
def test_subject_matches_examples(pattern, subject, expected):
    assert subject_matches(pattern, subject) is expected


def test_a_namespace_prefix_is_a_subject_and_a_dot_or_nothing():
    assert namespace_prefix(None) == ""
    assert namespace_prefix("cordumtest-run-1") == "cordumtest-run-1."
    assert namespace_prefix("team.blue") == "team.blue."
    for bad in ("", "a b", "a.*", "a.>", "a..b"):
        with pytest.raises(ValueError, match="invalid subject prefix"):
            namespace_prefix(bad)
