"""The CAP codec: how the NATS bus turns the services' dicts into CAP packets and back.

CAP subjects (reference section 6) carry protobuf ``BusPacket`` s built by
:mod:`cordum.models.cap_packets`; every other subject (the control plane's own notices)
carries compact JSON. Job input and output travel through Redis, as CAP prescribes:
dispatching a job writes its input to ``ctx:<job_id>`` before the packet leaves, and a
result's ``result_ptr`` is read back when the packet arrives, so the services see the
output itself.

A packet that cannot be understood decodes to None: the bus logs and drops it, and the
reconciler's timeouts re-drive whatever it was about (invariant 1).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis.asyncio as aioredis
from cap.pb.cordum.agent.v1 import job_pb2

from cordum.models import cap_packets as cap

log = logging.getLogger(__name__)

BLOB_TTL_S = 7 * 86_400
"""How long job input stays in Redis (a week: longer than any timeout). Results are the
workers' to expire (the SDK's do, after a week)."""


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), default=str).encode()


class CapCodec:
    """Encodes the bus port's dicts as CAP packets on CAP subjects, JSON elsewhere."""

    def __init__(
        self, blobs: aioredis.Redis, *, sender_id: str, blob_ttl_s: int = BLOB_TTL_S
    ) -> None:
        """``blobs`` is the Redis that CAP workers read ``ctx:`` and write ``res:`` keys in."""
        self.blobs = blobs
        self.sender_id = sender_id
        self.blob_ttl_s = blob_ttl_s

    async def encode(self, subject: str, data: dict[str, Any]) -> bytes:
        """``data`` as the bytes ``subject`` carries on the wire."""
        kind = cap.kind_of(subject)
        if kind is None:
            return _json(data)
        if kind == "job_request":
            key = cap.context_key(data["job_id"])
            await self.blobs.set(key, _json(data.get("input")), ex=self.blob_ttl_s)
            packet = cap.request_packet(
                data, context_ptr=cap.pointer(key), sender_id=self.sender_id
            )
        elif kind == "job_result":
            key = cap.result_key(data["job_id"])
            if data.get("succeeded"):
                await self.blobs.set(key, _json(data.get("result")), ex=self.blob_ttl_s)
            packet = cap.result_packet(data, result_ptr=cap.pointer(key))
        elif kind == "submit":
            packet = cap.submit_packet(data, self.sender_id)
        elif kind == "heartbeat":
            packet = cap.heartbeat_packet(data)
        elif kind == "handshake":
            packet = cap.handshake_packet(data)
        elif kind == "job_cancel":
            packet = cap.cancel_packet(data, self.sender_id)
        else:
            packet = cap.progress_packet(data)
        serialized: bytes = packet.SerializeToString(deterministic=True)
        return serialized

    async def decode(self, subject: str, payload: bytes) -> dict[str, Any] | None:
        """The dict a message on ``subject`` stands for; None (logged) when it is malformed."""
        kind = cap.kind_of(subject)
        try:
            if kind is None:
                data = json.loads(payload)
                return data if isinstance(data, dict) else None
            expected = "job_request" if kind == "submit" else kind
            packet = cap.parse(payload, expected)
            if kind == "job_request":
                return cap.assignment_of(packet, await self._read(packet.job_request.context_ptr))
            if kind == "job_result":
                return await self._result(packet)
            return {
                "submit": cap.submit_notice,
                "heartbeat": cap.heartbeat_notice,
                "handshake": cap.handshake_notice,
                "job_cancel": cap.cancel_notice,
                "job_progress": cap.progress_notice,
            }[kind](packet)
        except (cap.PacketError, ValueError, KeyError) as exc:
            log.warning("dropping a malformed message on %s: %s", subject, exc)
            return None

    async def _read(self, ptr: str) -> Any:
        key = cap.key_of(ptr)
        if key is None:
            return None
        raw = await self.blobs.get(key)
        return None if raw is None else json.loads(raw)

    async def _result(self, packet: Any) -> dict[str, Any]:
        result = packet.job_result
        if result.status != job_pb2.JOB_STATUS_SUCCEEDED:
            return cap.result_notice(packet, None)
        key = cap.key_of(result.result_ptr)
        if key is None:
            # A worker that keeps its output elsewhere: the pointer is the result.
            output = {"result_ptr": result.result_ptr} if result.result_ptr else None
            return cap.result_notice(packet, output)
        raw = await self.blobs.get(key)
        if raw is None:
            notice = cap.result_notice(packet, None)
            message = f"the worker reported success but {result.result_ptr} holds nothing"
            return {
                **notice,
                "succeeded": False,
                "retryable": False,  # the side effect may have happened: never run it again
                "error": {"code": "result_missing", "message": message},
            }
        return cap.result_notice(packet, json.loads(raw))
