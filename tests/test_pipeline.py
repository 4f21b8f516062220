"""The job pipeline end to end against loopback vendor doubles (EachLabs here)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from bot.errors import NotPermitted, UserError
from bot.pipeline import Actor
from bot.providers import ProviderHttp, VideoProvider
from bot.providers.eachlabs import EachLabsProvider
from bot.settings import EachLabsSettings
from storage import AccountRef, InsufficientCredits, Job, JobState, OffsetClock
from tests.pipeline_support import Harness, ProviderFactory, member, pipeline
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble
from tests.waits import until_stored

SECRET = "whsec-pipeline"
REQUEST = {"prompt": "a red fox running through snow", "duration_s": 5}
COST = 40  # 5 s x 8 credits


@pytest.fixture
async def double() -> AsyncIterator[EachLabsDouble]:
    async with EachLabsDouble() as d:
        yield d


def eachlabs(double: EachLabsDouble, secret: str | None = SECRET) -> ProviderFactory:
    def build(http: ProviderHttp) -> dict[str, VideoProvider]:
        settings = EachLabsSettings(
            api_key=SecretStr(API_KEY),
            base_url=double.api_base,
            webhook_secret=SecretStr(secret) if secret else None,
            max_concurrent=10,
        )
        return {"eachlabs": EachLabsProvider(settings, http)}

    return build


async def fund(p: Harness, user: int = 7, amount: int = 200) -> None:
    await p.ledger.issue_to_member(1, user, amount, key=f"seed:{user}:{amount}")


async def created_job(p: Harness, job_id: str) -> str:
    """The vendor's id of the job, once the answer to its create is recorded."""

    async def recorded() -> str | None:
        return (await p.service.jobs.get(job_id)).provider_job_id

    return await until_stored(p.db, recorded, timeout_s=5, what="the provider got the create")


# -- the two paths to delivered ---------------------------------------------------------------


async def test_webhook_path_delivers_with_one_capture(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    async with pipeline(
        tmp_path, eachlabs(double), default_provider="eachlabs", poll_initial_s=30, poll_max_s=30
    ) as p:
        await fund(p)
        receipt = await p.service.submit(member(), REQUEST)
        assert (receipt.cost, receipt.payer, receipt.available_after) == (COST, "member", 160)
        vendor_id = await created_job(p, receipt.job.id)
        vendor_job = double.jobs[vendor_id]
        assert vendor_job.webhook_url == f"{p.url}/webhooks/eachlabs/{receipt.job.webhook_token}"
        polls_before = vendor_job.polls
        vendor_job.script = ["succeeded"]
        assert await double.send_webhook(vendor_job) == 200
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED, timeout_s=10)
        assert vendor_job.polls == polls_before + 1, "the webhook made exactly one status check"
        assert await p.captures(job.id) == [COST]
        assert job.charged == COST and job.delivered_via == "file"
        assert p.sink.deliveries == [(job.id, len(double.video_bytes))]
        balance = await p.ledger.balance(AccountRef.member(1, 7))
        assert (balance.available, balance.pending) == (160, 0)
        assert (await p.ledger.audit()).ok


async def test_poll_only_path_delivers_with_one_capture(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    async with pipeline(tmp_path, eachlabs(double), default_provider="eachlabs", public=False) as p:
        await fund(p)
        receipt = await p.service.submit(member(), REQUEST)
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED)
        [create] = double.creates_of("/prediction/")
        assert "webhook_url" not in create.json
        assert await p.captures(job.id) == [COST]
        events = [e.to_state for e in await p.service.jobs.events(job.id)]
        assert events == ["queued", "submitted", "running", "succeeded", "delivered"]
        assert (await p.ledger.audit()).ok


# -- webhook handling ----------------------------------------------------------------------------


