"""/credits balance and /credits history (private answers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.checks import role_ids
from bot.discord.render import clip, ts
from bot.pipeline import DAY_MS, day_start_ms
from storage import AccountRef, HistoryEntry

if TYPE_CHECKING:
    from bot.discord.client import KlingBot

HISTORY_PAGE = 10
REASONS = {
    "grant": "granted by a moderator",
    "revoke": "taken back by a moderator",
    "issue": "issued by the bot owner",
    "refund": "refund",
    "job": "video",
    "capture": "video delivered",
    "late_capture": "video delivered late",
    "expire": "video timed out: returned",
}


def history_line(entry: HistoryEntry) -> str:
    t = entry.transfer
    kind = t.kind.value
    what = {
        "pending": "held for a video",
        "post": "video delivered; unused part returned" if entry.delta else "video delivered",
        "void": "video not made: returned",
        "expire": "video timed out: returned",
    }.get(kind, REASONS.get(t.reason, t.reason))
    sign = "+" if entry.delta > 0 else ""
    pool = " (server pool)" if entry.paid_by_pool else ""
    job = f" · job `{t.job_id}`" if t.job_id else ""
    memo = f" · {clip(t.memo, 80)}" if t.memo else ""
    return f"{ts(t.created_at_ms)} **{sign}{entry.delta}** {what}{pool}{job}{memo}"


class Credits(commands.GroupCog, group_name="credits", group_description="Your video credits"):
    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(
        name="balance", description="What you can spend, what is held, and your pool allowance"
    )
    @app_commands.guild_only()
    async def balance(self, interaction: discord.Interaction[Any]) -> None:
        guild_id, user_id = interaction.guild_id or 0, interaction.user.id
        service = self.bot.service
        own = await service.ledger.balance(AccountRef.member(guild_id, user_id))
        pool = await service.ledger.balance(AccountRef.pool(guild_id))
        policy = await service.policy.get(guild_id)
        roles = role_ids(interaction)
        embed = discord.Embed(title="Your credits", colour=discord.Colour.blurple())
        embed.add_field(name="Available", value=f"{own.available}")
        embed.add_field(name="Held for running videos", value=f"{own.pending}")
        now = service.clock.now_ms()
        if not policy.may_draw(roles):
            allowance = "Your roles can't draw from the server pool."
        else:
            cap = policy.cap_for(roles)
            if cap is None:
                allowance = f"No daily limit; the pool has {pool.available} credits."
            else:
                drawn = await service.ledger.drawn_from_pool(guild_id, user_id, day_start_ms(now))
                left = max(0, min(cap - drawn, pool.available))
                allowance = (
                    f"{left} of {cap} credits left today (pool has {pool.available});"
                    f" resets {ts(day_start_ms(now) + DAY_MS)}."
                )
        embed.add_field(name="From the server pool", value=allowance, inline=False)
        if user_id in policy.frozen_user_ids:
            embed.add_field(
                name="Paused", value="A moderator has paused your video requests.", inline=False
            )
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @app_commands.command(name="history", description="Your recent credit movements")
    @app_commands.guild_only()
    @app_commands.describe(page="Page number, 1 is the newest")
    async def history(
        self, interaction: discord.Interaction[Any], page: app_commands.Range[int, 1, 100] = 1
    ) -> None:
        guild_id, user_id = interaction.guild_id or 0, interaction.user.id
        entries: list[HistoryEntry] = []
        before: int | None = None
        for _ in range(page):
            entries = await self.bot.service.ledger.history(
                guild_id, user_id, before_id=before, limit=HISTORY_PAGE
            )
            if not entries:
                break
            before = entries[-1].transfer.id
        if not entries:
            text = "No credit movements yet." if page == 1 else f"There is no page {page}."
            await interaction.response.send_message(text, ephemeral=True)
            return
        embed = discord.Embed(
            title=f"Your credit history, page {page}",
            description="\n".join(history_line(e) for e in entries),
            colour=discord.Colour.blurple(),
        )
        if len(entries) == HISTORY_PAGE:
            embed.set_footer(text=f"Older entries: /credits history page:{page + 1}")
        await interaction.response.send_message(embed=embed, ephemeral=True)


async def setup(bot: KlingBot) -> None:
    await bot.add_cog(Credits(bot))
