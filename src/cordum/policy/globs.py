"""Topic globs, as in the original's ``path.Match`` over dotted topics.

``*`` matches any run of characters, dots included (``job.*`` is every job), ``?`` one
character, ``[abc]`` / ``[a-z]`` a class and ``[!a-z]`` / ``[^a-z]`` its complement.
Matching is linear: globs are translated by :func:`fnmatch.translate`, which uses atomic
groups, so no topic can make a glob backtrack catastrophically.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable

WILDCARDS = frozenset("*?[")
_WHITESPACE = re.compile(r"\s")


class GlobError(ValueError):
    """A topic glob that cannot be used; ``hint`` says how to write it instead."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def normalize_glob(pattern: str) -> str:
    """Validate a topic glob and return its canonical (trimmed, lower-case) form."""
    glob = pattern.strip().lower()
    if not glob:
        raise GlobError("empty topic pattern", "write a topic such as `job.db.*`")
    if _WHITESPACE.search(glob):
        raise GlobError("topic pattern contains whitespace")
    if ">" in glob:
        raise GlobError(
            "`>` is a NATS wildcard, not a Cordum one",
            "Cordum's `*` already matches across dots: write `job.db.*`",
        )
    if "\\" in glob:
        raise GlobError("backslash escapes are not supported in topic patterns")
    if "[" in glob or "]" in glob:
        _check_classes(glob)
    return glob


def _check_classes(glob: str) -> None:
    index = 0
    while index < len(glob):
        if glob[index] == "]" and "[" not in glob[:index]:
            raise GlobError("`]` without a matching `[`", "remove it, or open the class with `[`")
        if glob[index] != "[":
            index += 1
            continue
        end = glob.find("]", index + 1)
        if end < 0:
            raise GlobError("`[` is never closed", "close the character class with `]`")
        body = glob[index + 1 : end]
        if body[:1] in ("!", "^"):
            body = body[1:]
        if not body:
            raise GlobError("empty character class `[]`")
        for start, stop in re.findall(r"(.)-(.)", body):
            if start > stop:
                raise GlobError(f"character range `{start}-{stop}` is reversed")
        index = end + 1


def is_literal(glob: str) -> bool:
    """True when the glob has no wildcard, i.e. it names exactly one topic."""
    return not WILDCARDS.intersection(glob)


def literal_prefix(glob: str) -> str:
    """The text before the first wildcard: every matching topic starts with it."""
    for index, ch in enumerate(glob):
        if ch in WILDCARDS:
            return glob[:index]
    return glob


def compile_glob(glob: str) -> Callable[[str], bool]:
    """A predicate that says whether a (normalized) topic matches ``glob``.

    The shapes policies mostly use (``job.db.*``, ``*.delete``, ``job.*.read``) become
    string comparisons; anything else becomes a regex, compiled on first use so that
    loading a large policy does not pay for globs no job ever reaches.
    """
    if is_literal(glob):
        return glob.__eq__
    if "?" not in glob and "[" not in glob and glob.count("*") == 1:
        head, _, tail = glob.partition("*")
        if not tail:
            return lambda topic: topic.startswith(head)
        if not head:
            return lambda topic: topic.endswith(tail)
        least = len(head) + len(tail)
        return lambda topic: len(topic) >= least and topic.startswith(head) and topic.endswith(tail)
    return _RegexGlob(glob)


class _RegexGlob:
    """A glob matched with a regex that is only compiled when first needed."""

    __slots__ = ("_glob", "_match")

    def __init__(self, glob: str) -> None:
        self._glob = glob
        self._match: Callable[[str], re.Match[str] | None] | None = None

    def __call__(self, topic: str) -> bool:
        if self._match is None:
            self._match = re.compile(fnmatch.translate(self._glob.replace("[^", "[!"))).match
        return self._match(topic) is not None


def glob_covers(general: str, specific: str) -> bool:
    """True when every topic matching ``specific`` also matches ``general`` (sound, not complete).

    Used by lint to prove shadowing; when it cannot prove coverage it answers False, so a
    lint finding built on it is never a false alarm.
    """
    if general == specific or set(general) == {"*"}:
        return True
    if is_literal(specific):
        return compile_glob(general)(specific)
    star = general.find("*")
    if star == len(general) - 1 and is_literal(general[:star]):
        return literal_prefix(specific).startswith(general[:star])
    return False


def example_topic(glob: str) -> str:
    """One concrete topic the glob matches (lint uses it to build witness jobs)."""
    out: list[str] = []
    index = 0
    while index < len(glob):
        ch = glob[index]
        if ch == "*":
            index += 1
        elif ch == "?":
            out.append("x")
            index += 1
        elif ch == "[":
            end = glob.index("]", index + 1)
            out.append(_class_member(glob[index + 1 : end]))
            index = end + 1
        else:
            out.append(ch)
            index += 1
    return "".join(out)


def _class_member(body: str) -> str:
    if body[:1] in ("!", "^"):
        excluded = body[1:]
        return next(
            c for c in "xyz0123456789abcdefghijklmnopqrstuvw_" if not _in_class(c, excluded)
        )
    return body[0]


def _in_class(ch: str, body: str) -> bool:
    index = 0
    while index < len(body):
        if index + 2 < len(body) and body[index + 1] == "-":
            if body[index] <= ch <= body[index + 2]:
                return True
            index += 3
        else:
            if body[index] == ch:
                return True
            index += 1
    return False
