"""The pipeline's periodic sweep: orphan holds, overdue queued jobs, old webhook deliveries."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

from bot.pipeline import WEBHOOK_DELIVERY_KEEP_S, Actor
from storage import AccountRef, JobState, OffsetClock
from tests.pipeline_support import Harness, pipeline
from tests.pipeline_support import member as requester
from tests.provider_doubles.eachlabs import EachLabsDouble
from tests.test_pipeline import REQUEST, double, eachlabs, fund

__all__ = ["double"]  # the vendor double fixture, shared with test_pipeline

MEMBER = AccountRef.member(1, 7)
DEADLINE_S = 600


def parked(
    tmp_path: Path, double: EachLabsDouble, clock: OffsetClock
) -> AbstractAsyncContextManager[Harness]:
    """A pipeline whose provider takes no jobs: everything submitted stays queued."""
    return pipeline(
        tmp_path,
        eachlabs(double),
        default_provider="eachlabs",
        public=False,
        clock=clock,
        deadline_s=DEADLINE_S,
        max_concurrent={"eachlabs": 0},
    )


async def available(p: Harness) -> tuple[int, int]:
    balance = await p.ledger.balance(MEMBER)
    return balance.available, balance.pending


async def test_a_hold_no_job_stands_behind_expires_after_the_deadline(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    clock = OffsetClock()
    async with parked(tmp_path, double, clock) as p:
        await fund(p)
        await p.ledger.reserve(key="orphan-old", payer=MEMBER, amount=30)
        await p.service.sweep()
        assert await available(p) == (170, 30)  # young: left alone
        clock.advance(seconds=DEADLINE_S + 601)
        await p.ledger.reserve(key="orphan-young", payer=MEMBER, amount=20)
        await p.service.sweep()
        assert await available(p) == (180, 20)  # the old one expired, the young one waits
        assert (await p.ledger.audit()).ok


async def test_a_job_still_queued_at_its_deadline_expires_and_is_refunded(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    clock = OffsetClock()
    async with parked(tmp_path, double, clock) as p:
        await fund(p)
        receipt = await p.service.submit(requester(), REQUEST)
        await p.service.sweep()
        assert (await p.service.jobs.get(receipt.job.id)).state is JobState.QUEUED
        clock.advance(seconds=DEADLINE_S + 1)
        await p.service.sweep()
        job = await p.service.jobs.get(receipt.job.id)
        assert job.state is JobState.EXPIRED
        assert await available(p) == (200, 0)
        assert double.creates == 0


async def test_old_deliveries_of_finished_jobs_are_pruned(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    clock = OffsetClock()
    async with parked(tmp_path, double, clock) as p:
        await fund(p)
        jobs = p.service.jobs
        finished = (await p.service.submit(requester(), REQUEST)).job
        live = (await p.service.submit(requester(), REQUEST)).job
        await p.service.cancel(finished.id, Actor(7, guild_id=finished.guild_id))
        for job in (finished, live):
            assert await jobs.record_webhook("eachlabs", f"old-{job.id}", job.id)
        clock.advance(seconds=WEBHOOK_DELIVERY_KEEP_S + 1)
        assert await jobs.record_webhook("eachlabs", f"new-{finished.id}", finished.id)
        await p.service.sweep()
        rows = await p.db.fetchall("SELECT delivery_key FROM webhook_deliveries ORDER BY 1")
        # the live job was expired by the same sweep (not final: a late result may come)
        assert sorted(r[0] for r in rows) == sorted([f"new-{finished.id}", f"old-{live.id}"])
