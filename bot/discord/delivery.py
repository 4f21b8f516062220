"""Delivers finished clips to Discord with the bot token (never the interaction token, which dies
after 15 minutes): a reply to the job's status message in its channel, with the clip attached if it
fits the channel's upload limit, re-encoded to fit otherwise, or linked when it cannot fit. The
post waits for room in the channel's rate limits (bot/discord/pacing.py), ahead of status edits.

If the channel refuses (missing permission, deleted channel) the clip goes to the requester by
direct message instead, and the job records that. Each post runs inside the pipeline's fence
(bot.pipeline.delivery): only while this process holds the job's lease, within the upload timeout. A message nonce derived from the job id lets
Discord drop a duplicate post after a crash between posting and recording it.

The same fitting gives a kept clip privately to the member who presses Get the clip
(`hand_over`), for a clip that could not be posted or whose message is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot.discord.rate_limits import Priority
from bot.discord.render import result_embed
from bot.discord.video_requests import result_view
from bot.media import CannotFitError, MediaError
from bot.pipeline import Delivered, DeliveryError, Fence, fit_clip
from storage import Job

if TYPE_CHECKING:
    from bot.discord.client import KlingBot

log = logging.getLogger(__name__)

# Headroom under the limit for the multipart envelope around the file.
ENVELOPE_BYTES = 64 * 1024

# Posts a prepared clip (attachment or None for a link only, how, note) somewhere.
Post = Callable[[Path | None, str, str | None], Awaitable[Delivered]]


class DiscordSink:
    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot

    async def deliver(self, job: Job, clip: Path, *, link: str | None, fence: Fence) -> Delivered:
        try:
            return await self._post_fitted(
                job, clip, job.upload_limit_bytes, link, partial(self._post_in_channel, job, fence)
            )
        except discord.Forbidden as error:
            reason = f"the channel refused the post ({error.status} {error.code})"
        except discord.NotFound as error:
            reason = f"the channel is gone ({error.code})"
        except discord.HTTPException as error:
            raise DeliveryError(
                f"Discord answered {error.status}: {error.text or error}",
                retryable=error.status >= 500 or error.status == 429,
            ) from error
        return await self._post_fitted(
            job,
            clip,
            job.upload_limit_bytes,
            link,
            partial(self._post_in_dm, job, fence, reason=reason),
        )

    async def hand_over(
        self, interaction: discord.Interaction[Any], job: Job, clip: Path, *, link: str | None
    ) -> Delivered:
        """Give the kept clip privately to whoever pressed Get the clip: an ephemeral follow-up
        of the (deferred) `interaction`, fitted to the upload limit there, or the link when it
        cannot fit. DeliveryError when neither can be done."""
        limit_bytes = interaction.filesize_limit or job.upload_limit_bytes

        async def post(attachment: Path | None, via: str, note: str | None) -> Delivered:
            payload = self._payload(job, attachment, note, via == "link")
            payload["content"] = f"Here is the clip of job `{job.id}` (only you can see this)."
            del payload["view"]  # Delete and the others act on public messages
            message = await interaction.followup.send(ephemeral=True, wait=True, **payload)
            return Delivered(via, message.id, detail=f"privately to {interaction.user.id}")

        try:
            return await self._post_fitted(job, clip, limit_bytes, link, post)
        except discord.HTTPException as error:
            raise DeliveryError(
                f"Discord refused the clip ({error.status}); please try again in a minute."
            ) from error

    async def _post_fitted(
        self, job: Job, clip: Path, limit_bytes: int, link: str | None, post: Post
    ) -> Delivered:
        """Fit the clip to `limit_bytes` (or link it) and `post` it; if Discord still finds the
        file too large, fit it to half the limit and post once more."""
        attachment, via, note = await self._prepare(job, clip, limit_bytes, link)
        try:
            return await post(attachment, via, note)
        except discord.HTTPException as error:
            if not (error.status == 413 or error.code == 40005):
                raise
        smaller = max(limit_bytes // 2, 1024 * 1024)
        attachment, via, note = await self._prepare(job, clip, smaller, link)
        try:
            return await post(attachment, via, note)
        except discord.HTTPException as again:
            raise DeliveryError(f"Discord refused the upload: {again}") from again

    async def _prepare(
        self, job: Job, clip: Path, limit_bytes: int, link: str | None
    ) -> tuple[Path | None, str, str | None]:
        """What to attach: the clip, a re-encoded copy, or nothing (link only)."""
        target = self.bot.service.media.fitted_path(job.id, limit_bytes)
        budget = limit_bytes - min(ENVELOPE_BYTES, limit_bytes // 20)
        try:
            fitted = await fit_clip(
                clip,
                budget,
                target,
                transcoder=self.bot.runtime.transcoder,
                on_fitting=partial(self.bot.status_messages.show_fitting, job),
            )
        except (CannotFitError, MediaError) as error:
            if not link:
                raise DeliveryError(
                    f"The clip is too large for this channel ({error}) and the bot has no public"
                    " address (KLINGBOT_PUBLIC_URL) to link it from.",
                    retryable=False,
                ) from error
            return None, "link", f"Too large to attach here: [download the clip]({link})"
        if not fitted.reencoded:
            return fitted.path, "file", None
        note = "Re-encoded to fit this channel's upload limit."
        if link:
            note += f" [Original quality]({link})"
        return fitted.path, "reencoded", note

    def _payload(
        self, job: Job, attachment: Path | None, note: str | None, link_only: bool
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "content": f"<@{job.user_id}> your video is ready.",
            "embed": result_embed(job, note=note),
            "view": result_view(job),
            "allowed_mentions": discord.AllowedMentions(users=[discord.Object(job.user_id)]),
        }
        if attachment is not None and not link_only:
            payload["file"] = discord.File(attachment, filename=f"klingbot-{job.id}.mp4")
        return payload

    async def _post_in_channel(
        self, job: Job, fence: Fence, attachment: Path | None, via: str, note: str | None
    ) -> Delivered:
        channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id or None)

        async def post() -> discord.Message:
            payload = self._payload(job, attachment, note, via == "link")
            # Read now: the status message may have been posted while the clip waited its turn.
            status_message_id = await self._status_message_id(job)
            if status_message_id:
                payload["reference"] = discord.MessageReference(
                    message_id=status_message_id,
                    channel_id=job.channel_id,
                    fail_if_not_exists=False,
                )
            async with fence():
                return await channel.send(nonce=int(job.id, 16), **payload)

        message = await self.bot.pacer.send(job.channel_id, post, priority=Priority.FINAL)
        return Delivered(via, message.id, detail=f"channel {job.channel_id}")

    async def _status_message_id(self, job: Job) -> int | None:
        current = await self.bot.service.jobs.find(job.id)
        return (current or job).status_message_id

    async def _post_in_dm(
        self,
        job: Job,
        fence: Fence,
        attachment: Path | None,
        via: str,
        note: str | None,
        *,
        reason: str,
    ) -> Delivered:
        try:
            user = await self.bot.fetch_user(job.user_id)
            payload = self._payload(job, attachment, note, via == "link")
            payload["content"] = (
                f"Your video is ready, but I couldn't post it in <#{job.channel_id}> ({reason})."
            )
            async with fence():
                message = await user.send(**payload)
        except discord.HTTPException as error:
            raise DeliveryError(
                f"{reason[0].upper()}{reason[1:]}, and a direct message failed too ({error.status})."
            ) from error
        log.warning("job %s delivered by DM: %s", job.id, reason)
        return Delivered("dm", message.id, detail=f"by direct message: {reason}")
