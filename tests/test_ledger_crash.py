"""Crash safety: a process doing ledger work is SIGKILLed at random points, 20 times.

The worker reports each transfer the ledger acknowledged (its call returned). After every kill the
database must open, migrations must be idempotent, the audit must be clean, and every
acknowledged transfer must be there, as acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from storage import Database, Ledger
from tests.backends import both_backends, create_database, drop_database, require_postgres
from tests.migrations_on_disk import latest_version

ROOT = Path(__file__).resolve().parent.parent
LATEST_SCHEMA = max(int(p.name[:4]) for p in (ROOT / "storage" / "migrations").glob("[0-9]*.sql"))
KILLS = 20
Ack = tuple[str, str, int]  # key, kind, amount


@dataclass
class Worker:
    """A ledger crash worker and what it reported: "ready", then one line per acknowledged
    transfer. A line the kill cut short was never an acknowledgement."""

    proc: asyncio.subprocess.Process
    target: int = 1
    acks: list[Ack] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def start(cls, path: Path | str, seed: int, *flags: str) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.ledger_crash_worker",
            str(path),
            str(seed),
            *flags,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        return cls(proc)

    async def read(self) -> None:
        """Read the reports until the pipe closes (the worker is dead)."""
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            if not line.endswith(b"\n"):
                return
            if line == b"ready\n":
                self.ready.set()
                continue
            report = json.loads(line)
            self.acks.append((report["key"], report["kind"], report["amount"]))
            if len(self.acks) >= self.target:
                self.reached.set()

    async def kill(self) -> None:
        assert self.proc.returncode is None, "the worker stopped by itself"
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        assert self.proc.returncode == -signal.SIGKILL


async def lost_acks(db: Database, acks: list[Ack]) -> list[Ack]:
    """The acknowledged transfers that are not in the database as acknowledged."""
    rows = await db.fetchall("SELECT idempotency_key, kind, amount FROM transfers")
    stored = {(r["idempotency_key"], r["kind"], r["amount"]) for r in rows}
    return [ack for ack in acks if ack not in stored]


@pytest.mark.slow
@both_backends
async def test_sigkill_at_random_points_loses_no_acknowledged_transfer(
    tmp_path: Path, backend: str
) -> None:
    if backend == "sqlite":
        await sigkill_rounds(tmp_path / "crash.db")
        return
    require_postgres()
    url = await create_database(migrated=False)  # the first rounds are killed while migrating
    try:
        await sigkill_rounds(url)
    finally:
        await drop_database(url)


async def sigkill_rounds(path: Path | str) -> None:
    rng = random.Random(20261121)
    acked: list[Ack] = []
    entries_seen: list[int] = []
    for round_no in range(KILLS):
        worker = await Worker.start(path, round_no)
        reader = asyncio.create_task(worker.read())
        if round_no % 5 == 0:
            # the kill time itself is the random point (often during open/migrations), not a
            # wait for something to happen
            await asyncio.sleep(rng.uniform(0.0, 0.15))
        else:
            worker.target = rng.randint(1, 400)  # killed at some point after that many acks
            await asyncio.wait_for(worker.ready.wait(), timeout=30)
            await asyncio.wait_for(worker.reached.wait(), timeout=60)
        await worker.kill()
        await asyncio.wait_for(reader, timeout=30)
        acked += worker.acks

        db = await Database.open(path)
        try:
            assert await db.migrate() == []  # already fully applied by open(): idempotent
            assert await db.schema_version() == latest_version()
            report = await Ledger(db).audit()
            assert report.ok, f"round {round_no}: {report.render()}"
            assert await lost_acks(db, acked) == [], f"round {round_no}: acknowledged, then lost"
            entries_seen.append(report.transfers)
        finally:
            await db.close()
    assert len(acked) > 100, f"the worker did too little work to test anything: {entries_seen}"
    assert entries_seen == sorted(entries_seen), "committed entries disappeared after a crash"


async def test_the_check_finds_a_transfer_acknowledged_before_its_commit(tmp_path: Path) -> None:
    """The parent's check can fail: a worker that acknowledges a transfer it never commits."""
    path = tmp_path / "crash.db"
    worker = await Worker.start(path, 1, "--ack-before-commit")
    reader = asyncio.create_task(worker.read())
    await asyncio.wait_for(worker.reached.wait(), timeout=30)
    await worker.kill()
    await asyncio.wait_for(reader, timeout=30)
    async with await Database.open(path) as db:
        assert await lost_acks(db, worker.acks) == [("1:never-written", "single", 1)]
