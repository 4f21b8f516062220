"""A member asks for a video: /video and /multishot (cogs/generate.py), /animate and the Animate
message command (bot/discord/animate.py), and the Reroll, Remix, Confirm and Discard buttons all
come here.

The request is checked, priced and held (or, above the server's confirm threshold, kept as a
draft until the member presses Confirm); the member gets a private receipt, then the job's public
status message is posted with the bot token, and an approval request when the job needs one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from bot.discord.buttons import (
    DeleteButton,
    DetailsButton,
    KlingButton,
    approval_view,
    existing_job,
    status_view,
    view_of,
)
from bot.discord.checks import requester_of
from bot.discord.modals import parse_shots, remix_modal
from bot.discord.modlog import post_log
from bot.discord.rate_limits import Priority
from bot.discord.render import approval_embed, receipt_text, status_embed
from bot.errors import InvalidRequest, NotPermitted
from bot.request import VideoRequest
from storage import Job, JobState

if TYPE_CHECKING:
    from bot.discord.client import KlingBot

log = logging.getLogger(__name__)


@dataclass
class Reply:
    text: str
    view: discord.ui.View | None = None
    after: Callable[[], Awaitable[None]] | None = None  # runs once the member has the answer


async def answer(
    bot: KlingBot, interaction: discord.Interaction[Any], work: Awaitable[Reply]
) -> None:
    """Acknowledge at once (Discord allows 3 s), then send the result privately.

    Checking, pricing and holding credits touch the database; deferring first keeps the
    acknowledgement fast however many members ask at the same moment; the work then waits for
    the acknowledgements still in flight (bot/discord/ack_first.py).
    """
    gate = bot.ack_first
    async with gate.acknowledging():
        await interaction.response.defer(ephemeral=True, thinking=True)
    await gate.wait_turn()
    reply = await work
    extra: dict[str, Any] = {"view": reply.view} if reply.view is not None else {}
    await interaction.followup.send(reply.text, ephemeral=True, **extra)
    if reply.after is not None:
        await reply.after()


async def start_job(
    bot: KlingBot,
    interaction: discord.Interaction[Any],
    data: dict[str, Any],
    *,
    parent_job_id: str | None = None,
) -> None:
    """Check, price and queue a request from an interaction, then post its status message."""
    await answer(bot, interaction, prepare_job(bot, interaction, data, parent_job_id))


async def prepare_job(
    bot: KlingBot,
    interaction: discord.Interaction[Any],
    data: dict[str, Any],
    parent_job_id: str | None,
) -> Reply:
    requester = await requester_of(bot, interaction)
    quote = await bot.service.quote(data)
    await require_images(bot, quote.request)
    if requester.guild_id:
        policy = await bot.service.policy.get(requester.guild_id)
        if policy.confirm_threshold is not None and quote.cost > policy.confirm_threshold:
            draft = await bot.state.add_draft(
                guild_id=requester.guild_id,
                channel_id=requester.channel_id,
                user_id=requester.user_id,
                interaction_id=interaction.id,
                provider=quote.provider,
                request=quote.request.model_dump(mode="json"),
                cost=quote.cost,
                upload_limit_bytes=requester.upload_limit_bytes
                or bot.config.default_upload_limit_bytes,
            )
            return Reply(
                f"This video costs **{quote.cost} credits**. Go ahead?", confirm_view(draft.id)
            )
    receipt = await bot.service.submit(requester, quote.request, parent_job_id=parent_job_id)
    return Reply(
        receipt_text(receipt),
        after=None if receipt.replayed else lambda: announce(bot, receipt.job.id),
    )


async def require_images(bot: KlingBot, request: VideoRequest) -> None:
    """An animation asked for again (Reroll, Remix, Confirm) needs its stored images."""
    if request.image is None:
        return
    missing = await asyncio.to_thread(bot.service.media.reuse_images, request)
    if missing:
        raise InvalidRequest(missing)


async def announce(bot: KlingBot, job_id: str) -> None:
    """Post the status message and, if the job needs one, the approval request."""
    await post_status_message(bot, job_id)
    job = await bot.service.jobs.get(job_id)
    if job.state is JobState.AWAITING_APPROVAL:
        await request_approval(bot, job.id)


async def request_approval(bot: KlingBot, job_id: str) -> None:
    """Post Approve/Deny in the log channel (or, without one, where the member asked)."""
    job = await bot.service.jobs.get(job_id)
    message = await post_log(
        bot,
        job.guild_id,
        f"🛂 <@{job.user_id}> asks for a video above the approval threshold.",
        embed=approval_embed(job),
        view=approval_view(job),
        fallback_channel_id=job.channel_id,
    )
    if message is not None:
        await bot.service.jobs.update(
            job.id, approval_message_id=message.id, approval_channel_id=message.channel.id
        )


async def post_status_message(bot: KlingBot, job_id: str) -> None:
    """Post the job's public status message in its channel (with the bot token), when the
    channel's pacer has room, showing the state the job is in by then."""
    job = await bot.service.jobs.get(job_id)
    channel = bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id or None)

    async def post() -> tuple[discord.Message, Job]:
        shown = await bot.service.jobs.get(job_id)
        position, eta_ms = await bot.service.position_and_eta(shown)
        message = await channel.send(
            embed=status_embed(
                shown, now_ms=bot.service.clock.now_ms(), position=position, eta_ms=eta_ms
            ),
            view=status_view(shown),
            allowed_mentions=discord.AllowedMentions.none(),
        )
        return message, shown

    try:
        message, shown = await bot.pacer.send(job.channel_id, post, priority=Priority.POST)
    except discord.HTTPException as error:
        log.warning("no status message for %s in %s: %s", job.id, job.channel_id, error)
        return
    moved = await bot.service.jobs.update(job.id, status_message_id=message.id)
    if (moved.state, moved.progress_pct) != (shown.state, shown.progress_pct):
        bot.status_messages.schedule(moved, final=moved.is_final)  # it moved on meanwhile


