"""Queueing as members and moderators see it in Discord: /queue, positions, limits, failover."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.playground.double import DiscordDouble
from bot.settings import EachLabsSettings
from storage import JobState
from tests.e2e_support import (
    ALICE,
    CHANNEL,
    GUILD,
    LOG_CHANNEL,
    MOD,
    make_double,
    make_settings,
    reply_text,
    running_bot,
)
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble


@pytest.fixture
async def double() -> AsyncIterator[DiscordDouble]:
    d = await make_double()
    yield d
    await d.stop()


async def test_queue_positions_and_views(tmp_path: Path, double: DiscordDouble) -> None:
    async with EachLabsDouble() as vendor:
        vendor.default_script = ["processing"]
        settings = make_settings(
            tmp_path,
            provider="eachlabs",
            eachlabs=EachLabsSettings(
                api_key=SecretStr(API_KEY), base_url=vendor.api_base, max_concurrent=10
            ),
        )
        async with running_bot(double, settings) as run:
            await run.fund(ALICE, 500)
            for n in range(3):
                await reply_text(await run.video(prompt=f"fox number {n}", duration=5))
            jobs = sorted(
                await run.service.jobs.by_user(GUILD, ALICE), key=lambda j: j.created_at_ms
            )
            await run.wait_state(jobs[0].id, JobState.RUNNING)
            await run.wait_state(jobs[1].id, JobState.RUNNING)
            third = await run.service.jobs.get(jobs[2].id)
            assert third.state is JobState.QUEUED, (
                f"a member's third job waits for one of the first two, not {third.state}"
            )
            status = await double.wait_for_message(
                CHANNEL,
                lambda m: m.id == third.status_message_id and "#1 in line" in m.embeds[0]["title"],
            )
            assert any(f["name"] == "Expected" for f in status.embeds[0]["fields"])
            mine = await double.invoke("queue", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL)
            text = await reply_text(mine)
            assert "**1** waiting here" in text and "Yours: 1 waiting" in text and third.id in text
            assert f"<@{ALICE}>" not in text
            everyone = await double.invoke("queue", user_id=MOD, guild_id=GUILD, channel_id=CHANNEL)
            assert f"<@{ALICE}>" in await reply_text(everyone)
            listing = await double.invoke(
                "jobs", sub="list", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL
            )
            await listing.wait_ack()
            assert f"`{third.id}`" in (listing.responses[0].data or {})["embeds"][0]["description"]
            limits = await double.invoke(
                "pool", {"live": 3}, sub="limits", user_id=MOD, guild_id=GUILD, channel_id=CHANNEL
            )
            assert "3 at the provider" in await reply_text(limits)
            await run.wait_state(third.id, JobState.RUNNING)  # the new limit lets it start


async def test_failover_posts_one_log_message(tmp_path: Path, double: DiscordDouble) -> None:
    async with EachLabsDouble() as vendor:
        vendor.next_create(
            "status", 402, {"status": "error", "message": "Insufficient balance"}, times=50
        )
        settings = make_settings(
            tmp_path,
            provider="eachlabs",
            failover_providers=["local"],
            eachlabs=EachLabsSettings(
                api_key=SecretStr(API_KEY), base_url=vendor.api_base, max_concurrent=10
            ),
        )
        async with running_bot(double, settings) as run:
            await run.fund(ALICE, 500)
            await reply_text(
                await double.invoke(
                    "pool", {"channel": LOG_CHANNEL}, sub="logchannel", user_id=MOD, guild_id=GUILD
                )
            )
            for n in range(3):
                await reply_text(await run.video(prompt=f"fox number {n}", duration=3))
            for job in await run.service.jobs.by_user(GUILD, ALICE):
                done = await run.wait_state(job.id, JobState.DELIVERED)
                assert done.provider == "local"
            alerts = [m for m in double.messages(LOG_CHANNEL) if "refused new jobs" in m.content]
            assert len(alerts) == 1 and "**local**" in alerts[0].content
