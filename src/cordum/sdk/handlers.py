"""Which handler runs a job: exact topics first, then wildcard patterns in the order added."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from cordum.models.subjects import subject_matches, valid_subject
from cordum.sdk.context import JobContext

Handler = Callable[[JobContext], Any]
"""An async or plain function of a JobContext returning a JSON value (or None)."""


def is_async(handler: Handler) -> bool:
    """Whether calling ``handler`` gives a coroutine (so it runs on the loop, not a thread)."""
    # An instance of a class with ``async def __call__`` counts as async too.
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        type(handler).__call__
    )


class Handlers:
    """The handlers of one worker, keyed by topic or topic pattern (``*``, final ``>``)."""

    def __init__(self) -> None:
        self._exact: dict[str, Handler] = {}
        self._patterns: dict[str, Handler] = {}

    def add(self, pattern: str, handler: Handler) -> None:
        """Route ``pattern`` to ``handler``; refuses malformed or duplicate patterns."""
        if not valid_subject(pattern, pattern=True):
            raise ValueError(
                f"topic pattern {pattern!r}: dot-separated tokens, '*' for one token,"
                " a final '>' for the rest"
            )
        if pattern in self._exact or pattern in self._patterns:
            raise ValueError(f"a handler for {pattern!r} is already registered")
        wild = any(token in ("*", ">") for token in pattern.split("."))
        (self._patterns if wild else self._exact)[pattern] = handler

    def find(self, topic: str) -> Handler | None:
        """The handler for ``topic``, or None when no pattern matches."""
        exact = self._exact.get(topic)
        if exact is not None:
            return exact
        for pattern, handler in self._patterns.items():
            if subject_matches(pattern, topic):
                return handler
        return None

    def __bool__(self) -> bool:
        return bool(self._exact or self._patterns)
