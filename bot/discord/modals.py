"""Forms: a modal of text fields whose values go to a callback, the Remix, multi-shot and Animate
forms, and parsing their `seconds: prompt` shot fields. A failed submission is answered like any other
error (bot/discord/tree.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.discord.render import request_of
from bot.discord.tree import report_error
from bot.request import DURATION_MAX_S, DURATION_MIN_S, SHOT_PROMPT_MAX_CHARS
from storage import Job

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
                label="Prompt" if request.image is None else "Prompt (optional with an image)",
                style=discord.TextStyle.paragraph,
                default=request.prompt,
                required=request.image is None,
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


def animate_modal(on_values: ModalSubmit) -> FieldsModal:
    """The Animate message command's form: what the image should do."""
    fields: list[discord.ui.TextInput[Any]] = [
        discord.ui.TextInput(
            label="Prompt (how the image should move)",
            style=discord.TextStyle.paragraph,
            placeholder="the camera slowly pushes in while the leaves sway",
            required=False,
            max_length=2500,
            custom_id="prompt",
        ),
        discord.ui.TextInput(
            label=f"Duration in seconds ({DURATION_MIN_S}-{DURATION_MAX_S})",
            default="5",
            required=False,
            max_length=2,
            custom_id="duration",
        ),
        discord.ui.TextInput(
            label="Negative prompt (optional)",
            style=discord.TextStyle.paragraph,
            required=False,
            max_length=2500,
            custom_id="negative_prompt",
        ),
    ]
    return FieldsModal("Animate this image", fields, on_values)


def parse_shots(values: dict[str, str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Shots from `seconds: prompt` fields, with a specific message for each bad one."""
    shots: list[dict[str, Any]] = []
    problems: list[str] = []
    for number in range(1, 6):
        text = (values.get(f"shot_{number}") or "").strip()
        if not text:
            continue
        seconds, sep, prompt = text.partition(":")
        if not sep or not seconds.strip().isdecimal():
            problems.append(
                f"Shot {number} must start with its length in seconds, like `3: a fox wakes up`."
            )
            continue
        shots.append({"duration_s": int(seconds.strip()), "prompt": prompt.strip()})
    if not shots and not problems:
        problems.append("Give at least one shot, like `3: a fox wakes up`.")
    return shots, problems
