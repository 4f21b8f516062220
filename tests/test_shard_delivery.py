"""A process delivers the jobs it works in any guild, also one whose shard another process holds
(so the guild is not in its cache): the status message, its edits, the clip and the log channel's
notices are all addressed by channel id through REST. The real KlingBot holds shard 0 of 2
against the Discord double; the job's guild is on shard 1."""

from __future__ import annotations

from pathlib import Path

from bot.discord.video_requests import announce
from bot.pipeline import ProviderIncident, Requester
from bot.shards import shard_of
from storage import JobState
from tests.e2e_support import ALICE, GUILD, MOD, OWNER, make_double, make_settings, running_bot

COUNT = 2
FAR_GUILD = ((COUNT * 250_000_000 + 1) << 22) | 99  # on shard 1 of 2
FAR_CHANNEL = FAR_GUILD + 1
FAR_LOG = FAR_GUILD + 2


async def test_a_job_in_a_guild_of_another_shard_is_delivered_by_channel_id(
    tmp_path: Path,
) -> None:
    assert (shard_of(GUILD, COUNT), shard_of(FAR_GUILD, COUNT)) == (0, 1)
    double = await make_double()
    double.add_guild(FAR_GUILD, name="far", owner_id=OWNER)
    double.add_channel(FAR_GUILD, FAR_CHANNEL, "videos")
    double.add_channel(FAR_GUILD, FAR_LOG, "mod-log")
    double.add_member(FAR_GUILD, ALICE, "alice")
    settings = make_settings(tmp_path, shard_count=COUNT, shard_ids=(0,))
    try:
        async with running_bot(double, settings) as run:
            bot = run.bot
            assert double.gateway.live_shards() == [(0, COUNT)]
            await double.wait_for(bot.is_ready)
            assert bot.get_guild(GUILD) is not None
            assert (bot.get_guild(FAR_GUILD), bot.get_channel(FAR_CHANNEL)) == (None, None)

            await run.service.policy.set(FAR_GUILD, actor_id=MOD, log_channel_id=FAR_LOG)
            await run.service.ledger.issue_to_member(FAR_GUILD, ALICE, 500, key="far-fund")
            requester = Requester(guild_id=FAR_GUILD, channel_id=FAR_CHANNEL, user_id=ALICE)
            receipt = await run.service.submit(requester, {"prompt": "a fox", "duration_s": 5})
            await announce(bot, receipt.job.id)  # the status message, as after /video
            await bot.report_incident(
                ProviderIncident("fal", "no_funds", "balance 0", "local", FAR_GUILD)
            )

            job = await run.wait_state(receipt.job.id, JobState.DELIVERED)
            assert job.status_message_id and job.result_message_id
            clip = await run.result_message(job, channel_id=FAR_CHANNEL)
            assert clip.attachments and clip.attachments[0].filename.endswith(".mp4")
            assert clip.message_reference is not None
            assert clip.message_reference["message_id"] == str(job.status_message_id)

            status = double.message(job.status_message_id)
            await double.wait_for(lambda: "✅ Done" in str(status.embeds))
            assert status.edit_count >= 1 and status.channel_id == FAR_CHANNEL
            [notice] = double.messages(FAR_LOG)
            assert "**fal** refused new jobs" in notice.content
            assert double.messages(FAR_CHANNEL) == [status, clip]
            failed = [r for r in double.requests if r.status >= 400]
            assert failed == []
    finally:
        await double.stop()
    assert double.internal_errors == []


async def test_unsharded_the_bot_is_one_connection_as_before(tmp_path: Path) -> None:
    """Without the shard settings: one session (shard 0 of 1) at the configured gateway address,
    no GET /gateway/bot, every guild in the cache, ready once, commands synced at startup."""
    double = await make_double()
    double.add_guild(FAR_GUILD, name="far", owner_id=OWNER)
    try:
        async with running_bot(double, make_settings(tmp_path)) as run:
            bot = run.bot
            await double.wait_for(bot.is_ready)
            assert double.gateway.live_shards() == [(0, 1)]
            assert (bot.shard_id, bot.shard_count, sorted(bot.shards)) == (None, 1, [0])
            assert {g.id for g in bot.guilds} == {GUILD, FAR_GUILD}
            assert [shard for shard, _ in bot.latencies] == [0]
            assert await bot.is_gateway_ready()
            assert not [r for r in double.requests if r.path.startswith("/gateway")]
            identified = [r for r in double.gateway_log if r.direction == "recv" and r.op == 2]
            assert [r.path for r in identified] == ["/gateway/"]  # KLINGBOT_DISCORD_GATEWAY_URL
            assert double.commands(GUILD)  # the only process syncs at startup
    finally:
        await double.stop()
    assert double.internal_errors == []