async def test_webhook_responses(tmp_path: Path, double: EachLabsDouble) -> None:
    async with pipeline(
        tmp_path, eachlabs(double), default_provider="eachlabs", poll_initial_s=30, poll_max_s=30
    ) as p:
        await fund(p)
        receipt = await p.service.submit(member(), REQUEST)
        vendor_job = double.jobs[await created_job(p, receipt.job.id)]
        vendor_job.script = ["succeeded"]
        url = f"{p.url}/webhooks/eachlabs/{receipt.job.webhook_token}"
        body = double.webhook_body(vendor_job)
        now = int(p.clock.now_ms() / 1000)

        async def post(data: bytes, headers: dict[str, str], target: str = url) -> int:
            async with p.session.post(target, data=data, headers=headers) as response:
                return response.status

        async def post_chunked(data: bytes, headers: dict[str, str]) -> int:
            async def pieces() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
                for start in range(0, len(data), 4096):
                    yield data[start : start + 4096]

            async with p.session.post(url, data=pieces(), headers=headers) as response:
                return response.status

        duplicates = await asyncio.gather(
            *(post(body, double.sign(SECRET, body, now)) for _ in range(5))
        )
        forged = await post(body, double.sign("not-the-secret", body, now))
        replayed = await post(body, double.sign(SECRET, body, now - 3600))
        oversized = await post(b"x" * (64 * 1024 + 1), double.sign(SECRET, b"x", now))
        not_json = await post(b"{oops", double.sign(SECRET, b"{oops", now))
        unknown = await post(
            body, double.sign(SECRET, body, now), f"{p.url}/webhooks/eachlabs/nope"
        )
        big = b"x" * (64 * 1024 + 1)
        oversized_chunked = await post_chunked(big, double.sign(SECRET, big, now))
        chunked = await post_chunked(body, double.sign(SECRET, body, now))
        assert duplicates == [200] * 5
        assert [forged, replayed, oversized, not_json, unknown] == [401, 401, 413, 400, 404]
        assert (oversized_chunked, chunked) == (413, 200)
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED)
        assert await p.captures(job.id) == [COST]
        assert len(p.sink.deliveries) == 1
        metrics = p.service.metrics.render().decode()
        assert 'klingbot_webhooks_total{provider="eachlabs",result="duplicate"} 5.0' in metrics
        assert 'result="forged"} 2.0' in metrics


async def test_unknown_create_outcome_is_settled_by_the_webhook(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    """The create reached the vendor but the answer was lost: never re-sent; the webhook
    (whose URL carries the job's token) tells us the vendor's id."""
    async with pipeline(
        tmp_path, eachlabs(double), default_provider="eachlabs", poll_initial_s=30, poll_max_s=30
    ) as p:
        await fund(p)
        double.next_create("reset")
        receipt = await p.service.submit(member(), REQUEST)

        async def outcome_recorded() -> Job | None:
            job = await p.service.jobs.get(receipt.job.id)
            return job if job.error_kind else None

        await until_stored(p.db, outcome_recorded, timeout_s=10, what="the lost answer noted")
        await p.service.next_dispatch_round()  # one that could have sent the create again
        job = await p.service.jobs.get(receipt.job.id)
        assert job.state is JobState.SUBMITTED and job.provider_job_id is None
        assert receipt.job.id not in p.service.creates_in_flight()
        assert double.creates == 1
        # the vendor did create it; its webhook arrives later
        body = json.dumps(
            {
                "exec_id": "pred-lost",
                "status": "succeeded",
                "output": f"{double.base_url}/files/pred-lost.mp4",
            }
        ).encode()
        from tests.provider_doubles.base import FakeJob

        double.jobs["pred-lost"] = FakeJob("pred-lost", {}, ["succeeded"])
        async with p.session.post(
            f"{p.url}/webhooks/eachlabs/{job.webhook_token}",
            data=body,
            headers=double.sign(SECRET, body, int(p.clock.now_ms() / 1000)),
        ) as response:
            assert response.status == 200
        done = await p.wait_for_state(job.id, JobState.DELIVERED)
        assert done.provider_job_id == "pred-lost" and double.creates == 1
        assert await p.captures(job.id) == [COST]


# -- failures, deadlines, late results ---------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "kind"),
    [
        ("PROVIDER_FAILED", "the model crashed", "unknown"),
        ("PROVIDER_REJECTED", "content safety: the prompt was flagged", "content_policy"),
    ],
)
async def test_provider_failure_voids_the_hold(
    tmp_path: Path, double: EachLabsDouble, code: str, message: str, kind: str
) -> None:
    async with pipeline(tmp_path, eachlabs(double), default_provider="eachlabs", public=False) as p:
        await fund(p)
        double.default_script = ["created", "running", "failed"]
        receipt = await p.service.submit(member(), REQUEST)
        vendor_job = double.jobs[await created_job(p, receipt.job.id)]
        vendor_job.error_code, vendor_job.error = code, message
        job = await p.wait_for_state(receipt.job.id, JobState.FAILED)
        assert job.error_kind == kind and job.error_message
        if kind == "content_policy":
            assert "content filter" in job.error_message and "flagged" in job.error_message
        balance = await p.ledger.balance(AccountRef.member(1, 7))
        assert (balance.available, balance.pending) == (200, 0)
        assert await p.captures(job.id) == []
        assert [t.kind.value for t in await p.ledger.transfers_for_job(job.id)] == [
            "pending",
            "void",
        ]


