"""Crash safety: a process doing ledger work is SIGKILLed at random points, 20 times.

After every kill the database must open, migrations must be idempotent, and the audit clean.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from storage import Database, Ledger

ROOT = Path(__file__).resolve().parent.parent
LATEST_SCHEMA = max(int(p.name[:4]) for p in (ROOT / "storage" / "migrations").glob("[0-9]*.sql"))
KILLS = 20


@pytest.mark.slow
async def test_sigkill_at_random_points_leaves_a_consistent_ledger(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    rng = random.Random(20261121)
    entries_seen: list[int] = []
    for round_no in range(KILLS):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.ledger_crash_worker",
            str(path),
            str(round_no),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.stdout is not None
        if round_no % 5 == 0:
            await asyncio.sleep(rng.uniform(0.0, 0.15))  # often during open/migrations
        else:
            await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            await asyncio.sleep(rng.uniform(0.05, 0.6))
        assert proc.returncode is None, "the worker stopped by itself"
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        assert proc.returncode == -signal.SIGKILL

        db = await Database.open(path)
        try:
            assert await db.migrate() == []  # already fully applied by open(): idempotent
            assert await db.schema_version() == LATEST_SCHEMA
            report = await Ledger(db).audit()
            assert report.ok, f"round {round_no}: {report.render()}"
            entries_seen.append(report.transfers)
        finally:
            await db.close()
    assert entries_seen[-1] > 100, (
        f"the worker did too little work to test anything: {entries_seen}"
    )
    assert entries_seen == sorted(entries_seen), "committed entries disappeared after a crash"
