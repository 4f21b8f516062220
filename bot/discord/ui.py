"""Shared Discord UI: embeds, persistent buttons and modals.

Buttons are `DynamicItem`s whose custom id carries what they act on (`kb:<action>:<id>`), so they
keep working after a restart: all state comes from the database. Each action is handled by the cog
that registered it in `bot.button_handlers`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

import discord

from bot.discord.tree import report_error
from bot.request import SHOT_PROMPT_MAX_CHARS, VideoRequest
from storage import Job, JobState

if TYPE_CHECKING:
    from bot.discord.client import KlingBot

ButtonHandler = Callable[[discord.Interaction[Any], str], Awaitable[None]]
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


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ts(ms: int, style: str = "R") -> str:
    """A Discord timestamp that every client renders in its own time zone."""
    return f"<t:{ms // 1000}:{style}>"


def request_of(job: Job) -> VideoRequest:
    return VideoRequest.model_validate(job.request)


def options_line(request: VideoRequest) -> str:
    parts = [f"{request.duration_s} s", request.aspect_ratio, request.resolution or "default"]
    parts.append("audio on" if request.audio else "audio off")
    if request.shots:
        parts.append(f"{len(request.shots)} shots")
    if request.voice_ids:
        parts.append(f"{len(request.voice_ids)} voice(s)")
    return " · ".join(parts)


def prompt_text(request: VideoRequest, limit: int = 1000) -> str:
    if request.shots:
        return clip("\n".join(f"**{s.duration_s}s** {s.prompt}" for s in request.shots), limit)
    return clip(request.prompt or "", limit)


def payer_text(job: Job) -> str:
    if job.payer == "pool":
        return "the server pool"
    if job.payer == "member":
        return "their own balance"
    return "nobody (operator job)"


def status_embed(
    job: Job, *, now_ms: int, position: int | None = None, eta_ms: int | None = None
) -> discord.Embed:
    """The live status message of a job."""
    request = request_of(job)
    line = STATE_LINES[job.state]
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
        embed.add_field(name="Avoid", value=clip(request.negative_prompt, 1000), inline=False)
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
        "Aspect ratio": request.aspect_ratio,
        "Resolution": request.resolution or "default",
        "Audio": "on" if request.audio else "off",
        "Cost": f"{job.cost} credits ({job.charged} charged)",
        "Paid from": payer_text(job),
        "Created": ts(job.created_at_ms, "f"),
    }
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


# -- persistent buttons ------------------------------------------------------------------------


class ActionButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"kb:(?P<action>[a-z]+):(?P<ident>[0-9a-f]{12})",
):
    """A button whose custom id names an action and the job (or draft) it acts on."""

    LOOKS: ClassVar[dict[str, tuple[str, discord.ButtonStyle, str | None]]] = {
        "reroll": ("Reroll", discord.ButtonStyle.primary, "🎲"),
        "remix": ("Remix", discord.ButtonStyle.secondary, "✏️"),
        "details": ("Details", discord.ButtonStyle.secondary, "ℹ️"),
        "delete": ("Delete", discord.ButtonStyle.danger, "🗑️"),
        "cancel": ("Cancel", discord.ButtonStyle.danger, None),
        "confirm": ("Confirm", discord.ButtonStyle.success, None),
        "discard": ("Cancel", discord.ButtonStyle.secondary, None),
        "approve": ("Approve", discord.ButtonStyle.success, None),
        "deny": ("Deny", discord.ButtonStyle.danger, None),
    }

    def __init__(self, action: str, ident: str) -> None:
        label, style, emoji = self.LOOKS.get(
            action, (action.title(), discord.ButtonStyle.secondary, None)
        )
        super().__init__(
            discord.ui.Button(
                label=label, style=style, emoji=emoji, custom_id=f"kb:{action}:{ident}"
            )
        )
        self.action = action
        self.ident = ident

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ActionButton:
        return cls(match["action"], match["ident"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        bot: KlingBot = interaction.client
        handler = bot_handlers(bot).get(self.action)
        try:
            if handler is None:
                raise LookupError(f"no handler for button action {self.action!r}")
            await handler(interaction, self.ident)
        except Exception as error:
            await report_error(interaction, error)


DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (ActionButton,)


def bot_handlers(bot: Any) -> dict[str, ButtonHandler]:
    handlers: dict[str, ButtonHandler] | None = getattr(bot, "button_handlers", None)
    if handlers is None:
        handlers = {}
        bot.button_handlers = handlers
    return handlers


def register_buttons(bot: Any, **handlers: ButtonHandler) -> None:
    bot_handlers(bot).update(handlers)


def view_of(*buttons: tuple[str, str]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action, ident in buttons:
        view.add_item(ActionButton(action, ident))
    return view


def status_view(job: Job) -> discord.ui.View:
    """Cancel while the job is live; no buttons afterwards (an empty view clears them)."""
    return view_of(("cancel", job.id)) if job.state in LIVE_STATES else view_of()


def result_view(job: Job) -> discord.ui.View:
    return view_of(("reroll", job.id), ("remix", job.id), ("details", job.id), ("delete", job.id))


# -- modals ----------------------------------------------------------------------------------

ModalSubmit = Callable[[discord.Interaction[Any], dict[str, str]], Awaitable[None]]


class FieldsModal(discord.ui.Modal):
    """A modal of text fields that hands their values to `on_values`."""

    def __init__(
        self, title: str, fields: list[discord.ui.TextInput[Any]], on_values: ModalSubmit
    ) -> None:
        super().__init__(title=title, timeout=900)
        self._fields = fields
        self._on_values = on_values
        for field in fields:
            self.add_item(field)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        values = {str(f.custom_id): f.value for f in self._fields}
        await self._on_values(interaction, values)

    async def on_error(  # type: ignore[override]  # Modal's signature, not BaseView's
        self, interaction: discord.Interaction[Any], error: Exception, /
    ) -> None:
        await report_error(interaction, error)


def remix_modal(job: Job, on_values: ModalSubmit) -> FieldsModal:
    request = request_of(job)
    fields: list[discord.ui.TextInput[Any]] = []
    if request.shots:
        for number, shot in enumerate(request.shots, start=1):
            fields.append(shot_field(number, f"{shot.duration_s}: {shot.prompt}"))
    else:
        fields.append(
            discord.ui.TextInput(
                label="Prompt",
                style=discord.TextStyle.paragraph,
                default=request.prompt,
                max_length=2500,
                custom_id="prompt",
            )
        )
    fields.append(
        discord.ui.TextInput(
            label="Negative prompt (optional)",
            style=discord.TextStyle.paragraph,
            required=False,
            default=request.negative_prompt,
            max_length=2500,
            custom_id="negative_prompt",
        )
    )
    return FieldsModal("Remix this video", fields[:5], on_values)


def shot_field(number: int, default: str | None = None) -> discord.ui.TextInput[Any]:
    return discord.ui.TextInput(
        label=f"Shot {number} (seconds: prompt)",
        style=discord.TextStyle.paragraph,
        placeholder="3: a fox wakes up in its den",
        required=number == 1,
        default=default,
        max_length=SHOT_PROMPT_MAX_CHARS + 8,
        custom_id=f"shot_{number}",
    )


def multishot_modal(on_values: ModalSubmit) -> FieldsModal:
    return FieldsModal("Multi-shot video", [shot_field(n) for n in range(1, 6)], on_values)


def parse_shots(values: dict[str, str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Shots from `seconds: prompt` fields, with a specific message for each bad one."""
    shots: list[dict[str, Any]] = []
    problems: list[str] = []
    for number in range(1, 6):
        text = (values.get(f"shot_{number}") or "").strip()
        if not text:
            continue
        seconds, sep, prompt = text.partition(":")
        if not sep or not seconds.strip().isdigit():
            problems.append(
                f"Shot {number} must start with its length in seconds, like `3: a fox wakes up`."
            )
            continue
        shots.append({"duration_s": int(seconds.strip()), "prompt": prompt.strip()})
    if not shots and not problems:
        problems.append("Give at least one shot, like `3: a fox wakes up`.")
    return shots, problems
