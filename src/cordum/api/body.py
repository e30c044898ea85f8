"""Reading JSON bodies strictly: size, encoding, syntax and shape, each with a clear error."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from cordum.api.errors import ApiError


async def read_bytes(request: Request, limit: int) -> bytes:
    """The request's body, at most ``limit`` bytes (413 beyond, before reading it all)."""
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
    return b"".join(chunks)


async def read_json(request: Request, limit: int, *, allow_empty: bool = False) -> Any:
    """The request's JSON body, or an :class:`ApiError` (413, 415, 400) saying what's wrong."""
    raw = await read_bytes(request, limit)
    if allow_empty and not raw.strip():
        return EMPTY
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
        data = json.loads(text, parse_constant=_not_json)
    except _NotJsonError as exc:
        raise ApiError(400, "invalid_json", str(exc)) from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            "invalid_json",
            f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
        ) from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the JSON is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer longer than Python will convert
        raise ApiError(400, "invalid_json", f"unusable JSON value: {exc}") from None
    if "\\u" in text:  # only escapes can smuggle in lone surrogates, which are not text
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(
                400, "invalid_encoding", "the JSON contains a lone surrogate escape (\\ud800...)"
            ) from None
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(data) > MAX_DEPTH:
        raise ApiError(400, "invalid_json", f"the JSON is nested more than {MAX_DEPTH} levels deep")
    return data


MAX_DEPTH = 64
EMPTY: Any = object()


def _depth(data: Any) -> int:
    deepest = 0
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return deepest


class _NotJsonError(ValueError):
    pass


def _not_json(name: str) -> Any:
    raise _NotJsonError(f"{name} is not valid JSON; send numbers as finite values or strings")


async def read_object(request: Request, limit: int, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object (``{}`` for an empty optional body)."""
    data = await read_json(request, limit, allow_empty=optional)
    if data is EMPTY:
        return {}
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", f"expected a JSON object, got {type(data).__name__}")
    return data


def too_large(limit: int) -> ApiError:
    """413 with the limit."""
    return ApiError(
        413, "payload_too_large", f"the body is larger than the limit of {limit} bytes", limit=limit
    )
