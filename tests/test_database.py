"""Database: group commits (refusals stay separate, a lost transaction fails its batch) and
after-commit callbacks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage import Database, DatabaseUnavailable, Tx
from storage.errors import INTEGRITY_ERRORS
from tests.backends import both_backends


@both_backends
async def test_after_commit_callbacks_run_only_for_committed_writes(db: Database) -> None:
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


@both_backends
async def test_a_refused_write_leaves_the_rest_of_its_batch(db: Database) -> None:
    """Writes queued together share one transaction; a refusal undoes only its own write."""
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
    assert all(isinstance(outcomes[i], INTEGRITY_ERRORS) for i in refused)
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


@both_backends
async def test_a_write_may_catch_a_refusal_and_go_on(db: Database) -> None:
    """As in SQLite, a refused statement undoes only itself: the write's other statements stay
    (PostgreSQL runs such a write again with a savepoint per statement)."""
    await db.write_statement("CREATE TABLE t (v INTEGER NOT NULL CHECK (v > 0))")

    async def careful(tx: Tx) -> str:
        await tx.execute("INSERT INTO t VALUES (?)", (1,))
        try:
            await tx.execute("INSERT INTO t VALUES (?)", (-1,))
        except INTEGRITY_ERRORS:
            await tx.execute("INSERT INTO t VALUES (?)", (2,))
            return "went on"
        return "not refused"

    assert await db.write(careful) == "went on"
    assert await rows(db) == [1, 2]


@both_backends
async def test_racing_read_modify_writes_lose_no_update(db: Database) -> None:
    """Writes behave as if run one at a time: 200 concurrent increments of one counter, each
    reading it and writing it back, end at 200 (PostgreSQL re-runs the losers of each race)."""
    await db.write_statement("CREATE TABLE counter (n INTEGER NOT NULL)")
    await db.write_statement("INSERT INTO counter VALUES (0)")

    async def increment(tx: Tx) -> None:
        row = await tx.fetchone("SELECT n FROM counter")
        assert row is not None
        await asyncio.sleep(0)  # let the others read the same value
        await tx.execute("UPDATE counter SET n = ?", (row[0] + 1,))

    await asyncio.gather(*(db.write(increment) for _ in range(200)))
    final = await db.fetchone("SELECT n FROM counter")
    assert final is not None and final[0] == 200
