"""Leases between processes (issue 12), two pipelines in one test on one SQLite file, each with
its own process id, web server and delivery sink: a webhook that reaches the process that does
not work on the job leads to one status check, by the owner, and one settlement; a process that
stops renewing loses its jobs to another, which finishes them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.pipeline import Delivered, Fence
from bot.providers import ProviderHttp, VideoProvider
from bot.providers.eachlabs import EachLabsProvider
from bot.settings import EachLabsSettings
from storage import Job, JobState, LeaseLost, Leases, OffsetClock, WorkedJobs
from tests.backends import database_target
from tests.pipeline_support import Harness, ProviderFactory, RecordingSink, member, pipeline
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble
from tests.waits import until_stored


def eachlabs(double: EachLabsDouble) -> ProviderFactory:
    def build(http: ProviderHttp) -> dict[str, VideoProvider]:
        settings = EachLabsSettings(api_key=SecretStr(API_KEY), base_url=double.api_base)
        return {"eachlabs": EachLabsProvider(settings, http)}

    return build


def polls_of(double: EachLabsDouble, vendor_id: str) -> int:
    return sum(1 for r in double.requests if r.method == "GET" and r.path.endswith(vendor_id))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_webhook_at_the_other_process_is_checked_once_by_the_owner(
    tmp_path: Path, backend: str
) -> None:
    """On PostgreSQL, leases of a minute (a heartbeat every 20 s): A checks at once, woken by
    B's NOTIFY, which has A read the requests and nothing else (no renewal of every lease it
    holds, no look for orphans). On SQLite, A finds the request at its next heartbeat."""
    lease_s = 60.0 if backend == "postgresql" else 1.0
    quiet: dict[str, Any] = {"poll_initial_s": 3600.0, "poll_max_s": 3600.0, "lease_s": lease_s}
    async with EachLabsDouble() as double, database_target(backend, tmp_path) as target:
        double.default_script = ["processing"]  # until the test says otherwise
        async with pipeline(
            tmp_path / "a",
            eachlabs(double),
            default_provider="eachlabs",
            process_id="A",
            database=target,
            **quiet,
        ) as a:
            await a.ledger.issue_to_member(1, 7, 100, key="seed")
            job = (await a.service.submit(member(), {"prompt": "fox", "duration_s": 5})).job

            async def created() -> Job | None:  # then only a webhook makes anyone look again
                found = await a.service.jobs.get(job.id)
                return found if found.provider_job_id else None

            running = await until_stored(a.db, created, timeout_s=20, what="created")
            assert running.lease_owner == "A"
            async with pipeline(
                tmp_path / "b",
                eachlabs(double),
                default_provider="eachlabs",
                process_id="B",
                database=target,
                **quiet,
            ) as b:
                assert running.provider_job_id is not None
                vendor_job = double.jobs[running.provider_job_id]
                vendor_job.script, vendor_job.step = ["succeeded"], 0
                polls_before = polls_of(double, vendor_job.id)
                url = f"{b.web.url}/webhooks/eachlabs/{running.webhook_token}"
                assert await double.send_webhook(vendor_job, url) == 200
                done = await a.wait_for_state(job.id, JobState.DELIVERED)
                if backend == "postgresql":
                    assert a.service.leases.beats.count == 0, "A ran no heartbeat for it"
                assert await double.send_webhook(vendor_job, url) == 200  # a retry: nothing
                await b.service.settle_due()
                await a.service.settle_due()
            assert done.lease_owner == "A"
            assert [job_id for job_id, _ in a.sink.deliveries] == [job.id]
            assert b.sink.deliveries == []
            assert polls_of(double, vendor_job.id) - polls_before == 1, "one status check"
            assert len(await a.captures(job.id)) == 1
            assert (await a.ledger.audit()).ok


async def test_a_process_that_stops_renewing_loses_its_jobs_to_another(tmp_path: Path) -> None:
    async with EachLabsDouble() as double:
        double.default_script = ["processing"]
        config: dict[str, Any] = {"lease_s": 1.0}
        async with pipeline(
            tmp_path, eachlabs(double), default_provider="eachlabs", process_id="A", **config
        ) as a:
            await a.ledger.issue_to_member(1, 7, 100, key="seed")
            job = (await a.service.submit(member(), {"prompt": "fox", "duration_s": 5})).job
            await a.wait_for_state(job.id, JobState.RUNNING)
            await a.service.stop(grace_s=0.1)  # stops renewing (and working), as if it hung
        async with pipeline(
            tmp_path, eachlabs(double), default_provider="eachlabs", process_id="B", **config
        ) as b:
            vendor_job = next(iter(double.jobs.values()))
            vendor_job.script, vendor_job.step = ["succeeded"], 0
            done = await b.wait_for_state(job.id, JobState.DELIVERED, timeout_s=30)
            assert done.lease_owner == "B"
            assert [job_id for job_id, _ in b.sink.deliveries] == [job.id]
            assert len(await b.captures(job.id)) == 1
            assert len(double.jobs) == 1, "taken over, not created again"


class PausedSink(RecordingSink):
    """Records deliveries like RecordingSink, but holds each post until `resume` is set: the
    posting process stalls mid-upload (a long upload, a GC pause, an overloaded machine)."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(out_dir)
        self.posting = asyncio.Event()
        self.resume = asyncio.Event()

    async def deliver(self, job: Job, clip: Path, *, link: str | None, fence: Fence) -> Delivered:
        async with fence():  # A holds the job's lease here, and is posting
            self.posting.set()
            await self.resume.wait()
        return await super().deliver(job, clip, link=link, fence=fence)


