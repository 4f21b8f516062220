"""A member animates an image: /animate (cogs/generate.py) and the "Animate" message command come
here, then go on like any other video (bot/discord/video_requests.py).

Each image is read from Discord at once, never later (an attachment's CDN link expires, so a job
never keeps one): one over 10 MB is refused from its size before it is downloaded, the bytes are
checked in a thread (bot/media/images.py: format, size, sides, aspect; each refusal names the rule
and the image's own figures), the request is priced against the provider (one without
image-to-video is refused, naming those that can), and only then are the images stored with the
job (MediaStore) and credits held. The video takes the image's aspect ratio: no aspect option.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import discord

from bot.discord.modals import animate_modal
from bot.discord.video_requests import Reply, answer, prepare_job
from bot.errors import InvalidRequest, UserError
from bot.media.images import ImageRefused, NormalizedImage, check_image
from bot.request import DURATION_MAX_S, DURATION_MIN_S, IMAGE_MAX_BYTES

if TYPE_CHECKING:
    from bot.discord.client import KlingBot

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif")


async def start_animation(
    bot: KlingBot,
    interaction: discord.Interaction[Any],
    image: discord.Attachment,
    end_image: discord.Attachment | None,
    options: dict[str, Any],
) -> None:
    """Check, store and ask for an animation of `image` (and `end_image`) with `options`."""
    await answer(bot, interaction, prepare_animation(bot, interaction, image, end_image, options))


async def animate_attached(
    bot: KlingBot, interaction: discord.Interaction[Any], message: discord.Message
) -> None:
    """The "Animate" message command: the message's image, with a form for the prompt."""
    attachment = image_attachment(message)
    refuse_oversized(attachment, "image")  # before the form: nothing to fill in for nothing

    async def on_values(
        modal_interaction: discord.Interaction[Any], values: dict[str, str]
    ) -> None:
        options = animate_options(values)
        await start_animation(bot, modal_interaction, attachment, None, options)

    await interaction.response.send_modal(animate_modal(on_values))


async def prepare_animation(
    bot: KlingBot,
    interaction: discord.Interaction[Any],
    image: discord.Attachment,
    end_image: discord.Attachment | None,
    options: dict[str, Any],
) -> Reply:
    refuse_oversized(image, "image")
    if end_image is not None:
        refuse_oversized(end_image, "end image")
    start = await read_image(image)
    end = await read_image(end_image) if end_image is not None else None
    data = {**options, "image": start.ref.model_dump()}
    if end is not None:
        data["end_image"] = end.ref.model_dump()
    await bot.service.quote(data)  # what the provider cannot make is refused before storing
    for checked in (start, end):
        if checked is not None:
            await asyncio.to_thread(bot.service.media.store_image, checked)
    return await prepare_job(bot, interaction, data, None)


def refuse_oversized(attachment: discord.Attachment, which: str) -> None:
    """Refuse an image over the limit from the size Discord reports, before downloading it."""
    if attachment.size > IMAGE_MAX_BYTES:
        raise ImageRefused(
            "size",
            f"The {which} {attachment.filename!r} is {attachment.size / 1_048_576:.1f} MB; the"
            f" limit is {IMAGE_MAX_BYTES // 1_048_576} MB.",
        )


async def read_image(attachment: discord.Attachment) -> NormalizedImage:
    """Download an attachment now and check it (the check runs in a thread)."""
    try:
        data = await attachment.read()
    except discord.HTTPException as error:
        raise UserError(
            f"Discord did not hand over {attachment.filename!r} (HTTP {error.status}): attach"
            " it again."
        ) from error
    return await asyncio.to_thread(
        check_image, data, filename=attachment.filename, content_type=attachment.content_type or ""
    )


def image_attachment(message: discord.Message) -> discord.Attachment:
    """The message's first attached image (by its type or name; its bytes are checked later)."""
    for attachment in message.attachments:
        content_type = (attachment.content_type or "").split(";")[0].strip()
        if content_type.startswith("image/") or attachment.filename.lower().endswith(
            IMAGE_EXTENSIONS
        ):
            return attachment
    if not message.attachments:
        raise UserError(
            "That message has no attached image. Use Animate on a message with a JPEG, PNG or"
            " WebP image attached, or use /animate."
        )
    files = ", ".join(
        f"{a.filename!r} ({a.content_type or 'unknown type'})" for a in message.attachments[:3]
    )
    raise UserError(
        f"That message has no image attached, only {files}: Animate needs a JPEG, PNG or WebP"
        " image."
    )


def animate_options(values: dict[str, str]) -> dict[str, Any]:
    """The request options from the Animate form (prompt, duration, negative prompt)."""
    options: dict[str, Any] = {}
    prompt = (values.get("prompt") or "").strip()
    if prompt:
        options["prompt"] = prompt
    negative = (values.get("negative_prompt") or "").strip()
    if negative:
        options["negative_prompt"] = negative
    duration = (values.get("duration") or "").strip()
    if duration:
        if not duration.isdecimal():
            raise InvalidRequest(
                [
                    f"The duration must be a whole number of seconds, {DURATION_MIN_S} to"
                    f" {DURATION_MAX_S} (got {duration[:20]!r})."
                ]
            )
        options["duration_s"] = int(duration)
    return options
