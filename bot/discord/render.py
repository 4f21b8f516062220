"""Pure rendering: a job (or a receipt) to the embed or text a member sees. No I/O, no bot."""

from __future__ import annotations

import discord

from bot.pipeline import Receipt
from bot.request import ImageRef, VideoRequest
from storage import Job, JobState

S = JobState

STATE_LINES = {
    S.AWAITING_APPROVAL: "🛂 Waiting for a moderator's approval",
    S.QUEUED: "⏳ Queued",
    S.SUBMITTED: "📨 Sent to the video provider",
    S.RUNNING: "🎬 Generating",
    S.SUCCEEDED: "⬇️ Saving the clip",
    S.DELIVERED: "✅ Done",
    S.REJECTED: "⛔ Not approved",
    S.FAILED: "❌ Failed",
    S.CANCELLED: "🚫 Cancelled",
    S.EXPIRED: "⌛ Timed out; the credits were returned",
    S.DELIVERY_FAILED: "⚠️ The clip is ready but could not be posted",
}
COLOURS = {
    S.DELIVERED: discord.Colour.green(),
    S.FAILED: discord.Colour.red(),
    S.REJECTED: discord.Colour.red(),
    S.CANCELLED: discord.Colour.light_grey(),
    S.EXPIRED: discord.Colour.orange(),
    S.DELIVERY_FAILED: discord.Colour.orange(),
}
LIVE_STATES = frozenset({S.AWAITING_APPROVAL, S.QUEUED, S.SUBMITTED, S.RUNNING})


def who(user_id: int) -> str:
    return f"<@{user_id}>"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ts(ms: int, style: str = "R") -> str:
    """A Discord timestamp that every client renders in its own time zone."""
    return f"<t:{ms // 1000}:{style}>"


def request_of(job: Job) -> VideoRequest:
    return VideoRequest.model_validate(job.request)


def options_line(request: VideoRequest) -> str:
    shape: str = request.aspect_ratio
    if request.image is not None:  # the video follows the image's own shape
        shape = f"from a {image_text(request.image)} image"
        if request.end_image is not None:
            shape += " with an end frame"
    parts = [f"{request.duration_s} s", shape, request.resolution or "default"]
    parts.append("audio on" if request.audio else "audio off")
    if request.shots:
        parts.append(f"{len(request.shots)} shots")
    if request.voice_ids:
        parts.append(f"{len(request.voice_ids)} voice(s)")
    return " · ".join(parts)


MARKDOWN_CHARS = frozenset("\\*_~`|>[]()#-")


def plain(text: str) -> str:
    """A member's words shown as typed: no masked links, bold, headings or quotes under the
    bot's name (`[Claim free credits](https://...)` stays visible text). Discord shows a
    backslash-escaped punctuation mark as the mark itself."""
    return "".join(f"\\{char}" if char in MARKDOWN_CHARS else char for char in text)


def image_text(ref: ImageRef) -> str:
    return f"{ref.width_px}×{ref.height_px}"


def prompt_text(request: VideoRequest, limit: int = 1000) -> str:
    if request.shots:
        return clip(
            "\n".join(f"**{s.duration_s}s** {plain(s.prompt)}" for s in request.shots), limit
        )
    if not request.prompt and request.image is not None:
        return "*(no prompt: the image moves as the model sees fit)*"
    return clip(plain(request.prompt or ""), limit)


def payer_text(job: Job) -> str:
    if job.payer == "pool":
        return "the server pool"
    if job.payer == "member":
        return "their own balance"
    return "nobody (operator job)"


FITTING_LINE = "🎞️ Fitting the clip to this channel's upload limit"


