"""Run the storage classes' SQLite-flavoured SQL on PostgreSQL: `?` placeholders become typed
`$n` parameters, and PostgreSQL's integrity errors read as SQLite's do.

The storage classes write one SQL text for both backends. PostgreSQL infers a parameter's type
from where it stands, and cannot in `SELECT ?, ...` or `CASE WHEN ? = ...`; giving each
parameter the type of the Python value passed (`$1::bigint` for an int) removes the guessing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import asyncpg

__all__ = ["integrity_message", "to_postgres"]

_CASTS: dict[type, str] = {
    bool: "::bigint",  # SQLite keeps booleans as 0/1 integers; so does this schema
    int: "::bigint",
    str: "::text",
    float: "::float8",
    bytes: "::bytea",
}
# A quoted string, a quoted identifier, a comment, or a placeholder.
_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|\?", re.DOTALL)


def to_postgres(sql: str, params: Sequence[Any]) -> tuple[str, list[Any]]:
    """`sql` with each `?` as a typed `$n`, and the values asyncpg should send."""
    casts = tuple(_CASTS.get(type(value), "") for value in params)
    text, count = _translate(sql, casts)
    if count != len(params):
        raise ValueError(f"the statement has {count} placeholders but {len(params)} values")
    return text, [int(v) if isinstance(v, bool) else v for v in params]


@functools.lru_cache(maxsize=2048)
def _translate(sql: str, casts: tuple[str, ...]) -> tuple[str, int]:
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        if match.group(0) != "?":
            return match.group(0)
        count += 1
        cast = casts[count - 1] if count <= len(casts) else ""
        return f"${count}{cast}"

    return _TOKEN.sub(replace, sql), count


_KEY_COLUMNS = re.compile(r"Key \((?P<columns>[^)]*)\)")


def integrity_message(error: asyncpg.IntegrityConstraintViolationError) -> str:
    """The error as SQLite words it ("UNIQUE constraint failed: transfers.pending_id"), so the
    storage classes tell a refusal's kind the same way on both backends. A trigger's own
    message (RAISE ... ERRCODE 23000) is kept as it is."""
    table = getattr(error, "table_name", None) or ""
    if isinstance(error, asyncpg.UniqueViolationError):
        found = _KEY_COLUMNS.search(getattr(error, "detail", None) or "")
        columns = [c.strip() for c in found.group("columns").split(",")] if found else []
        named = ", ".join(f"{table}.{c}" for c in columns) or (error.constraint_name or "")
        return f"UNIQUE constraint failed: {named} ({error.constraint_name})"
    if isinstance(error, asyncpg.NotNullViolationError):
        return f"NOT NULL constraint failed: {table}.{getattr(error, 'column_name', '')}"
    if isinstance(error, asyncpg.CheckViolationError):
        return f"CHECK constraint failed: {error.constraint_name}"
    if isinstance(error, asyncpg.ForeignKeyViolationError):
        return f"FOREIGN KEY constraint failed ({error.constraint_name})"
    return str(error)