async def test_definite_create_refusal_voids_at_once(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    async with pipeline(tmp_path, eachlabs(double), default_provider="eachlabs", public=False) as p:
        await fund(p)
        double.next_create(
            "status", 400, {"status": "error", "message": "Prompt flagged by moderation"}
        )
        receipt = await p.service.submit(member(), REQUEST)
        job = await p.wait_for_state(receipt.job.id, JobState.FAILED)
        assert job.error_kind == "content_policy" and double.creates == 1
        assert (await p.ledger.balance(AccountRef.member(1, 7))).available == 200


async def test_rate_limited_create_is_requeued_not_failed(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    async with pipeline(tmp_path, eachlabs(double), default_provider="eachlabs", public=False) as p:
        await fund(p)
        double.next_create(
            "status", 429, {"status": "error", "message": "Rate limit"}, {"Retry-After": "0.3"}
        )
        receipt = await p.service.submit(member(), REQUEST)
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED)
        assert double.creates == 2 and job.submit_attempts == 2
        assert await p.captures(job.id) == [COST]


async def test_provider_never_answers_hold_expires(tmp_path: Path, double: EachLabsDouble) -> None:
    clock = OffsetClock()
    async with pipeline(
        tmp_path,
        eachlabs(double),
        default_provider="eachlabs",
        public=False,
        clock=clock,
        deadline_s=600,
        late_grace_s=0,
    ) as p:
        await fund(p)
        double.default_script = ["created", "processing"]
        receipt = await p.service.submit(member(), REQUEST)
        await p.wait_for_state(receipt.job.id, JobState.RUNNING)
        assert (await p.ledger.balance(AccountRef.member(1, 7))).available == 160
        clock.advance(seconds=601)
        job = await p.wait_for_state(receipt.job.id, JobState.EXPIRED)
        assert job.error_kind == "deadline"
        balance = await p.ledger.balance(AccountRef.member(1, 7))
        assert (balance.available, balance.pending) == (200, 0)
        assert [t.kind.value for t in await p.ledger.transfers_for_job(job.id)] == [
            "pending",
            "expire",
        ]
        await p.service.settle_due()  # the expiry's own last step: cancel at the vendor
        assert double.jobs[job.provider_job_id or ""].cancelled, "cancelled at the vendor too"


@pytest.mark.parametrize("covered", [True, False])
async def test_late_success_is_delivered_and_charged_if_covered(
    tmp_path: Path, double: EachLabsDouble, covered: bool
) -> None:
    clock = OffsetClock()
    async with pipeline(
        tmp_path,
        eachlabs(double),
        default_provider="eachlabs",
        clock=clock,
        deadline_s=600,
        late_grace_s=3600,
        poll_initial_s=30,
        poll_max_s=30,
    ) as p:
        await fund(p, amount=COST)
        double.default_script = ["created", "processing"]
        receipt = await p.service.submit(member(), REQUEST)
        vendor_job = double.jobs[await created_job(p, receipt.job.id)]
        clock.advance(seconds=601)
        p.service.poke(receipt.job.id)
        await p.wait_for_state(receipt.job.id, JobState.EXPIRED)
        await p.service.settle_due()  # the expiry has asked the vendor to cancel
        vendor_job.cancelled = False  # the vendor could not stop it
        if not covered:  # the member spent the returned credits meanwhile
            await p.ledger.revoke(1, 7, COST, key="spent-elsewhere")
        vendor_job.script = ["succeeded"]
        assert await double.send_webhook(vendor_job) == 200
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED)
        kinds = [t.kind.value for t in await p.ledger.transfers_for_job(job.id)]
        if covered:
            assert kinds == ["pending", "expire", "single"] and job.charged == COST
            assert (await p.ledger.balance(AccountRef.member(1, 7))).available == 0
        else:
            assert kinds == ["pending", "expire"] and job.charged == 0
        assert len(p.sink.deliveries) == 1
        assert (await p.ledger.audit()).ok