def status_embed(
    job: Job,
    *,
    now_ms: int,
    position: int | None = None,
    eta_ms: int | None = None,
    fitting: bool = False,
) -> discord.Embed:
    """The live status message of a job (`fitting`: its clip is being re-encoded to post)."""
    request = request_of(job)
    line = STATE_LINES[job.state]
    if fitting and job.state in (S.SUCCEEDED, S.DELIVERY_FAILED):
        line = FITTING_LINE
    if job.state is S.QUEUED and position:
        line += f" (#{position} in line)"
    if job.state is S.RUNNING and job.progress_pct is not None:
        line += f" · {job.progress_pct}%"
    embed = discord.Embed(
        title=line,
        description=prompt_text(request),
        colour=COLOURS.get(job.state, discord.Colour.blurple()),
    )
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    embed.add_field(name="Options", value=options_line(request))
    embed.add_field(name="Cost", value=f"{job.cost} credits from {payer_text(job)}")
    if job.state in (S.SUBMITTED, S.RUNNING) and job.submitted_at_ms:
        embed.add_field(name="Started", value=ts(job.submitted_at_ms))
    if job.state in (S.QUEUED, S.SUBMITTED, S.RUNNING) and eta_ms is not None and eta_ms > now_ms:
        embed.add_field(name="Expected", value=ts(eta_ms))
    if job.state in (S.FAILED, S.REJECTED, S.DELIVERY_FAILED, S.EXPIRED) and job.error_message:
        embed.add_field(name="Why", value=clip(job.error_message, 1000), inline=False)
    if job.state in (S.SUBMITTED, S.RUNNING) and job.error_kind == "outcome_unknown":
        embed.add_field(name="Note", value=clip(job.error_message or "", 1000), inline=False)
    embed.set_footer(text=f"job {job.id} · {job.provider}")
    return embed


LOCAL_PREVIEW = "Local preview render, not AI-generated (KLINGBOT_PROVIDER=local)."


def result_embed(job: Job, *, note: str | None = None) -> discord.Embed:
    request = request_of(job)
    title = "🧪 Your preview is ready" if job.provider == "local" else "🎬 Your video is ready"
    embed = discord.Embed(
        title=title, description=prompt_text(request, 3500), colour=discord.Colour.green()
    )
    if job.provider == "local":
        note = f"{LOCAL_PREVIEW} {note}" if note else LOCAL_PREVIEW
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    embed.add_field(name="Options", value=options_line(request))
    embed.add_field(name="Provider", value=job.provider)
    embed.add_field(name="Cost", value=f"{job.charged or 0} credits")
    if request.negative_prompt:
        embed.add_field(
            name="Avoid", value=clip(plain(request.negative_prompt), 1000), inline=False
        )
    if note:
        embed.add_field(name="Note", value=clip(note, 1000), inline=False)
    embed.set_footer(text=f"job {job.id}")
    return embed


def details_embed(job: Job) -> discord.Embed:
    request = request_of(job)
    embed = discord.Embed(title=f"Job {job.id}", description=prompt_text(request, 3500))
    rows = {
        "State": job.state.value.replace("_", " "),
        "Provider": job.provider,
        "Duration": f"{request.duration_s} s",
        "Aspect ratio": request.aspect_ratio
        if request.image is None
        else f"the image's own ({image_text(request.image)})",
        "Resolution": request.resolution or "default",
        "Audio": "on" if request.audio else "off",
        "Cost": f"{job.cost} credits ({job.charged} charged)",
        "Paid from": payer_text(job),
        "Created": ts(job.created_at_ms, "f"),
    }
    for name, ref in (("Image", request.image), ("End image", request.end_image)):
        if ref is not None:
            kind = ref.mime.removeprefix("image/").upper()
            rows[name] = f"{image_text(ref)} {kind}, {ref.size_bytes / 1_048_576:.1f} MB"
    if request.negative_prompt:
        rows["Negative prompt"] = clip(request.negative_prompt, 1000)
    if request.cfg_scale is not None:
        rows["cfg_scale"] = f"{request.cfg_scale:g}"
    if request.shot_type:
        rows["Shot type"] = request.shot_type
    if request.voice_ids:
        rows["Voice ids"] = ", ".join(request.voice_ids)
    if job.error_message:
        rows["Error"] = clip(job.error_message, 1000)
    for name, value in rows.items():
        embed.add_field(name=name, value=value)
    return embed


def approval_embed(job: Job) -> discord.Embed:
    request = request_of(job)
    embed = discord.Embed(
        title="Approval needed", description=prompt_text(request), colour=discord.Colour.gold()
    )
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    embed.add_field(name="Cost", value=f"{job.cost} credits from the pool")
    embed.add_field(name="Where", value=f"<#{job.channel_id}>")
    embed.add_field(name="Options", value=options_line(request))
    embed.set_footer(text=f"job {job.id}")
    return embed


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
    return text + (
        " They are charged when the clip is made, even if it can't be posted here (Get the clip"
        " then gives it to you); a failure, cancellation or timeout returns them."
    )
