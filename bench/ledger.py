"""Ledger throughput: reserve-then-capture cycles per second with durable commits.

SQLite. Baseline, measured in the same run on the same disk: plain `sqlite3` (WAL,
synchronous=FULL) committing the same number of two-row transactions, one after another. The
ledger runs each cycle as two durable writes (hold, then capture) through aiosqlite, triggers and
idempotency checks, with many members at once (group commit shares each fsync), and also one cycle
at a time for reference.

PostgreSQL (unless --no-postgres; the server at --database-url, default the local one; the bench
creates and drops its own databases). Baseline: plain asyncpg two-row transactions (BEGIN, two
INSERTs, COMMIT) from as many concurrent workers over a pool of the same size. The ledger: the same
reserve+capture cycles through storage's PostgreSQL backend (triggers, row locks; holds and
captures made at the same time share one statement and one commit, storage/batching.py). For
reference, also the cycles made inside callers' own transactions (each reserve and each capture
in a `db.write`, SERIALIZABLE), as the bot's intake and settlement make them: those are not
shared.

    python -m bench.ledger [--cycles 4000] [--members 64] [--no-postgres] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

import asyncpg

from bench._support import DEFAULT_SERVER_URL, drop_database, scratch_database
from storage import AccountRef, Database, Ledger, PostgresDatabase, Transfer, Tx


def baseline_tx_per_s(path: Path, transactions: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, account INTEGER, amount INTEGER)")
    started = time.perf_counter()
    for n in range(transactions):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (account, amount) VALUES (?, ?)", (n, -10))
        conn.execute("INSERT INTO t (account, amount) VALUES (?, ?)", (n + 1, 10))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return transactions / elapsed


async def ledger_cycles_per_s(path: Path, cycles: int, members: int) -> float:
    async with await Database.open(path, durable=True) as db:
        return await cycles_per_s(db, cycles, members)


async def cycles_per_s(
    db: Database, cycles: int, members: int, *, in_transactions: bool = False
) -> float:
    """Reserve+capture cycles per second through `db`'s ledger, `members` at once (each reserve
    and capture in a write function of its own if `in_transactions`); the ledger must audit
    clean afterwards."""
    ledger = Ledger(db)
    for m in range(members):
        await ledger.issue_to_member(1, m, 10 * cycles, key=f"seed:{m}")
    per_member = cycles // members

    async def cycle(payer: AccountRef, key: str) -> None:
        if not in_transactions:
            hold = await ledger.reserve(key=key, payer=payer, amount=10)
            await ledger.capture(hold.id, 8)
            return

        async def reserve(tx: Tx) -> Transfer:
            return await ledger.reserve(key=key, payer=payer, amount=10, tx=tx)

        hold = await db.write(reserve)

        async def capture(tx: Tx) -> Transfer:
            return await ledger.capture(hold.id, 8, tx=tx)

        await db.write(capture)

    async def member_loop(m: int) -> None:
        payer = AccountRef.member(1, m)
        for n in range(per_member):
            await cycle(payer, f"h:{m}:{n}")

    started = time.perf_counter()
    await asyncio.gather(*(member_loop(m) for m in range(members)))
    elapsed = time.perf_counter() - started
    report = await ledger.audit()
    assert report.ok, report.render()
    return per_member * members / elapsed


async def pg_baseline_tx_per_s(url: str, transactions: int, workers: int, pool_size: int) -> float:
    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)
    assert pool is not None
    try:
        await pool.execute(
            "CREATE TABLE t (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " account BIGINT, amount BIGINT)"
        )
        per_worker = transactions // workers

        async def worker(w: int) -> None:
            for n in range(per_worker):
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute("INSERT INTO t (account, amount) VALUES ($1, $2)", n, -10)
                    await conn.execute("INSERT INTO t (account, amount) VALUES ($1, $2)", w, 10)

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(workers)))
        return per_worker * workers / (time.perf_counter() - started)
    finally:
        await pool.close()


async def pg_ledger_cycles_per_s(
    url: str, cycles: int, members: int, pool_size: int, *, in_transactions: bool = False
) -> tuple[float, int]:
    async with await Database.open(url, write_connections=pool_size) as db:
        rate = await cycles_per_s(db, cycles, members, in_transactions=in_transactions)
        assert isinstance(db, PostgresDatabase)
        return rate, db.retries


async def postgres_section(server_url: str, cycles: int, members: int) -> None:
    pool_size = 10
    urls = [await scratch_database(server_url) for _ in range(5)]
    try:
        base = await pg_baseline_tx_per_s(urls[0], cycles, members, pool_size)
        concurrent, retries = await pg_ledger_cycles_per_s(urls[1], cycles, members, pool_size)
        base_one = await pg_baseline_tx_per_s(urls[2], max(cycles // 4, 200), 1, pool_size)
        sequential, _ = await pg_ledger_cycles_per_s(urls[3], max(cycles // 4, 200), 1, pool_size)
        in_tx, in_tx_retries = await pg_ledger_cycles_per_s(
            urls[4], cycles, members, pool_size, in_transactions=True
        )
    finally:
        for url in urls:
            await drop_database(server_url, url)
    print(f"\nPostgreSQL ({pool_size} connections)")
    print(f"baseline  plain asyncpg two-row transactions, {members} workers: {base:8.0f} tx/s")
    print(
        f"ledger    reserve+capture, {members} members at once: {concurrent:8.0f} cycles/s"
        f" ({retries} writes re-run after a serialization failure)"
    )
    print(f"baseline  plain asyncpg two-row transactions, one worker: {base_one:8.0f} tx/s")
    print(f"ledger    reserve+capture, one member, one at a time: {sequential:8.0f} cycles/s")
    print(
        f"ratio     ledger cycles/s / baseline tx/s = {concurrent / base:.2f} (concurrent),"
        f" {sequential / base_one:.2f} (sequential); target >= 0.5"
    )
    print(
        f"reference reserve+capture inside callers' transactions (not shared), {members} members"
        f" at once: {in_tx:8.0f} cycles/s ({in_tx_retries} re-run), {in_tx / base:.2f} of the"
        " baseline"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=4000)
    parser.add_argument("--members", type=int, default=64)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_SERVER_URL,
        help="a PostgreSQL server where the bench may create and drop databases",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = baseline_tx_per_s(Path(tmp) / "baseline.db", args.cycles)
        concurrent = asyncio.run(
            ledger_cycles_per_s(Path(tmp) / "ledger.db", args.cycles, args.members)
        )
        sequential = asyncio.run(
            ledger_cycles_per_s(Path(tmp) / "ledger1.db", max(args.cycles // 4, 200), 1)
        )
    print(f"baseline  plain sqlite3, {args.cycles} two-row durable transactions: {base:8.0f} tx/s")
    print(f"ledger    reserve+capture, {args.members} members at once: {concurrent:8.0f} cycles/s")
    print(f"ledger    reserve+capture, one member, one at a time: {sequential:8.0f} cycles/s")
    print(
        f"ratio     ledger cycles/s / baseline tx/s = {concurrent / base:.2f} (concurrent),"
        f" {sequential / base:.2f} (sequential)"
    )
    print(f"ratio     per durable commit (2 per cycle): {2 * concurrent / base:.2f} (concurrent)")
    if not args.no_postgres:
        asyncio.run(postgres_section(args.database_url, args.cycles, args.members))


if __name__ == "__main__":
    main()
