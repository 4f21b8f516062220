"""/klingadmin: bot owners (KLINGBOT_OWNER_IDS) fund pools, audit the ledger, see live jobs,
and refund jobs. Checked at run time on every subcommand; Discord shows the command only to a
server's administrators (default permissions), in servers only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.checks import OWNERS_ONLY, Refused
from bot.discord.modlog import post_log
from bot.discord.render import STATE_LINES, clip, request_of, ts
from bot.errors import InvalidRequest
from bot.pipeline import Moderation

if TYPE_CHECKING:
    from bot.discord.client import KlingBot


@app_commands.guild_only()
@app_commands.default_permissions(administrator=True)
class Admin(
    commands.GroupCog,
    group_name="klingadmin",
    group_description="Bot owner tools",
):
    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot
        self.moderation = Moderation(bot.service)
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        if not self.bot.is_owner_id(interaction.user.id):
            raise Refused(OWNERS_ONLY)
        return True

    @app_commands.command(name="fund", description="Issue new credits into a server's pool")
    @app_commands.describe(
        credits="How many", guild="A server id, or 'here'", reason="Why (logged)"
    )
    async def fund(
        self,
        interaction: discord.Interaction[Any],
        credits: app_commands.Range[int, 1, 100_000_000],
        guild: str = "here",
        reason: str | None = None,
    ) -> None:
        if guild.strip().lower() == "here":
            guild_id = interaction.guild_id or 0
        elif guild.strip().isdigit():
            guild_id = int(guild.strip())
        else:
            raise InvalidRequest(["`guild` must be a server id or `here`."])
        if not guild_id:
            raise InvalidRequest(["Use this in a server, or give a server id."])
        await self.moderation.fund(
            guild_id,
            credits,
            actor_id=interaction.user.id,
            reason=reason,
            key=f"fund:{interaction.id}",
        )
        pool = await self.bot.service.ledger.balance_of_pool(guild_id)
        await interaction.response.send_message(
            f"Funded the pool of server {guild_id} with {credits} credits; it now has {pool} available.",
            ephemeral=True,
        )
        await post_log(
            self.bot, guild_id, f"🏦 <@{interaction.user.id}> added {credits} credits to the pool"
        )

    @app_commands.command(
        name="audit", description="Recompute every balance from the ledger entries"
    )
    async def audit(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await self.bot.service.ledger.audit()
        await interaction.followup.send(f"```\n{clip(report.render(), 1900)}\n```", ephemeral=True)

    @app_commands.command(name="jobs", description="Unfinished jobs in every server")
    async def jobs(self, interaction: discord.Interaction[Any]) -> None:
        jobs = await self.bot.service.jobs.live_everywhere(limit=20)
        if not jobs:
            await interaction.response.send_message("No unfinished jobs.", ephemeral=True)
            return
        lines = [
            f"`{j.id}` {STATE_LINES[j.state]} · {j.provider} · server {j.guild_id} · <@{j.user_id}> · "
            f"{ts(j.created_at_ms)}\n> {clip(request_of(j).summary, 60)}"
            for j in jobs
        ]
        await interaction.response.send_message("\n".join(lines)[:1990], ephemeral=True)

    @app_commands.command(name="refund", description="Give back credits charged for a job")
    @app_commands.describe(
        job="The job id", credits="How many (default: all that was charged)", reason="Why"
    )
    async def refund(
        self,
        interaction: discord.Interaction[Any],
        job: str,
        credits: app_commands.Range[int, 1, 100_000_000] | None = None,
        reason: str | None = None,
    ) -> None:
        transfer = await self.moderation.refund(
            job.strip(),
            credits,
            actor_id=interaction.user.id,
            reason=reason,
            key=f"refund:{interaction.id}",
        )
        await interaction.response.send_message(
            f"Refunded {transfer.amount} credits for job `{transfer.job_id}`.", ephemeral=True
        )
        await post_log(
            self.bot,
            transfer.guild_id,
            f"↩️ <@{interaction.user.id}> refunded {transfer.amount} credits of job `{transfer.job_id}` to <@{transfer.user_id}>",
        )


async def setup(bot: KlingBot) -> None:
    await bot.add_cog(Admin(bot))
