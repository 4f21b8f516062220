"""/jobs list (with a Get the clip button for each charged job whose clip is kept), /jobs cancel
and /queue."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.buttons import CLIP_STATES, ClipButton, cancel_job, view_of
from bot.discord.checks import is_moderator
from bot.discord.render import STATE_LINES, clip, request_of, ts
from bot.errors import NotFound
from storage import Job, JobState

if TYPE_CHECKING:
    from bot.discord.client import KlingBot


class Jobs(commands.GroupCog, group_name="jobs", group_description="Your videos"):
    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot
        super().__init__()

    async def line(self, job: Job) -> str:
        state = STATE_LINES[job.state]
        position, _ = await self.bot.service.position_and_eta(job)
        if position:
            state += f" (#{position})"
        where = ""
        if job.result_message_id and job.state is JobState.DELIVERED:
            where = f" · [clip](https://discord.com/channels/{job.guild_id}/{job.channel_id}/{job.result_message_id})"
        elif job.state is JobState.DELIVERED and job.delivered_via == "dm":
            where = " · sent by DM"
        elif job.state is JobState.DELIVERY_FAILED:
            where = " · **Get the clip** below"
        link = self.bot.service.media.link(job) if job.media_path else None
        if link:
            where += f" · [download]({link})"
        prompt = clip(request_of(job).summary, 60)
        return f"`{job.id}` {ts(job.created_at_ms)} {state}{where}\n> {prompt}"

    @app_commands.command(name="list", description="Your recent videos and where they are")
    @app_commands.guild_only()
    async def list_jobs(self, interaction: discord.Interaction[Any]) -> None:
        jobs = await self.bot.service.jobs.by_user(
            interaction.guild_id or 0, interaction.user.id, limit=10
        )
        if not jobs:
            await interaction.response.send_message(
                "You haven't asked for any videos here yet.", ephemeral=True
            )
            return
        lines = [await self.line(job) for job in jobs]
        embed = discord.Embed(title="Your recent videos", description="\n".join(lines)[:4000])
        clips = [job for job in jobs if await self.clip_kept(job)]
        if clips:
            buttons = [ClipButton(job.id, label=f"Get the clip {job.id}") for job in clips]
            await interaction.response.send_message(
                embed=embed, view=view_of(*buttons), ephemeral=True
            )
        else:
            await interaction.response.send_message(embed=embed, ephemeral=True)

    async def clip_kept(self, job: Job) -> bool:
        """A charged job whose clip can still be had (a clip not posted is always kept)."""
        if job.state is JobState.DELIVERY_FAILED:
            return True
        clip = self.bot.service.media.clip_path(job.id)
        return job.state in CLIP_STATES and await asyncio.to_thread(clip.exists)

    @app_commands.command(
        name="cancel", description="Cancel one of your videos that isn't finished"
    )
    @app_commands.guild_only()
    @app_commands.describe(job="The job id (from /jobs list); your latest live job if empty")
    async def cancel(self, interaction: discord.Interaction[Any], job: str | None = None) -> None:
        if job is None:
            live = [
                j
                for j in await self.bot.service.jobs.by_user(
                    interaction.guild_id or 0, interaction.user.id, limit=20
                )
                if j.state
                in (
                    JobState.AWAITING_APPROVAL,
                    JobState.QUEUED,
                    JobState.SUBMITTED,
                    JobState.RUNNING,
                )
            ]
            if not live:
                raise NotFound("You have no video in progress.")
            job = live[0].id
        await cancel_job(self.bot, interaction, job.strip())


class Queue(commands.Cog):
    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot

    @app_commands.command(
        name="queue", description="Videos waiting for the provider in this server"
    )
    @app_commands.guild_only()
    async def queue(self, interaction: discord.Interaction[Any]) -> None:
        guild_id = interaction.guild_id or 0
        waiting = await self.bot.service.jobs.queue_overview(guild_id)
        everywhere = await self.bot.service.jobs.queue_overview()
        live = sum(
            1 for j in await self.bot.service.jobs.live_at_provider() if j.guild_id == guild_id
        )
        header = (
            f"**{len(waiting)}** waiting here ({len(everywhere)} across all servers),"
            f" **{live}** being made now."
        )
        moderator = await is_moderator(self.bot, interaction)
        shown = waiting if moderator else [j for j in waiting if j.user_id == interaction.user.id]
        lines = []
        for job in shown[:20]:
            position, eta_ms = await self.bot.service.position_and_eta(job)
            who = f"<@{job.user_id}> · " if moderator else ""
            eta = f" · expected {ts(eta_ms)}" if eta_ms else ""
            lines.append(
                f"#{position} `{job.id}` {who}{job.cost} credits · waiting since {ts(job.created_at_ms)}{eta}"
            )
        if not moderator:
            header += f"\nYours: {len(shown)} waiting." if shown else "\nYou have nothing waiting."
        text = header + ("\n" + "\n".join(lines) if lines else "")
        if len(shown) > 20:
            text += f"\n…and {len(shown) - 20} more."
        await interaction.response.send_message(text[:1990], ephemeral=True)


async def setup(bot: KlingBot) -> None:
    await bot.add_cog(Jobs(bot))
    await bot.add_cog(Queue(bot))
