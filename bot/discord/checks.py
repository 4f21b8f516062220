"""Who may do what, decided at run time on every call (Discord's default permissions are only
a hint for which members see a command)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.errors import NotPermitted
from bot.pipeline import Actor, Requester

if TYPE_CHECKING:
    from bot.discord.client import KlingBot


class Refused(app_commands.CheckFailure):
    """A run-time permission check failed; the message says who may do it."""


MODERATORS_ONLY = (
    "Only moderators (Manage Server, or the server's klingbot moderator role) can do that."
)
OWNERS_ONLY = "Only the bot's owners (KLINGBOT_OWNER_IDS) can do that."


def role_ids(interaction: discord.Interaction[Any]) -> frozenset[int]:
    user = interaction.user
    if isinstance(user, discord.Member):
        return frozenset(role.id for role in user.roles)
    return frozenset()


async def is_moderator(bot: KlingBot, interaction: discord.Interaction[Any]) -> bool:
    """Manage Server in this channel, the guild's moderator role, or a bot owner."""
    if bot.is_owner_id(interaction.user.id):
        return True
    if interaction.guild_id is None:
        return False
    if interaction.permissions.manage_guild:
        return True
    policy = await bot.service.policy.get(interaction.guild_id)
    return policy.moderator_role_id is not None and policy.moderator_role_id in role_ids(
        interaction
    )


async def require_moderator(bot: KlingBot, interaction: discord.Interaction[Any]) -> None:
    if not await is_moderator(bot, interaction):
        raise NotPermitted(MODERATORS_ONLY)


async def actor_of(bot: KlingBot, interaction: discord.Interaction[Any]) -> Actor:
    """Who acts on an existing job, from which server: every job action checks that it is the
    job's own server (bot owners excepted)."""
    return Actor(
        user_id=interaction.user.id,
        guild_id=interaction.guild_id or 0,
        is_moderator=await is_moderator(bot, interaction),
        is_owner=bot.is_owner_id(interaction.user.id),
    )


async def requester_of(bot: KlingBot, interaction: discord.Interaction[Any]) -> Requester:
    return Requester(
        guild_id=interaction.guild_id or 0,
        channel_id=interaction.channel_id or 0,
        user_id=interaction.user.id,
        role_ids=role_ids(interaction),
        interaction_id=interaction.id,
        upload_limit_bytes=interaction.filesize_limit or bot.config.default_upload_limit_bytes,
        is_moderator=await is_moderator(bot, interaction),
    )
