"""Ledger throughput: reserve-then-capture cycles per second with durable commits.

Baseline, measured in the same run on the same disk: plain `sqlite3` (WAL, synchronous=FULL)
committing the same number of two-row transactions, one after another. The ledger runs each cycle
as two durable writes (hold, then capture) through aiosqlite, triggers and idempotency checks, with
many members at once (group commit shares each fsync), and also one cycle at a time for reference.

    python -m bench.ledger [--cycles 4000] [--members 64]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from storage import AccountRef, Database, Ledger


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
        ledger = Ledger(db)
        for m in range(members):
            await ledger.issue_to_member(1, m, 10 * cycles, key=f"seed:{m}")
        per_member = cycles // members

        async def member_loop(m: int) -> None:
            payer = AccountRef.member(1, m)
            for n in range(per_member):
                hold = await ledger.reserve(key=f"h:{m}:{n}", payer=payer, amount=10)
                await ledger.capture(hold.id, 8)

        started = time.perf_counter()
        await asyncio.gather(*(member_loop(m) for m in range(members)))
        elapsed = time.perf_counter() - started
        report = await ledger.audit()
        assert report.ok, report.render()
        return per_member * members / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=4000)
    parser.add_argument("--members", type=int, default=64)
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


if __name__ == "__main__":
    main()
