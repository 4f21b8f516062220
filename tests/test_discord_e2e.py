"""End to end: Discord double → real discord.py → KlingBot → pipeline → provider → clip in channel."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest
from pydantic import SecretStr

from bot.discord.render import FITTING_LINE
from bot.discord.status import REPAIR_GRACE_S
from bot.playground.double import DiscordDouble
from bot.settings import EachLabsSettings
from storage import Job, JobState, OffsetClock
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
from tests.waits import until_stored

EPHEMERAL = 64


@pytest.fixture
async def double() -> AsyncIterator[DiscordDouble]:
    d = await make_double()
    yield d
    await d.stop()


@pytest.fixture
async def vendor() -> AsyncIterator[EachLabsDouble]:
    async with EachLabsDouble() as d:
        yield d


def eachlabs_settings(tmp_path: Path, vendor: EachLabsDouble, **overrides: Any) -> Any:
    return make_settings(
        tmp_path,
        provider="eachlabs",
        eachlabs=EachLabsSettings(
            api_key=SecretStr(API_KEY), base_url=vendor.api_base, max_concurrent=10
        ),
        **overrides,
    )


async def test_video_from_command_to_clip_in_channel(tmp_path: Path, double: DiscordDouble) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        await run.fund(ALICE, 200)
        inter = await run.video(duration=5)
        ack = await inter.wait_ack()
        assert ack.elapsed_s is not None and ack.elapsed_s < 3
        assert ack.callback_type == 5 and (ack.data or {}).get("flags") == EPHEMERAL
        text = await reply_text(inter)
        assert "40 credits" in text and "your balance" in text and "160" in text
        job = await run.only_job()
        job = await run.wait_state(job.id, JobState.DELIVERED)
        result = await run.result_message(job)
        assert result.message_reference is not None
        assert result.message_reference.get("message_id") == str(job.status_message_id)
        [attachment] = result.attachments
        assert attachment.filename.endswith(".mp4") and attachment.size > 10_000
        embed = result.embeds[0]
        assert "red fox" in embed["description"]
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert fields["Cost"] == "40 credits" and f"<@{ALICE}>" in fields["Requested by"]
        assert "5 s" in fields["Options"] and fields["Provider"] == "local"
        custom_ids = [c["custom_id"] for row in result.components for c in row["components"]]
        assert custom_ids == [f"kb:{a}:{job.id}" for a in ("reroll", "remix", "details", "delete")]
        assert [t.kind.value for t in await run.service.ledger.transfers_for_job(job.id)] == [
            "pending",
            "post",
        ]
        assert await run.available(ALICE) == 160
        status = await double.wait_for_message(  # the final edit follows the clip
            CHANNEL,
            lambda m: m.id == job.status_message_id and m.embeds[0]["title"].startswith("✅ Done"),
        )
        assert status.components == [] or all(not row["components"] for row in status.components)


async def test_invalid_options_are_answered_privately_and_charge_nothing(
    tmp_path: Path, double: DiscordDouble
) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        await run.fund(ALICE, 200)
        cases: list[tuple[dict[str, Any], str]] = [
            (
                {"prompt": "<<<voice_1>>> sings", "voice_1": "v1", "audio": False},
                "Voice ids need audio",
            ),
            ({"prompt": "a quiet street", "voice_1": "v1"}, "never says <<<voice_1>>>"),
            ({"prompt": "<<<voice_2>>> hums"}, "no voice id 2"),
            ({"prompt": "a fox", "resolution": "4k"}, "renders 720p, 1080p only"),
            ({"prompt": "a fox", "voice_1": "bad id!", "audio": True}, "not a valid voice id"),
        ]
        for options, expected in cases:
            inter = await run.video(**options)
            ack = await inter.wait_ack()
            assert (ack.data or {}).get("flags") == EPHEMERAL, options
            assert expected in await reply_text(inter), (options, await reply_text(inter))
        assert await run.service.jobs.by_user(GUILD, ALICE) == []
        assert await run.available(ALICE) == 200


async def test_insufficient_credits(tmp_path: Path, double: DiscordDouble) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        await run.fund(ALICE, 30)
        inter = await run.video(duration=5)
        await inter.wait_ack()
        text = await reply_text(inter)
        assert "needs 40 credits" in text and "/credits balance" in text
        assert await run.service.jobs.by_user(GUILD, ALICE) == []


async def test_job_finishing_after_16_minutes_is_delivered_in_the_channel(
    tmp_path: Path, double: DiscordDouble, vendor: EachLabsDouble
) -> None:
    clock = OffsetClock()
    vendor.default_script = ["created", "processing"]
    async with running_bot(double, eachlabs_settings(tmp_path, vendor), clock=clock) as run:
        await run.fund(ALICE, 200)
        inter = await run.video()
        await reply_text(inter)
        job = await run.wait_state((await run.only_job()).id, JobState.RUNNING)
        double.clock.advance(16 * 60)
        clock.advance(seconds=16 * 60)
        for vendor_job in vendor.jobs.values():
            vendor_job.script = ["succeeded"]
        job = await run.wait_state(job.id, JobState.DELIVERED)
        assert inter.token_expired
        result = await run.result_message(job)
        assert result.attachments
        late = [r for r in double.requests if inter.payload["token"] in r.path and r.status >= 400]
        assert late == [], "nothing used the expired interaction token"


async def test_large_clip_is_reencoded_under_the_limit_or_linked(
    tmp_path: Path, double: DiscordDouble
) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        await run.fund(ALICE, 200)
        service = run.service
        limits = iter([400_000, 10_000])  # a small channel, then one too small for any encode
        original_submit = service.submit

        async def small_channel(requester: Any, *args: Any, **kwargs: Any) -> Any:
            limited = dataclasses.replace(requester, upload_limit_bytes=next(limits))
            return await original_submit(limited, *args, **kwargs)

        service.submit = small_channel
        await reply_text(await run.video(duration=5))
        await reply_text(await run.video(duration=5, prompt="a second fox"))
        jobs = sorted(
            await service.jobs.by_user(GUILD, ALICE),
            key=lambda j: j.upload_limit_bytes,
            reverse=True,
        )
        reencoded = await run.wait_state(jobs[0].id, JobState.DELIVERED, timeout_s=60)
        linked = await run.wait_state(jobs[1].id, JobState.DELIVERED, timeout_s=60)
        assert reencoded.delivered_via == "reencoded" and linked.delivered_via == "link"
        [attachment] = (await run.result_message(reencoded)).attachments
        assert attachment.size <= 400_000
        status_edits = [
            r.json
            for r in double.requests
            if r.method == "PATCH" and r.path.endswith(f"/{reencoded.status_message_id}")
        ]
        titles = [
            edit["embeds"][0]["title"] for edit in status_edits if edit and edit.get("embeds")
        ]
        assert FITTING_LINE in titles, "the status message said the clip was being fitted"
        assert attachment.size < (reencoded.media_size_bytes or 0)
        link_message = await run.result_message(linked)
        assert link_message.attachments == []
        note = next(f["value"] for f in link_message.embeds[0]["fields"] if f["name"] == "Note")
        assert f"/media/{linked.id}/" in note


async def test_restart_mid_job_then_complete_and_old_buttons_work(
    tmp_path: Path, double: DiscordDouble, vendor: EachLabsDouble
) -> None:
    vendor.default_script = ["created", "processing"]
    settings = eachlabs_settings(tmp_path, vendor)
    async with running_bot(double, settings) as run:
        await run.fund(ALICE, 200)
        await reply_text(await run.video())
        await reply_text(await run.video(prompt="a second fox"))
        first, second = sorted(
            await run.service.jobs.by_user(GUILD, ALICE), key=lambda j: j.created_at_ms
        )
        first = await run.wait_state(first.id, JobState.RUNNING)
        second = await run.wait_state(second.id, JobState.RUNNING)
    # the bot is gone; the first job finishes at the vendor meanwhile
    vendor.jobs[first.provider_job_id or ""].script = ["succeeded"]
    async with running_bot(double, settings) as run:
        done = await run.wait_state(first.id, JobState.DELIVERED)
        result = await run.result_message(done)
        details = await double.click(
            result.id, f"kb:details:{first.id}", user_id=BOB, guild_id=GUILD, channel_id=CHANNEL
        )
        await details.wait_ack()
        assert (
            details.responses[0].data
            and details.responses[0].data["embeds"][0]["title"] == f"Job {first.id}"
        )
        cancel = await double.click(
            second.status_message_id or 0,
            f"kb:cancel:{second.id}",
            user_id=ALICE,
            guild_id=GUILD,
            channel_id=CHANNEL,
        )
        await cancel.wait_ack()
        assert "cancelled" in await reply_text(cancel)
        await run.wait_state(second.id, JobState.CANCELLED)
        assert await run.available(ALICE) == 160
        kinds = [t.kind.value for t in await run.service.ledger.transfers_for_job(first.id)]
        assert kinds == ["pending", "post"]
        assert (await run.service.ledger.audit()).ok


async def test_channel_post_429_is_retried_and_403_falls_back_to_dm(
    tmp_path: Path, double: DiscordDouble
) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        await run.fund(ALICE, 200)
        double.fail(
            "POST", rf"/channels/{CHANNEL}/messages", status=429, times=2, retry_after_s=0.2
        )
        await reply_text(await run.video())
        job = await run.wait_state((await run.only_job()).id, JobState.DELIVERED)
        assert job.delivered_via == "file" and (await run.result_message(job)).attachments
        double.set_channel_permissions(CHANNEL, deny_send=True)
        await reply_text(await run.video(prompt="a fox in a forbidden channel"))
        jobs = await run.service.jobs.by_user(GUILD, ALICE)
        job2 = await run.wait_state(jobs[0].id, JobState.DELIVERED)
        assert job2.delivered_via == "dm"
        [dm] = [m for m in double.dm_messages(ALICE) if m.attachments]
        assert "couldn't post it" in dm.content
        assert [t.kind.value for t in await run.service.ledger.transfers_for_job(job2.id)] == [
            "pending",
            "post",
        ]


async def test_hundred_concurrent_videos_are_acknowledged_within_3s(
    tmp_path: Path, double: DiscordDouble, vendor: EachLabsDouble
) -> None:
    vendor.default_script = ["created", "processing"]
    users = [ALICE + 1000 + n for n in range(100)]
    for user in users:
        double.add_member(GUILD, user, f"user{user}")
    async with running_bot(double, eachlabs_settings(tmp_path, vendor)) as run:
        for user in users:
            await run.fund(user, 100)
        started = time.perf_counter()
        inters = await asyncio.gather(*(run.video(user_id=user) for user in users))
        acks = await asyncio.gather(*(inter.wait_ack(timeout=10) for inter in inters))
        elapsed = [ack.elapsed_s or 99 for ack in acks]
        assert max(elapsed) < 3, f"slowest ack {max(elapsed):.2f}s"
        texts = await asyncio.gather(*(reply_text(inter) for inter in inters))
        assert all("40 credits" in text for text in texts)
        assert time.perf_counter() - started < 10


async def test_credits_and_jobs_commands(tmp_path: Path, double: DiscordDouble) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        await run.fund(ALICE, 200)
        await reply_text(await run.video())
        job = await run.wait_state((await run.only_job()).id, JobState.DELIVERED)
        balance = await double.invoke(
            "credits", sub="balance", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL
        )
        await balance.wait_ack()
        fields = {
            f["name"]: f["value"] for f in (balance.responses[0].data or {})["embeds"][0]["fields"]
        }
        assert fields["Available"] == "160" and fields["Held for running videos"] == "0"
        history = await double.invoke(
            "credits", sub="history", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL
        )
        await history.wait_ack()
        text = (history.responses[0].data or {})["embeds"][0]["description"]
        assert "**-40** held for a video" in text and "**+200**" in text
        listing = await double.invoke(
            "jobs", sub="list", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL
        )
        await listing.wait_ack()
        assert job.id in (listing.responses[0].data or {})["embeds"][0]["description"]
        nothing = await double.invoke(
            "jobs", sub="cancel", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL
        )
        await nothing.wait_ack()
        assert "no video in progress" in await reply_text(nothing)
        other = await double.invoke(
            "jobs",
            sub="cancel",
            options={"job": job.id},
            user_id=MOD,
            guild_id=GUILD,
            channel_id=CHANNEL,
        )
        await other.wait_ack()
        assert "can no longer be cancelled" in await reply_text(other)


async def test_multishot_remix_confirm_and_delete(tmp_path: Path, double: DiscordDouble) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        await run.fund(ALICE, 500)
        # /multishot: options first, then a form of "seconds: prompt" shots
        opened = await double.invoke(
            "multishot", {"duration": 8}, user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL
        )
        await opened.wait_ack()
        assert opened.modal is not None
        bad = await double.submit_modal(
            opened, opened.modal["custom_id"], {"shot_1": "3 a fox"}, user_id=ALICE
        )
        assert "must start with its length in seconds" in await reply_text(bad)
        opened = await double.invoke(
            "multishot", {"duration": 8}, user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL
        )
        await opened.wait_ack()
        assert opened.modal is not None
        sent = await double.submit_modal(
            opened,
            opened.modal["custom_id"],
            {"shot_1": "3: a fox wakes up", "shot_2": "5: the fox runs across the snow"},
            user_id=ALICE,
        )
        assert "64 credits" in await reply_text(sent)
        shots_job = await run.wait_state((await run.only_job()).id, JobState.DELIVERED)
        assert [s["duration_s"] for s in shots_job.request["shots"]] == [3, 5]
        result = await run.result_message(shots_job)
        assert result.embeds[0]["title"].startswith("🧪") and "not AI-generated" in str(
            result.embeds[0]
        )
        # Remix: a form prefilled with the shots; the new job is a child of the first
        remix = await double.click(
            result.id, f"kb:remix:{shots_job.id}", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL
        )
        await remix.wait_ack()
        assert remix.modal is not None
        fields = str(remix.modal)
        assert "3: a fox wakes up" in fields
        remixed = await double.submit_modal(
            remix,
            remix.modal["custom_id"],
            {
                "shot_1": "4: a fox yawns",
                "shot_2": "4: the fox sleeps",
                "negative_prompt": "blurry",
            },
            user_id=ALICE,
        )
        assert "Queued as job" in await reply_text(remixed)
        child = next(
            j
            for j in await run.service.jobs.by_user(GUILD, ALICE)
            if j.parent_job_id == shots_job.id
        )
        assert (
            child.request["negative_prompt"] == "blurry"
            and child.request["shots"][0]["prompt"] == "a fox yawns"
        )
        # Delete: only the requester or a moderator
        refused = await double.click(
            result.id, f"kb:delete:{shots_job.id}", user_id=BOB, guild_id=GUILD, channel_id=CHANNEL
        )
        assert "Only the member who asked" in await reply_text(refused)
        deleted = await double.click(
            result.id,
            f"kb:delete:{shots_job.id}",
            user_id=ALICE,
            guild_id=GUILD,
            channel_id=CHANNEL,
        )
        assert "Deleted" in await reply_text(deleted)
        assert all(m.id != result.id for m in double.messages(CHANNEL))
        retired = await run.service.jobs.get(shots_job.id)
        assert retired.media_retired_at_ms is not None, "Delete also retires the /media link"
        assert run.service.media.link(retired) is None
        assert not run.service.media.clip_path(shots_job.id).exists()
        # Confirm step above the server's threshold: nothing is held until Confirm
        await run.service.policy.set(GUILD, actor_id=MOD, confirm_threshold=30)
        before = await run.available(ALICE)
        ask = await run.video(prompt="an expensive fox", duration=5)
        assert "costs **40 credits**. Go ahead?" in await reply_text(ask)
        assert await run.available(ALICE) == before
        prompt_message = double.message(ask.responses[-1].message_id or 0)
        confirm_id = prompt_message.components[0]["components"][0]["custom_id"]
        clicks = await asyncio.gather(  # a double click: both arrive before the buttons go away
            *(
                double.click(
                    prompt_message.id, confirm_id, user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL
                )
                for _ in range(2)
            )
        )
        await asyncio.gather(*(c.wait_ack() for c in clicks))
        assert await run.available(ALICE) == before - 40, "the second click held nothing more"


async def test_commands_sync_only_when_they_changed(tmp_path: Path, double: DiscordDouble) -> None:
    settings = make_settings(tmp_path)
    for _ in range(2):
        async with running_bot(double, settings):
            pass
    puts = [r for r in double.requests if r.method == "PUT" and r.path.endswith("/commands")]
    assert len(puts) == 1, "the second start found the same definitions and did not sync"


async def test_a_status_message_left_behind_its_final_job_is_repaired(
    tmp_path: Path, double: DiscordDouble
) -> None:
    """A process died between a job's last change and the edit that shows it (or the edit was
    another process's to make): any process finds the final job whose message is behind and
    edits it, once its last change is old enough; a message known to show it is left alone."""
    async with running_bot(double, make_settings(tmp_path)) as run:
        await run.fund(ALICE, 200)
        await reply_text(await run.video(duration=5))  # the receipt: the job exists
        job = await run.wait_state((await run.only_job()).id, JobState.DELIVERED)
        assert job.status_message_id is not None
        done = await double.wait_for_message(
            CHANNEL,
            lambda m: m.id == job.status_message_id and m.embeds[0]["title"].startswith("✅ Done"),
        )
        await shown_as_delivered(run, job.id)
        assert await run.bot.status_messages.repair_behind() == 0  # shown: nothing to do
        # What a dead process leaves: the message still shows an earlier state, nothing
        # records that it showed the last one.
        stale = {**done.embeds[0], "title": "⬇️ Saving the clip"}
        channel = run.bot.get_partial_messageable(CHANNEL)
        await channel.get_partial_message(job.status_message_id).edit(
            embed=discord.Embed.from_dict(stale)
        )
        await run.service.jobs.update(job.id, status_shown=None)
        assert await run.bot.status_messages.repair_behind() == 0  # too recent: its owner's turn
        assert isinstance(run.clock, OffsetClock)
        run.clock.advance(seconds=REPAIR_GRACE_S + 1)
        assert await run.bot.status_messages.repair_behind() == 1
        await double.wait_for_message(
            CHANNEL,
            lambda m: m.id == job.status_message_id and m.embeds[0]["title"].startswith("✅ Done"),
        )
        await shown_as_delivered(run, job.id)
        run.clock.advance(seconds=REPAIR_GRACE_S + 1)
        assert await run.bot.status_messages.repair_behind() == 0


async def shown_as_delivered(run: Running, job_id: str) -> None:
    async def check() -> bool:
        job: Job = await run.service.jobs.get(job_id)
        return job.status_shown == "delivered"

    await until_stored(run.runtime.db, check, timeout_s=15, what="the Done edit recorded")
