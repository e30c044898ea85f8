"""Filters and newest-first pages, shared by the SQLite store's listings.

Every listing (jobs, DLQ, approvals) pages the same way: rows newest first by ``seq``,
``limit`` at a time, with the last row's ``seq`` as the opaque cursor of the next page.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any


def in_clause(expression: str, values: Iterable[str]) -> tuple[str, list[str]]:
    """``expression IN (?, ...)`` and its arguments (sorted, so a statement is reused)."""
    ordered = sorted(values)
    return f"{expression} IN ({', '.join('?' * len(ordered))})", ordered


def cursor_value(cursor: str) -> int:
    """The row number a page cursor names; ValueError for anything else."""
    try:
        value = int(cursor)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:
        raise ValueError(f"invalid cursor {cursor!r}; pass the next_cursor of a page")
    return value


def newest_first(
    db: sqlite3.Connection,
    table: str,
    where: list[str],
    args: list[Any],
    *,
    cursor: str | None,
    limit: int,
) -> tuple[list[str], str | None]:
    """The ``data`` of one page of ``table`` matching ``where``, and the next cursor.

    ValueError for a cursor that is not one.
    """
    if cursor is not None:
        where = [*where, "seq < ?"]
        args = [*args, cursor_value(cursor)]
    sql = f"SELECT seq, data FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = db.execute(f"{sql} ORDER BY seq DESC LIMIT ?", (*args, limit + 1)).fetchall()
    next_cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
    return [data for _, data in rows[:limit]], next_cursor
