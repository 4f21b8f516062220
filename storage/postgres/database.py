"""The PostgreSQL backend: asyncpg pools, SERIALIZABLE writes that are re-run when they lose a
race, and migrations applied once however many processes start together.

A write function (`write`) runs at SERIALIZABLE isolation, so it behaves as it does on SQLite's
single writer: it may read, decide and write, and PostgreSQL refuses (40001) whichever of two
racing writes would make that untrue; the loser is run again from the start, with backoff.
Deadlocks (40P01) are re-run the same way. A single statement (`write_statement`) runs alone at
READ COMMITTED (see there). The ledger's rules depend on neither: they are constraints, triggers
and row locks in the schema (storage/postgres/migrations).

In SQLite a refused statement undoes only itself, and a write may catch the refusal and go on. In
PostgreSQL a refused statement aborts the whole transaction. So a write first runs without
savepoints (the common, fast case: a refusal ends the write); if it goes on after a refusal, it is
rolled back and run again with a savepoint around each statement, which gives SQLite's meaning.

Reads and writes use separate pools, so a write that reads outside its transaction (to word an
error) never waits for a connection held by another write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from storage.clock import Clock, SystemClock
from storage.database import Database, Params, Row, Tx, WriteFn, numbered_migrations
from storage.errors import ConstraintRefused, DatabaseUnavailable
from storage.postgres.sql import integrity_message, to_postgres

__all__ = ["PostgresDatabase", "PostgresTx", "redacted"]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_WRITE_ATTEMPTS = 60
RETRY_BASE_S = 0.002
RETRY_CAP_S = 0.25
# One advisory lock key for "applying migrations" (any fixed 64-bit number; 'klingbot' in ASCII).
MIGRATION_LOCK_KEY = 0x6B6C696E67626F74
# SQLSTATE classes that mean "the database cannot take this now", not "this write is wrong".
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")
_READ_ONLY = "25006"
_RETRY = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)


def redacted(url: str) -> str:
    """`url` without its password, to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + host))


class _RunWithSavepoints(BaseException):
    """A write went on after a refused statement: run it again with savepoints (internal)."""


def _translate(error: BaseException) -> BaseException:
    """A driver error as storage's: a refusal by the schema, or an unavailable database."""
    if isinstance(error, asyncpg.IntegrityConstraintViolationError):
        return ConstraintRefused(integrity_message(error))
    if isinstance(error, asyncpg.PostgresError):
        state = getattr(error, "sqlstate", "") or ""
        if state == _READ_ONLY or state[:2] in _UNAVAILABLE_CLASSES:
            return DatabaseUnavailable(f"The database cannot be written right now ({error}).")
        unchanged: BaseException = error
        return unchanged
    if isinstance(error, (OSError, asyncpg.InterfaceError, asyncio.TimeoutError)):
        return DatabaseUnavailable(f"The database cannot be reached ({error}).")
    return error


