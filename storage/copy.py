"""Move a SQLite install's whole history into an empty PostgreSQL database (`klingbot db copy`).

The source is read in one read transaction (a consistent snapshot; stop the bot first so nothing
is written after it). The target is filled in one transaction: accounts arrive with zero totals
and every ledger entry is inserted again, in order, so PostgreSQL's own triggers check each one
and rebuild every balance. Before that transaction commits, balances, job states and row counts
are compared with the source; any difference rolls it all back. Afterwards both ledgers are
audited.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from storage.database import Database
from storage.errors import StorageError
from storage.ledger import AuditReport, Ledger
from storage.postgres import PostgresDatabase

__all__ = ["CopyRefused", "CopyReport", "copy_database"]

# Tables the copy leaves to each side's own migrations.
_NOT_COPIED = {"schema_migrations", "ledger_guard"}
# What both sides are compared by, before the target's transaction commits.
_BALANCES = (
    "SELECT kind, guild_id, user_id, debits_pending, debits_posted, credits_pending,"
    " credits_posted FROM account_totals"
)
_JOB_STATES = "SELECT id, state FROM jobs"  # compared sorted in Python: collations differ


class CopyRefused(StorageError):
    """The copy cannot be made (the target is not empty, the schemas differ, ...)."""


@dataclass
class CopyReport:
    """What was copied, and the audits of both sides afterwards."""

    rows: dict[str, int] = field(default_factory=dict)
    source_audit: AuditReport | None = None
    target_audit: AuditReport | None = None

    @property
    def ok(self) -> bool:
        return bool(
            self.source_audit
            and self.target_audit
            and self.source_audit.ok
            and self.target_audit.ok
            and (self.source_audit.issued, self.source_audit.spent, self.source_audit.held)
            == (self.target_audit.issued, self.target_audit.spent, self.target_audit.held)
        )


@dataclass
class _Table:
    name: str
    columns: list[str]
    rows: list[tuple[Any, ...]]


async def copy_database(source: Database, target: Database) -> CopyReport:
    """Copy every row of the SQLite `source` into the empty PostgreSQL `target`."""
    if source.dialect != "sqlite" or not isinstance(target, PostgresDatabase):
        raise CopyRefused("klingbot db copy moves a SQLite database into a PostgreSQL one.")
    source_version, target_version = await source.schema_version(), await target.schema_version()
    if source_version != target_version:
        raise CopyRefused(
            f"The schemas differ (SQLite at version {source_version}, PostgreSQL at"
            f" {target_version}): run this version of klingbot's `db upgrade` on both first."
        )
    before = await Ledger(source).audit()
    if not before.ok:
        raise CopyRefused(
            "The SQLite ledger does not audit clean; nothing was copied:\n" + before.render()
        )
    tables, balances, job_states = _snapshot(source.location)
    report = CopyReport()
    async with target.connection() as conn, conn.transaction():
        await _refuse_unless_empty(conn)
        for table in tables:
            report.rows[table.name] = await _load(conn, table)
        await _move_sequences(conn)
        if sorted(tuple(r) for r in await conn.fetch(_BALANCES)) != balances:
            raise CopyRefused("Balances differ after the copy; nothing was kept.")
        if sorted(tuple(r) for r in await conn.fetch(_JOB_STATES)) != job_states:
            raise CopyRefused("Job states differ after the copy; nothing was kept.")
    report.source_audit = before
    report.target_audit = await Ledger(target).audit()
    return report


def _snapshot(
    path: str,
) -> tuple[list[_Table], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every table of the SQLite file (with each row's rowid), its balances and job states, all
    read in one transaction."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
            )
        ]
        tables = []
        for name in names:
            if name in _NOT_COPIED:
                continue
            columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{name}")')]
            has_rowid = _has_rowid(conn, name)
            select = ", ".join(f'"{c}"' for c in columns)
            if has_rowid:
                select += ", rowid"
            rows = conn.execute(
                f'SELECT {select} FROM "{name}"' + (" ORDER BY rowid" if has_rowid else "")
            ).fetchall()
            tables.append(_Table(name, columns + (["rowid"] if has_rowid else []), rows))
        balances = sorted(conn.execute(_BALANCES).fetchall())
        job_states = sorted(conn.execute(_JOB_STATES).fetchall())
        conn.execute("COMMIT")
    finally:
        conn.close()
    return tables, balances, job_states


def _has_rowid(conn: sqlite3.Connection, table: str) -> bool:
    try:
        conn.execute(f'SELECT rowid FROM "{table}" LIMIT 0')
    except sqlite3.OperationalError:
        return False  # a WITHOUT ROWID table
    return True


async def _refuse_unless_empty(conn: asyncpg.Connection) -> None:
    counts = await conn.fetchrow(
        "SELECT (SELECT COUNT(*) FROM transfers) AS transfers, (SELECT COUNT(*) FROM jobs) AS jobs,"
        " (SELECT COUNT(*) FROM accounts WHERE kind NOT IN ('issuance', 'spend')) AS accounts,"
        " (SELECT COUNT(*) FROM guild_policies) AS policies"
    )
    if any(counts[name] for name in ("transfers", "jobs", "accounts", "policies")):
        raise CopyRefused(
            "The PostgreSQL database is not empty (it has accounts, entries, jobs or server"
            " settings); copy only into a new database, so no history is mixed or lost."
        )


async def _load(conn: asyncpg.Connection, table: _Table) -> int:
    """Insert `table`'s rows; return how many. Columns are matched by name."""
    target_columns = {
        r["column_name"]
        for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = $1",
            table.name,
        )
    }
    if not target_columns:
        raise CopyRefused(f"PostgreSQL has no table {table.name!r}: the schemas differ.")
    keep = [i for i, c in enumerate(table.columns) if c in target_columns]
    missing = [c for c in table.columns if c not in target_columns and c != "rowid"]
    if missing:
        raise CopyRefused(f"PostgreSQL's {table.name} has no column(s) {', '.join(missing)}.")
    columns = [table.columns[i] for i in keep]
    rows = [tuple(row[i] for i in keep) for row in table.rows]
    if table.name == "accounts":  # totals are rebuilt by inserting the entries again
        totals = {"debits_pending", "debits_posted", "credits_pending", "credits_posted"}
        rows = [tuple(0 if columns[i] in totals else v for i, v in enumerate(row)) for row in rows]
    seeded = await conn.fetchval(f'SELECT COUNT(*) FROM "{table.name}"')
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    sql = f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})'
    if seeded:
        if await _has_unique_key(conn, table.name):
            sql += " ON CONFLICT DO NOTHING"  # rows both migrations made (accounts 1 and 2, ...)
        else:
            await conn.execute(f'DELETE FROM "{table.name}"')  # one-row state (queue_clock, ...)
    if rows:
        await conn.executemany(sql, rows)
    return len(rows)


async def _has_unique_key(conn: asyncpg.Connection, table: str) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
        " WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace"
        " AND i.indisunique LIMIT 1",
        table,
    )
    return bool(found)


async def _move_sequences(conn: asyncpg.Connection) -> None:
    """Identity columns continue after the copied ids."""
    for row in await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND is_identity = 'YES'"
    ):
        table, column = row["table_name"], row["column_name"]
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{column}'),"
            f' COALESCE((SELECT MAX("{column}") FROM "{table}"), 0) + 1, false)'
        )
