"""Reading JSON bodies strictly: size, encoding, syntax and shape, each with a clear error."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from cordum.api.errors import ApiError


async def read_json(request: Request, limit: int, *, allow_empty: bool = False) -> Any:
    """The request's JSON body, or an :class:`ApiError` (413, 415, 400) saying what's wrong."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if allow_empty and not raw.strip():
        return None
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type.split(";")[0]:
        raise ApiError(
            415, "unsupported_media_type", "send the body as JSON (Content-Type: application/json)"
        )
    if not raw.strip():
        raise ApiError(400, "empty_body", "the request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, "invalid_encoding", f"the body is not valid UTF-8 (byte {exc.start}); send UTF-8"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            "invalid_json",
            f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
        ) from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the JSON is nested too deeply") from None


async def read_object(request: Request, limit: int, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object (``{}`` for an empty optional body)."""
    data = await read_json(request, limit, allow_empty=optional)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", f"expected a JSON object, got {type(data).__name__}")
    return data


def too_large(limit: int) -> ApiError:
    """413 with the limit."""
    return ApiError(
        413, "payload_too_large", f"the body is larger than the limit of {limit} bytes", limit=limit
    )
