"""Posting moderation events to a guild's log channel (set with /pool logchannel)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord

from bot.discord.rate_limits import Priority
from bot.discord.render import who
from bot.pipeline import JobEvent
from storage import Job

if TYPE_CHECKING:
    from bot.discord.client import KlingBot

log = logging.getLogger(__name__)


async def post_log(
    bot: KlingBot,
    guild_id: int,
    text: str,
    *,
    embed: discord.Embed | None = None,
    view: discord.ui.View | None = None,
    fallback_channel_id: int | None = None,
) -> discord.Message | None:
    """Post to the log channel (or `fallback_channel_id` when none is set); None if impossible."""
    policy = await bot.service.policy.get(guild_id)
    channel_id = policy.log_channel_id or fallback_channel_id
    if not channel_id:
        return None
    channel = bot.get_partial_messageable(channel_id, guild_id=guild_id)
    kwargs: dict[str, object] = {
        "content": text,
        "allowed_mentions": discord.AllowedMentions.none(),
    }
    if embed is not None:
        kwargs["embed"] = embed
    if view is not None:
        kwargs["view"] = view
    try:
        return await bot.pacer.send(
            channel_id,
            lambda: channel.send(**kwargs),  # type: ignore[call-overload]
            priority=Priority.POST,
        )
    except discord.HTTPException as error:
        log.warning("could not post to the log channel %s of %s: %s", channel_id, guild_id, error)
        return None


async def log_moderation(bot: KlingBot, interaction: discord.Interaction[Any], text: str) -> None:
    """Log what a moderator just did: "🛡️ @moderator <text>"."""
    await post_log(bot, interaction.guild_id or 0, f"🛡️ {who(interaction.user.id)} {text}")


class ModLogNotices:
    """Tells a guild's log channel about a job the pipeline cannot settle by itself yet: a create
    whose answer was lost at a provider that cannot be asked (published once per job)."""

    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot

    async def job_changed(self, job: Job, event: JobEvent) -> None:
        if event is not JobEvent.OUTCOME_UNKNOWN or not job.guild_id:
            return
        deadline = (job.deadline_at_ms or 0) // 1000
        await post_log(
            self.bot,
            job.guild_id,
            f"⚠️ The answer of **{job.provider}** to {who(job.user_id)}'s video `{job.id}` was"
            " lost, and that provider cannot be asked what it made. If it made the clip, it is"
            f" still delivered; if not, the {job.cost} credits held come back <t:{deadline}:R>.",
        )
