"""/video, /multishot, /animate and the Animate message command: parse the options, then ask for
the video (bot/discord/video_requests.py, bot/discord/animate.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.animate import animate_attached, start_animation
from bot.discord.modals import multishot_modal, parse_shots
from bot.discord.video_requests import start_job
from bot.errors import InvalidRequest

if TYPE_CHECKING:
    from bot.discord.client import KlingBot

Aspect = Literal["16:9", "9:16", "1:1"]
ResolutionChoice = Literal["720p", "1080p", "4k"]
ShotTypeChoice = Literal["customize", "intelligent"]


# What /video and /animate both offer, as Discord shows each option.
OPTION_TEXT = {
    "duration": "Length in seconds (3-15)",
    "audio": "Generate sound with the video (provider default if not set)",
    "resolution": "Output resolution, where the provider offers a choice",
    "negative_prompt": "What to avoid",
    "cfg_scale": "How closely to follow the prompt (0-1)",
    "shot_type": "How shots are cut",
    "voice_1": "Voice id for <<<voice_1>>> (needs audio)",
    "voice_2": "Voice id for <<<voice_2>>> (needs audio)",
}


def request_data(voices: tuple[str | None, ...], **values: Any) -> dict[str, Any]:
    """The request fields a member gave (an option left empty keeps its default)."""
    data = {key: value for key, value in values.items() if value is not None}
    given = [voice for voice in voices if voice]
    if given:
        data["voice_ids"] = given
    return data


class Generate(commands.Cog):
    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot
        # a context menu cannot be declared in a class; it is added to the tree with the cog
        self.animate_menu = app_commands.guild_only(
            app_commands.ContextMenu(name="Animate", callback=self.animate_message)
        )

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.animate_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.animate_menu.name, type=self.animate_menu.type)

    @app_commands.command(name="video", description="Make a Kling v3 Pro video from a prompt")
    @app_commands.guild_only()
    @app_commands.describe(
        prompt="What the video shows; refer to voices as <<<voice_1>>> and <<<voice_2>>>",
        aspect_ratio="Frame shape",
        **OPTION_TEXT,
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
        data = request_data(
            (voice_1, voice_2),
            prompt=prompt,
            duration_s=duration,
            aspect_ratio=aspect_ratio,
            audio=audio,
            resolution=resolution,
            negative_prompt=negative_prompt,
            cfg_scale=cfg_scale,
            shot_type=shot_type,
        )
        await start_job(self.bot, interaction, data)

    @app_commands.command(name="animate", description="Make a Kling v3 Pro video from an image")
    @app_commands.guild_only()
    @app_commands.describe(
        image="The first frame: a JPEG, PNG or WebP of at most 10 MB; the video takes its shape",
        prompt="How the image should move (optional where the provider allows it)",
        end_image="The last frame (optional), where the provider supports one",
        **OPTION_TEXT,
    )
    async def animate(
        self,
        interaction: discord.Interaction[Any],
        image: discord.Attachment,
        prompt: app_commands.Range[str, 1, 2500] | None = None,
        end_image: discord.Attachment | None = None,
        duration: app_commands.Range[int, 3, 15] = 5,
        audio: bool | None = None,
        resolution: ResolutionChoice | None = None,
        negative_prompt: app_commands.Range[str, 1, 2500] | None = None,
        cfg_scale: app_commands.Range[float, 0.0, 1.0] | None = None,
        shot_type: ShotTypeChoice | None = None,
        voice_1: app_commands.Range[str, 1, 128] | None = None,
        voice_2: app_commands.Range[str, 1, 128] | None = None,
    ) -> None:
        data = request_data(
            (voice_1, voice_2),
            duration_s=duration,
            prompt=prompt,
            audio=audio,
            resolution=resolution,
            negative_prompt=negative_prompt,
            cfg_scale=cfg_scale,
            shot_type=shot_type,
        )
        await start_animation(self.bot, interaction, image, end_image, data)

    async def animate_message(
        self, interaction: discord.Interaction[Any], message: discord.Message
    ) -> None:
        """Animate: the image attached to a message (a form asks for the prompt)."""
        await animate_attached(self.bot, interaction, message)

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


async def setup(bot: KlingBot) -> None:
    await bot.add_cog(Generate(bot))
