"""A WorkerLink over NATS that speaks CAP, for workers of a distributed control plane.

Nothing goes through the HTTP gateway: the worker announces itself and reports on the
CAP subjects (reference section 6), so the schedulers see it as they see any CAP worker.

- ``register`` subscribes to the worker's direct subject ``worker.<id>.jobs`` and to
  ``sys.job.cancel``, then says hello (``sys.handshake``) and beats once
  (``sys.heartbeat``), both with the topics it serves.
- A job request's input is read from the Redis key its ``context_ptr`` names; then the
  job is *claimed* (``sys.job.claim``, request/reply; one request for every job that
  arrived together) and runs only if the claim succeeded. The claim is what keeps a job
  from ever running twice, so a refused claim means the job is dropped (the server
  re-drives it). A claim whose answer never came (a scheduler died after committing
  it, NATS was reconnecting) is asked again, marked ``again``, for up to
  :data:`CLAIM_RETRY_S`; the job is listed as held meanwhile, so no scheduler takes it
  for lost, and runs if a scheduler confirms it is this worker's.
- A result's output is written to ``res:<job_id>`` before the ``sys.job.result`` packet
  points at it; the link flushes, so the NATS server has the packet before ``result``
  returns (that subject is kept in a JetStream stream).
- Cancels addressed to this worker (``dispatch.assigned_worker_id``) are pushed.

NATS reconnects by itself and re-subscribes; while it cannot, calls raise
:class:`~cordum.sdk.errors.CordumUnavailable` so the worker backs off and re-registers.

``subject_prefix`` matches a control plane whose bus namespaces every subject
(``CORDUM_BUS_SUBJECT_PREFIX``, for parallel test runs on one server); production planes
use the bare CAP subjects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import secrets
import time
from collections import deque
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit

import nats.errors
import redis.asyncio as aioredis
import redis.exceptions
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from cordum.models import cap_packets as cap
from cordum.models.pipeline import JobAssignment
from cordum.models.subjects import namespace_prefix
from cordum.sdk._flush import SharedFlush
from cordum.sdk.errors import CordumAPIError, CordumUnavailable
from cordum.sdk.links import CancelListener

log = logging.getLogger(__name__)

CLAIM: Final = "sys.job.claim"
"""Request/reply: ``{worker_id, job_ids, again?}`` answered ``{claimed: [bool, ...]}``,
one answer per job in order (false: not yours)."""

CLAIM_BATCH: Final = 256
"""Jobs claimed by one request, at most: every job that arrived together, up to this."""

CLAIM_RETRY_S: Final = 30.0
"""How long a claim that got no answer is asked again before the job is given up (and,
no longer listed as held, re-driven by the server)."""

RESULT_IN_FLIGHT_S: Final = 120.0
"""How long a job stays in the heartbeat's held list after its result was published:
longer than the bus takes to hand an unacknowledged result to another scheduler."""
RESULT_TTL_S: Final = 7 * 86_400
"""How long a written result stays in Redis: a week, longer than any job timeout."""

MAX_REDIS_CONNECTIONS: Final = 16
"""Connections to Redis per worker: job input is read in batches, results are small."""

RECONNECT_WAIT_S: Final = 1
"""Seconds between NATS reconnection attempts (they go on for as long as it takes)."""

WORKER_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
"""What the control plane accepts as a worker id (it is a NATS subject token)."""

Packet: TypeAlias = Any
"""A CAP ``BusPacket`` (cap's generated protobuf modules carry no static types)."""

_NATS_FAILURES = (nats.errors.Error, OSError)
_REDIS_FAILURES = (redis.exceptions.RedisError, OSError)


def redacted(url: str) -> str:
    """``url`` without the credentials it may carry, for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def _failure(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class NatsLink:
    """A WorkerLink on NATS (CAP packets) with job input and output in Redis.

    ``nats_url`` may list several servers, comma-separated. ``timeout`` bounds connecting,
    each claim request and each confirmed publish; ``claim_retry_s`` how long a claim
    without an answer is asked again. ``subject_prefix``: see the module docstring.
    """

    def __init__(
        self,
        nats_url: str,
        redis_url: str,
        *,
        timeout: float = 10.0,
        claim_retry_s: float = CLAIM_RETRY_S,
        subject_prefix: str | None = None,
    ) -> None:
        self.servers = [url.strip() for url in nats_url.split(",") if url.strip()]
        if not self.servers:
            raise ValueError("nats_url must name at least one NATS server")
        self._prefix = namespace_prefix(subject_prefix)
        self.redis_url = redis_url
        self.timeout = timeout
        self.claim_retry_s = claim_retry_s
        self._whole_s = max(1, math.ceil(timeout))  # nats-py takes whole seconds here
        self.worker_id: str | None = None
        self._where = ",".join(redacted(url) for url in self.servers)
        self._redis = self._new_redis()
        self._nats: NatsClient | None = None
        self._flush = SharedFlush()
        """Confirms publishes on ``_nats`` (a new one comes with each new connection)."""
        self._subscriptions: list[Subscription] = []
        self._jobs: deque[bytes] = deque()
        self._cancels: list[str] = []
        self._arrived = asyncio.Event()
        self._on_cancel: CancelListener | None = None
        self._traces: dict[str, str] = {}
        """Jobs this worker claimed and has not reported yet, with their trace ids."""
        self._claiming: set[str] = set()
        """Jobs whose claim is on its way: listed as held, never claimed a second time."""
        self._closing: set[asyncio.Task[None]] = set()
        self._reported: dict[str, float] = {}
        """Jobs whose result was published, and when: still listed as held for a while."""
        self._profile: dict[str, Any] = {}
        self._active_jobs = 0

    def listen_for_cancels(self, listener: CancelListener) -> None:
        """Cancels for this worker go straight to ``listener`` as they arrive."""
        self._on_cancel = listener

    async def register(
        self,
        worker_id: str | None,
        pool: str,
        topics: list[str],
        capacity: int,
        labels: dict[str, str],
    ) -> str:
        """Subscribe, then announce the worker with a handshake and a first heartbeat.

        Checks Redis first: a worker that cannot read job input must not take jobs.
        """
        worker_id = worker_id or f"w-{secrets.token_hex(6)}"
        if not WORKER_ID.match(worker_id):
            message = f"worker_id {worker_id!r}: use 1-128 letters, digits, '-' or '_'"
            raise CordumAPIError(422, "invalid_worker", message)
        if not pool.strip():
            raise CordumAPIError(422, "invalid_worker", "pool must not be empty")
        try:
            await self._redis.ping()
        except _REDIS_FAILURES as exc:
            raise self._redis_failed(exc) from None
        client = await self._connect()
        if worker_id != self.worker_id or not self._subscriptions:
            await self._unsubscribe()
            try:
                self._subscriptions = [
                    await client.subscribe(
                        f"{self._prefix}worker.{worker_id}.jobs", cb=self._on_job
                    ),
                    await client.subscribe(self._prefix + cap.CANCEL, cb=self._on_cancel_packet),
                ]
            except _NATS_FAILURES as exc:
                raise CordumUnavailable(f"NATS at {self._where}: {_failure(exc)}") from None
        self.worker_id = worker_id
        self._profile = {
            "worker_id": worker_id,
            "pool": pool,
            "topics": list(topics),
            "max_parallel": capacity,
            "labels": dict(labels),
        }
        await self._publish(cap.HANDSHAKE, cap.handshake_packet(self._profile), confirm=False)
        await self._publish(cap.HEARTBEAT, self._heartbeat_packet(), confirm=True)
        return worker_id

    async def _connect(self) -> NatsClient:
        """The NATS connection, opened (within ``timeout``) unless it is still alive."""
        if self._nats is not None and not self._nats.is_closed:
            return self._nats
        client = NatsClient()
        try:
            await asyncio.wait_for(
                client.connect(
                    self.servers,
                    name="cordum-worker",
                    connect_timeout=self._whole_s,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=RECONNECT_WAIT_S,
                    error_cb=self._on_nats_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                ),
                self.timeout,
            )
        except (TimeoutError, *_NATS_FAILURES) as exc:
            await client.close()
            raise CordumUnavailable(f"NATS at {self._where} unreachable: {_failure(exc)}") from None
        self._nats, self._flush = client, SharedFlush()
        self._subscriptions = []
        return client

    async def _on_nats_error(self, exc: Exception) -> None:
        log.debug("NATS at %s: %s", self._where, _failure(exc))

    async def _on_disconnected(self) -> None:
        if self._nats is not None and not self._nats.is_closed:  # not our own close()
            log.warning("lost NATS at %s; reconnecting", self._where)

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS at %s", self._where)

    async def _on_job(self, message: Msg) -> None:
        self._jobs.append(message.data)
        self._arrived.set()

    async def _on_cancel_packet(self, message: Msg) -> None:
        try:
            packet = cap.parse(message.data, "job_cancel")
        except cap.PacketError as exc:
            log.warning("ignoring a malformed cancel: %s", exc)
            return
        cancel = packet.job_cancel
        if not cancel.job_id or cancel.dispatch.assigned_worker_id != self.worker_id:
            return
        self._traces.pop(cancel.job_id, None)
        if self._on_cancel is not None:
            self._on_cancel(cancel.job_id)
        else:
            self._cancels.append(cancel.job_id)
            self._arrived.set()

    def _take_cancels(self) -> list[str]:
        cancels, self._cancels = self._cancels, []
        return cancels

    async def receive(self, max_jobs: int, wait_s: float) -> list[JobAssignment | str]:
        """Up to ``max_jobs`` jobs that arrived and were claimed, plus unheard cancels."""
        if self.worker_id is None or self._nats is None:
            raise CordumUnavailable("receive() before register()")
        client = self._nats
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_s)
        items: list[JobAssignment | str] = []
        while True:
            if client.is_closed:
                raise CordumUnavailable(f"the connection to NATS at {self._where} is closed")
            self._arrived.clear()
            items.extend(self._take_cancels())
            if self._jobs and client.is_connected:
                taken = min(max(1, max_jobs), len(self._jobs))
                batch = [self._jobs.popleft() for _ in range(taken)]
                items.extend(await self._claimed(client, batch))
            remaining = deadline - loop.time()
            if items or remaining <= 0:
                return items
            if self._jobs:  # a claim sent now would wait in a buffer, maybe past its timeout
                raise CordumUnavailable(f"NATS at {self._where} is reconnecting; jobs wait")
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return items

    async def _claimed(self, client: NatsClient, batch: list[bytes]) -> list[JobAssignment]:
        """The jobs of ``batch`` whose input was read and whose claim succeeded."""
        requests = [packet for payload in batch if (packet := _request(payload)) is not None]
        keys = [cap.key_of(packet.job_request.context_ptr) for packet in requests]
        wanted = [key for key in keys if key is not None]
        try:
            blobs = dict(zip(wanted, await self._redis.mget(wanted), strict=True)) if wanted else {}
        except _REDIS_FAILURES as exc:
            self._jobs.extendleft(reversed(batch))  # read them again once Redis is back
            raise self._redis_failed(exc) from None
        ready = [
            job
            for packet, key in zip(requests, keys, strict=True)
            if (job := self._assignment(packet, key, blobs.get(key) if key else None)) is not None
        ]
        fresh = list({job.job_id: job for job in ready if not self._holds(job.job_id)}.values())
        chunks = [fresh[first : first + CLAIM_BATCH] for first in range(0, len(fresh), CLAIM_BATCH)]
        claimed = await asyncio.gather(*(self._claim(client, chunk) for chunk in chunks))
        return [job for granted in claimed for job in granted]

    def _holds(self, job_id: str) -> bool:
        """Whether ``job_id`` is being claimed or run here already: a second request for it
        (re-driven while this worker had it) must not start it twice."""
        return job_id in self._claiming or job_id in self._traces

    def _assignment(
        self, packet: Packet, key: str | None, blob: bytes | str | None
    ) -> JobAssignment | None:
        """The job a request stands for; None (logged) when its input cannot be had."""
        job_id = packet.job_request.job_id
        if key is not None and blob is None:
            # Running it without its input would be wrong, and so would every result.
            log.error(
                "job %s: %s is not in Redis at %s (is this worker on the control plane's"
                " Redis?); not running it",
                job_id,
                key,
                redacted(self.redis_url),
            )
            return None
        try:
            job_input = None if blob is None else json.loads(blob)
            return JobAssignment.model_validate(cap.assignment_of(packet, job_input))
        except (ValueError, ValidationError) as exc:  # PacketError is a ValueError
            log.warning("ignoring job %s: %s", job_id, exc)
            return None

    async def _claim(self, client: NatsClient, jobs: list[JobAssignment]) -> list[JobAssignment]:
        """Ask the server, in one request, to let this worker run ``jobs``; those it granted."""
        job_ids = [job.job_id for job in jobs]
        self._claiming.update(job_ids)
        try:
            granted = await self._ask_claim(client, job_ids)
        finally:
            self._claiming.difference_update(job_ids)
        claimed = []
        for job in jobs:
            if job.job_id in granted:
                self._traces[job.job_id] = job.trace_id
                claimed.append(job)
            else:
                log.info("job %s is no longer this worker's to run", job.job_id)
        return claimed

    async def _ask_claim(self, client: NatsClient, job_ids: list[str]) -> set[str]:
        """The jobs of ``job_ids`` the server says this worker may run.

        Without an answer the claims may still have been committed, so they are asked
        again (``again``) until ``claim_retry_s`` runs out. A job whose result this worker
        published lately is not asked again: a yes could then mean the run it reported.
        """
        deadline = time.monotonic() + self.claim_retry_s
        request: dict[str, Any] = {"worker_id": self.worker_id, "job_ids": job_ids}
        delay = 0.25
        while True:
            try:
                reply = await client.request(
                    self._prefix + CLAIM, json.dumps(request).encode(), timeout=self.timeout
                )
                return _granted(request["job_ids"], json.loads(reply.data))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning(
                    "claim of %s answered badly (%s); not running them", _some(job_ids), exc
                )
                return set()
            except _NATS_FAILURES as exc:
                asking = [job_id for job_id in request["job_ids"] if job_id not in self._reported]
                if not asking or time.monotonic() + delay > deadline:
                    log.warning(
                        "claim of %s failed (%s); not running them", _some(job_ids), _failure(exc)
                    )
                    return set()
                log.info(
                    "claim of %s got no answer (%s); asking again", _some(asking), _failure(exc)
                )
                request["job_ids"] = asking
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            request["again"] = True

    async def heartbeat(self, worker_id: str, active_jobs: int, job_ids: list[str]) -> list[str]:
        """A CAP heartbeat (with the topics, for a scheduler that missed the handshake,
        and ``job_ids`` in a label CAP receivers ignore). Returns the cancels no listener
        took."""
        self._active_jobs = active_jobs
        # Claimed jobs are listed from the claim on, not only once the worker started them:
        # a batch's claims are answered together, so one may wait on another's retries.
        held = {*job_ids, *self._claiming, *self._traces, *self._results_in_flight()}
        await self._publish(cap.HEARTBEAT, self._heartbeat_packet(sorted(held)), confirm=True)
        return self._take_cancels()

    def _results_in_flight(self) -> list[str]:
        """Jobs whose result went out less than :data:`RESULT_IN_FLIGHT_S` ago.

        Published is not applied: a result waits in the bus's stream while every
        scheduler is busy or restarting. Were such a job missing from the heartbeat, a
        scheduler would take it for a lost assignment and run it again.
        """
        cutoff = time.monotonic() - RESULT_IN_FLIGHT_S
        self._reported = {job: at for job, at in self._reported.items() if at > cutoff}
        return list(self._reported)

    def _heartbeat_packet(self, job_ids: list[str] | None = None) -> Packet:
        beat = {**self._profile, "active_jobs": self._active_jobs, "job_ids": job_ids}
        return cap.heartbeat_packet(beat)

    async def progress(
        self,
        worker_id: str,
        job_id: str,
        message: str | None,
        percent: float | None,
        data: dict[str, Any],
    ) -> bool:
        """CAP job progress, fire and forget (so never False); CAP has no field for ``data``."""
        report = {"job_id": job_id, "worker_id": worker_id, "percent": percent, "message": message}
        await self._publish(cap.PROGRESS, cap.progress_packet(report), confirm=False)
        return True

    async def result(
        self,
        worker_id: str,
        job_id: str,
        status: str,
        result: Any,
        error: dict[str, str] | None,
        retryable: bool,
    ) -> None:
        """Write the output to ``res:<job_id>``, then publish the CAP result and flush.

        A failure the worker may retry is ``FAILED_RETRYABLE``, any other ``FAILED_FATAL``.
        """
        key = cap.result_key(job_id)
        succeeded = status == "succeeded"
        if succeeded:
            output = json.dumps(result, separators=(",", ":"))
            try:
                await self._redis.set(key, output, ex=RESULT_TTL_S)
            except _REDIS_FAILURES as exc:
                raise self._redis_failed(exc) from None
        notice: dict[str, Any] = {
            "job_id": job_id,
            "worker_id": worker_id,
            "succeeded": succeeded,
            "error": error,
            "retryable": retryable,
        }
        trace_id = self._traces.get(job_id)
        if trace_id:
            notice["trace_id"] = trace_id
        packet = cap.result_packet(notice, result_ptr=cap.pointer(key))
        await self._publish(cap.RESULT, packet, confirm=True)
        self._traces.pop(job_id, None)
        self._reported[job_id] = time.monotonic()

    async def drain(self, worker_id: str) -> None:
        """Nothing to send: CAP has no drain message.

        The worker stops receiving, so jobs still sent to it are never claimed and the
        server re-drives them once their dispatch times out.
        """

    async def deregister(self, worker_id: str) -> None:
        """Stop listening; CAP has no goodbye, the server notices the heartbeats stop."""
        await self._unsubscribe()

    async def close(self) -> None:
        """Unsubscribe, drain the NATS connection and close Redis."""
        await self._unsubscribe()
        client, self._nats = self._nats, None
        if client is not None and not client.is_closed:
            try:
                await client.drain()
            except _NATS_FAILURES as exc:  # reconnecting: nothing left worth waiting for
                log.debug("draining NATS failed (%s); closing", _failure(exc))
                await client.close()
        await self._redis.aclose()

    async def _unsubscribe(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            try:
                await subscription.unsubscribe()
            except _NATS_FAILURES as exc:
                log.debug("unsubscribing failed: %s", _failure(exc))

    async def _publish(self, subject: str, packet: Packet, *, confirm: bool) -> None:
        """Publish ``packet``; with ``confirm``, return once the NATS server has it (one
        flush confirms every publish made before it: see :mod:`cordum.sdk._flush`).

        Raises while reconnecting rather than leave the packet in nats-py's buffer: its
        flush returns at once then, which would confirm nothing.
        """
        client, shared_flush = self._nats, self._flush
        if client is None or not client.is_connected:
            raise CordumUnavailable(f"NATS at {self._where} is not connected; {subject} not sent")
        try:
            payload = packet.SerializeToString(deterministic=True)
            await client.publish(self._prefix + subject, payload)
            if confirm:
                await shared_flush(lambda: client.flush(timeout=self._whole_s))
        except _NATS_FAILURES as exc:
            raise CordumUnavailable(
                f"NATS at {self._where}: {subject} not delivered ({_failure(exc)})"
            ) from None
        if confirm and not client.is_connected:  # lost meanwhile: the flush proved nothing
            raise CordumUnavailable(f"NATS at {self._where}: {subject} not confirmed")

    def _redis_down(self, exc: BaseException) -> str:
        return f"Redis at {redacted(self.redis_url)} unavailable: {_failure(exc)}"

    def _new_redis(self) -> aioredis.Redis:
        # Blocking: past MAX_REDIS_CONNECTIONS a call waits for a connection rather than
        # fail with "too many connections" (a worker runs many jobs at once).
        pool = aioredis.BlockingConnectionPool.from_url(
            self.redis_url,
            max_connections=MAX_REDIS_CONNECTIONS,
            timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            socket_timeout=self.timeout,
        )
        return aioredis.Redis.from_pool(pool)

    def _redis_failed(self, exc: BaseException) -> CordumUnavailable:
        """What to raise for a failed Redis call. The client is replaced: a connection a
        Redis restart cut mid-reply was seen to stall every later call on that client, so
        the retry starts on fresh connections."""
        stale, self._redis = self._redis, self._new_redis()
        task = asyncio.get_running_loop().create_task(_close_quietly(stale))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return CordumUnavailable(self._redis_down(exc))


async def _close_quietly(client: aioredis.Redis) -> None:
    """Close a client given up on, within a second, whatever state it is in."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.aclose(), 1.0)


def _some(job_ids: list[str]) -> str:
    """``job_ids`` for a log line: all of a few, the first three of many."""
    shown = ", ".join(job_ids[:3]) + (", ..." if len(job_ids) > 3 else "")
    return f"job {shown}" if len(job_ids) == 1 else f"{len(job_ids)} jobs ({shown})"


def _granted(job_ids: list[str], answer: Any) -> set[str]:
    """The jobs a claim's ``answer`` granted; raises ValueError for an answer that does not
    say, job by job, yes or no (an error the server sent back is in its message)."""
    claimed = answer.get("claimed") if isinstance(answer, dict) else None
    if not isinstance(claimed, list) or len(claimed) != len(job_ids):
        problem = answer.get("error") if isinstance(answer, dict) else None
        raise ValueError(problem or f"expected one yes or no per job, got {answer!r:.200}")
    return {job_id for job_id, yes in zip(job_ids, claimed, strict=True) if yes is True}


def _request(payload: bytes) -> Packet | None:
    """``payload`` as a CAP job request; None (logged) when it is not one."""
    try:
        return cap.parse(payload, "job_request")
    except cap.PacketError as exc:
        log.warning("ignoring a malformed job request: %s", exc)
        return None
