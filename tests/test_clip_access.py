"""A member can always get a clip they paid for: Get the clip hands the kept clip over privately
(on the status message of a clip that could not be posted, on Details and in /jobs list), as a
fresh upload or, when it cannot fit, the /media link; and says so when the clip is gone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.playground.double import DiscordDouble, DoubleInteraction, Message
from bot.settings import EachLabsSettings
from storage import Job, JobState
from tests.e2e_support import (
    ALICE,
    BOB,
    CHANNEL,
    GUILD,
    MOD,
    Running,
    make_double,
    make_settings,
    reply_text,
    running_bot,
)
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble

EPHEMERAL = 64
DEFERRED = 5
MIB = 1024 * 1024


@pytest.fixture
async def double() -> AsyncIterator[DiscordDouble]:
    d = await make_double()
    yield d
    await d.stop()


@pytest.fixture
async def vendor() -> AsyncIterator[EachLabsDouble]:
    async with EachLabsDouble() as d:
        d.default_script = ["created", "processing"]  # running until the test finishes it
        yield d


def settings(tmp_path: Path, vendor: EachLabsDouble, **overrides: Any) -> Any:
    return make_settings(
        tmp_path,
        provider="eachlabs",
        eachlabs=EachLabsSettings(api_key=SecretStr(API_KEY), base_url=vendor.api_base),
        delivery_max_attempts=1,  # one refused post is final
        **overrides,
    )


def custom_ids(message: Message) -> list[str]:
    return [c["custom_id"] for row in message.components for c in row["components"]]


async def running_job(run: Running) -> Job:
    """A /video of ALICE's, running at the vendor, with its status message posted."""
    await run.fund(ALICE, 200)
    await reply_text(await run.video())
    job = await run.wait_state((await run.only_job()).id, JobState.RUNNING)
    await run.double.wait_for(lambda: status_message(run, job) is not None)
    return job


def status_message(run: Running, job: Job) -> Message | None:
    return next(
        (
            m
            for m in run.double.messages(CHANNEL)
            if m.embeds
            and m.embeds[0].get("footer", {}).get("text", "").startswith(f"job {job.id}")
        ),
        None,
    )


def finish(vendor: EachLabsDouble) -> None:
    for vendor_job in vendor.jobs.values():
        vendor_job.script = ["succeeded"]


async def handed_clip(inter: DoubleInteraction) -> Message:
    """The private answer to a Get the clip press (deferred, then filled)."""
    ack = await inter.wait_ack(timeout=30)
    assert ack.callback_type == DEFERRED and (ack.data or {}).get("flags") == EPHEMERAL
    await inter.wait_for_followup(timeout=60)
    answer = inter.original_message
    assert answer is not None and answer.ephemeral and not answer.loading
    return answer


async def test_a_clip_that_could_not_be_posted_is_charged_and_can_be_fetched(
    tmp_path: Path, double: DiscordDouble, vendor: EachLabsDouble
) -> None:
    async with running_bot(double, settings(tmp_path, vendor)) as run:
        job = await running_job(run)
        double.set_channel_permissions(CHANNEL, deny_send=True)  # no post in the channel...
        double.close_dms(ALICE)  # ...nor by direct message
        finish(vendor)
        job = await run.wait_state(job.id, JobState.DELIVERY_FAILED)
        # charged: the vendor was paid and the clip is kept
        assert job.charged == 40 and await run.available(ALICE) == 160
        kinds = [t.kind.value for t in await run.service.ledger.transfers_for_job(job.id)]
        assert kinds == ["pending", "post"]
        clip_id = f"kb:clip:{job.id}"
        status = status_message(run, job)
        assert status is not None
        await double.wait_for(lambda: clip_id in custom_ids(status))

        refused = await double.click(status.id, clip_id, user_id=BOB, guild_id=GUILD)
        assert "Only the member who asked" in await reply_text(refused)

        kept = run.service.media.clip_path(job.id).read_bytes()
        for who in (ALICE, MOD):  # the requester, or a moderator of the server
            pressed = await double.click(status.id, clip_id, user_id=who, guild_id=GUILD)
            answer = await handed_clip(pressed)
            [attachment] = answer.attachments
            assert attachment.filename == f"klingbot-{job.id}.mp4" and attachment.ephemeral
            assert attachment.read() == kept == vendor.video_bytes
            assert f"`{job.id}`" in answer.content

        listing = await double.invoke(
            "jobs", sub="list", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL
        )
        await listing.wait_ack()
        shown = listing.original_message
        assert shown is not None
        assert "**Get the clip** below" in shown.embeds[0]["description"]
        [button] = [c for row in shown.components for c in row["components"]]
        assert button["custom_id"] == clip_id and job.id in button["label"]
        from_list = await double.click(shown.id, clip_id, user_id=ALICE)
        assert (await handed_clip(from_list)).attachments[0].read() == kept
        assert (await run.service.jobs.get(job.id)).state is JobState.DELIVERY_FAILED


async def test_details_offers_the_clip_fitted_to_the_channel_and_says_when_it_is_gone(
    tmp_path: Path, double: DiscordDouble, vendor: EachLabsDouble
) -> None:
    """An 11 MiB clip (a short video, then filler) is larger than the channel takes: it is posted
    re-encoded to fit, and Get the clip (from Details) hands over a fitted copy too."""
    vendor.large_video_bytes = 11 * MIB  # more than any upload limit here can take as it is
    async with running_bot(double, settings(tmp_path, vendor)) as run:
        job = await running_job(run)
        finish(vendor)
        job = await run.wait_state(job.id, JobState.DELIVERED)
        assert job.delivered_via == "reencoded"
        result = await run.result_message(job)
        details = await double.click(result.id, f"kb:details:{job.id}", user_id=ALICE)
        await details.wait_ack()
        offered = details.original_message
        assert offered is not None and custom_ids(offered) == [f"kb:clip:{job.id}"]

        answer = await handed_clip(await double.click(offered.id, f"kb:clip:{job.id}"))
        [attachment] = answer.attachments
        assert attachment.filename == f"klingbot-{job.id}.mp4"
        assert 0 < len(attachment.read()) <= 10 * MIB

        run.service.media.clip_path(job.id).unlink()  # as media retention does after 7 days
        gone = await double.click(offered.id, f"kb:clip:{job.id}")
        text = await reply_text(gone)
        assert "no longer kept" in text and "7 days" in text and "/klingadmin refund" in text
        listing = await double.invoke(
            "jobs", sub="list", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL
        )
        await listing.wait_ack()
        assert listing.original_message is not None
        assert listing.original_message.components == [], "no button for a clip not kept"
