"""Database: after-commit callbacks run once the write has ended."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import Database, Tx


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
