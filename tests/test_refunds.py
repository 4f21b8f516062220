"""Refunds never give back more than was captured for their job: the database refuses it however
many refunds race, and `ledger audit` reports a ledger where it happened anyway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.errors import UserError
from bot.pipeline.moderation import Moderation
from bot.providers import ProviderHttp, VideoProvider
from bot.providers.eachlabs import EachLabsProvider
from bot.settings import EachLabsSettings
from storage import (
    AccountRef,
    Database,
    JobState,
    Ledger,
    RefundExceedsCapture,
    Transfer,
)
from tests.backends import both_backends, drop_trigger
from tests.pipeline_support import member, pipeline
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble

G, ALICE = 10, 1
alice = AccountRef.member(G, ALICE)


async def captured_job(ledger: Ledger, job_id: str = "job-1", amount: int = 40) -> None:
    await ledger.issue_to_member(G, ALICE, 100, key=f"issue:{job_id}")
    hold = await ledger.reserve(key=f"hold:{job_id}", payer=alice, amount=amount, job_id=job_id)
    await ledger.capture(hold.id)


@both_backends
async def test_a_refund_beyond_the_capture_is_refused_by_the_ledger(ledger: Ledger) -> None:
    await captured_job(ledger)
    first = await ledger.refund(alice, 30, key="refund:1", job_id="job-1")
    with pytest.raises(RefundExceedsCapture):
        await ledger.refund(alice, 11, key="refund:2", job_id="job-1")
    with pytest.raises(RefundExceedsCapture):  # a refund must name the job it gives back for
        await ledger.refund(alice, 1, key="refund:3")
    assert await ledger.refund(alice, 30, key="refund:1", job_id="job-1") == first  # a replay
    last = await ledger.refund(alice, 10, key="refund:4", job_id="job-1")
    assert last.amount == 10
    assert await ledger.captured_and_refunded("job-1") == (40, 40)
    report = await ledger.audit()
    assert report.ok and report.spent == 0


@both_backends
async def test_two_refunds_racing_at_the_ledger_give_back_once(ledger: Ledger) -> None:
    await captured_job(ledger)
    results = await asyncio.gather(
        ledger.refund(alice, 40, key="refund:a", job_id="job-1"),
        ledger.refund(alice, 40, key="refund:b", job_id="job-1"),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["RefundExceedsCapture", "Transfer"]
    assert (await ledger.balance(alice)).available == 100
    report = await ledger.audit()
    assert report.ok and report.spent == 0


@pytest.fixture
async def double() -> AsyncIterator[EachLabsDouble]:
    async with EachLabsDouble() as d:
        yield d


async def test_two_klingadmin_refunds_at_once_refund_the_job_once(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    """What `/klingadmin refund` calls, twice at once for the whole job (the issue: both went
    through, and spending ended at -40)."""

    def providers(http: ProviderHttp) -> dict[str, VideoProvider]:
        settings = EachLabsSettings(api_key=SecretStr(API_KEY), base_url=double.api_base)
        return {"eachlabs": EachLabsProvider(settings, http)}

    async with pipeline(tmp_path, providers, default_provider="eachlabs", public=False) as p:
        await p.ledger.issue_to_member(1, 7, 200, key="seed")
        receipt = await p.service.submit(member(), {"prompt": "a fox", "duration_s": 5})
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED)
        assert job.charged == 40
        moderation = Moderation(p.service)
        results = await asyncio.gather(
            *(
                moderation.refund(job.id, None, actor_id=99, reason="glitch", key=f"refund:{n}")
                for n in range(2)
            ),
            return_exceptions=True,
        )
        refunds = [r for r in results if isinstance(r, Transfer)]
        refused = [r for r in results if isinstance(r, UserError)]
        assert [t.amount for t in refunds] == [40] and len(refused) == 1, results
        assert "nothing left to refund" in str(refused[0])
        assert (await p.ledger.balance(AccountRef.member(1, 7))).available == 200
        report = await p.ledger.audit()
        assert report.ok and report.spent == 0, report.render()


@both_backends
async def test_audit_reports_over_refunded_jobs_and_negative_spending(
    db: Database, ledger: Ledger
) -> None:
    """A ledger written before the rule existed (or by hand): the audit must not say OK."""
    await captured_job(ledger, amount=12)
    await drop_trigger(db, "transfers_refund_within_capture", "transfers")
    await ledger.refund(alice, 12, key="refund:1", job_id="job-1")
    await ledger.refund(alice, 12, key="refund:2", job_id="job-1")
    await ledger.refund(alice, 12, key="refund:3")  # names no job
    report = await ledger.audit()
    assert report.spent == -24
    assert not report.ok
    text = report.render()
    assert "job job-1 was refunded 24 credits but only 12 were captured" in text
    assert "the spend account is negative (-24)" in text
    assert "out of spend without naming a job" in text
