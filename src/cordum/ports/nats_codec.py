"""How the NATS bus turns the port's JSON-ready dicts into bytes and back.

The codec is a hook so that CAP subjects can carry CAP protobuf packets (what third-party
CAP workers expect) while the control plane's own notices stay JSON; :class:`JsonCodec` is
the default and is always used for request/reply answers, which are Cordum's own.
"""

from __future__ import annotations

import json
from typing import Any, Protocol


class WireCodec(Protocol):
    """Encodes and decodes payloads per subject (the subject without any test prefix)."""

    async def encode(self, subject: str, data: dict[str, Any]) -> bytes:
        """The bytes to publish for ``data`` on ``subject``."""
        ...

    async def decode(self, subject: str, payload: bytes) -> dict[str, Any] | None:
        """The dict carried by ``payload``, or None to drop a message that is malformed.

        Raising is treated like returning None: the bus logs and drops the message.
        """
        ...


class JsonCodec:
    """UTF-8 JSON objects, compact; anything that is not a JSON object decodes to None."""

    async def encode(self, subject: str, data: dict[str, Any]) -> bytes:
        """See :meth:`WireCodec.encode`."""
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()

    async def decode(self, subject: str, payload: bytes) -> dict[str, Any] | None:
        """See :meth:`WireCodec.decode`."""
        try:
            data = json.loads(payload)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
