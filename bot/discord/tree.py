"""KlingTree, the bot's command tree, and the one translation from an error to the member's text.

The tree is installed with `tree_cls=KlingTree` on the bot, so its `on_error` answers every
failed slash command; buttons and modals hand their errors to the same `report_error`.
User-facing errors (they carry their own message) are answered privately, with what to do next.
Anything else is logged with a short correlation id, and the member gets that id.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.checks import Refused
from bot.errors import KlingbotError, ServiceUnavailable
from storage import DatabaseUnavailable, InsufficientCredits, LedgerError

if TYPE_CHECKING:
    from bot.discord.client import KlingBot

log = logging.getLogger(__name__)

NEXT_STEP = {
    InsufficientCredits: "Use `/credits balance` to see what you have; a moderator can grant more.",
}


def message_for(error: BaseException) -> tuple[str, bool]:
    """The text to show and whether it is an expected (user-facing) error."""
    if isinstance(error, app_commands.CommandInvokeError | commands.CommandInvokeError):
        error = error.original
    if isinstance(error, DatabaseUnavailable):
        return (
            "The bot's database can't be written right now, so nothing was started and nothing was"
            " charged. Please try again later, and tell a server admin if it keeps happening.",
            True,
        )
    if isinstance(error, ServiceUnavailable):
        return f"{error} Nothing was charged.", True
    if isinstance(error, KlingbotError | LedgerError):
        text = str(error)
        hint = next((h for kind, h in NEXT_STEP.items() if isinstance(error, kind)), None)
        return (f"{text}\n{hint}" if hint else text), True
    if isinstance(error, Refused):
        return str(error), True
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command works in a server channel, not in direct messages.", True
    if isinstance(error, app_commands.MissingPermissions | app_commands.CheckFailure):
        return "You don't have permission to do that here.", True
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down: try again in {error.retry_after:.0f} s.", True
    return "", False


async def report_error(interaction: discord.Interaction[Any], error: BaseException) -> None:
    text, expected = message_for(error)
    if not expected:
        correlation = secrets.token_hex(4)
        log.error(
            "unexpected error %s in %s by %s",
            correlation,
            interaction.command.qualified_name if interaction.command else interaction.data,
            interaction.user.id,
            exc_info=error,
        )
        text = (
            f"Something went wrong on the bot's side (error id `{correlation}`). Nothing was"
            " charged. A bot admin can find this id in the logs."
        )
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as send_error:
        log.warning("could not tell %s about an error: %s", interaction.user.id, send_error)


class KlingTree(app_commands.CommandTree["KlingBot"]):
    """The command tree; `on_error` answers every slash command that failed."""

    async def on_error(
        self, interaction: discord.Interaction[KlingBot], error: app_commands.AppCommandError, /
    ) -> None:
        await report_error(interaction, error)
