"""A steady load of agents submitting jobs, each with its own idempotency key.

:class:`Load` runs in a thread of its own (its own event loop), so the test can kill and
restart processes - blocking calls - while jobs keep arriving. Every ``1/rate`` seconds
a new key is submitted; gateways are taken in turn. A connection error, a timeout or a
5xx is what a real agent retries: the same body and key, against the other gateway,
after a short backoff, until some gateway answers. Anything else (200, 403, 409...) is
the key's answer. Every attempt is recorded, so a test can ask what the gateways said
during a fault window.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.pipeline.harness import AUTH

RETRY_START_S = 0.05
RETRY_MAX_S = 0.5
REQUEST_TIMEOUT_S = 5.0


@dataclass
class Outcome:
    """What happened to one key."""

    key: str
    topic: str
    first_sent: float
    status: int | None = None
    """The answer's status (None: never answered)."""
    job_id: str | None = None
    body: dict[str, Any] | None = None
    answered_at: float | None = None
    answered_by: str | None = None
    attempts: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    replayed: bool = False
    """The answer was the replay of an earlier one (``Idempotent-Replayed``)."""


@dataclass(frozen=True)
class Attempt:
    """One request and what came of it (a status, or an exception's name)."""

    at: float
    url: str
    key: str
    result: str
    answered: bool
    """Whether this was the key's answer (else the agent retried)."""


class Load:
    """Submit ``rate`` jobs a second to ``urls`` in turn until :meth:`stop`.

    Every ``deny_every``-th key asks for ``<topic_root>.forbidden`` (denied at gate A);
    the others ask for ``<topic_root>.run``.
    """

    def __init__(
        self, urls: list[str], topic_root: str, *, rate: float, deny_every: int = 10
    ) -> None:
        self.urls = urls
        self.topic_root = topic_root
        self.rate = rate
        self.deny_every = deny_every
        self.outcomes: dict[str, Outcome] = {}
        self.attempts: list[Attempt] = []
        self._stopping = threading.Event()
        self._drain_s = 0.0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: list[httpx.AsyncClient] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._bursts = 0

    # --- control from the test's thread -----------------------------------------------------

    def start(self) -> None:
        """Start submitting (returns at once)."""
        self._thread = threading.Thread(target=self._run, name=f"load-{self.topic_root}")
        self._thread.start()
        self._started.wait(10)

    def stop(self, drain_s: float = 30.0) -> None:
        """Stop taking new keys; wait up to ``drain_s`` for every key to get its answer.

        Keys still unanswered then stay unanswered (the test reports them).
        """
        self._drain_s = drain_s
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(drain_s + 15)
        if self._error is not None:
            raise self._error

    def burst(self, count: int, *, work_s: float, timeout: float = 20) -> None:
        """Submit ``count`` more (allowed) jobs at once, whose handlers take ``work_s``
        seconds each, on top of the steady load; return once every one is answered."""
        if self._loop is None:
            raise RuntimeError("start() the load first")
        self._bursts += 1
        keys = [f"{self.topic_root}-burst{self._bursts}-{n:03d}" for n in range(count)]
        extra = {"work_s": work_s}
        burst = asyncio.run_coroutine_threadsafe(self._all(keys, extra), self._loop)
        burst.result(timeout)

    def summary(self) -> str:
        """Counts for messages: keys by answer, and attempts that failed, by cause."""
        statuses = Counter(str(o.status) for o in list(self.outcomes.values()))
        failed = Counter(a.result for a in list(self.attempts) if not a.answered)
        return f"keys by answer {dict(statuses)}; retried attempts {dict(failed)}"

    # --- the load's own thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by stop()
            self._error = exc
        finally:
            self._started.set()

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        self._clients = [
            httpx.AsyncClient(base_url=url, headers=AUTH, timeout=REQUEST_TIMEOUT_S, limits=limits)
            for url in self.urls
        ]
        try:
            loop = self._loop = asyncio.get_running_loop()
            self._started.set()
            due = loop.time()
            number = 0
            while not self._stopping.is_set():
                number += 1
                denied = bool(self.deny_every) and number % self.deny_every == 0
                key = f"{self.topic_root}-{number:05d}"
                self._spawn(self._submit(key, "forbidden" if denied else "run", number))
                due += 1 / self.rate
                await asyncio.sleep(max(0.0, due - loop.time()))
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=self._drain_s)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for client in self._clients:
                await client.aclose()

    def _spawn(self, submission: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(submission)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _all(self, keys: list[str], extra: dict[str, Any]) -> None:
        tasks = [self._spawn(self._submit(key, "run", n, extra)) for n, key in enumerate(keys)]
        await asyncio.gather(*tasks)

    async def _submit(
        self, key: str, kind: str, turn: int, extra: dict[str, Any] | None = None
    ) -> None:
        """Submit ``key`` until a gateway answers, starting with gateway ``turn``."""
        topic = f"{self.topic_root}.{kind}"
        body = {"topic": topic, "context": {"key": key, **(extra or {})}, "idempotency_key": key}
        outcome = self.outcomes[key] = Outcome(key, topic, time.time())
        clients = self._clients
        turn %= len(clients)
        wait = RETRY_START_S
        while True:
            client = clients[turn]
            outcome.attempts += 1
            try:
                response = await client.post("/api/v1/jobs", json=body)
            except httpx.HTTPError as exc:
                result = type(exc).__name__
            else:
                result = str(response.status_code)
                if response.status_code < 500:
                    self.attempts.append(
                        Attempt(time.time(), str(client.base_url), key, result, True)
                    )
                    self._answered(outcome, response, str(client.base_url))
                    return
            self.attempts.append(Attempt(time.time(), str(client.base_url), key, result, False))
            outcome.failures[result] += 1
            turn = (turn + 1) % len(clients)  # what an agent does: try another gateway
            await asyncio.sleep(wait)
            wait = min(RETRY_MAX_S, wait * 2)

    @staticmethod
    def _answered(outcome: Outcome, response: httpx.Response, url: str) -> None:
        outcome.answered_at = time.time()
        outcome.answered_by = url
        outcome.status = response.status_code
        outcome.replayed = response.headers.get("Idempotent-Replayed") == "true"
        try:
            data = response.json()
        except ValueError:
            data = {"text": response.text}
        outcome.body = data
        job_id = data.get("job_id") or (data.get("rejection") or {}).get("job_id")
        outcome.job_id = None if job_id is None else str(job_id)
