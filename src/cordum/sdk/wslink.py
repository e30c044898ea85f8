"""A WorkerLink over a WebSocket: jobs are pushed, reports go up the same socket.

Registration, drain and leave stay on HTTP. Reports over the socket are fire and forget,
so each result sent on the socket is remembered until a ping sent after it has come back
and one more heartbeat has passed (time for the server to store what it read). If the
socket drops first, the remembered results are sent again over HTTP after reconnecting;
the server ignores repeats. Once draining, results go over HTTP, which confirms them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from cordum.models.pipeline import JobAssignment
from cordum.sdk._registration import Failure, classify
from cordum.sdk._wire import Settings, path
from cordum.sdk.errors import CordumAPIError, CordumUnavailable
from cordum.sdk.links import CancelListener, HttpLink, result_body

log = logging.getLogger(__name__)


def websocket_url(http_url: str) -> str:
    """``http(s)://host[/prefix]`` as ``ws(s)://host[/prefix]``."""
    scheme, sep, rest = http_url.partition("://")
    if not sep:
        return f"ws://{http_url}"
    return {"https": "wss", "http": "ws"}.get(scheme.lower(), scheme) + "://" + rest


class WebSocketLink:
    """A WorkerLink whose jobs and cancels arrive pushed over a WebSocket."""

    def __init__(self, settings: Settings) -> None:
        self.http = HttpLink(settings, transport="websocket")
        self._base = websocket_url(settings.url)
        self._settings = settings
        self._socket: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[JobAssignment | str | None] = asyncio.Queue()
        self._sent: dict[str, tuple[int, dict[str, Any]]] = {}
        self._seq = 0
        self._read_upto = 0
        self._draining = False
        self._on_cancel: CancelListener | None = None

    def listen_for_cancels(self, listener: CancelListener) -> None:
        """Cancel frames go straight to ``listener`` instead of waiting for receive()."""
        self._on_cancel = listener

    async def register(
        self,
        worker_id: str | None,
        pool: str,
        topics: list[str],
        capacity: int,
        labels: dict[str, str],
    ) -> str:
        """Register over HTTP, re-send results a dropped socket may have lost, then connect."""
        await self._hang_up()
        worker_id = await self.http.register(worker_id, pool, topics, capacity, labels)
        await self._flush(worker_id)
        url = self._base + path("workers", worker_id, "ws")
        try:
            socket = await connect(
                url,
                additional_headers=self._settings.headers,
                open_timeout=self._settings.timeout,
                max_size=None,  # the server bounds job sizes; a big input must not drop us
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise CordumUnavailable(f"websocket {url} failed: {exc}") from None
        self._socket = socket
        self._reader = asyncio.create_task(self._read(socket))
        return worker_id

    async def _flush(self, worker_id: str) -> None:
        """Re-send over HTTP every result a socket may not have delivered."""
        for job_id, (_, body) in list(self._sent.items()):
            try:
                await self.http.post_result(worker_id, job_id, body)
            except CordumAPIError as exc:
                if classify(exc) is not Failure.REFUSED:
                    raise
                log.error("result of job %s refused: %s", job_id, exc.message)
                why = {
                    "code": "result_refused",
                    "message": f"the server refused the result: {exc.message}",
                }
                await self.http.post_result(
                    worker_id, job_id, result_body("failed", None, why, False)
                )
            del self._sent[job_id]

    async def _read(self, socket: ClientConnection) -> None:
        try:
            async for frame in socket:
                self._on_frame(frame)
        except WebSocketException as exc:
            log.warning("websocket closed: %s", exc)
        finally:
            if self._socket is socket:
                self._socket = None
            self._inbox.put_nowait(None)  # wake a receive() waiting on a dead socket

    def _on_frame(self, frame: str | bytes) -> None:
        try:
            data = json.loads(frame)
            if data.get("type") == "job":
                self._inbox.put_nowait(JobAssignment.model_validate(data["job"]))
            elif data.get("type") == "cancel":
                if self._on_cancel is not None:
                    self._on_cancel(str(data["job_id"]))
                else:
                    self._inbox.put_nowait(str(data["job_id"]))
            else:
                log.debug("ignoring websocket frame of type %r", data.get("type"))
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
            log.warning("ignoring a malformed websocket frame: %s", exc)

    async def receive(self, max_jobs: int, wait_s: float) -> list[JobAssignment | str]:
        """Pushed jobs and cancels; raises CordumUnavailable once the socket is gone."""
        items: list[JobAssignment | str] = []
        jobs = 0
        deadline = time.monotonic() + max(0.0, wait_s)
        while jobs < max_jobs:
            if self._inbox.empty():
                if self._socket is None:
                    if items:
                        break
                    raise CordumUnavailable("the websocket is not connected")
                remaining = deadline - time.monotonic()
                if items or remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._inbox.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = self._inbox.get_nowait()
            if item is None:
                continue
            items.append(item)
            jobs += isinstance(item, JobAssignment)
        return items

    async def _send(self, frame: dict[str, Any]) -> None:
        socket = self._socket
        if socket is None:
            raise CordumUnavailable("the websocket is not connected")
        try:
            await socket.send(json.dumps(frame))
        except WebSocketException as exc:
            raise CordumUnavailable(f"websocket send failed: {exc}") from None

    async def heartbeat(self, worker_id: str, active_jobs: int, job_ids: list[str]) -> list[str]:
        """A heartbeat frame, and a ping to confirm results; cancels arrive pushed."""
        held = [*job_ids, *(j for j in self._sent if j not in job_ids)]
        await self._send({"type": "heartbeat", "active_jobs": active_jobs, "job_ids": held})
        await self._confirm()
        return []

    async def _confirm(self) -> None:
        """Forget the results the previous pong proved read; this pong marks the next ones."""
        socket = self._socket
        if socket is None:
            raise CordumUnavailable("the websocket is not connected")
        mark = self._seq
        try:
            pong = await socket.ping()
            await asyncio.wait_for(pong, self._settings.timeout)
        except (WebSocketException, TimeoutError) as exc:
            raise CordumUnavailable(f"websocket ping failed: {exc or 'timeout'}") from None
        for job_id, (seq, _) in list(self._sent.items()):
            if seq > self._read_upto:
                break
            del self._sent[job_id]
        self._read_upto = mark

    async def progress(
        self,
        worker_id: str,
        job_id: str,
        message: str | None,
        percent: float | None,
        data: dict[str, Any],
    ) -> bool:
        """A progress frame (fire and forget, so never False)."""
        frame = {"type": "progress", "job_id": job_id, "message": message, "percent": percent}
        await self._send({**frame, "data": data})
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
        """A result frame, remembered until confirmed; over HTTP once draining."""
        body = result_body(status, result, error, retryable)
        if self._draining:
            await self.http.post_result(worker_id, job_id, body)
            return
        await self._send({"type": "result", "job_id": job_id, **body})
        self._seq += 1
        self._sent.pop(job_id, None)
        self._sent[job_id] = (self._seq, body)

    async def drain(self, worker_id: str) -> None:
        """Drain over HTTP; from now on results go over HTTP too, so each is confirmed."""
        self._draining = True
        await self.http.drain(worker_id)

    async def deregister(self, worker_id: str) -> None:
        """Close the socket, then leave over HTTP (the server still stores frames it read)."""
        await self._hang_up()
        await self.http.deregister(worker_id)

    async def _hang_up(self) -> None:
        socket, reader = self._socket, self._reader
        self._socket = self._reader = None
        if socket is not None:
            with contextlib.suppress(Exception):
                await socket.close()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def close(self) -> None:
        """Close the socket and the HTTP pool."""
        await self._hang_up()
        await self.http.close()
