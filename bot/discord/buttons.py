"""Persistent buttons, and the ones on a job that exists: Cancel, Details, Delete, Get the clip,
Approve, Deny.

Every klingbot button is a `DynamicItem` whose custom id, `kb:<action>:<id>`, names what it does
and the job (or draft) it acts on, so it keeps working after a restart: all state comes from the
database. One subclass per action (as in discord.py's dynamic_counter example), each registered
with `add_dynamic_items` by the client; its callback calls the pipeline facade. The buttons that
ask for a new video (Reroll, Remix, Confirm, Discard) live with that flow in video_requests.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any, ClassVar, Self

import discord

from bot.discord.checks import actor_of
from bot.discord.modals import FieldsModal
from bot.discord.modlog import log_moderation
from bot.discord.render import LIVE_STATES, details_embed, who
from bot.discord.tree import report_error
from bot.errors import NotFound, NotPermitted
from storage import Job, JobState

if TYPE_CHECKING:
    from bot.discord.client import KlingBot

log = logging.getLogger(__name__)

CUSTOM_ID = "kb:{action}:{ident}"
# Charged jobs whose clip is kept: one that could not be posted, or one posted (its message may
# have been deleted since).
CLIP_STATES = frozenset({JobState.DELIVERED, JobState.DELIVERY_FAILED})


def custom_id_template(action: str) -> str:
    """The regex a button's custom id matches; `action` is itself a regex."""
    return rf"kb:{action}:(?P<ident>[0-9a-f]{{12}})"


class KlingButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=custom_id_template("[a-z]+")
):
    """What every klingbot button shares; never sent or registered itself.

    A subclass names its action and look in its class line (`action=`, `label=`, `style=`,
    `emoji=`) and does its work in `pressed`; whatever that raises is answered privately.
    """

    action: ClassVar[str]
    label: ClassVar[str]
    style: ClassVar[discord.ButtonStyle]
    emoji: ClassVar[str | None]

    def __init_subclass__(
        cls,
        *,
        action: str,
        label: str,
        style: discord.ButtonStyle,
        emoji: str | None = None,
    ) -> None:
        super().__init_subclass__(template=custom_id_template(action))
        cls.action, cls.label, cls.style, cls.emoji = action, label, style, emoji

    def __init__(self, ident: str, *, label: str | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label=label or self.label,
                style=self.style,
                emoji=self.emoji,
                custom_id=CUSTOM_ID.format(action=self.action, ident=ident),
            )
        )
        self.ident = ident

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> Self:
        return cls(match["ident"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await self.pressed(interaction, interaction.client)
        except Exception as error:
            await report_error(interaction, error)

    async def pressed(self, interaction: discord.Interaction[Any], bot: KlingBot) -> None:
        raise NotImplementedError


def view_of(*buttons: KlingButton) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for button in buttons:
        view.add_item(button)
    return view


async def existing_job(bot: KlingBot, interaction: discord.Interaction[Any], job_id: str) -> Job:
    """The job, if it is in the server where the button was pressed (bot owners excepted)."""
    return await bot.service.job_for(job_id, await actor_of(bot, interaction))


async def cancel_job(bot: KlingBot, interaction: discord.Interaction[Any], job_id: str) -> None:
    """Cancel a job for its requester or a moderator (the Cancel button and /jobs cancel)."""
    cancelled = await bot.service.cancel(job_id, await actor_of(bot, interaction))
    returned = f" {cancelled.cost} credits were returned." if cancelled.hold_id else ""
    await interaction.response.send_message(
        f"Job `{cancelled.id}` cancelled.{returned}", ephemeral=True
    )


class CancelButton(KlingButton, action="cancel", label="Cancel", style=discord.ButtonStyle.danger):
    """On the status message while the job is live."""

    async def pressed(self, interaction: discord.Interaction[Any], bot: KlingBot) -> None:
        await cancel_job(bot, interaction, self.ident)


class DetailsButton(
    KlingButton,
    action="details",
    label="Details",
    style=discord.ButtonStyle.secondary,
    emoji="ℹ️",
):
    async def pressed(self, interaction: discord.Interaction[Any], bot: KlingBot) -> None:
        job = await existing_job(bot, interaction, self.ident)
        if job.state in CLIP_STATES:
            await interaction.response.send_message(
                embed=details_embed(job), view=view_of(ClipButton(job.id)), ephemeral=True
            )
        else:
            await interaction.response.send_message(embed=details_embed(job), ephemeral=True)


class DeleteButton(
    KlingButton, action="delete", label="Delete", style=discord.ButtonStyle.danger, emoji="🗑️"
):
    async def pressed(self, interaction: discord.Interaction[Any], bot: KlingBot) -> None:
        actor = await actor_of(bot, interaction)
        job = await bot.service.job_for(self.ident, actor)
        if interaction.user.id != job.user_id and not (actor.is_moderator or actor.is_owner):
            raise NotPermitted(
                "Only the member who asked for this video or a moderator can delete it."
            )
        if interaction.message is not None:
            await interaction.message.delete()
        await bot.service.retire_media(job.id)  # the clip's /media link goes with the message
        await interaction.response.send_message("Deleted.", ephemeral=True)


async def give_clip(bot: KlingBot, interaction: discord.Interaction[Any], job_id: str) -> None:
    """Hand the kept clip of a charged job privately to its requester or a moderator of its
    server: the member can always get a clip they paid for, whether or not it was posted."""
    actor = await actor_of(bot, interaction)
    job = await bot.service.job_for(job_id, actor)
    if interaction.user.id != job.user_id and not (actor.is_moderator or actor.is_owner):
        raise NotPermitted(
            "Only the member who asked for this video or a moderator can get its clip."
        )
    if job.state is JobState.SUCCEEDED:
        raise NotFound(
            f"The clip of job `{job.id}` is being saved and posted; try again in a minute."
        )
    if job.state not in CLIP_STATES:
        raise NotFound(f"Job `{job.id}` has no clip ({job.state.value.replace('_', ' ')}).")
    media = bot.service.media
    clip = media.clip_path(job.id)
    if not await asyncio.to_thread(clip.exists):
        raise NotFound(
            f"The clip of job `{job.id}` is no longer kept: clips are deleted"
            f" {media.retention_text} after they are posted, or when their message is deleted."
            " Reroll makes the video again (a new charge); if you never received it, a bot"
            " owner can refund it with `/klingadmin refund`."
        )
    await interaction.response.defer(ephemeral=True, thinking=True)  # fitting may take a while
    handed = await bot.sink.hand_over(interaction, job, clip, link=media.link(job))
    log.info("clip of job %s given to %s (%s)", job.id, interaction.user.id, handed.via)


class ClipButton(
    KlingButton, action="clip", label="Get the clip", style=discord.ButtonStyle.primary, emoji="🎬"
):
    """On a clip that could not be posted (its status message), on Details and in /jobs list."""

    async def pressed(self, interaction: discord.Interaction[Any], bot: KlingBot) -> None:
        await give_clip(bot, interaction, self.ident)


class ApproveButton(
    KlingButton, action="approve", label="Approve", style=discord.ButtonStyle.success
):
    """On an approval request (in the log channel, or where the member asked)."""

    async def pressed(self, interaction: discord.Interaction[Any], bot: KlingBot) -> None:
        job = await bot.service.approve(self.ident, await actor_of(bot, interaction))
        await interaction.response.edit_message(
            content=f"✅ Approved by {who(interaction.user.id)}: {job.cost} credits held from the pool.",
            view=None,
        )
        await log_moderation(
            bot, interaction, f"approved job `{job.id}` of {who(job.user_id)} ({job.cost} credits)"
        )


class DenyButton(KlingButton, action="deny", label="Deny", style=discord.ButtonStyle.danger):
    """On an approval request: asks the moderator for a reason, then declines."""

    async def pressed(self, interaction: discord.Interaction[Any], bot: KlingBot) -> None:
        actor = await actor_of(bot, interaction)
        await bot.service.job_for(self.ident, actor)
        if not (actor.is_moderator or actor.is_owner):
            raise NotPermitted("Only moderators can answer approval requests.")
        job_id = self.ident
        reason_field = discord.ui.TextInput[Any](
            label="Reason (shown to the member)", required=False, max_length=300, custom_id="reason"
        )

        async def on_reason(
            modal_interaction: discord.Interaction[Any], values: dict[str, str]
        ) -> None:
            reason = (values.get("reason") or "").strip() or None
            job = await bot.service.deny(
                job_id, await actor_of(bot, modal_interaction), reason=reason
            )
            await modal_interaction.response.send_message(
                "Declined; nothing was charged.", ephemeral=True
            )
            await log_moderation(
                bot,
                modal_interaction,
                f"declined job `{job.id}` of {who(job.user_id)}"
                + (f" ({reason})" if reason else ""),
            )

        await interaction.response.send_modal(
            FieldsModal("Decline this video", [reason_field], on_reason)
        )


def status_view(job: Job) -> discord.ui.View:
    """Cancel while the job is live; Get the clip when it could not be posted; no buttons
    otherwise (an empty view clears them)."""
    if job.state in LIVE_STATES:
        return view_of(CancelButton(job.id))
    if job.state is JobState.DELIVERY_FAILED:
        return view_of(ClipButton(job.id))
    return view_of()


def approval_view(job: Job) -> discord.ui.View:
    return view_of(ApproveButton(job.id), DenyButton(job.id))
