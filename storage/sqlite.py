"""The SQLite backend (the default): connections, migrations, and group-committed writes.

One writer connection serves every write. Writes are queued and a single writer task runs them in
order, so writes are serialized (the "one writer" lock is the queue). Each batch of queued writes
runs inside one `BEGIN IMMEDIATE` transaction and one durable COMMIT (group commit): with many
concurrent callers the cost of the fsync is shared, and no caller sees success before its write is
durable. Each write runs in its own SAVEPOINT (or is a single statement, which SQLite makes atomic
by itself), so one refused write never undoes another in the same batch.

Reads go through a separate connection and see only committed data (WAL).

Why one module of this length: the group-commit writer, its batching and its failure rules only make sense read together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from storage.clock import Clock, SystemClock
from storage.database import Database, Params, Row, Tx, WriteFn, numbered_migrations
from storage.errors import DatabaseUnavailable

__all__ = ["SqliteDatabase", "SqliteTx"]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH_OPS = 256
# SQLite result codes that mean "the database cannot take writes", not "this write is wrong".
_UNAVAILABLE_MARKERS = (
    "readonly",
    "read-only",
    "disk is full",
    "database or disk is full",
    "database is locked",
    "disk i/o error",
    "unable to open",
)


def is_unavailable_error(error: BaseException) -> bool:
    """True when a sqlite error is about the database file, not about the statement."""
    text = str(error).lower()
    return isinstance(error, sqlite3.OperationalError) and any(
        m in text for m in _UNAVAILABLE_MARKERS
    )


class SqliteTx(Tx):
    """The statements of one write, run inside the writer's open transaction."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        super().__init__()
        self._conn = conn

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self._conn.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        cursor = await self._conn.execute(sql, params)
        return cursor.rowcount


@dataclass
class _Write:
    future: asyncio.Future[Any]
    fn: WriteFn[Any] | None = None
    sql: str = ""
    params: Params = field(default_factory=tuple)


