"""Database: WAL checkpoints happen in the background, and after-commit callbacks run."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from storage import Database, Tx

PAGE_BYTES = 4096


async def test_background_checkpoints_keep_the_wal_small(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    async with await Database.open(path, checkpoint_interval_s=0.02) as db:
        await db.write_statement("CREATE TABLE scratch (b BLOB NOT NULL)")
        largest = 0
        for _ in range(10):
            await asyncio.gather(
                *(
                    db.write_statement("INSERT INTO scratch VALUES (?)", (b"x" * PAGE_BYTES,))
                    for _ in range(30)
                )
            )
            await asyncio.sleep(0.1)  # several checkpoint intervals
            largest = max(largest, (tmp_path / "wal.db-wal").stat().st_size)
        rows = await db.fetchone("SELECT COUNT(*) FROM scratch")
    assert rows is not None and rows[0] == 300
    # 300 rows of more than a page each (about 600 pages) went through the WAL; checkpointed,
    # it is rewritten from its start and never holds much more than one round of 30 rows
    assert largest < 250 * PAGE_BYTES


async def test_commits_do_not_checkpoint_by_themselves(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "a.db") as db:
        with contextlib.closing(sqlite3.connect(tmp_path / "a.db")) as other:
            assert other.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # default
        row = await db._writer.execute_fetchall("PRAGMA wal_autocheckpoint")
        assert next(iter(row))[0] == 0


async def test_after_commit_callbacks_run_once_the_write_has_ended(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "b.db") as db:
        await db.write_statement("CREATE TABLE t (v INTEGER NOT NULL CHECK (v > 0))")
        seen: list[tuple[str, int]] = []

        async def insert(value: int, tx: Tx) -> None:
            tx.after_commit(lambda: seen.append(("after", value)))
            await tx.execute("INSERT INTO t VALUES (?)", (value,))
            seen.append(("inside", value))

        await db.write(lambda tx: insert(1, tx))
        assert seen == [("inside", 1), ("after", 1)]
        with pytest.raises(Exception, match="CHECK"):
            await db.write(lambda tx: insert(-1, tx))  # refused: callbacks still run (harmless)
        assert seen[-1] == ("after", -1)