STALL_CONFIG: dict[str, Any] = {"lease_s": 30.0, "deadline_s": 3600}


@asynccontextmanager
async def stuck_owner(
    tmp_path: Path,
    double: EachLabsDouble,
    clock: OffsetClock,
    sink: RecordingSink,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[Harness, Job]]:
    """Process A, delivering through `sink`, whose every lease renewal waits (as on a locked
    file), and a job submitted to it."""
    async with pipeline(
        tmp_path,
        eachlabs(double),
        default_provider="eachlabs",
        process_id="A",
        clock=clock,
        sink=sink,
        start=False,
        **STALL_CONFIG,
    ) as a:

        async def stuck() -> None:
            await asyncio.Event().wait()

        monkeypatch.setattr(a.service.leases, "beat", stuck)
        await a.service.start()
        await a.ledger.issue_to_member(1, 7, 100, key="seed")
        job = (await a.service.submit(member(), {"prompt": "fox", "duration_s": 5})).job
        yield a, job


async def test_a_job_being_posted_is_not_taken_over_when_its_owner_stalls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A's keeper stalls (its renewal waits on the database) while A posts a clip, for longer
    than the lease: B must not take the job over and post it a second time."""
    clock = OffsetClock()
    paused = PausedSink(tmp_path / "delivered-a")
    async with EachLabsDouble() as double:
        double.default_script = ["succeeded"]
        async with stuck_owner(tmp_path, double, clock, paused, monkeypatch) as (a, job):
            await paused.posting.wait()  # A checked its lease and is posting
            clock.advance(seconds=60)  # A's post takes longer than the lease
            async with pipeline(
                tmp_path,
                eachlabs(double),
                default_provider="eachlabs",
                process_id="B",
                clock=clock,
                **STALL_CONFIG,
            ) as b:  # B's start takes over the jobs whose lease lapsed
                held = await b.service.jobs.get(job.id)
                assert held.lease_owner == "A", "B took over a job A is still posting"
                paused.resume.set()
                done = await a.wait_for_state(job.id, JobState.DELIVERED)
            assert done.lease_owner == "A"
            assert [job_id for job_id, _ in paused.deliveries] == [job.id]
            assert b.sink.deliveries == []
            assert len(await a.captures(job.id)) == 1


class StallsBeforePosting(RecordingSink):
    """Records deliveries like RecordingSink, but stalls before each post (a long re-encode, a
    wait for the channel's rate limit, a pause of the whole process) until `resume` is set."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(out_dir)
        self.stalled = asyncio.Event()
        self.resume = asyncio.Event()
        self.lost = asyncio.Event()

    async def deliver(self, job: Job, clip: Path, *, link: str | None, fence: Fence) -> Delivered:
        self.stalled.set()
        await self.resume.wait()
        try:
            return await super().deliver(job, clip, link=link, fence=fence)
        except LeaseLost:
            self.lost.set()
            raise


async def test_a_process_that_lost_the_job_while_it_stalled_does_not_post_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalls on its way to posting, its keeper too, past its lease; B takes the job over. A
    must find out before it posts, and leave the job to B quietly."""
    clock = OffsetClock()
    stalling = StallsBeforePosting(tmp_path / "delivered-a")
    async with EachLabsDouble() as double:
        double.default_script = ["succeeded"]
        async with stuck_owner(tmp_path, double, clock, stalling, monkeypatch) as (a, job):
            await stalling.stalled.wait()
            clock.advance(seconds=60)  # longer than A's lease
            other = Leases(a.db, WorkedJobs(late_grace_ms=3_600_000))
            assert await other.take_over("B", 30_000) == [job.id]
            stalling.resume.set()
            async with asyncio.timeout(20):
                await stalling.lost.wait()
            assert stalling.deliveries == [], "A posted a job B holds"
            left = await a.service.jobs.get(job.id)
            assert (left.state, left.lease_owner) == (JobState.SUCCEEDED, "B")


async def test_a_process_whose_renewal_comes_back_late_forgets_the_jobs_it_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renewal that lands more than a lease after the one before: some leases may have lapsed
    to other processes, so the keeper stops trusting what it thought it held (a webhook for such a
    job then goes to its owner through the database, not to this process's own tracker)."""
    clock = OffsetClock()
    quiet: dict[str, Any] = {"poll_initial_s": 3600.0, "poll_max_s": 3600.0, "lease_s": 30.0}
    async with EachLabsDouble() as double:
        double.default_script = ["processing"]
        async with pipeline(
            tmp_path,
            eachlabs(double),
            default_provider="eachlabs",
            process_id="A",
            clock=clock,
            start=False,
            **quiet,
        ) as a:

            async def beats_only_when_told() -> None:
                await asyncio.Event().wait()

            keeper = a.service.leases
            monkeypatch.setattr(keeper, "run", beats_only_when_told)
            await a.service.start()
            await a.ledger.issue_to_member(1, 7, 100, key="seed")
            job = (await a.service.submit(member(), {"prompt": "fox", "duration_s": 5})).job

            async def created() -> Job | None:  # then A writes nothing more (no poll is due)
                found = await a.service.jobs.get(job.id)
                return found if found.provider_job_id else None

            await until_stored(a.db, created, timeout_s=20, what="created")
            await keeper.beat()
            assert keeper.holds(job.id)
            clock.advance(seconds=31)  # A stalled for longer than its lease
            other = Leases(a.db, WorkedJobs(late_grace_ms=3_600_000))
            assert await other.take_over("B", 30_000) == [job.id]
            await keeper.beat()  # came back late
            assert not keeper.holds(job.id), "A still thinks it holds B's job"
            assert (await a.service.jobs.get(job.id)).lease_owner == "B"