# -- intake ------------------------------------------------------------------------------------


async def test_same_interaction_twice_is_one_job_one_hold(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    async with pipeline(tmp_path, eachlabs(double), default_provider="eachlabs", public=False) as p:
        await fund(p)
        receipts = await asyncio.gather(
            *(p.service.submit(member(interaction_id=555), REQUEST) for _ in range(5))
        )
        assert len({r.job.id for r in receipts}) == 1
        assert sum(not r.replayed for r in receipts) == 1
        job = await p.wait_for_state(receipts[0].job.id, JobState.DELIVERED)
        assert await p.captures(job.id) == [COST] and double.creates == 1


async def test_insufficient_credits_charges_nothing(tmp_path: Path, double: EachLabsDouble) -> None:
    async with pipeline(tmp_path, eachlabs(double), default_provider="eachlabs", public=False) as p:
        await fund(p, amount=39)
        with pytest.raises(InsufficientCredits) as info:
            await p.service.submit(member(), REQUEST)
        assert "40" in str(info.value) and "39" in str(info.value)
        assert await p.service.jobs.by_user(1, 7) == []
        assert double.creates == 0


async def test_cancel_by_requester_moderator_and_others(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    async with pipeline(tmp_path, eachlabs(double), default_provider="eachlabs", public=False) as p:
        await fund(p)
        double.default_script = ["created", "processing"]
        receipt = await p.service.submit(member(), REQUEST)
        await p.wait_for_state(receipt.job.id, JobState.RUNNING)
        with pytest.raises(NotPermitted):
            await p.service.cancel(receipt.job.id, Actor(99, guild_id=1))
        job = await p.service.cancel(receipt.job.id, Actor(7, guild_id=1))
        assert job.state is JobState.CANCELLED
        assert double.jobs[job.provider_job_id or ""].cancelled
        assert (await p.ledger.balance(AccountRef.member(1, 7))).available == 200
        with pytest.raises(UserError, match="no longer be cancelled"):
            await p.service.cancel(receipt.job.id, Actor(7, guild_id=1))
        second = await p.service.submit(member(), REQUEST)
        assert (
            await p.service.cancel(second.job.id, Actor(1, guild_id=1, is_moderator=True))
        ).state is JobState.CANCELLED


async def test_delivery_failure_is_retried(tmp_path: Path, double: EachLabsDouble) -> None:
    async with pipeline(tmp_path, eachlabs(double), default_provider="eachlabs", public=False) as p:
        await fund(p)
        p.sink.fail_next = 1
        receipt = await p.service.submit(member(), REQUEST)
        await p.wait_for_state(receipt.job.id, JobState.DELIVERY_FAILED)
        p.service.poke(receipt.job.id)  # instead of waiting 30 s for the retry
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED)
        assert job.delivery_attempts == 1 and len(p.sink.deliveries) == 1
        assert await p.captures(job.id) == [COST]


async def test_health_ready_metrics_and_media(tmp_path: Path, double: EachLabsDouble) -> None:
    async with pipeline(tmp_path, eachlabs(double), default_provider="eachlabs") as p:
        await fund(p)
        receipt = await p.service.submit(member(), REQUEST)
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{p.url}/healthz") as r:
                assert r.status == 200
            async with s.get(f"{p.url}/readyz") as r:
                assert r.status == 200 and (await r.json())["checks"]["database"] is True
            async with s.get(f"{p.url}/metrics") as r:
                text = await r.text()
                assert 'klingbot_jobs{state="delivered"} 1.0' in text
                assert "klingbot_credits_captured 40.0" in text
            link = p.service.media.link(job)
            assert link is not None
            async with s.get(link, headers={"Range": "bytes=0-9"}) as r:
                assert r.status == 206 and await r.read() == double.video_bytes[:10]
            async with s.get(f"{p.url}/media/{job.id}/wrong-token.mp4") as r:
                assert r.status == 404
