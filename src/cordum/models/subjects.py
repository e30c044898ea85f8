"""Subject patterns shared by the bus, the scheduler's routing and SDK workers.

NATS/CAP syntax: tokens separated by dots, ``*`` matches exactly one token, a final ``>``
matches one or more tokens. ``job.hello.*`` matches ``job.hello.greet`` but not
``job.hello.a.b``; ``job.>`` matches both.
"""

from __future__ import annotations


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` matches ``pattern``."""
    wanted = pattern.split(".")
    tokens = subject.split(".")
    for i, part in enumerate(wanted):
        if part == ">":
            return i == len(wanted) - 1 and len(tokens) > i
        if i >= len(tokens) or (part != "*" and part != tokens[i]):
            return False
    return len(tokens) == len(wanted)


def valid_subject(subject: str, *, pattern: bool = False) -> bool:
    """Whether ``subject`` is well formed: non-empty tokens, wildcards only in patterns."""
    tokens = subject.split(".")
    if any(not t or any(c.isspace() for c in t) for t in tokens):
        return False
    for i, token in enumerate(tokens):
        if token in ("*", ">"):
            if not pattern or (token == ">" and i != len(tokens) - 1):
                return False
        elif "*" in token or ">" in token:
            return False
    return True


def namespace_prefix(prefix: str | None) -> str:
    """What goes before every subject of a namespaced bus: ``""`` or ``"<prefix>."``.

    Raises ValueError when ``prefix`` is not a well-formed subject.
    """
    if prefix is None:
        return ""
    if not valid_subject(prefix):
        raise ValueError(f"invalid subject prefix {prefix!r}")
    return f"{prefix}."
