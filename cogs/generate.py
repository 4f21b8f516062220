"""/video, /multishot, and the Reroll, Remix and Confirm buttons."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.ack_first import AckFirst
from bot.discord.checks import requester_of
from bot.discord.modlog import post_log
from bot.discord.ui import (
    approval_embed,
    multishot_modal,
    parse_shots,
    register_buttons,
    remix_modal,
    status_embed,
    status_view,
    view_of,
)
from bot.errors import InvalidRequest, NotFound, NotPermitted
from bot.pipeline import Receipt
from storage import JobState

if TYPE_CHECKING:
    from bot.discord.client import KlingBot

log = logging.getLogger(__name__)

Aspect = Literal["16:9", "9:16", "1:1"]
ResolutionChoice = Literal["720p", "1080p", "4k"]
ShotTypeChoice = Literal["customize", "intelligent"]


def receipt_text(receipt: Receipt) -> str:
    if receipt.replayed:
        return f"This request is already job `{receipt.job.id}`; nothing more was charged."
    if receipt.job.state is JobState.AWAITING_APPROVAL:
        return (
            f"🛂 This video costs **{receipt.cost} credits** from the server pool, above this"
            " server's approval threshold: a moderator has to approve it first. Nothing is held"
            " until then."
        )
    source = {"member": "your balance", "pool": "the server pool"}.get(receipt.payer, "nobody")
    left = {"member": "You have", "pool": "The pool has"}.get(receipt.payer, "")
    text = f"✅ Queued as job `{receipt.job.id}`: **{receipt.cost} credits** held from {source}."
    if left:
        text += f" {left} {receipt.available_after} credits available now."
    return text + " You'll only be charged if the video is delivered."


@dataclass
class Reply:
    text: str
    view: discord.ui.View | None = None
    after: Callable[[], Awaitable[None]] | None = None  # runs once the member has the answer


async def answer(interaction: discord.Interaction[Any], work: Awaitable[Reply]) -> None:
    """Acknowledge at once (Discord allows 3 s), then send the result privately.

    Checking, pricing and holding credits touch the database; deferring first keeps the
    acknowledgement fast however many members ask at the same moment; the work then waits for
    the acknowledgements still in flight (bot/discord/ack_first.py).
    """
    gate = getattr(interaction.client, "ack_first", None) or AckFirst()
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
    await answer(interaction, prepare_job(bot, interaction, data, parent_job_id))


async def prepare_job(
    bot: KlingBot,
    interaction: discord.Interaction[Any],
    data: dict[str, Any],
    parent_job_id: str | None,
) -> Reply:
    requester = await requester_of(bot, interaction)
    quote = await bot.service.quote(data)
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
                f"This video costs **{quote.cost} credits**. Go ahead?",
                view_of(("confirm", draft.id), ("discard", draft.id)),
            )
    receipt = await bot.service.submit(requester, quote.request, parent_job_id=parent_job_id)
    return Reply(
        receipt_text(receipt),
        after=None if receipt.replayed else lambda: announce(bot, receipt.job.id),
    )


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
        view=view_of(("approve", job.id), ("deny", job.id)),
        fallback_channel_id=job.channel_id,
    )
    if message is not None:
        await bot.service.jobs.update(
            job.id, approval_message_id=message.id, approval_channel_id=message.channel.id
        )


async def post_status_message(bot: KlingBot, job_id: str) -> None:
    """Post the job's public status message in its channel (with the bot token)."""
    job = await bot.service.jobs.get(job_id)
    position, eta_ms = await bot.service.position_and_eta(job)
    channel = bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id or None)
    try:
        message = await channel.send(
            embed=status_embed(
                job, now_ms=bot.service.clock.now_ms(), position=position, eta_ms=eta_ms
            ),
            view=status_view(job),
            allowed_mentions=discord.AllowedMentions.none(),
        )
    except discord.HTTPException as error:
        log.warning("no status message for %s in %s: %s", job.id, job.channel_id, error)
        return
    moved = await bot.service.jobs.update(job.id, status_message_id=message.id)
    if (moved.state, moved.progress_pct) != (job.state, job.progress_pct):
        await bot.status_messages.refresh(job.id)  # it moved on while we were posting


