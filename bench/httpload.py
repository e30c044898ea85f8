"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams.

A general-purpose client (httpx) spends more CPU per request than the server does on a
small POST, which on a 2-core machine would measure the client. This one only writes a
request and reads ``Content-Length`` bytes back. Latency is taken from the moment a
request was *due* (open loop), so a stalled server cannot hide its queueing delay.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


class Connection:
    """One keep-alive connection."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        headers: Mapping[str, str] | None = None,
    ):
        self.reader = reader
        self.writer = writer
        self.host = host
        self.extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())

    @classmethod
    async def open(cls, url: str, headers: Mapping[str, str] | None = None) -> Connection:
        """Connect to the server of ``url``; ``headers`` go with every request (an API key)."""
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer, f"{parts.hostname}:{parts.port}", headers)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST a JSON body; returns (status, body)."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"{self.extra}Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return status, payload

    def close(self) -> None:
        """Close the socket."""
        self.writer.close()


@dataclass
class LoadResult:
    """What an open-loop run measured."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    answers: list[tuple[float, bytes]] = field(default_factory=list)
    elapsed_s: float = 0.0
    sent: int = 0


async def open_loop(
    url: str,
    path: str,
    make_body: Callable[[int], dict[str, Any]],
    *,
    rate: float,
    duration_s: float,
    connections: int = 64,
    keep_answers: bool = False,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """Send ``rate`` requests per second for ``duration_s``; latency from each due time."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(url, headers))
    result = LoadResult()
    total = int(rate * duration_s)
    start = time.perf_counter()
    wall_start = time.time()

    async def one(i: int, due: float) -> None:
        connection = await pool.get()
        try:
            status, payload = await connection.post(path, json.dumps(make_body(i)).encode())
        finally:
            pool.put_nowait(connection)
        done = time.perf_counter()
        result.latencies_ms.append((done - due) * 1000)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if keep_answers:
            result.answers.append((wall_start + (due - start), payload))

    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
        result.sent += 1
    await asyncio.gather(*tasks)
    result.elapsed_s = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait().close()
    return result


async def warmed_open_loop(
    url: str,
    path: str,
    make_body: Callable[[int], dict[str, Any]],
    *,
    rate: float,
    duration_s: float,
    warmup_s: float = 1.0,
    keep_answers: bool = False,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, LoadResult]:
    """``warmup_s`` at ``rate`` unmeasured, then the measured :func:`open_loop` run.

    Returns how many requests the warm-up sent (a caller waiting for every job to finish
    counts them too) and the measured run's result.
    """
    warm = await open_loop(url, path, make_body, rate=rate, duration_s=warmup_s, headers=headers)
    result = await open_loop(
        url,
        path,
        make_body,
        rate=rate,
        duration_s=duration_s,
        keep_answers=keep_answers,
        headers=headers,
    )
    return warm.sent, result


async def closed_loop(
    url: str, body: dict[str, Any], *, jobs: int, concurrency: int, headers: Mapping[str, str]
) -> float:
    """POST ``body`` to ``/api/v1/jobs`` ``jobs`` times over ``concurrency`` connections,
    each sending its next request when the last is answered; returns the start time."""
    counter = iter(range(jobs))
    encoded = json.dumps(body).encode()

    async def submitter() -> None:
        connection = await Connection.open(url, headers)
        for _ in counter:
            status, payload = await connection.post("/api/v1/jobs", encoded)
            if status != 200:
                raise RuntimeError(f"submit answered {status}: {payload[:200]!r}")
        connection.close()

    start = time.time()
    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    return start
