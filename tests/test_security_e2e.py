"""Guild boundaries and money rules end to end, through the Discord double: one person who
moderates a second server can not touch the first server's jobs, and a failover never charges
past the first server's rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.discord.client import sync_commands
from bot.playground.double import DiscordDouble
from bot.settings import EachLabsSettings, FalSettings, LocalSettings
from storage import AccountRef, JobState
from tests.e2e_support import (
    ALICE,
    BOB,
    CHANNEL,
    GUILD,
    MANAGE_GUILD,
    MOD,
    OWNER,
    make_double,
    make_settings,
    reply_text,
    running_bot,
)
from tests.provider_doubles.eachlabs import API_KEY as EACHLABS_KEY
from tests.provider_doubles.eachlabs import EachLabsDouble
from tests.provider_doubles.fal import API_KEY as FAL_KEY
from tests.provider_doubles.fal import FalDouble

SECOND_GUILD = 910_000_000_000_000_002
SECOND_CHANNEL = 920_000_000_000_000_010


@pytest.fixture
async def double() -> AsyncIterator[DiscordDouble]:
    """Two servers: alice is a plain member of the first and moderates the second."""
    d = await make_double()
    d.add_guild(SECOND_GUILD, name="Elsewhere", owner_id=ALICE)
    d.add_channel(SECOND_GUILD, SECOND_CHANNEL, "general")
    d.add_member(SECOND_GUILD, ALICE, "alice", permissions=MANAGE_GUILD)
    yield d
    await d.stop()


async def cancel_from(double: DiscordDouble, user_id: int, guild_id: int, job_id: str) -> str:
    channel_id = CHANNEL if guild_id == GUILD else SECOND_CHANNEL
    inter = await double.invoke(
        "jobs",
        {"job": job_id},
        sub="cancel",
        user_id=user_id,
        guild_id=guild_id,
        channel_id=channel_id,
    )
    return await reply_text(inter)


async def test_a_moderator_of_another_server_cannot_cancel_a_job(
    tmp_path: Path, double: DiscordDouble
) -> None:
    settings = make_settings(tmp_path, local=LocalSettings(render_s=60.0, max_concurrent=4))
    async with running_bot(double, settings) as run:
        await sync_commands(run.bot)  # global too, so the commands exist in the second server
        await run.fund(BOB, 100)
        await reply_text(await run.video(user_id=BOB, duration=5))
        job = await run.only_job(BOB)
        await run.wait_state(job.id, JobState.SUBMITTED, JobState.RUNNING)

        elsewhere = await cancel_from(double, ALICE, SECOND_GUILD, job.id)
        assert elsewhere == f"There is no job {job.id} in this server."
        missing = await cancel_from(double, ALICE, SECOND_GUILD, "0123456789ab")
        assert missing == "There is no job 0123456789ab in this server."  # the same answer
        here = await cancel_from(double, ALICE, GUILD, job.id)
        assert "Only the member who asked for this video or a moderator" in here
        assert (await run.service.jobs.get(job.id)).state in (JobState.SUBMITTED, JobState.RUNNING)
        assert await run.available(BOB) == 60

        moderated = await cancel_from(double, MOD, GUILD, job.id)
        assert f"Job `{job.id}` cancelled. 40 credits were returned." == moderated
        assert await run.available(BOB) == 100


async def test_failover_to_a_dearer_provider_does_not_skip_the_pool_rules(
    tmp_path: Path, double: DiscordDouble
) -> None:
    """A pool job at cap 40 and approval 40 would move from 8/s to 16/s (80 credits): the move
    is refused, the pool keeps its credits, no moderator is bypassed, and the member is told."""
    async with EachLabsDouble() as first, FalDouble() as second:
        first.next_create(
            "status", 402, {"status": "error", "message": "Insufficient balance"}, times=10
        )
        settings = make_settings(
            tmp_path,
            provider="eachlabs",
            failover_providers=["fal"],
            eachlabs=EachLabsSettings(api_key=SecretStr(EACHLABS_KEY), base_url=first.api_base),
            fal=FalSettings(
                api_key=SecretStr(FAL_KEY),
                base_url=second.base_url,
                jwks_url=second.jwks_url,
                price_per_second=16,
            ),
        )
        async with running_bot(double, settings) as run:
            await run.service.ledger.fund_pool(GUILD, 1000, key="pool", actor_id=OWNER)
            await run.service.policy.set(
                GUILD, actor_id=MOD, member_cap_per_day=40, approval_threshold=40
            )
            answer = await reply_text(await run.video(user_id=ALICE, duration=5))
            assert "the server pool" in answer
            job = await run.wait_state((await run.only_job(ALICE)).id, JobState.FAILED)
            assert job.provider == "eachlabs" and second.creates == 0
            assert "could not move to fal" in (job.error_message or "")
            assert "a moderator must approve" in (job.error_message or "")
            pool = await run.service.ledger.balance(AccountRef.pool(GUILD))
            assert pool.available == 1000
            assert (await run.service.ledger.audit()).ok
