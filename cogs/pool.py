"""/pool: moderators run the server's shared credit pool (the Approve/Deny buttons on approval
requests are in bot/discord/buttons.py).

Every subcommand checks at run time that the caller is a moderator (Manage Server, or the
server's moderator role); Discord's default permissions (Manage Server) only decide who sees the
command, and a server's admins can show it to the moderator role in Server Settings >
Integrations.

Why one module of this length: it is one command group (`/pool`, with its subgroups); Discord requires a group's commands on one class.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.checks import MODERATORS_ONLY, Refused, is_moderator
from bot.discord.modlog import log_moderation
from bot.discord.render import clip, ts, who
from bot.errors import InvalidRequest, NotPermitted
from bot.pipeline import DAY_MS, Moderation, check_regex, day_start_ms

if TYPE_CHECKING:
    from bot.discord.client import KlingBot


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Pool(
    commands.GroupCog,
    group_name="pool",
    group_description="Run this server's shared video credits (moderators)",
):
    blocklist = app_commands.Group(
        name="blocklist", description="Words and patterns not allowed in prompts"
    )
    channels = app_commands.Group(name="channels", description="Where /video may be used")

    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot
        self.moderation = Moderation(bot.service)
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        if not await is_moderator(self.bot, interaction):
            raise Refused(MODERATORS_ONLY)
        return True

    async def log(self, interaction: discord.Interaction[Any], text: str) -> None:
        await log_moderation(self.bot, interaction, text)

    async def reply(self, interaction: discord.Interaction[Any], text: str, **kwargs: Any) -> None:
        await interaction.response.send_message(text, ephemeral=True, **kwargs)

    # -- credits ---------------------------------------------------------------------------------

    @app_commands.command(
        name="status", description="Pool balance, holds, spending and top spenders"
    )
    async def status(self, interaction: discord.Interaction[Any]) -> None:
        s = await self.moderation.pool_status(interaction.guild_id or 0)
        policy = await self.bot.service.policy.get(interaction.guild_id or 0)
        embed = discord.Embed(title="Server pool", colour=discord.Colour.blurple())
        embed.add_field(name="Available", value=str(s.balance.available))
        embed.add_field(name="Held for running videos", value=str(s.balance.pending))
        embed.add_field(name="Spent today / last 7 days", value=f"{s.spent_today} / {s.spent_week}")
        top = "\n".join(f"{who(u)}: {c}" for u, c in s.top_week) or "nobody yet"
        embed.add_field(name="Top spenders (7 days)", value=top, inline=False)
        rules = [
            f"daily cap {policy.member_cap_per_day}"
            if policy.member_cap_per_day is not None
            else "no daily cap",
            f"approval above {policy.approval_threshold}"
            if policy.approval_threshold is not None
            else "no approvals",
            f"{len(policy.frozen_user_ids)} frozen",
            f"{len(policy.blocklist)} blocklist entries",
        ]
        if policy.role_caps:
            rules.append(
                "role caps " + ", ".join(f"<@&{r}> {c}" for r, c in policy.role_caps.items())
            )
        embed.add_field(name="Rules", value=" · ".join(rules), inline=False)
        await self.reply(interaction, "", embed=embed)

    @app_commands.command(name="grant", description="Give a member credits from the pool")
    @app_commands.describe(
        member="Who gets the credits", amount="How many", reason="Why (shown in the log)"
    )
    async def grant(
        self,
        interaction: discord.Interaction[Any],
        member: discord.Member,
        amount: app_commands.Range[int, 1, 1_000_000],
        reason: str | None = None,
    ) -> None:
        await self.moderation.grant(
            interaction.guild_id or 0,
            member.id,
            amount,
            actor_id=interaction.user.id,
            reason=reason,
            key=f"grant:{interaction.id}",
        )
        text = f"granted {amount} credits to {who(member.id)}" + (f" ({reason})" if reason else "")
        await self.reply(interaction, f"Done: {text}.")
        await self.log(interaction, text)

    @app_commands.command(
        name="revoke", description="Take credits back from a member into the pool"
    )
    @app_commands.describe(
        member="Whose credits", amount="How many", reason="Why (shown in the log)"
    )
    async def revoke(
        self,
        interaction: discord.Interaction[Any],
        member: discord.Member,
        amount: app_commands.Range[int, 1, 1_000_000],
        reason: str | None = None,
    ) -> None:
        await self.moderation.revoke(
            interaction.guild_id or 0,
            member.id,
            amount,
            actor_id=interaction.user.id,
            reason=reason,
            key=f"revoke:{interaction.id}",
        )
        text = f"took {amount} credits back from {who(member.id)}" + (
            f" ({reason})" if reason else ""
        )
        await self.reply(interaction, f"Done: {text}.")
        await self.log(interaction, text)

    # -- rules -----------------------------------------------------------------------------------

    @app_commands.command(name="cap", description="Credits a member may draw from the pool per day")
    @app_commands.describe(
        credits="Daily limit; leave empty to remove the limit",
        role="Set an override for members with this role instead of the default",
    )
    async def cap(
        self,
        interaction: discord.Interaction[Any],
        credits: app_commands.Range[int, 0, 1_000_000] | None = None,
        role: discord.Role | None = None,
    ) -> None:
        guild_id, actor = interaction.guild_id or 0, interaction.user.id
        if role is not None:
            await self.bot.service.policy.set_role_cap(guild_id, role.id, credits, actor_id=actor)
            target = f"members with <@&{role.id}>"
        else:
            await self.bot.service.policy.set(guild_id, actor_id=actor, member_cap_per_day=credits)
            target = "each member"
        text = f"set the daily pool cap for {target} to " + (
            f"{credits} credits" if credits is not None else "no limit"
        )
        await self.reply(interaction, f"Done: {text}. Caps reset at 00:00 UTC.")
        await self.log(interaction, text)

    @app_commands.command(
        name="approval", description="Cost above which pool-paid videos need a moderator"
    )
    @app_commands.describe(
        credits="Threshold; leave empty to turn approvals off",
        hours="How long a request may wait before it lapses (default 24)",
    )
    async def approval(
        self,
        interaction: discord.Interaction[Any],
        credits: app_commands.Range[int, 0, 1_000_000] | None = None,
        hours: app_commands.Range[int, 1, 168] | None = None,
    ) -> None:
        values: dict[str, int | None] = {"approval_threshold": credits}
        if hours is not None:
            values["approval_timeout_s"] = hours * 3600
        await self.bot.service.policy.set_values(
            interaction.guild_id or 0, values, actor_id=interaction.user.id
        )
        text = (
            f"pool-paid videos over {credits} credits now need approval"
            if credits is not None
            else "turned approvals off"
        )
        await self.reply(interaction, f"Done: {text}.")
        await self.log(interaction, text)

    @app_commands.command(
        name="confirm", description="Cost above which members confirm before paying"
    )
    @app_commands.describe(credits="Threshold; leave empty to never ask")
    async def confirm(
        self,
        interaction: discord.Interaction[Any],
        credits: app_commands.Range[int, 0, 1_000_000] | None = None,
    ) -> None:
        await self.bot.service.policy.set(
            interaction.guild_id or 0, actor_id=interaction.user.id, confirm_threshold=credits
        )
        text = (
            f"members confirm videos over {credits} credits"
            if credits is not None
            else "turned confirmations off"
        )
        await self.reply(interaction, f"Done: {text}.")
        await self.log(interaction, text)

    @app_commands.command(
        name="limits", description="Per-member limits on running and waiting videos"
    )
    @app_commands.describe(
        live="Videos a member may have at the provider at once",
        queued="Videos a member may have waiting",
        cooldown_s="Seconds between a member's requests (0: none)",
        moderators_exempt="Moderators are not limited",
    )
    async def limits(
        self,
        interaction: discord.Interaction[Any],
        live: app_commands.Range[int, 1, 100] | None = None,
        queued: app_commands.Range[int, 0, 1000] | None = None,
        cooldown_s: app_commands.Range[int, 0, 86_400] | None = None,
        moderators_exempt: bool | None = None,
    ) -> None:
        values: dict[str, int | None] = {}
        if live is not None:
            values["member_max_live"] = live
        if queued is not None:
            values["member_max_queued"] = queued
        if cooldown_s is not None:
            values["member_cooldown_s"] = cooldown_s
        if moderators_exempt is not None:
            values["moderators_exempt"] = int(moderators_exempt)
        policy = (
            await self.bot.service.policy.set_values(
                interaction.guild_id or 0, values, actor_id=interaction.user.id
            )
            if values
            else await self.bot.service.policy.get(interaction.guild_id or 0)
        )
        config = self.bot.service.config
        text = (
            f"per member: {policy.member_max_live or config.member_max_live} at the provider,"
            f" {policy.member_max_queued if policy.member_max_queued is not None else config.member_max_queued}"
            " waiting, "
            f"{policy.member_cooldown_s if policy.member_cooldown_s is not None else config.member_cooldown_s} s"
            f" between requests; moderators {'exempt' if policy.moderators_exempt else 'limited too'}"
        )
        await self.reply(interaction, ("Done: " if values else "Limits: ") + text + ".")
        if values:
            await self.log(interaction, f"set member limits: {text}")

    @app_commands.command(name="freeze", description="Stop a member from making videos")
    async def freeze(
        self,
        interaction: discord.Interaction[Any],
        member: discord.Member,
        reason: str | None = None,
    ) -> None:
        changed = await self.bot.service.policy.freeze(
            interaction.guild_id or 0, member.id, actor_id=interaction.user.id, reason=reason
        )
        if not changed:
            await self.reply(interaction, f"{who(member.id)} was already frozen.")
            return
        text = f"froze {who(member.id)}" + (f" ({reason})" if reason else "")
        await self.reply(interaction, f"Done: {text}.")
        await self.log(interaction, text)

    @app_commands.command(name="unfreeze", description="Let a frozen member make videos again")
    async def unfreeze(self, interaction: discord.Interaction[Any], member: discord.Member) -> None:
        changed = await self.bot.service.policy.unfreeze(
            interaction.guild_id or 0, member.id, actor_id=interaction.user.id
        )
        if not changed:
            await self.reply(interaction, f"{who(member.id)} was not frozen.")
            return
        await self.reply(interaction, f"Done: unfroze {who(member.id)}.")
        await self.log(interaction, f"unfroze {who(member.id)}")

    @app_commands.command(name="drawrole", description="Allow or stop a role drawing from the pool")
    @app_commands.describe(allowed="With no roles allowed, everyone may draw")
    async def drawrole(
        self, interaction: discord.Interaction[Any], role: discord.Role, allowed: bool
    ) -> None:
        await self.bot.service.policy.set_draw_role(
            interaction.guild_id or 0, role.id, allowed, actor_id=interaction.user.id
        )
        text = f"{'allowed' if allowed else 'stopped'} <@&{role.id}> drawing from the pool"
        await self.reply(interaction, f"Done: {text}.")
        await self.log(interaction, text)

    @app_commands.command(name="logchannel", description="Where approvals and moderation events go")
    @app_commands.describe(channel="Leave empty to stop logging")
    async def logchannel(
        self, interaction: discord.Interaction[Any], channel: discord.TextChannel | None = None
    ) -> None:
        await self.bot.service.policy.set(
            interaction.guild_id or 0,
            actor_id=interaction.user.id,
            log_channel_id=channel.id if channel else None,
        )
        await self.reply(
            interaction, f"Done: the log channel is {f'<#{channel.id}>' if channel else 'off'}."
        )
        await self.log(
            interaction, f"set the log channel to {f'<#{channel.id}>' if channel else 'off'}"
        )

    @app_commands.command(name="modrole", description="A role whose members may moderate the pool")
    @app_commands.describe(role="Leave empty to rely on Manage Server only")
    async def modrole(
        self, interaction: discord.Interaction[Any], role: discord.Role | None = None
    ) -> None:
        if not interaction.permissions.manage_guild and not self.bot.is_owner_id(
            interaction.user.id
        ):
            raise NotPermitted("Only members with Manage Server can choose the moderator role.")
        await self.bot.service.policy.set(
            interaction.guild_id or 0,
            actor_id=interaction.user.id,
            moderator_role_id=role.id if role else None,
        )
        await self.reply(
            interaction, f"Done: the moderator role is {f'<@&{role.id}>' if role else 'unset'}."
        )
        await self.log(
            interaction, f"set the moderator role to {f'<@&{role.id}>' if role else 'unset'}"
        )

    @blocklist.command(
        name="add", description="Refuse prompts containing a word or matching a regex"
    )
    @app_commands.describe(
        pattern="A word (whole words, any case or accents) or a regex", regex="Treat as a regex"
    )
    async def blocklist_add(
        self,
        interaction: discord.Interaction[Any],
        pattern: app_commands.Range[str, 1, 200],
        regex: bool = False,
    ) -> None:
        if regex and (problem := check_regex(pattern.strip())):  # what is saved
            raise InvalidRequest([problem])
        added = await self.bot.service.policy.add_block(
            interaction.guild_id or 0, pattern.strip(), is_regex=regex, actor_id=interaction.user.id
        )
        if not added:
            await self.reply(interaction, "That pattern is already on the blocklist.")
            return
        await self.reply(interaction, f"Done: prompts matching `{pattern}` are refused.")
        await self.log(interaction, f"added a {'regex' if regex else 'word'} to the blocklist")

    @blocklist.command(name="remove", description="Remove a blocklist entry")
    async def blocklist_remove(self, interaction: discord.Interaction[Any], pattern: str) -> None:
        removed = await self.bot.service.policy.remove_block(
            interaction.guild_id or 0, pattern.strip(), actor_id=interaction.user.id
        )
        await self.reply(
            interaction, "Removed." if removed else "That pattern was not on the blocklist."
        )
        if removed:
            await self.log(interaction, "removed an entry from the blocklist")

    @blocklist.command(name="list", description="Show the blocklist")
    async def blocklist_list(self, interaction: discord.Interaction[Any]) -> None:
        policy = await self.bot.service.policy.get(interaction.guild_id or 0)
        lines = [f"`{e.pattern}`" + (" (regex)" if e.is_regex else "") for e in policy.blocklist]
        await self.reply(
            interaction, clip("\n".join(lines), 1900) if lines else "The blocklist is empty."
        )

    @channels.command(
        name="add", description="Allow /video in a channel (once any is set, only those)"
    )
    async def channels_add(
        self, interaction: discord.Interaction[Any], channel: discord.TextChannel
    ) -> None:
        await self.bot.service.policy.set_channel_allowed(
            interaction.guild_id or 0, channel.id, True, actor_id=interaction.user.id
        )
        await self.reply(interaction, f"Done: /video is allowed in <#{channel.id}>.")
        await self.log(interaction, f"allowed /video in <#{channel.id}>")

    @channels.command(name="remove", description="Stop allowing /video in a channel")
    async def channels_remove(
        self, interaction: discord.Interaction[Any], channel: discord.TextChannel
    ) -> None:
        await self.bot.service.policy.set_channel_allowed(
            interaction.guild_id or 0, channel.id, False, actor_id=interaction.user.id
        )
        await self.reply(interaction, f"Done: <#{channel.id}> removed.")
        await self.log(interaction, f"removed <#{channel.id}> from the /video channels")

    @channels.command(name="list", description="Where /video is allowed")
    async def channels_list(self, interaction: discord.Interaction[Any]) -> None:
        policy = await self.bot.service.policy.get(interaction.guild_id or 0)
        allowed = ", ".join(f"<#{c}>" for c in sorted(policy.allowed_channel_ids))
        await self.reply(
            interaction,
            f"/video is allowed in {allowed}." if allowed else "/video is allowed everywhere.",
        )

    @app_commands.command(
        name="report", description="Usage by member as CSV, and the moderation log"
    )
    @app_commands.describe(days="How many days back (today included)")
    async def report(
        self, interaction: discord.Interaction[Any], days: app_commands.Range[int, 1, 366] = 7
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        now = self.bot.service.clock.now_ms()
        since = day_start_ms(now) - (days - 1) * DAY_MS
        report = await self.moderation.report(interaction.guild_id or 0, since, now + 1)
        files = [
            discord.File(
                io.BytesIO(report.usage_csv.encode()), filename=f"klingbot-usage-{days}d.csv"
            ),
            discord.File(
                io.BytesIO(report.events_csv.encode()), filename=f"klingbot-moderation-{days}d.csv"
            ),
        ]
        await interaction.followup.send(
            f"Usage since {ts(since, 'D')}: {report.members} members, {report.spent} credits spent.",
            files=files,
            ephemeral=True,
        )


async def setup(bot: KlingBot) -> None:
    await bot.add_cog(Pool(bot))