def _rowcount(status: str) -> int:
    """Rows changed, from a command tag such as 'UPDATE 3' or 'INSERT 0 1'."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresTx(Tx):
    """The statements of one write, inside its SERIALIZABLE transaction."""

    def __init__(self, conn: asyncpg.Connection, *, savepoints: bool) -> None:
        super().__init__()
        self._conn = conn
        self._savepoints = savepoints
        self._savepoint_count = 0
        self.refused: BaseException | None = None  # a statement failed, without a savepoint

    async def _run(self, call: Callable[..., Awaitable[Any]], sql: str, params: Params) -> Any:
        if self.refused is not None:
            raise _RunWithSavepoints
        if isinstance(params, dict):
            raise TypeError("the PostgreSQL backend takes positional (?) parameters only")
        text, args = to_postgres(sql, params)
        if not self._savepoints:
            try:
                return await call(text, *args)
            except _RETRY as error:
                self.refused = error  # the transaction is lost; the write is run again
                raise
            except asyncpg.PostgresError as error:
                self.refused = error
                raise _translate(error) from error
        self._savepoint_count += 1
        name = f"s{self._savepoint_count}"
        await self._conn.execute(f"SAVEPOINT {name}")
        try:
            result = await call(text, *args)
        except _RETRY:
            raise
        except asyncpg.PostgresError as error:
            await self._conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
            raise _translate(error) from error
        await self._conn.execute(f"RELEASE SAVEPOINT {name}")
        return result

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._run(self._conn.fetch, sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Params = ()) -> int:
        return _rowcount(await self._run(self._conn.execute, sql, params))


class PostgresDatabase(Database):
    """An open PostgreSQL database. Build with `await Database.open("postgresql://...")`."""

    dialect = "postgresql"
    url_schemes = ("postgresql", "postgres")

    def __init__(
        self, url: str, writers: asyncpg.Pool, readers: asyncpg.Pool, clock: Clock
    ) -> None:
        self.url = url
        self.clock = clock
        self._writers = writers
        self._readers = readers
        self._closed = False
        self._read_only = False
        self._commits = 0
        self._committed = asyncio.Event()
        self.retries = 0  # writes re-run after losing a race (for tests and benchmarks)
        self.writer_pids: set[int] = set()  # server processes that ran writes (the same)

    @classmethod
    async def connect(
        cls,
        target: str | Path,
        *,
        clock: Clock | None = None,
        migrate: bool = True,
        write_connections: int = 10,
        read_connections: int = 5,
        connect_timeout_s: float = 10.0,
        **options: Any,
    ) -> PostgresDatabase:
        """Connect to the database at the URL `target`; apply pending migrations."""
        if options:
            raise TypeError(f"PostgreSQL takes no option(s) {', '.join(sorted(options))}")
        url = str(target)
        try:
            writers = await _pool(url, write_connections, connect_timeout_s)
        except Exception as error:
            raise DatabaseUnavailable(
                f"Cannot connect to PostgreSQL at {redacted(url)}: {error}"
            ) from error
        try:
            readers = await _pool(url, read_connections, connect_timeout_s)
        except Exception as error:
            await writers.close()
            raise DatabaseUnavailable(
                f"Cannot connect to PostgreSQL at {redacted(url)}: {error}"
            ) from error
        db = cls(url, writers, readers, clock or SystemClock())
        try:
            if migrate:
                await db.migrate()
        except BaseException:
            await db.close()
            raise
        return db

    @property
    def location(self) -> str:
        return redacted(self.url)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection of its own, for bulk work (`klingbot db copy`): statements run
        as given, in whatever transaction the caller opens."""
        async with self._writers.acquire() as conn:
            yield conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._writers.close()
        await self._readers.close()

    # -- reads ---------------------------------------------------------------------------------

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        if isinstance(params, dict):
            raise TypeError("the PostgreSQL backend takes positional (?) parameters only")
        text, args = to_postgres(sql, params)
        try:
            async with self._readers.acquire() as conn:
                return list(await conn.fetch(text, *args))
        except Exception as error:
            raise _translate(error) from error

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    # -- writes --------------------------------------------------------------------------------

    @property
    def commits(self) -> int:
        return self._commits

    async def next_commit(self, after: int) -> int:
        while self._commits <= after:
            await self._committed.wait()
        return self._commits

    async def write(self, fn: WriteFn[T]) -> T:
        if self._closed:
            raise DatabaseUnavailable("The database is closed.")
        savepoints = False
        for attempt in range(MAX_WRITE_ATTEMPTS):
            try:
                result = await self._attempt(fn, savepoints)
            except _RunWithSavepoints:
                savepoints = True
                continue
            except _RETRY:
                self.retries += 1
                await asyncio.sleep(random.uniform(0, min(RETRY_CAP_S, RETRY_BASE_S * 2**attempt)))
                continue
            self._commits += 1
            self._committed.set()
            self._committed = asyncio.Event()
            return result
        raise DatabaseUnavailable(
            f"The database is too busy: a write lost {MAX_WRITE_ATTEMPTS} races in a row."
        )

    async def _attempt(self, fn: WriteFn[T], savepoints: bool) -> T:
        """One run of `fn` in its own transaction; its after-commit callbacks run if it commits."""
        committed = False
        tx: PostgresTx | None = None
        try:
            async with self._writers.acquire() as conn:
                self.writer_pids.add(conn.get_server_pid())
                tx = PostgresTx(conn, savepoints=savepoints)
                transaction = conn.transaction(isolation="serializable", readonly=self._read_only)
                await transaction.start()
                try:
                    result = await fn(tx)
                    if tx.refused is not None:  # went on after a refusal: SQLite keeps the rest
                        raise _RunWithSavepoints
                except BaseException:
                    await transaction.rollback()
                    raise
                await transaction.commit()
                committed = True
                return result
        except (_RunWithSavepoints, *_RETRY):
            raise
        except asyncpg.PostgresError as error:
            raise _translate(error) from error
        except (OSError, asyncpg.InterfaceError) as error:
            raise _translate(error) from error
        finally:
            if tx is not None:
                tx.run_after_commit(committed)

    async def write_statement(self, sql: str, params: Params = ()) -> list[Row]:
        """One statement, sent alone as its own transaction (no BEGIN and COMMIT round trips),
        at READ COMMITTED: it decides nothing outside itself, and what it must not break is in
        the statement (WHERE state IN ..., ON CONFLICT) or in the schema (constraints, triggers,
        row locks). SERIALIZABLE here would refuse and re-run many statements that do not
        conflict at all (its predicate locks cover index pages shared by other members' rows):
        bench/ledger.py measured 0.21 of the baseline with it, 0.56 without."""

        async def run(tx: Tx) -> list[Row]:
            return await tx.fetchall(sql, params)

        if self._read_only or isinstance(params, dict):
            return await self.write(run)
        if self._closed:
            raise DatabaseUnavailable("The database is closed.")
        text, args = to_postgres(sql, params)
        for attempt in range(MAX_WRITE_ATTEMPTS):
            try:
                async with self._writers.acquire() as conn:
                    self.writer_pids.add(conn.get_server_pid())
                    rows = list(await conn.fetch(text, *args))
            except _RETRY:
                self.retries += 1
                await asyncio.sleep(random.uniform(0, min(RETRY_CAP_S, RETRY_BASE_S * 2**attempt)))
                continue
            except Exception as error:
                raise _translate(error) from error
            self._commits += 1
            self._committed.set()
            self._committed = asyncio.Event()
            return rows
        raise DatabaseUnavailable(
            f"The database is too busy: a write lost {MAX_WRITE_ATTEMPTS} races in a row."
        )

    async def check_writable(self) -> None:
        await self.write_statement("UPDATE db_heartbeat SET at_ms = ?", (self.clock.now_ms(),))

    async def set_query_only(self, on: bool) -> None:
        self._read_only = on

    # -- migrations ----------------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply pending migrations; several processes starting at once apply each only once
        (they queue on an advisory lock, and each finds what the first applied)."""
        applied: list[int] = []
        async with self._writers.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)"
                )
                for version, name, sql in numbered_migrations("storage.postgres.migrations"):
                    async with conn.transaction():
                        done = await conn.fetchval(
                            "SELECT 1 FROM schema_migrations WHERE version = $1", version
                        )
                        if done:
                            continue
                        await conn.execute(sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, applied_at_ms)"
                            " VALUES ($1, $2, $3)",
                            version,
                            name,
                            self.clock.now_ms(),
                        )
                    applied.append(version)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        return applied

    async def schema_version(self) -> int:
        row = await self.fetchone("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        return int(row[0]) if row else 0


def _number(text: str) -> int | float:
    """NUMERIC (what SUM and AVG of integers give) as SQLite gives it: an int when whole."""
    value = Decimal(text)
    return int(value) if value == value.to_integral_value() else float(value)


async def _setup_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "numeric", encoder=str, decoder=_number, schema="pg_catalog", format="text"
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Hand a connection back to the pool as it is: this code leaves no session state behind
    (no LISTEN, no open cursor, advisory locks released by their holder), so asyncpg's reset
    query would only cost a round trip per write."""


async def _pool(url: str, size: int, timeout_s: float) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=size,
        timeout=timeout_s,
        statement_cache_size=512,
        init=_setup_connection,
        reset=_keep_session,
    )
    assert pool is not None
    return pool
