"""Database: group commits (refusals stay separate, a lost transaction fails its batch) and
after-commit callbacks."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from storage import Database, DatabaseUnavailable, Tx


async def test_after_commit_callbacks_run_only_for_committed_writes(tmp_path: Path) -> None:
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
            await db.write(lambda tx: insert(-1, tx))  # refused: its callbacks never run
        assert seen == [("inside", 1), ("after", 1)]


async def rows(db: Database) -> list[int]:
    return [r[0] for r in await db.fetchall("SELECT v FROM t ORDER BY v")]


async def test_a_refused_write_leaves_the_rest_of_its_batch(tmp_path: Path) -> None:
    """Writes queued together share one transaction; a refusal undoes only its own write."""
    async with await Database.open(tmp_path / "b.db") as db:
        await db.write_statement("CREATE TABLE t (v INTEGER NOT NULL CHECK (v > 0))")

        async def pair(tx: Tx, first: int) -> None:
            await tx.execute("INSERT INTO t VALUES (?)", (first,))
            await tx.execute("INSERT INTO t VALUES (?)", (first + 1,))

        outcomes = await asyncio.gather(  # queued before the writer wakes: one batch
            db.write_statement("INSERT INTO t VALUES (1)"),
            db.write_statement("INSERT INTO t VALUES (-2)"),
            db.write(lambda tx: pair(tx, 10)),
            db.write_statement("INSERT INTO t VALUES (3) RETURNING v"),
            db.write(lambda tx: pair(tx, -20)),  # the second insert (-19) is refused
            db.write_statement("INSERT INTO t VALUES (4)"),
            return_exceptions=True,
        )
        refused = [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
        assert refused == [1, 4]
        assert all(isinstance(outcomes[i], sqlite3.IntegrityError) for i in refused)
        returned = outcomes[3]
        assert isinstance(returned, list) and [r[0] for r in returned] == [3]
        assert await rows(db) == [1, 3, 4, 10, 11]


@pytest.mark.parametrize("blobs", [3, 8, 40])
async def test_a_full_database_refuses_writes_it_cannot_keep(tmp_path: Path, blobs: int) -> None:
    """With the file at its size limit some writes of a batch fail with DatabaseUnavailable;
    exactly the writes reported successful are stored."""
    async with await Database.open(tmp_path / "b.db") as db:
        await db.write_statement("CREATE TABLE t (v INTEGER NOT NULL, pad BLOB)")
        pages = (await db.fetchone("PRAGMA page_count"))[0]  # type: ignore[index]
        await db.write_statement(f"PRAGMA max_page_count = {pages + 12}")
        outcomes = await asyncio.gather(
            *(
                db.write_statement("INSERT INTO t VALUES (?, zeroblob(10000))", (n + 1,))
                for n in range(blobs)
            ),
            return_exceptions=True,
        )
        stored = [n + 1 for n, o in enumerate(outcomes) if not isinstance(o, BaseException)]
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        assert all(isinstance(o, DatabaseUnavailable) for o in failed), failed
        assert len(stored) < blobs or blobs < 4
        assert await rows(db) == stored
        await db.write_statement("DELETE FROM t")  # the database takes writes again
        await db.write_statement("INSERT INTO t VALUES (7, NULL)")
        assert await rows(db) == [7]