class Generate(commands.Cog):
    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot
        register_buttons(
            bot, reroll=self.reroll, remix=self.remix, confirm=self.confirm, discard=self.discard
        )

    @app_commands.command(name="video", description="Make a Kling v3 Pro video from a prompt")
    @app_commands.guild_only()
    @app_commands.describe(
        prompt="What the video shows; refer to voices as <<<voice_1>>> and <<<voice_2>>>",
        duration="Length in seconds (3-15)",
        aspect_ratio="Frame shape",
        audio="Generate sound with the video (provider default if not set)",
        resolution="Output resolution, where the provider offers a choice",
        negative_prompt="What to avoid",
        cfg_scale="How closely to follow the prompt (0-1)",
        shot_type="How shots are cut",
        voice_1="Voice id for <<<voice_1>>> (needs audio)",
        voice_2="Voice id for <<<voice_2>>> (needs audio)",
    )
    async def video(
        self,
        interaction: discord.Interaction[Any],
        prompt: app_commands.Range[str, 1, 2500],
        duration: app_commands.Range[int, 3, 15] = 5,
        aspect_ratio: Aspect = "16:9",
        audio: bool | None = None,
        resolution: ResolutionChoice | None = None,
        negative_prompt: app_commands.Range[str, 1, 2500] | None = None,
        cfg_scale: app_commands.Range[float, 0.0, 1.0] | None = None,
        shot_type: ShotTypeChoice | None = None,
        voice_1: app_commands.Range[str, 1, 128] | None = None,
        voice_2: app_commands.Range[str, 1, 128] | None = None,
    ) -> None:
        data: dict[str, Any] = {
            "prompt": prompt,
            "duration_s": duration,
            "aspect_ratio": aspect_ratio,
        }
        optional = {
            "audio": audio,
            "resolution": resolution,
            "negative_prompt": negative_prompt,
            "cfg_scale": cfg_scale,
            "shot_type": shot_type,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        voices = [v for v in (voice_1, voice_2) if v]
        if voices:
            data["voice_ids"] = voices
        await start_job(self.bot, interaction, data)

    @app_commands.command(name="multishot", description="Make a video of up to 5 shots")
    @app_commands.guild_only()
    @app_commands.describe(
        duration="Total length in seconds (3-15); the shots must add up to it",
        aspect_ratio="Frame shape",
        audio="Generate sound with the video",
        resolution="Output resolution, where the provider offers a choice",
        negative_prompt="What to avoid",
        cfg_scale="How closely to follow the prompts (0-1)",
        shot_type="How shots are cut",
    )
    async def multishot(
        self,
        interaction: discord.Interaction[Any],
        duration: app_commands.Range[int, 3, 15],
        aspect_ratio: Aspect = "16:9",
        audio: bool | None = None,
        resolution: ResolutionChoice | None = None,
        negative_prompt: app_commands.Range[str, 1, 2500] | None = None,
        cfg_scale: app_commands.Range[float, 0.0, 1.0] | None = None,
        shot_type: ShotTypeChoice | None = None,
    ) -> None:
        base: dict[str, Any] = {"duration_s": duration, "aspect_ratio": aspect_ratio}
        optional = {
            "audio": audio,
            "resolution": resolution,
            "negative_prompt": negative_prompt,
            "cfg_scale": cfg_scale,
            "shot_type": shot_type,
        }
        base.update({k: v for k, v in optional.items() if v is not None})

        async def on_shots(
            modal_interaction: discord.Interaction[Any], values: dict[str, str]
        ) -> None:
            shots, problems = parse_shots(values)
            if problems:
                raise InvalidRequest(problems)
            await start_job(self.bot, modal_interaction, {**base, "shots": shots})

        await interaction.response.send_modal(multishot_modal(on_shots))

    async def reroll(self, interaction: discord.Interaction[Any], job_id: str) -> None:
        job = await self._job(job_id)
        await start_job(self.bot, interaction, dict(job.request), parent_job_id=job.id)

    async def remix(self, interaction: discord.Interaction[Any], job_id: str) -> None:
        job = await self._job(job_id)

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
                data["prompt"] = values.get("prompt", "")
            negative = (values.get("negative_prompt") or "").strip()
            data["negative_prompt"] = negative or None
            await start_job(self.bot, modal_interaction, data, parent_job_id=job.id)

        await interaction.response.send_modal(remix_modal(job, on_values))

    async def confirm(self, interaction: discord.Interaction[Any], draft_id: str) -> None:
        draft = await self.bot.state.find_draft(draft_id)
        if draft is None or draft.user_id != interaction.user.id:
            raise NotPermitted("Only the member who asked for this video can confirm it.")
        taken = await self.bot.state.take_draft(draft_id)
        if taken is None:
            await interaction.response.edit_message(
                content="This request was already answered.", view=None
            )
            return
        requester = await requester_of(self.bot, interaction)
        receipt = await self.bot.service.submit(
            dataclasses.replace(requester, interaction_id=draft.interaction_id),
            taken.request,
            provider=taken.provider,
        )
        await interaction.response.edit_message(content=receipt_text(receipt), view=None)
        if not receipt.replayed:
            await announce(self.bot, receipt.job.id)

    async def discard(self, interaction: discord.Interaction[Any], draft_id: str) -> None:
        draft = await self.bot.state.find_draft(draft_id)
        if draft is None or draft.user_id != interaction.user.id:
            raise NotPermitted("Only the member who asked for this video can cancel it.")
        await self.bot.state.take_draft(draft_id)
        await interaction.response.edit_message(
            content="Cancelled; nothing was charged.", view=None
        )

    async def _job(self, job_id: str) -> Any:
        job = await self.bot.service.jobs.find(job_id)
        if job is None:
            raise NotFound("That video no longer exists.")
        return job


async def setup(bot: KlingBot) -> None:
    await bot.add_cog(Generate(bot))
