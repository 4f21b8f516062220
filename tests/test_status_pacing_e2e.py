"""Bursts of /video through the Discord double with Discord's rate limits enforced: the bot paces
its posts and status edits per channel and under the global limit, so Discord never has to answer
429, and every status message ends showing its job's final state.

The double counts Discord's real limits (5 message posts and 5 edits per channel per window, 50
requests per global window) with each channel's window twenty times shorter than Discord's, so that a
burst Discord would spread over minutes passes in seconds; the bot learns each channel's window
from the headers it sees. With ten channels the global window is also shorter (a quarter of a second):
together the channels then want more than the global budget, which has to hold them back. The bot
is told its global budget (Discord's headers do not report the global limit).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.discord.rate_limits import PacingLimits, Window
from bot.discord.render import STATE_LINES
from bot.playground.double import (
    DISCORD_RATE_LIMITS,
    DiscordDouble,
    DoubleInteraction,
    Limit,
    RateLimits,
    RecordedRequest,
)
from bot.settings import EachLabsSettings
from storage import Job, JobState
from tests.e2e_support import (
    ALICE,
    CHANNEL,
    GUILD,
    Running,
    make_double,
    make_settings,
    reply_text,
    running_bot,
)
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble

# A channel's window is 0.25 s: 5 posts and 5 edits per 0.25 s per channel.
LIMITS = DISCORD_RATE_LIMITS.faster(20).with_global(Limit(50, 1.0))
# Ten channels want up to 200 requests/s; the double allows 200/s, the bot budgets 160/s.
SERVER_LIMITS = LIMITS.with_global(Limit(50, 0.25))
SERVER_PACING = PacingLimits(global_budget=Window(40, 0.25))
EXTRA_CHANNELS = [CHANNEL + 100 + n for n in range(9)]


@pytest.fixture
async def vendor() -> AsyncIterator[EachLabsDouble]:
    async with EachLabsDouble() as d:
        d.default_script = ["created", "processing", "succeeded"]
        yield d


def burst_settings(tmp_path: Path, vendor: EachLabsDouble, **overrides: Any) -> Any:
    return make_settings(
        tmp_path,
        provider="eachlabs",
        eachlabs=EachLabsSettings(
            api_key=SecretStr(API_KEY),
            base_url=vendor.api_base,
            max_concurrent=1000,
            creates_per_min=100_000,
            polls_per_min=1_000_000,
        ),
        poll_concurrency=64,
        **overrides,
    )


async def burst_double(limits: RateLimits, members: dict[int, list[int]]) -> DiscordDouble:
    double = await make_double(rate_limits=limits)
    for channel in EXTRA_CHANNELS:
        double.add_channel(GUILD, channel, f"videos-{channel % 100}")
    for users in members.values():
        for user in users:
            double.add_member(GUILD, user, f"user{user}")
    return double


def members_per_channel(channels: list[int], per_channel: int) -> dict[int, list[int]]:
    return {
        channel: [ALICE + 1000 + i * per_channel + n for n in range(per_channel)]
        for i, channel in enumerate(channels)
    }


async def run_burst(run: Running, members: dict[int, list[int]]) -> list[Job]:
    """Every member asks for one video at once in their channel; wait until every job is
    delivered and every status message shows it."""
    for users in members.values():
        for user in users:
            await run.fund(user, 100)
    total = sum(len(users) for users in members.values())
    started = time.perf_counter()
    inters = await asyncio.gather(
        *(
            run.video(user_id=user, channel_id=channel)
            for channel, users in members.items()
            for user in users
        )
    )
    # One waiter for all the receipts (one per interaction would each wake at every request).
    await run.double.wait_for(lambda: all(map(has_receipt, inters)), timeout=60)
    jobs = await wait_all_shown_final(run, total)
    edits = [r for r in run.double.requests if r.method == "PATCH" and "/messages/" in r.path]
    print(
        f"\n{total} jobs in {len(members)} channel(s): every status final after"
        f" {time.perf_counter() - started:.1f} s; {len(edits)} status edits,"
        f" {len(run.double.requests)} requests to Discord"
    )
    return jobs


def has_receipt(inter: DoubleInteraction) -> bool:
    return any(r.kind == "followup" and r.ok for r in inter.responses)


async def wait_all_shown_final(run: Running, total: int) -> list[Job]:
    """Every job delivered, and its status message showing that (checked every 0.2 s)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        jobs: list[Job] = await run.service.jobs.in_states(frozenset(JobState))
        if len(jobs) == total and all(
            job.state is JobState.DELIVERED and shows_final(run.double, job) for job in jobs
        ):
            return jobs
        await asyncio.sleep(0.2)
    stale = [job.id for job in jobs if not shows_final(run.double, job)]
    states = await run.service.jobs.count_by_state()
    raise AssertionError(f"jobs {states}; status messages behind: {stale}")


def shows_final(double: DiscordDouble, job: Job) -> bool:
    message = next(
        (m for m in double.messages(job.channel_id) if m.id == job.status_message_id), None
    )
    return message is not None and message.embeds[0]["title"] == STATE_LINES[job.state]


async def test_fifty_videos_in_one_channel_draw_no_429(
    tmp_path: Path, vendor: EachLabsDouble
) -> None:
    members = members_per_channel([CHANNEL], 50)
    double = await burst_double(LIMITS, members)
    try:
        async with running_bot(double, burst_settings(tmp_path, vendor)) as run:
            jobs = await run_burst(run, members)
            assert len(jobs) == 50
            assert all(job.result_message_id for job in jobs)
            assert double.rate_limited() == []
            assert double.invalid_requests() == []
    finally:
        await double.stop()


async def test_five_hundred_videos_in_ten_channels_draw_no_429(
    tmp_path: Path, vendor: EachLabsDouble
) -> None:
    members = members_per_channel([CHANNEL, *EXTRA_CHANNELS], 50)
    double = await burst_double(SERVER_LIMITS, members)
    settings = burst_settings(tmp_path, vendor)
    try:
        async with running_bot(double, settings, pacing=SERVER_PACING) as run:
            jobs = await run_burst(run, members)
            assert len(jobs) == 500
            assert all(job.result_message_id for job in jobs)
            assert double.rate_limited() == []
            assert double.invalid_requests() == []
    finally:
        await double.stop()


async def test_a_status_edit_discord_failed_is_sent_again(
    tmp_path: Path, vendor: EachLabsDouble
) -> None:
    double = await burst_double(LIMITS, {})
    # discord.py does not retry a 503 itself: the bot has to, or the message stays behind.
    outage = double.fail("PATCH", r"/channels/\d+/messages/\d+", status=503, times=1000)
    try:
        async with running_bot(double, burst_settings(tmp_path, vendor)) as run:
            await run.fund(ALICE, 100)
            await reply_text(await run.video(channel_id=CHANNEL))
            job = await run.wait_state((await run.only_job()).id, JobState.DELIVERED)
            await double.wait_for(lambda: any(map(refused_done, double.requests)), timeout=10)
            outage.times = 0  # Discord is back
            await double.wait_for(lambda: shows_final(double, job), timeout=10)
    finally:
        await double.stop()


def refused_done(request: RecordedRequest) -> bool:
    """An edit to show "Done" that Discord failed."""
    if request.status != 503 or not isinstance(request.json, dict):
        return False
    embeds = request.json.get("embeds") or [{}]
    return bool(embeds[0].get("title") == STATE_LINES[JobState.DELIVERED])
