"""Several pipeline processes sharing one database (issue 12).

Three real pipeline processes (tests/multi_worker.py) work one queue on one database (a SQLite
file, or PostgreSQL) against
the Kling double, which allows 10 tasks at once and records its peak. One process is SIGKILLed in
the middle and never restarted: its jobs are taken over when their leases lapse. Every job ends
with exactly one outcome (delivered once and captured once), the vendor never has more than 10
tasks live nor gets a create over its limit, no job is created twice, and the ledger audit is
clean. Conditions in other processes are polled with a deadline (their commits signal nothing
here).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from bot.pipeline import MediaStore, Pipeline, Requester
from bot.pricing import PriceTable
from bot.providers import ProviderHttp
from storage import FINAL_STATES, Database, JobState, JobStore, Ledger, SystemClock
from tests.backends import both_backends, database_target
from tests.multi_worker import LoggedSink, kling, pipeline_config
from tests.provider_doubles.kling import KlingDouble

ROOT = Path(__file__).resolve().parent.parent
GUILD = 1
SLOTS = 10
LEASE_S = 2.0


def worker_config(root: Path, database: str, base_url: str, process_id: str) -> dict[str, object]:
    return {
        "root": str(root),
        "database": database,
        "base_url": base_url,
        "process_id": process_id,
        "lease_s": LEASE_S,
        "slots": SLOTS,
        "creates_per_min": 6000,
    }


async def start_worker(config: dict[str, object]) -> asyncio.subprocess.Process:
    root = Path(str(config["root"]))
    path = root / f"config-{config['process_id']}.json"
    path.write_text(json.dumps(config))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.multi_worker",
        str(path),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"running"
    return proc


async def polled(check: Callable[[], Awaitable[bool]], *, timeout_s: float, what: str) -> None:
    """Wait until `check()` holds, looking every 50 ms (other processes' work signals nothing)."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what} (not within {timeout_s} s)") from None


def deliveries(out: Path) -> list[tuple[str, str]]:
    log = out / "deliveries.log"
    if not log.exists():
        return []
    return [
        (job_id, process)
        for job_id, process in (line.split(",") for line in log.read_text().split())
    ]


@asynccontextmanager
async def intake(root: Path, database: str, base_url: str) -> AsyncIterator[Pipeline]:
    """A pipeline that only takes requests (into the shared queue); it works on nothing."""
    db = await Database.open(database)
    try:
        async with aiohttp.ClientSession() as session:
            service = Pipeline(
                db=db,
                providers={"kling": kling(base_url, ProviderHttp(session, timeout_s=5))},
                default_provider="kling",
                pricing=PriceTable(),
                media=MediaStore(root / "media", None, 86400, 10**10, SystemClock()),
                delivery=LoggedSink(root / "out", "intake"),
                session=session,
                config=pipeline_config(worker_config(root, database, base_url, "intake")),
            )
            service.open_intake()
            yield service
    finally:
        await db.close()


# On one shared SQLite file this test once delivered 9 of 120 jobs twice: a lease renewal waited
# on the file lock past the lease, and another process took over a job its owner was still
# delivering. Posts are fenced now (bot.pipeline.leases), on both backends.
@pytest.mark.slow
@both_backends
async def test_three_processes_share_the_slots_and_take_over_a_killed_ones_jobs(
    tmp_path: Path, backend: str
) -> None:
    (tmp_path / "out").mkdir()
    members = list(range(500, 540))
    async with KlingDouble() as double, database_target(backend, tmp_path) as database:
        double.max_parallel = SLOTS
        double.create_delay_s = 0.05  # some kills land while a create is answered
        # a task takes a dozen polls, so the kill finds the processes in the middle of their jobs
        double.default_script = ["queued", *["running"] * 10, "succeeded"]
        async with intake(tmp_path, database, double.base_url) as service:
            for user in members:
                await service.ledger.issue_to_member(GUILD, user, 1000, key=f"seed:{user}")
            workers = [
                await start_worker(worker_config(tmp_path, database, double.base_url, f"w{n}"))
                for n in range(3)
            ]
            try:
                job_ids = [
                    (
                        await service.submit(
                            Requester(guild_id=GUILD, user_id=user),
                            {"prompt": f"member {user} clip {n}", "duration_s": 5},
                        )
                    ).job.id
                    for n in range(3)
                    for user in members
                ]
                jobs = service.jobs

                victim: list[int] = []

                async def one_holds_live_jobs() -> bool:
                    if len(deliveries(tmp_path / "out")) < 20:
                        return False
                    held = [len(await held_by(jobs, f"w{n}")) for n in range(3)]
                    victim[:] = [held.index(max(held))] if max(held) >= 3 else []
                    return bool(victim)

                await polled(one_holds_live_jobs, timeout_s=120, what="a process working on jobs")
                killed = f"w{victim[0]}"
                workers[victim[0]].send_signal(signal.SIGKILL)
                await workers[victim[0]].wait()
                orphans = await held_by(jobs, killed)
                assert orphans, "the killed process held jobs"

                async def all_final() -> bool:
                    states = [(await jobs.get(j)).state for j in job_ids]
                    return all(s in FINAL_STATES for s in states)

                await polled(all_final, timeout_s=240, what="every job finished")
            finally:
                for worker in workers:
                    if worker.returncode is None:
                        worker.send_signal(signal.SIGKILL)
                        await worker.wait()
            await check_outcomes(service.jobs, service.ledger, job_ids, tmp_path / "out", killed)
        assert double.peak_live <= SLOTS, f"{double.peak_live} tasks live at the vendor at once"
        assert double.over_parallel == 0, "a create was sent over the vendor's concurrency"
        made = Counter(job.request.get("external_task_id") for job in double.jobs.values())
        assert sorted(made) == sorted(job_ids) and set(made.values()) == {1}, "a job made twice"
        delivered_by = dict(deliveries(tmp_path / "out"))
        survivors = {"w0", "w1", "w2"} - {killed}
        assert {delivered_by[j] for j in orphans} <= survivors, "the survivors took its jobs over"


async def held_by(jobs: JobStore, owner: str) -> list[str]:
    """Unfinished jobs past the queue whose lease `owner` holds."""
    live = await jobs.in_states(
        frozenset({JobState.SUBMITTED, JobState.RUNNING, JobState.SUCCEEDED})
    )
    return [job.id for job in live if job.lease_owner == owner]


async def check_outcomes(
    jobs: JobStore, ledger: Ledger, job_ids: list[str], out: Path, killed: str
) -> None:
    """Each job delivered once and captured once; the books audit clean.

    Posted once by a live process. The one exception the lease cannot close: the killed process
    posted a clip and died before it could record it, so the survivor that took the job over
    posts it again. The Discord sink sends the job's nonce with enforce_nonce for this, and
    Discord answers a repeat with the first message instead of posting it twice; this file sink
    keeps both lines, so such a pair is allowed here, only in that order."""
    for job_id in job_ids:
        job = await jobs.get(job_id)
        assert job.state is JobState.DELIVERED, f"{job_id} is {job.state.value}"
        posts = [t.amount for t in await ledger.transfers_for_job(job_id) if t.kind == "post"]
        assert posts == [job.cost], f"{job_id} captured {posts}"
    posted_by: dict[str, list[str]] = {job_id: [] for job_id in job_ids}
    for job_id, process in deliveries(out):
        posted_by[job_id].append(process)
    wrong = {
        job_id: by
        for job_id, by in posted_by.items()
        if len(by) != 1 and not (len(by) == 2 and by[0] == killed and by[1] != killed)
    }
    assert not wrong, f"jobs delivered twice or never (by): {wrong}"
    assert (await ledger.audit()).ok