class SqliteDatabase(Database):
    """An open SQLite database. Build with `await Database.open(path)`; close with `close()`."""

    dialect = "sqlite"
    groups_commits = True

    def __init__(
        self,
        path: str,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        clock: Clock,
    ) -> None:
        self.path = path
        self.clock = clock
        self._writer = writer
        self._reader = reader
        self._queue: asyncio.Queue[_Write] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._commits = 0
        self._committed = asyncio.Event()

    @classmethod
    async def connect(
        cls,
        target: str | Path,
        *,
        clock: Clock | None = None,
        migrate: bool = True,
        busy_timeout_ms: int = 10_000,
        durable: bool = True,
        **options: Any,
    ) -> SqliteDatabase:
        """Open (creating if needed) the database file at `target`; apply pending migrations."""
        if options:
            raise TypeError(f"SQLite takes no option(s) {', '.join(sorted(options))}")
        path = str(target)
        if path != ":memory:":
            owner_only(Path(path))
        writer = await _connect(path, busy_timeout_ms, durable)
        try:
            await writer.execute_fetchall("PRAGMA journal_mode=WAL")
            reader = await _connect(path, busy_timeout_ms, durable)
        except BaseException:
            await writer.close()
            raise
        db = cls(path, writer, reader, clock or SystemClock())
        try:
            if migrate:
                await db.migrate()
        except BaseException:
            await writer.close()
            await reader.close()
            raise
        db._task = asyncio.get_running_loop().create_task(db._run_writer(), name="db-writer")
        return db

    @property
    def location(self) -> str:
        return self.path

    async def close(self) -> None:
        """Finish queued writes, then close both connections."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._writer.close()
        await self._reader.close()

    # -- reads ---------------------------------------------------------------------------------

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a read-only query against committed data."""
        return list(await self._reader.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self._reader.execute_fetchall(sql, params)
        return next(iter(rows), None)

    # -- writes --------------------------------------------------------------------------------

    @property
    def commits(self) -> int:
        """Write transactions committed since the database was opened."""
        return self._commits

    async def next_commit(self, after: int) -> int:
        """Wait until more than `after` transactions have committed; return how many have (for
        whoever watches the data change: tests, tools)."""
        while self._commits <= after:
            await self._committed.wait()
        return self._commits

    async def write(self, fn: WriteFn[T]) -> T:
        """Run `fn(tx)` atomically in the next group commit; return its result once durable."""
        return await self._submit(_Write(self._new_future(), fn=fn))  # type: ignore[no-any-return]

    async def write_statement(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one statement atomically in the next group commit; return its rows once durable."""
        return await self._submit(_Write(self._new_future(), sql=sql, params=params))  # type: ignore[no-any-return]

    def _new_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, op: _Write) -> Any:
        if self._closed or self._task is None:
            raise DatabaseUnavailable("The database is closed.")
        self._queue.put_nowait(op)
        return await op.future

    async def check_writable(self) -> None:
        """Raise DatabaseUnavailable unless a write transaction can be opened and committed."""
        await self.write_statement("UPDATE db_heartbeat SET at_ms = ?", (self.clock.now_ms(),))

    async def set_query_only(self, on: bool) -> None:
        """Refuse (or allow again) every write, as SQLite does for a file that became read-only
        under the running process: for maintenance, and to rehearse that failure."""
        await self._writer.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")

    async def _run_writer(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH_OPS and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._run_batch(batch)
            except Exception as error:
                log.exception("database writer failed a batch")
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(_as_storage_error(error))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _run_batch(self, batch: list[_Write]) -> None:
        """Run a batch in one transaction; tell callers only after COMMIT."""
        tx = SqliteTx(self._writer)
        committed = False
        try:
            committed = await self._run_in_transaction(batch, tx)
        finally:
            tx.run_after_commit(committed)
            if committed:
                self._commits += 1
                self._committed.set()
                self._committed = asyncio.Event()

    async def _run_in_transaction(self, batch: list[_Write], tx: SqliteTx) -> bool:
        """Run `batch` between BEGIN and COMMIT, settle every caller's future; True if committed.

        A run of consecutive single-statement writes goes to the writer thread as one call,
        together with the BEGIN before it or the COMMIT after it when it starts or ends the
        batch: a batch of webhook rows costs one thread round trip, not one per statement.
        """
        outcomes: dict[int, tuple[bool, Any]] = {}
        lost: BaseException | None = None
        began = committed = False
        index = 0
        while index < len(batch):
            end = index + 1
            if batch[index].fn is None:
                while end < len(batch) and batch[end].fn is None:
                    end += 1
                run = await self._in_writer_thread(
                    _run_statements,
                    [(op.sql, op.params) for op in batch[index:end]],
                    not began,
                    end == len(batch),
                )
                if run.begin_error is not None:
                    lost = run.begin_error
                    break
                began = True
                outcomes.update(
                    (index + n, (ok, value if ok else _translate(value)))
                    for n, (ok, value) in enumerate(run.results)
                )
                committed = run.committed
                lost = run.lost
            else:
                if not began:
                    try:
                        await self._writer.execute("BEGIN IMMEDIATE")
                    except sqlite3.Error as error:
                        lost = error
                        break
                    began = True
                outcomes[index] = await self._run_one(tx, batch[index], index)
                if not self._writer.in_transaction:
                    # SQLite rolled the whole transaction back (disk full, I/O error).
                    ok, value = outcomes[index]
                    lost = (
                        value if not ok else DatabaseUnavailable("The write transaction was lost.")
                    )
            if lost is not None:
                break
            index = end
        if lost is None and not committed:
            try:
                await self._writer.execute("COMMIT")
                committed = True
            except sqlite3.Error as error:
                lost = error
                with contextlib.suppress(sqlite3.Error):
                    await self._writer.execute("ROLLBACK")
        for i, op in enumerate(batch):
            if op.future.done():
                continue
            ok, value = outcomes.get(i, (False, None))
            if ok and committed:
                op.future.set_result(value)
            elif not ok and isinstance(value, Exception) and value is not lost:
                op.future.set_exception(value)  # its own refusal (constraint, ...)
            else:  # rolled back with the transaction, or never run
                op.future.set_exception(_as_storage_error(lost or DatabaseUnavailable("not run")))
        return committed

    async def _in_writer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Call `fn(connection, *args)` on the writer connection's own thread.

        aiosqlite has no public call for this; `_execute` is what each of its own methods uses
        (the same in 0.20 to 0.22; pyproject pins that range). The writer's statements then need
        one thread round trip per run instead of one each (see `_run_in_transaction`).
        """
        writer = self._writer
        return await writer._execute(fn, writer._conn, *args)  # type: ignore[no-any-return,no-untyped-call]

    async def _run_one(self, tx: SqliteTx, op: _Write, index: int) -> tuple[bool, Any]:
        """Run one multi-statement write inside its own savepoint."""
        assert op.fn is not None
        savepoint = f"w{index}"
        await self._writer.execute(f"SAVEPOINT {savepoint}")
        mark = tx.mark()
        try:
            value = await op.fn(tx)
        except Exception as error:
            tx.drop_since(mark)
            if self._writer.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    await self._writer.execute(f"ROLLBACK TO {savepoint}")
                    await self._writer.execute(f"RELEASE {savepoint}")
            return False, _translate(error)
        await self._writer.execute(f"RELEASE {savepoint}")
        return True, value

    # -- migrations ----------------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply every migration not yet applied, each in its own transaction; return versions."""
        await self._writer.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)"
        )
        applied: list[int] = []
        for version, name, sql in numbered_migrations("storage.migrations"):
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                rows = await self._writer.execute_fetchall(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
                )
                if not list(rows):
                    for statement in split_statements(sql):
                        await self._writer.execute(statement)
                    await self._writer.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?,?,?)",
                        (version, name, self.clock.now_ms()),
                    )
                    applied.append(version)
                await self._writer.execute("COMMIT")
            except BaseException:
                if self._writer.in_transaction:
                    await self._writer.execute("ROLLBACK")
                raise
        return applied

    async def schema_version(self) -> int:
        row = await self.fetchone("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        return int(row[0]) if row else 0


@dataclass
class _StatementRun:
    """What `_run_statements` did, in the writer thread."""

    begin_error: BaseException | None = None
    results: list[tuple[bool, Any]] = field(default_factory=list)  # (ran, rows or error)
    lost: BaseException | None = None  # the transaction ended without a commit
    committed: bool = False


def _run_statements(
    conn: sqlite3.Connection, statements: list[tuple[str, Params]], begin: bool, commit: bool
) -> _StatementRun:
    """Run in the writer thread: [BEGIN,] each statement (atomic by itself) [, COMMIT].

    A refused statement (constraint, bad SQL) leaves the others alone. If SQLite drops the
    transaction (disk full, I/O error), the statements after it are not run.
    """
    run = _StatementRun()
    if begin:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            run.begin_error = error
            return run
    for sql, params in statements:
        try:
            run.results.append((True, conn.execute(sql, params).fetchall()))
        except Exception as error:
            run.results.append((False, error))
            if not conn.in_transaction:
                run.lost = error
                return run
    if commit:
        try:
            conn.execute("COMMIT")
            run.committed = True
        except sqlite3.Error as error:
            run.lost = error
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
    return run


def owner_only(path: Path) -> None:
    """Make the database file (and its WAL and shared-memory files) readable by its owner only:
    created 0600 in a directory created 0700, an existing one tightened. SQLite gives the -wal and
    -shm files it creates the database file's permissions."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError:
        return  # SQLite will say what is wrong with the path, as before
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except FileNotFoundError:
            continue
        except PermissionError as error:  # not ours: say so, but it may still be usable
            log.warning("cannot make %s readable by its owner only: %s", file, error)


async def _connect(path: str, busy_timeout_ms: int, durable: bool) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    for pragma in (
        f"PRAGMA busy_timeout = {int(busy_timeout_ms)}",
        "PRAGMA foreign_keys = ON",
        f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}",
    ):
        await conn.execute_fetchall(pragma)  # run to completion: an open statement holds a lock
    return conn


def split_statements(sql: str) -> Iterable[str]:
    """Split a script into complete statements (trigger bodies stay whole)."""
    buffer = ""
    for line in sql.splitlines(keepends=True):
        if not buffer and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete SQL statement at end of migration: {buffer[:80]!r}")


def _translate(error: Exception) -> Exception:
    """Turn errors about the database file into DatabaseUnavailable; leave the rest alone."""
    return _as_storage_error(error) if is_unavailable_error(error) else error


def _as_storage_error(error: BaseException) -> Exception:
    if isinstance(error, DatabaseUnavailable):
        return error
    if isinstance(error, sqlite3.Error) and is_unavailable_error(error):
        return DatabaseUnavailable(f"The database cannot be written right now ({error}).")
    if isinstance(error, sqlite3.Error):
        return DatabaseUnavailable(f"The database write failed ({error}).")
    if isinstance(error, Exception):
        return error
    return DatabaseUnavailable(str(error))
