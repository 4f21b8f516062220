"""Both storage backends for tests: a SQLite file, or a fresh PostgreSQL database.

PostgreSQL tests use the server at KLINGBOT_TEST_DATABASE_URL (default: the local one, trust
auth). Each test gets its own database, cloned from a template migrated once per test session,
and dropped afterwards. Where no server answers, PostgreSQL tests are skipped with the reason;
under CI=true they fail instead, since CI has a server.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from storage import Clock, Database
from storage.postgres.sql import to_postgres

SERVER_URL = os.environ.get(
    "KLINGBOT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("sqlite", "postgresql")


def default_backend() -> str:
    """The backend of tests that are not run on both: SQLite, or KLINGBOT_TEST_BACKEND (to run
    the pipeline suites on PostgreSQL too: KLINGBOT_TEST_BACKEND=postgresql pytest ...)."""
    chosen = os.environ.get("KLINGBOT_TEST_BACKEND", "sqlite")
    if chosen not in BACKENDS:
        raise ValueError(f"KLINGBOT_TEST_BACKEND must be one of {BACKENDS}, not {chosen!r}")
    return chosen


# Storage test modules: `pytestmark = both_backends` runs each test on each backend.
both_backends = pytest.mark.parametrize("backend", BACKENDS)

_template: str | None = None
_template_lock: asyncio.Lock | None = None
_unreachable: str | None = None


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` on the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def require_postgres() -> None:
    """Skip (or, under CI=true, fail) when the test server did not answer."""
    if _unreachable is None:
        return
    reason = f"no PostgreSQL at {SERVER_URL}: {_unreachable}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
    pytest.skip(reason)


async def _admin() -> asyncpg.Connection:
    global _unreachable
    if _unreachable is None:
        try:
            return await asyncpg.connect(SERVER_URL, timeout=5)
        except (TimeoutError, OSError, asyncpg.PostgresError) as error:
            _unreachable = str(error) or type(error).__name__
    require_postgres()
    raise AssertionError("unreachable")  # pragma: no cover - require_postgres raised


async def template_database() -> str:
    """A database with every migration applied, made once per test session, to clone."""
    global _template, _template_lock
    if _template_lock is None:
        _template_lock = asyncio.Lock()
    async with _template_lock:
        if _template is None:
            name = f"klingbot_tpl_{os.getpid()}_{secrets.token_hex(4)}"
            admin = await _admin()
            try:
                await admin.execute(f'CREATE DATABASE "{name}"')
            finally:
                await admin.close()
            db = await Database.open(with_database(SERVER_URL, name))
            await db.close()
            _template = name
            atexit.register(_drop_sync, name)
        return _template


def _drop_sync(name: str) -> None:
    async def drop() -> None:
        admin = await asyncpg.connect(SERVER_URL, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    with contextlib.suppress(Exception):  # best effort at exit
        asyncio.run(drop())


async def create_database(*, migrated: bool = True) -> str:
    """A new database (empty, or a clone of the migrated template); return its URL."""
    admin = await _admin()
    name = f"klingbot_test_{secrets.token_hex(6)}"
    try:
        if migrated:
            template = await template_database()
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return with_database(SERVER_URL, name)


async def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    admin = await _admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


_per_directory: dict[Path, str] = {}


async def database_for(directory: Path) -> str:
    """The PostgreSQL database that stands for `directory` (made on first use, dropped when the
    test session ends): a test that restarts the bot on the same directory finds its data."""
    if directory not in _per_directory:
        url = await create_database()
        _per_directory[directory] = url
        atexit.register(_drop_sync, urlsplit(url).path.lstrip("/"))
    return _per_directory[directory]


def database_for_sync(directory: Path) -> str:
    """`database_for`, from code that is not a coroutine (settings built inside a running loop)."""
    if directory not in _per_directory:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, database_for(directory)).result()
    return _per_directory[directory]


@asynccontextmanager
async def database_target(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """Where a test's database lives: a SQLite path, or a fresh PostgreSQL database's URL."""
    if backend == "sqlite":
        yield str(tmp_path / "klingbot.db")
        return
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


@asynccontextmanager
async def open_database(
    backend: str, tmp_path: Path, clock: Clock | None = None
) -> AsyncIterator[Database]:
    """An open, migrated database on `backend`, closed (and dropped) afterwards."""
    async with database_target(backend, tmp_path) as target:
        db = await Database.open(target, clock=clock)
        try:
            yield db
        finally:
            await db.close()


class RawRefused(Exception):
    """The database itself refused a raw statement (constraint or trigger)."""


async def raw_sql(db: Database, sql: str, params: tuple[object, ...] = ()) -> None:
    """Run `sql` on a connection of its own, around every layer of the bot, as someone holding
    the database file or a login would; the driver's integrity refusal becomes RawRefused."""
    if db.dialect == "sqlite":
        conn = sqlite3.connect(db.location, isolation_level=None)
        try:
            conn.execute(sql, params)
        except sqlite3.IntegrityError as error:
            raise RawRefused(str(error)) from error
        finally:
            conn.close()
        return
    text, args = to_postgres(sql, params)
    pg = await asyncpg.connect(getattr(db, "url"))  # noqa: B009 - PostgresDatabase's own URL
    try:
        await pg.execute(text, *args)
    except asyncpg.IntegrityConstraintViolationError as error:
        raise RawRefused(str(error)) from error
    finally:
        await pg.close()


async def drop_trigger(db: Database, trigger: str, table: str) -> None:
    """Remove a schema rule, as an attacker with the file or an owner login could."""
    if db.dialect == "sqlite":
        await raw_sql(db, f"DROP TRIGGER IF EXISTS {trigger}")
    else:
        await raw_sql(db, f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
