"""The PostgreSQL schema (storage/postgres/migrations) against the SQLite one: same migrations,
tables, columns in the same order, types, keys, indexes, triggers and seed rows; and the ledger's
rules refused by PostgreSQL itself, from raw SQL and from two sessions racing.

Runs against the PostgreSQL at 127.0.0.1:5432 (`KLINGBOT_TEST_DATABASE_URL` overrides it) in a
database of its own, created and dropped per test. Skipped when no server answers, except under
CI=true, where that fails. Self-contained on purpose: the PostgreSQL fixture of storage's own
tests will replace the helpers here.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import secrets
import sqlite3
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from storage import Database, ManualClock

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Tables that SQLite orders or deletes by its hidden rowid (storage/jobs.py, storage/policy.py):
# in PostgreSQL they carry a real `rowid` column, last.
ROWID_TABLES = {"guild_blocklist", "jobs", "webhook_deliveries"}
# SQLite-only tables: the migration runner's own, and the guard the PostgreSQL schema replaces
# with a transaction-local setting.
SQLITE_ONLY_TABLES = {"schema_migrations", "ledger_guard"}
PG_TYPES = {"INTEGER": "bigint", "TEXT": "text", "REAL": "double precision", "BLOB": "bytea"}
LOCK_WAIT_TIMEOUT_S = 10.0

# -- helpers (to be replaced by the storage suite's PostgreSQL fixture) ----------------------------


def _server_url() -> str:
    return os.environ.get("KLINGBOT_TEST_DATABASE_URL", DEFAULT_SERVER_URL)


async def _connect_server() -> Any:
    url = _server_url()
    try:
        return await asyncpg.connect(url, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no PostgreSQL answers at {url}: {error}")
        pytest.skip(f"no PostgreSQL answers at {url} ({error}); set KLINGBOT_TEST_DATABASE_URL")


def _migration_files(package: str) -> list[tuple[str, str]]:
    """(file name, text) of a package's `NNNN_name.sql` files, in order."""
    found = [
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in resources.files(package).iterdir()
        if entry.name.endswith(".sql") and entry.name[:4].isdigit()
    ]
    return sorted(found)


async def _apply_migrations(conn: Any) -> None:
    """As the PostgreSQL runner does: each file whole, in one execute, in one transaction."""
    for _, sql in _migration_files("storage.postgres.migrations"):
        async with conn.transaction():
            await conn.execute(sql)


@pytest.fixture
async def pg() -> AsyncIterator[Any]:
    """A fresh database with every PostgreSQL migration applied; yields a pool on it."""
    server = await _connect_server()
    name = f"klingbot_schema_{secrets.token_hex(6)}"
    await server.execute(f'CREATE DATABASE "{name}"')
    pool = None
    try:
        pool = await asyncpg.create_pool(_server_url(), database=name, min_size=0, max_size=4)
        async with pool.acquire() as conn:
            await _apply_migrations(conn)
        yield pool
    finally:
        if pool is not None:
            await pool.close()
        await server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await server.close()


@pytest.fixture
async def sqlite_path(tmp_path: Path) -> Path:
    """A SQLite database migrated by the current code."""
    path = tmp_path / "klingbot.db"
    db = await Database.open(path, clock=ManualClock())
    await db.close()
    return path


# -- the schema matches SQLite's ------------------------------------------------------------------


def test_one_postgres_migration_per_sqlite_migration() -> None:
    sqlite_names = [name for name, _ in _migration_files("storage.migrations")]
    pg_names = [name for name, _ in _migration_files("storage.postgres.migrations")]
    assert pg_names == sqlite_names


def test_every_sqlite_refusal_message_is_raised_by_the_same_postgres_migration() -> None:
    pg_files = dict(_migration_files("storage.postgres.migrations"))
    messages = 0
    for name, sql in _migration_files("storage.migrations"):
        for message in re.findall(r"RAISE\(ABORT, '([^']+)'\)", sql):
            assert f"'{message}'" in pg_files[name], (name, message)
            messages += 1
    assert messages >= 12  # the scan still finds SQLite's triggers


