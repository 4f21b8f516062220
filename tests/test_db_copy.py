"""`klingbot db copy --to postgresql://...`: a SQLite install with history moves to PostgreSQL
whole (audit clean, balances and job states equal), and an occupied target is refused."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import (
    AccountRef,
    Database,
    GuildPolicy,
    InsufficientCredits,
    JobState,
    JobStore,
    Ledger,
    ManualClock,
)
from tests.backends import create_database, drop_database, require_postgres
from tests.test_jobs_store import new_job

ROOT = Path(__file__).resolve().parent.parent
GUILDS = (11, 12)
MEMBERS = (101, 102, 103, 104)
S = JobState


def klingbot(*args: str, db_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLINGBOT_")}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=db_path.parent,
        env={**env, "PYTHONPATH": str(ROOT), "KLINGBOT_DB_PATH": str(db_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def make_history(path: Path, seed: int) -> None:
    """Pools, members, holds captured, voided and left open, refunds, jobs in every final state,
    server settings and a blocklist: what a SQLite install has after some weeks."""
    rng = random.Random(seed)
    clock = ManualClock()
    async with await Database.open(path, clock=clock) as db:
        ledger, jobs, policy = Ledger(db), JobStore(db), GuildPolicy(db)
        for guild in GUILDS:
            await ledger.fund_pool(guild, 5_000, key=f"fund:{guild}", actor_id=1)
            await policy.set(guild, actor_id=1, member_cap_per_day=300)
            await policy.add_block(guild, "forbidden", is_regex=False, actor_id=1)
            for member in MEMBERS:
                await ledger.grant(guild, member, 400, key=f"grant:{guild}:{member}", actor_id=1)
        for n in range(120):
            clock.advance(ms=rng.randint(1, 90_000))
            guild, member = rng.choice(GUILDS), rng.choice(MEMBERS)
            payer = rng.choice([AccountRef.member(guild, member), AccountRef.pool(guild)])
            cost = rng.randint(1, 80)
            job = await jobs.create(
                new_job(guild_id=guild, user_id=member, cost=cost, interaction_id=10_000 + n)
            )
            try:
                hold = await ledger.reserve(
                    key=f"hold:{n}", payer=payer, amount=cost, job_id=job.id, user_id=member
                )
            except InsufficientCredits:
                await jobs.transition(job.id, S.CANCELLED)
                continue
            ending = rng.choice(["deliver", "fail", "open", "refund"])
            if ending == "open":
                await jobs.transition(job.id, S.SUBMITTED)
                continue
            await jobs.transition(job.id, S.SUBMITTED)
            await jobs.transition(job.id, S.RUNNING)
            if ending == "fail":
                await ledger.void(hold.id)
                await jobs.transition(job.id, S.FAILED)
                continue
            await ledger.capture(hold.id, amount=rng.randint(1, cost))
            await jobs.transition(job.id, S.SUCCEEDED)
            await jobs.transition(job.id, S.DELIVERED)
            if ending == "refund":
                await ledger.refund(payer, 1, key=f"refund:{n}", job_id=job.id, user_id=member)
        assert (await ledger.audit()).ok


async def snapshot(target: str) -> tuple[object, ...]:
    async with await Database.open(target) as db:
        ledger, jobs = Ledger(db), JobStore(db)
        balances: list[tuple[object, ...]] = []
        for guild in GUILDS:
            pool = await ledger.balance(AccountRef.pool(guild))
            balances.append(("pool", guild, pool.posted, pool.pending, pool.available))
            for member in MEMBERS:
                got = await ledger.balance(AccountRef.member(guild, member))
                balances.append((guild, member, got.posted, got.pending, got.available))
        states = sorted((j.id, j.state.value) for j in await jobs.in_states(frozenset(S)))
        totals = await ledger.totals()
        history = [
            (e.transfer.id, e.transfer.key, e.transfer.amount)
            for e in await ledger.history(GUILDS[0], MEMBERS[0], limit=500)
        ]
        blocks = (await GuildPolicy(db).get(GUILDS[0])).blocklist
        return balances, states, totals, history, blocks


@pytest.fixture
async def target_url() -> AsyncIterator[str]:
    require_postgres()
    url = await create_database(migrated=False)
    yield url
    await drop_database(url)


async def test_copy_moves_the_whole_history(tmp_path: Path, target_url: str) -> None:
    source = tmp_path / "klingbot.db"
    await make_history(source, seed=7)
    before = await snapshot(str(source))
    done = klingbot("db", "copy", "--to", target_url, db_path=source)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "balances, job states and audits match" in done.stdout
    assert done.stdout.count("result: OK") == 2
    assert await snapshot(target_url) == before
    assert await snapshot(str(source)) == before  # the source is left as it was
    # The copy goes on as a working ledger: ids continue, rules hold.
    async with await Database.open(target_url) as db:
        ledger = Ledger(db)
        last = max(e.transfer.id for e in await ledger.history(GUILDS[1], MEMBERS[1], limit=500))
        moved = await ledger.grant(GUILDS[1], MEMBERS[1], 1, key="after-copy", actor_id=1)
        assert moved.id > last
        with pytest.raises(InsufficientCredits):
            await ledger.reserve(key="too-much", payer=AccountRef.member(99, 99), amount=1)
        assert (await ledger.audit()).ok


async def test_copy_refuses_a_target_that_is_not_empty(tmp_path: Path, target_url: str) -> None:
    source = tmp_path / "klingbot.db"
    await make_history(source, seed=3)
    assert klingbot("db", "copy", "--to", target_url, db_path=source).returncode == 0
    async with await Database.open(target_url) as db:
        before = await Ledger(db).totals()
    again = klingbot("db", "copy", "--to", target_url, db_path=source)
    assert again.returncode == 2
    assert "is not empty" in again.stderr and "Traceback" not in again.stderr
    async with await Database.open(target_url) as db:
        assert await Ledger(db).totals() == before  # nothing added twice


def test_copy_needs_a_postgresql_url_and_a_source(tmp_path: Path) -> None:
    wrong = klingbot("db", "copy", "--to", "mysql://x/y", db_path=tmp_path / "k.db")
    assert wrong.returncode == 2 and "PostgreSQL URL" in wrong.stderr
    missing = klingbot(
        "db", "copy", "--to", "postgresql://postgres@127.0.0.1/x", db_path=tmp_path / "k.db"
    )
    assert missing.returncode == 2 and "No SQLite database" in missing.stderr
