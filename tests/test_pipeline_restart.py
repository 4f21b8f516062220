"""Restarts: the bot process is SIGKILLed at each stage of a job, then started again.

Each job must end delivered exactly once with exactly one capture (or voided), and the ledger
audit must be clean. The parent controls timing: the vendor double holds the job at a stage, a
write lock on the database stops the worker between download and capture, and a gate file holds
delivery.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from storage import AccountRef, Database, JobState, JobStore, Ledger
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble

ROOT = Path(__file__).resolve().parent.parent
STAGES = [
    "after_reserve",
    "after_submit",
    "after_success_before_download",
    "after_download_before_capture",
    "after_capture_before_delivery",
]


@pytest.fixture
async def double() -> AsyncIterator[EachLabsDouble]:
    async with EachLabsDouble() as d:
        yield d


async def start_worker(
    root: Path, double: EachLabsDouble, **config: object
) -> asyncio.subprocess.Process:
    path = root / f"config-{len(list(root.glob('config-*')))}.json"
    path.write_text(
        json.dumps({"root": str(root), "base_url": double.api_base, "api_key": API_KEY, **config})
    )
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.pipeline_worker",
        str(path),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def read_job(root: Path) -> tuple[JobStore, Ledger, Database]:
    db = await Database.open(root / "bot.db")
    return JobStore(db), Ledger(db), db


async def wait_until(check: Callable[[], object], timeout_s: float = 20.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never became true")


def job_row(root: Path) -> sqlite3.Row | None:
    conn = sqlite3.connect(root / "bot.db")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM jobs").fetchone()  # type: ignore[no-any-return]
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()


def captured(root: Path) -> bool:
    conn = sqlite3.connect(root / "bot.db")
    try:
        count: int = conn.execute("SELECT COUNT(*) FROM transfers WHERE kind = 'post'").fetchone()[
            0
        ]
        return count > 0
    finally:
        conn.close()


async def kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
async def test_sigkill_at_each_stage_then_restart(
    tmp_path: Path, double: EachLabsDouble, stage: str
) -> None:
    root = tmp_path
    async with await Database.open(root / "bot.db") as db:
        await Ledger(db).issue_to_member(1, 7, 100, key="seed")
    gate = root / "gate"
    lock: sqlite3.Connection | None = None
    if stage != "after_capture_before_delivery":
        gate.touch()
    double.default_script = {
        "after_reserve": ["created", "processing", "succeeded"],
        "after_submit": ["processing"],
    }.get(stage, ["succeeded"])
    if stage == "after_success_before_download":
        double.file_delay_s = 3600
    if stage == "after_download_before_capture":
        double.file_delay_s = 0.5

    if stage == "after_reserve":
        proc = await start_worker(root, double, stage="after_reserve")
        await proc.wait()
        assert proc.returncode == -signal.SIGKILL
    else:
        proc = await start_worker(root, double, submit=True)
        if stage == "after_submit":
            await wait_until(lambda: (r := job_row(root)) is not None and r["provider_job_id"])
        elif stage == "after_success_before_download":
            await wait_until(lambda: (r := job_row(root)) is not None and r["state"] == "succeeded")
        elif stage == "after_download_before_capture":
            await wait_until(lambda: (r := job_row(root)) is not None and r["state"] == "succeeded")
            lock = sqlite3.connect(root / "bot.db", isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")  # the worker cannot record the download or capture
            await wait_until(lambda: any((root / "media" / "clips").glob("*.mp4")))
        else:
            await wait_until(lambda: captured(root))
        await kill(proc)
        if lock is not None:
            lock.execute("ROLLBACK")
            lock.close()

    row = job_row(root)
    assert row is not None, "the job was recorded before the kill"
    jobs, ledger, db = await read_job(root)
    try:
        assert (await ledger.audit()).ok
    finally:
        await db.close()

    # restart: everything the first process left unfinished must now finish, exactly once
    double.default_script = ["succeeded"]
    for vendor_job in double.jobs.values():
        vendor_job.script = ["succeeded"]
    double.file_delay_s = 0
    gate.touch()
    proc = await start_worker(root, double)
    try:
        await wait_until(
            lambda: (r := job_row(root)) is not None and r["state"] in ("delivered", "failed")
        )
    finally:
        await kill(proc)

    jobs, ledger, db = await read_job(root)
    try:
        job = await jobs.get(row["id"])
        kinds = [t.kind.value for t in await ledger.transfers_for_job(job.id)]
        assert job.state is JobState.DELIVERED, f"{stage}: ended {job.state}"
        assert kinds == ["pending", "post"], f"{stage}: {kinds}"
        assert (await ledger.balance(AccountRef.member(1, 7))).available == 60
        assert (await ledger.audit()).ok
    finally:
        await db.close()
    deliveries = (root / "out" / "deliveries.log").read_text().split()
    assert deliveries == [row["id"]], f"{stage}: delivered {len(deliveries)} times"
    assert double.creates == 1, f"{stage}: the create was sent {double.creates} times"