# -- the buttons that ask for a video ----------------------------------------------------------


class RerollButton(
    KlingButton, action="reroll", label="Reroll", style=discord.ButtonStyle.primary, emoji="🎲"
):
    """On a finished video: the same request again, as a child of that job."""

    async def pressed(self, interaction: discord.Interaction[Any], bot: KlingBot) -> None:
        job = await existing_job(bot, interaction, self.ident)
        await start_job(bot, interaction, dict(job.request), parent_job_id=job.id)


class RemixButton(
    KlingButton, action="remix", label="Remix", style=discord.ButtonStyle.secondary, emoji="✏️"
):
    """On a finished video: a form prefilled with its prompt (or shots) to change first."""

    async def pressed(self, interaction: discord.Interaction[Any], bot: KlingBot) -> None:
        job = await existing_job(bot, interaction, self.ident)

        async def on_values(
            modal_interaction: discord.Interaction[Any], values: dict[str, str]
        ) -> None:
            data = dict(job.request)
            if any(key.startswith("shot_") for key in values):
                shots, problems = parse_shots(values)
                if problems:
                    raise InvalidRequest(problems)
                data["shots"] = shots
            else:
                prompt = values.get("prompt", "")
                # an animation may go without a prompt (where the provider allows it)
                data["prompt"] = (
                    prompt if prompt.strip() or job.request.get("image") is None else None
                )
            negative = (values.get("negative_prompt") or "").strip()
            data["negative_prompt"] = negative or None
            await start_job(bot, modal_interaction, data, parent_job_id=job.id)

        await interaction.response.send_modal(remix_modal(job, on_values))


class ConfirmButton(
    KlingButton, action="confirm", label="Confirm", style=discord.ButtonStyle.success
):
    """Under a price above the server's confirm threshold: submit the draft."""

    async def pressed(self, interaction: discord.Interaction[Any], bot: KlingBot) -> None:
        draft_id = self.ident
        draft = await bot.state.find_draft(draft_id)
        if draft is None or draft.user_id != interaction.user.id:
            raise NotPermitted("Only the member who asked for this video can confirm it.")
        await require_images(bot, VideoRequest.model_validate(draft.request))
        taken = await bot.state.take_draft(draft_id)
        if taken is None:
            await interaction.response.edit_message(
                content="This request was already answered.", view=None
            )
            return
        requester = await requester_of(bot, interaction)
        receipt = await bot.service.submit(
            dataclasses.replace(requester, interaction_id=draft.interaction_id),
            taken.request,
            provider=taken.provider,
        )
        await interaction.response.edit_message(content=receipt_text(receipt), view=None)
        if not receipt.replayed:
            await announce(bot, receipt.job.id)


class DiscardButton(
    KlingButton, action="discard", label="Cancel", style=discord.ButtonStyle.secondary
):
    """Next to Confirm: drop the draft; nothing was held."""

    async def pressed(self, interaction: discord.Interaction[Any], bot: KlingBot) -> None:
        draft_id = self.ident
        draft = await bot.state.find_draft(draft_id)
        if draft is None or draft.user_id != interaction.user.id:
            raise NotPermitted("Only the member who asked for this video can cancel it.")
        await bot.state.take_draft(draft_id)
        await interaction.response.edit_message(
            content="Cancelled; nothing was charged.", view=None
        )


def confirm_view(draft_id: str) -> discord.ui.View:
    return view_of(ConfirmButton(draft_id), DiscardButton(draft_id))


def result_view(job: Job) -> discord.ui.View:
    return view_of(
        RerollButton(job.id), RemixButton(job.id), DetailsButton(job.id), DeleteButton(job.id)
    )