def _sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return sorted(r[0] for r in rows if r[0] not in SQLITE_ONLY_TABLES)


def _sqlite_columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, str, bool, Any]]:
    """(name, PostgreSQL type, not null, default) per column, in order."""
    out = []
    for _, name, decl, notnull, default, pk in conn.execute(f"PRAGMA table_info({table})"):
        out.append((name, PG_TYPES[decl.upper()], bool(notnull or pk), default))
    return out


def _pg_default(default: str | None) -> str | None:
    """`'none'::text` -> `'none'`: the default as SQLite spells it."""
    return None if default is None else re.sub(r"::[a-z ]+$", "", default)


async def _pg_columns(conn: Any, table: str) -> list[tuple[str, str, bool, Any]]:
    rows = await conn.fetch(
        "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        table,
    )
    return [
        (
            r["column_name"],
            r["data_type"],
            r["is_nullable"] == "NO",
            _pg_default(r["column_default"]),
        )
        for r in rows
    ]


async def test_tables_and_columns_match_sqlite(pg: Any, sqlite_path: Path) -> None:
    lite = sqlite3.connect(sqlite_path)
    try:
        async with pg.acquire() as conn:
            pg_tables = sorted(
                r["table_name"]
                for r in await conn.fetch(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
                )
            )
            assert pg_tables == _sqlite_tables(lite)
            for table in pg_tables:
                expected = _sqlite_columns(lite, table)
                columns = await _pg_columns(conn, table)
                if table in ROWID_TABLES:
                    # rowid came last when it was added (jobs: 0009); columns added later go
                    # after it, as on SQLite they go after every other (db copy maps by name)
                    rowid = ("rowid", "bigint", True, None)
                    assert rowid in columns, table
                    columns.remove(rowid)
                assert columns == expected, table
    finally:
        lite.close()


async def test_only_rowid_tables_have_a_rowid_column(pg: Any) -> None:
    async with pg.acquire() as conn:
        rows = await conn.fetch(
            "SELECT table_name, is_identity FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND column_name = 'rowid'"
        )
    assert {r["table_name"] for r in rows} == ROWID_TABLES
    assert all(r["is_identity"] == "YES" for r in rows)


