"""Fair queue cost: picking the next job and updating queue positions.

10,000 queued jobs across 1,000 members (10 each, submitted round-robin in random order), with
the vendor's 10 slots busy. Measured on the same database in the same run:
  - pick: what the dispatcher runs to choose jobs for free slots (fair order plus each member's
    live count) against a plain FIFO query (`ORDER BY rowid`);
  - position update: every queued job's place in line, fair order against FIFO order;
  - one job's position (the status message's "#n in line").

    python -m bench.queue [--jobs 10000] [--members 1000] [--repeat 300]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from storage import Database, Job, JobState, JobStore, NewJob, Tx

PROVIDER = "eachlabs"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(fn: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def fill(db: Database, jobs: JobStore, n_jobs: int, n_members: int) -> None:
    order = [(user, k) for k in range(n_jobs // n_members) for user in range(n_members)]
    random.Random(7).shuffle(order)
    for start in range(0, len(order), 500):
        batch = order[start : start + 500]

        async def run(tx: Tx, batch: list[tuple[int, int]] = batch) -> None:
            for user, k in batch:
                await jobs.create(
                    NewJob(
                        provider=PROVIDER,
                        request={"prompt": f"{user}/{k}"},
                        cost=40,
                        guild_id=1,
                        user_id=user,
                    ),
                    tx=tx,
                )

        await db.write(run)
    busy = await jobs.queue_candidates(PROVIDER, now_ms=2**62, limit=10)
    for candidate in busy:  # the vendor's 10 slots are taken
        await jobs.transition(candidate.job.id, JobState.SUBMITTED)


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = await Database.open(Path(tmp) / "queue.db")
        jobs = JobStore(db)
        started = time.perf_counter()
        await fill(db, jobs, args.jobs, args.members)
        print(
            f"setup: {args.jobs} queued jobs, {args.members} members in {time.perf_counter() - started:.1f} s"
        )
        queued = await jobs.queue_positions(PROVIDER)
        middle = await jobs.get(queued[len(queued) // 2][0])

        async def fair_pick() -> object:
            return await jobs.queue_candidates(PROVIDER, now_ms=2**62, limit=54)  # 1 free slot

        async def fifo_pick() -> object:  # the same rows turned into Job objects, FIFO order
            rows = await db.fetchall(
                "SELECT * FROM jobs WHERE state = 'queued' AND provider = ? ORDER BY rowid LIMIT 54",
                (PROVIDER,),
            )
            return [Job.from_row(r) for r in rows]

        async def fair_positions() -> object:
            return await jobs.queue_positions(PROVIDER)

        async def fifo_positions() -> object:
            return await db.fetchall(
                "SELECT id FROM jobs WHERE state = 'queued' AND provider = ? ORDER BY rowid",
                (PROVIDER,),
            )

        async def one_position() -> object:
            return await jobs.queue_position(middle)

        async def one_position_fifo() -> object:
            return await db.fetchone(
                "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND provider = ? AND rowid <"
                " (SELECT rowid FROM jobs WHERE id = ?)",
                (PROVIDER, middle.id),
            )

        rows = [
            ("pick next job", fair_pick, fifo_pick, args.repeat),
            ("all positions", fair_positions, fifo_positions, max(20, args.repeat // 10)),
            ("one position", one_position, one_position_fifo, args.repeat),
        ]
        for name, fair, fifo, repeat in rows:
            await fair()
            await fifo()  # warm both
            a = await timed(fair, repeat)
            b = await timed(fifo, repeat)
            print(
                f"{name:14s} fair p50 {statistics.median(a):7.3f} ms p99 {percentile(a, 0.99):7.3f} ms |"
                f" FIFO p50 {statistics.median(b):7.3f} ms p99 {percentile(b, 0.99):7.3f} ms |"
                f" ratio p99 {percentile(a, 0.99) / percentile(b, 0.99):5.2f}"
            )
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=300)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