def _literal_text(node: ast.AST) -> str | None:
    """The text of a string literal (adjacent literals are one node), or an f-string's fixed parts."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
        )
    return None


def _tables_the_storage_code_uses_rowid_of() -> set[str]:
    """Tables whose rowid the SQL in storage/*.py names: `alias.rowid` resolved through
    `FROM|JOIN table AS alias`, a bare `rowid` meaning the statement's FROM/UPDATE/INTO tables."""
    tables: set[str] = set()
    for module in (Path(__file__).resolve().parent.parent / "storage").glob("*.py"):
        if module.name in ("sqlite.py", "copy.py"):  # backend internals that read sqlite_master
            continue
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            text = _literal_text(node)
            if text is None or not re.search(r"\browid\b", text):
                continue
            found = re.findall(r"\b(?:FROM|JOIN)\s+(\w+)\s+AS\s+(\w+)", text)
            aliases = {alias: table for table, alias in found}
            for qualifier in re.findall(r"\b(\w+)\.rowid\b", text):
                tables.add(aliases.get(qualifier, qualifier))
            if re.search(r"(?<!\.)\browid\b", text):
                tables.update(re.findall(r"\b(?:FROM|UPDATE|INTO)\s+(\w+)", text))
    return tables


def test_rowid_tables_are_those_the_storage_code_orders_by_rowid() -> None:
    assert _tables_the_storage_code_uses_rowid_of() == ROWID_TABLES


async def test_keys_indexes_triggers_and_constraint_names_match_sqlite(
    pg: Any, sqlite_path: Path
) -> None:
    lite = sqlite3.connect(sqlite_path)
    try:
        tables = _sqlite_tables(lite)
        lite_pk = {
            t: [
                r[1]
                for r in sorted(lite.execute(f"PRAGMA table_info({t})"), key=lambda r: r[5])
                if r[5]
            ]
            for t in tables
        }
        lite_fk = {
            (t, r[3], r[2], r[4])
            for t in tables
            for r in lite.execute(f"PRAGMA foreign_key_list({t})")
        }
        lite_unique = set()
        for t in tables:
            for _, index, unique, origin, _partial in lite.execute(f"PRAGMA index_list({t})"):
                if unique and origin == "u":
                    cols = tuple(r[2] for r in lite.execute(f"PRAGMA index_info({index})"))
                    lite_unique.add((t, cols))
        lite_named = {
            name
            for (sql,) in lite.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")
            for name in re.findall(r"CONSTRAINT\s+(\w+)", sql)
        }
        lite_indexes = {
            r[0]
            for r in lite.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
        lite_triggers = {
            r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        }
    finally:
        lite.close()
    async with pg.acquire() as conn:
        pg_pk: dict[str, list[str]] = {t: [] for t in tables}
        for r in await conn.fetch(
            "SELECT k.table_name, k.column_name FROM information_schema.table_constraints AS c"
            " JOIN information_schema.key_column_usage AS k USING (constraint_schema, constraint_name)"
            " WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_schema = current_schema()"
            " ORDER BY k.table_name, k.ordinal_position"
        ):
            pg_pk[r["table_name"]].append(r["column_name"])
        pg_fk = {
            (r["tbl"], r["col"], r["ref"], r["refcol"])
            for r in await conn.fetch(
                "SELECT c.conrelid::regclass::text AS tbl, a.attname AS col,"
                " c.confrelid::regclass::text AS ref, af.attname AS refcol"
                " FROM pg_constraint AS c, unnest(c.conkey, c.confkey) AS k(col, refcol),"
                " pg_attribute AS a, pg_attribute AS af"
                " WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace"
                " AND a.attrelid = c.conrelid AND a.attnum = k.col"
                " AND af.attrelid = c.confrelid AND af.attnum = k.refcol"
            )
        }
        pg_unique = {
            (r["tbl"], tuple(r["cols"]))
            for r in await conn.fetch(
                "SELECT c.conrelid::regclass::text AS tbl,"
                " array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY AS k(n, i)"
                "  JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = k.n"
                "  ORDER BY k.i) AS cols"
                " FROM pg_constraint AS c"
                " WHERE c.contype = 'u' AND c.connamespace = current_schema()::regnamespace"
            )
        }
        pg_named = {
            r["conname"]
            for r in await conn.fetch(
                "SELECT conname FROM pg_constraint WHERE connamespace = current_schema()::regnamespace"
            )
        }
        pg_indexes = {
            r["indexname"]
            for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            )
        }
        pg_triggers = {
            r["tgname"]
            for r in await conn.fetch("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        }
    assert pg_pk == lite_pk
    assert pg_fk == lite_fk
    assert pg_unique - {(t, ("rowid",)) for t in ROWID_TABLES} == lite_unique
    assert lite_named <= pg_named
    assert lite_indexes <= pg_indexes
    assert lite_triggers <= pg_triggers


async def test_seed_rows_match_sqlite(pg: Any, sqlite_path: Path) -> None:
    lite = sqlite3.connect(sqlite_path)
    try:
        tables = _sqlite_tables(lite)
        lite_rows = {t: sorted(lite.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
    finally:
        lite.close()
    async with pg.acquire() as conn:
        for table in tables:
            rows = await conn.fetch(f"SELECT * FROM {table}")
            plain = sorted(tuple(v for k, v in r.items() if k != "rowid") for r in rows)
            assert plain == lite_rows[table], table
    assert lite_rows["accounts"] and lite_rows["job_transitions"]  # there were seeds to compare


# -- the rules hold against raw SQL ---------------------------------------------------------------

MEMBER = "(SELECT id FROM accounts WHERE kind = 'member')"
SPEND = "(SELECT id FROM accounts WHERE kind = 'spend')"
ISSUANCE = "(SELECT id FROM accounts WHERE kind = 'issuance')"
INSERT = (
    "INSERT INTO transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount,"
    " pending_id, reason, job_id, created_at_ms)"
)


def _hold(key: str) -> str:
    return f"(SELECT id FROM transfers WHERE idempotency_key = '{key}')"


# A member with 100 credits, a captured hold of 10 for job j1, an open hold of 5 for job j2:
# 85 available. Plus a queued job, one job event and one moderation event.
SETUP = f"""
INSERT INTO accounts (kind, guild_id, user_id, created_at_ms) VALUES ('member', 10, 1, 0);
{INSERT} VALUES ('issue', 'single', {ISSUANCE}, {MEMBER}, 100, NULL, 'issue', NULL, 0);
{INSERT} VALUES ('hold', 'pending', {MEMBER}, {SPEND}, 10, NULL, 'job', 'j1', 0);
{INSERT} VALUES ('capture', 'post', {MEMBER}, {SPEND}, 10, {_hold("hold")}, 'capture', 'j1', 0);
{INSERT} VALUES ('open', 'pending', {MEMBER}, {SPEND}, 5, NULL, 'job', 'j2', 0);
INSERT INTO jobs (id, state, provider, request_json, cost, webhook_token, media_token,
                  created_at_ms, updated_at_ms)
    VALUES ('j1', 'queued', 'fal', '{{}}', 10, 'wt', 'mt', 0, 0);
INSERT INTO job_events (job_id, at_ms, to_state) VALUES ('j1', 0, 'queued');
INSERT INTO moderation_events (guild_id, actor_id, action, at_ms) VALUES (10, 7, 'freeze', 0);
"""

TRIGGER = "23000"  # integrity_constraint_violation, raised by the schema's triggers
ATTACKS = {
    "update entry": ("UPDATE transfers SET amount = 1", TRIGGER, "ledger entries are immutable"),
    "delete entry": ("DELETE FROM transfers", TRIGGER, "ledger entries are immutable"),
    "truncate entries": (
        "TRUNCATE transfers CASCADE",
        TRIGGER,
        "ledger entries are immutable",
    ),
    "raise totals": (
        "UPDATE accounts SET credits_posted = credits_posted + 1000000",
        TRIGGER,
        "account totals change only through ledger entries",
    ),
    "raise totals claiming to apply": (
        "SELECT set_config('klingbot.applying', 'on', true);"
        " UPDATE accounts SET credits_posted = credits_posted + 1000000",
        TRIGGER,
        "account totals change only through ledger entries",
    ),
    "lower member debits": (
        "UPDATE accounts SET debits_posted = debits_posted - 1 WHERE kind = 'member'",
        TRIGGER,
        "account totals change only through ledger entries",
    ),
    "re-assign account": (
        "UPDATE accounts SET user_id = 2 WHERE kind = 'member'",
        TRIGGER,
        "accounts cannot be re-assigned",
    ),
    "delete account": ("DELETE FROM accounts", TRIGGER, "accounts cannot be deleted"),
    "truncate accounts": ("TRUNCATE accounts CASCADE", TRIGGER, "accounts cannot be deleted"),
    "overdraw with a hold": (
        f"{INSERT} VALUES ('x', 'pending', {MEMBER}, {SPEND}, 86, NULL, 'job', 'j3', 0)",
        "23514",
        "available_nonnegative",
    ),
    "overdraw with a move": (
        f"{INSERT} VALUES ('x', 'single', {MEMBER}, {ISSUANCE}, 86, NULL, 'revoke', NULL, 0)",
        "23514",
        "available_nonnegative",
    ),
    "resolve a hold twice": (
        f"{INSERT} VALUES ('x', 'void', {MEMBER}, {SPEND}, 10, {_hold('hold')}, 'void', 'j1', 0)",
        "23505",
        "transfers_one_resolution",
    ),
    "resolve a missing hold": (
        f"{INSERT} VALUES ('x', 'post', {MEMBER}, {SPEND}, 1, 999999, 'capture', 'j2', 0)",
        TRIGGER,
        "hold not found",
    ),
    "capture more than held": (
        f"{INSERT} VALUES ('x', 'post', {MEMBER}, {SPEND}, 6, {_hold('open')}, 'capture', 'j2', 0)",
        TRIGGER,
        "capture exceeds the held amount",
    ),
    "void part of a hold": (
        f"{INSERT} VALUES ('x', 'void', {MEMBER}, {SPEND}, 4, {_hold('open')}, 'void', 'j2', 0)",
        TRIGGER,
        "void or expire must release the held amount",
    ),
    "resolve into another account": (
        f"{INSERT} VALUES ('x', 'post', {MEMBER}, {ISSUANCE}, 5, {_hold('open')}, 'capture', 'j2', 0)",
        TRIGGER,
        "resolution accounts differ from the hold",
    ),
    "refund more than captured": (
        f"{INSERT} VALUES ('x', 'single', {SPEND}, {MEMBER}, 11, NULL, 'refund', 'j1', 0)",
        TRIGGER,
        "refund exceeds what was captured for the job",
    ),
    "refund without a job": (
        f"{INSERT} VALUES ('x', 'single', {SPEND}, {MEMBER}, 1, NULL, 'refund', NULL, 0)",
        TRIGGER,
        "refund exceeds what was captured for the job: a refund must name its job",
    ),
    "reuse an idempotency key": (
        f"{INSERT} VALUES ('issue', 'single', {ISSUANCE}, {MEMBER}, 5, NULL, 'issue', NULL, 0)",
        "23505",
        "transfers_idempotency_key_unique",
    ),
    "illegal job transition": (
        "UPDATE jobs SET state = 'delivered' WHERE id = 'j1'",
        TRIGGER,
        "illegal job transition",
    ),
    "update job event": (
        "UPDATE job_events SET detail = 'x'",
        TRIGGER,
        "job events are immutable",
    ),
    "update moderation event": (
        "UPDATE moderation_events SET reason = 'x'",
        TRIGGER,
        "moderation events are immutable",
    ),
    "delete moderation event": (
        "DELETE FROM moderation_events",
        TRIGGER,
        "moderation events are immutable",
    ),
    "truncate moderation events": (
        "TRUNCATE moderation_events",
        TRIGGER,
        "moderation events are immutable",
    ),
}


async def _snapshot(conn: Any) -> list[list[tuple[Any, ...]]]:
    out = []
    for table in ("accounts", "transfers", "jobs", "job_events", "moderation_events"):
        out.append([tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1")])
    return out


async def _totals_match_entries(conn: Any) -> bool:
    """Every account's totals (account_totals: running for members and pools, summed for system accounts) equal the sums recomputed from its entries."""
    bad = await conn.fetchval(
        """
        WITH effect AS (
            SELECT t.*, CASE t.kind WHEN 'pending' THEN t.amount WHEN 'single' THEN 0
                                    ELSE -h.amount END AS pending_delta,
                   CASE WHEN t.kind IN ('single', 'post') THEN t.amount ELSE 0 END AS posted_delta
            FROM transfers AS t LEFT JOIN transfers AS h ON h.id = t.pending_id)
        SELECT count(*) FROM account_totals AS a WHERE
            (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted) IS DISTINCT FROM
            ((SELECT COALESCE(SUM(pending_delta), 0) FROM effect WHERE debit_account_id = a.id),
             (SELECT COALESCE(SUM(posted_delta), 0) FROM effect WHERE debit_account_id = a.id),
             (SELECT COALESCE(SUM(pending_delta), 0) FROM effect WHERE credit_account_id = a.id),
             (SELECT COALESCE(SUM(posted_delta), 0) FROM effect WHERE credit_account_id = a.id))
        """
    )
    return int(bad) == 0


@pytest.mark.parametrize(("sql", "sqlstate", "message"), ATTACKS.values(), ids=ATTACKS.keys())
async def test_raw_sql_is_refused(pg: Any, sql: str, sqlstate: str, message: str) -> None:
    async with pg.acquire() as conn:
        await conn.execute(SETUP)
        before = await _snapshot(conn)
        with pytest.raises(asyncpg.IntegrityConstraintViolationError) as refused:
            async with conn.transaction():
                await conn.execute(sql)
        assert refused.value.sqlstate == sqlstate
        assert message in str(refused.value)
        if sqlstate == TRIGGER:
            assert str(refused.value) == message  # exactly SQLite's RAISE text
        assert await _snapshot(conn) == before
        assert await _totals_match_entries(conn)


async def test_setup_itself_is_accepted_and_consistent(pg: Any) -> None:
    async with pg.acquire() as conn:
        await conn.execute(SETUP)
        member = await conn.fetchrow(f"SELECT * FROM accounts WHERE id = {MEMBER}")
        assert await _totals_match_entries(conn)
    assert member["credits_posted"] - member["debits_posted"] - member["debits_pending"] == 85


async def test_refunds_up_to_the_capture_and_replays_pass(pg: Any) -> None:
    async with pg.acquire() as conn:
        await conn.execute(SETUP)
        refund = f"{INSERT} VALUES ($1, 'single', {SPEND}, {MEMBER}, $2, NULL, 'refund', 'j1', 0)"
        upsert = refund + " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
        assert await conn.fetch(upsert, "r1", 4)
        assert await conn.fetch(upsert, "r1", 4) == []  # a replay writes nothing
        assert await conn.fetch(upsert, "r2", 6)  # 4 + 6 = the 10 captured
        with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="refund exceeds"):
            await conn.execute(refund, "r3", 1)
        assert await _totals_match_entries(conn)


# -- the rules hold with two sessions racing ------------------------------------------------------


async def _until_waiting_on_lock(observer: Any, pid: int) -> None:
    """Return once backend `pid` waits for a lock (polled against a deadline)."""
    async with asyncio.timeout(LOCK_WAIT_TIMEOUT_S):
        while not await observer.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)", pid
        ):
            await asyncio.sleep(0.005)


async def _race(
    pg: Any, isolation: str, first: str, second: str
) -> tuple[BaseException | None, Any]:
    """Run `first` in one transaction (left open), `second` in another, which must then wait on
    a lock; commit the first and return what the second raised (or None) and returned."""
    async with pg.acquire() as a, pg.acquire() as b, pg.acquire() as observer:
        tx_a = a.transaction(isolation=isolation)
        await tx_a.start()
        await a.fetchval("SELECT 1")  # the snapshot of a repeatable-read/serializable tx starts
        tx_b = b.transaction(isolation=isolation)
        await tx_b.start()
        await b.fetchval("SELECT 1")
        await a.execute(first)

        async def run_second() -> Any:
            return await b.fetch(second)

        second_task = asyncio.create_task(run_second())
        await _until_waiting_on_lock(observer, b.get_server_pid())
        await tx_a.commit()
        error: BaseException | None = None
        result = None
        try:
            result = await second_task
            await tx_b.commit()
        except asyncpg.PostgresError as e:
            error = e
            await tx_b.rollback()
        assert await _totals_match_entries(observer)
        return error, result


ISOLATIONS = ["read_committed", "repeatable_read", "serializable"]
SERIALIZATION_FAILURE = "40001"


def _expected(isolation: str, refused_in_read_committed: str) -> str:
    """Under READ COMMITTED the rule refuses the second writer; under a snapshot isolation level
    it gets a serialization failure first (the caller retries and is then refused)."""
    return refused_in_read_committed if isolation == "read_committed" else SERIALIZATION_FAILURE


async def _member_debits_pending(pg: Any) -> int:
    async with pg.acquire() as conn:
        return int(await conn.fetchval(f"SELECT debits_pending FROM accounts WHERE id = {MEMBER}"))


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_two_holds_racing_cannot_overdraw(pg: Any, isolation: str) -> None:
    async with pg.acquire() as conn:
        await conn.execute(SETUP)  # 85 available: either hold of 60 fits, both do not
    hold = f"{INSERT} VALUES ('{{}}', 'pending', {MEMBER}, {SPEND}, 60, NULL, 'job', '{{}}', 0)"
    error, _ = await _race(pg, isolation, hold.format("a", "ja"), hold.format("b", "jb"))
    assert isinstance(error, asyncpg.PostgresError)
    assert error.sqlstate == _expected(isolation, "23514")
    assert await _member_debits_pending(pg) == 5 + 60


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_two_refunds_racing_cannot_exceed_the_capture(pg: Any, isolation: str) -> None:
    async with pg.acquire() as conn:
        await conn.execute(SETUP)  # 10 captured for j1: either refund of 7 fits, both do not
    refund = f"{INSERT} VALUES ('{{}}', 'single', {SPEND}, {MEMBER}, 7, NULL, 'refund', 'j1', 0)"
    error, _ = await _race(pg, isolation, refund.format("ra"), refund.format("rb"))
    assert isinstance(error, asyncpg.PostgresError)
    assert error.sqlstate == _expected(isolation, TRIGGER)
    if isolation == "read_committed":
        assert str(error) == "refund exceeds what was captured for the job"
    async with pg.acquire() as conn:
        refunded = await conn.fetchval(
            f"SELECT SUM(amount) FROM transfers WHERE debit_account_id = {SPEND} AND job_id = 'j1'"
        )
    assert refunded == 7


async def test_a_refund_replayed_while_the_first_commits_is_a_replay(pg: Any) -> None:
    async with pg.acquire() as conn:
        await conn.execute(SETUP)
    refund = (
        f"{INSERT} VALUES ('r', 'single', {SPEND}, {MEMBER}, 7, NULL, 'refund', 'j1', 0)"
        " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
    )
    error, rows = await _race(pg, "read_committed", refund, refund)
    assert error is None
    assert rows == []


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_a_hold_racing_to_two_resolutions_resolves_once(pg: Any, isolation: str) -> None:
    async with pg.acquire() as conn:
        await conn.execute(SETUP)
    void = f"{INSERT} VALUES ('v', 'void', {MEMBER}, {SPEND}, 5, {_hold('open')}, 'void', 'j2', 0)"
    capture = (
        f"{INSERT} VALUES ('c', 'post', {MEMBER}, {SPEND}, 5, {_hold('open')}, 'capture', 'j2', 0)"
    )
    error, _ = await _race(pg, isolation, void, capture)
    assert isinstance(error, asyncpg.PostgresError)
    # The unique index refuses the second resolution even under REPEATABLE READ (it waits for the
    # first to commit); SERIALIZABLE reports the read/write conflict before it gets there.
    assert error.sqlstate == (SERIALIZATION_FAILURE if isolation == "serializable" else "23505")
    if error.sqlstate == "23505":
        assert error.constraint_name == "transfers_one_resolution"
    async with pg.acquire() as conn:
        kinds = await conn.fetch(f"SELECT kind FROM transfers WHERE pending_id = {_hold('open')}")
    assert [r["kind"] for r in kinds] == ["void"]
    assert await _member_debits_pending(pg) == 0
