"""End to end: /animate and the Animate message command, from the Discord double through the real
discord.py, KlingBot and pipeline to a clip in the channel; refusals with nothing held; Reroll and
Remix of an animation; a restart mid-job. Images are made with Pillow here."""

from __future__ import annotations

import io
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from PIL import Image
from pydantic import SecretStr

from bot.playground.double import DiscordDouble, DoubleInteraction, Message
from bot.playground.double.validate import walk_components
from bot.settings import EachLabsSettings, PixelDojoSettings
from storage import Job, JobState
from tests.e2e_support import (
    ALICE,
    BOB,
    CHANNEL,
    GUILD,
    Running,
    make_double,
    make_settings,
    reply_text,
    running_bot,
)
from tests.provider_doubles.eachlabs import API_KEY as EACHLABS_KEY
from tests.provider_doubles.eachlabs import EachLabsDouble
from tests.provider_doubles.pixeldojo import API_KEY as PIXELDOJO_KEY
from tests.provider_doubles.pixeldojo import PixelDojoDouble

CAROL = 930_000_000_000_000_099  # has Nitro: she can attach files over 10 MB
EPHEMERAL = 64


def image_bytes(width: int, height: int, fmt: str = "PNG", *, seed: int = 1) -> bytes:
    """A picture with some structure (so a pan shows) in `fmt`."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), (rng.randrange(256), 90, 160))
    for _ in range(12):
        x, y = rng.randrange(width), rng.randrange(height)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        image.paste(colour, (x, y, min(width, x + width // 5), min(height, y + height // 5)))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def noise_png(width: int, height: int) -> bytes:
    """A PNG of random pixels: it does not compress, so it is about width*height*3 bytes."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


@pytest.fixture
async def double() -> AsyncIterator[DiscordDouble]:
    d = await make_double()
    d.add_member(GUILD, CAROL, "carol", premium_type=2)
    yield d
    await d.stop()


async def animate(run: Running, user_id: int = ALICE, **options: Any) -> DoubleInteraction:
    return await run.double.invoke(
        "animate", options, user_id=user_id, guild_id=GUILD, channel_id=CHANNEL
    )


def clip_size(message: Message) -> tuple[int, int]:
    """The width and height of the clip attached to `message`, decoded."""
    [attachment] = message.attachments
    with av.open(io.BytesIO(attachment.data)) as clip:
        video = clip.streams.video[0]
        return video.width, video.height


def stored_images(run: Running) -> list[str]:
    folder = run.service.media.images_dir
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


async def delivered(run: Running, job_id: str) -> tuple[Job, Message]:
    job = await run.wait_state(job_id, JobState.DELIVERED, JobState.FAILED)
    assert job.state is JobState.DELIVERED, job.error_message
    return job, await run.result_message(job)


async def test_animate_a_png_on_local_delivers_a_clip_shaped_like_the_image(
    tmp_path: Path, double: DiscordDouble
) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        synced = {c["name"]: c for c in double.commands(GUILD)}
        options = [o["name"] for o in synced["animate"]["options"]]
        assert options[:3] == ["image", "prompt", "end_image"]
        assert "aspect_ratio" not in options  # the video takes the image's own shape
        await run.fund(ALICE, 200)
        png = image_bytes(1200, 800)
        inter = await animate(run, image=("garden.png", png), prompt="leaves sway", duration=3)
        ack = await inter.wait_ack()
        assert ack.callback_type == 5 and (ack.data or {}).get("flags") == EPHEMERAL
        assert "24 credits" in await reply_text(inter)
        [attachment] = [a for a in double.world.attachments.values() if a.filename == "garden.png"]
        assert attachment.downloads == 1  # read once, at command time
        job = await run.only_job()
        assert job.request["image"]["width_px"] == 1200 and "leaves sway" in job.request["prompt"]
        job, result = await delivered(run, job.id)
        assert clip_size(result) == (1080, 720)  # 3:2 like the image, 720p
        fields = {f["name"]: f["value"] for f in result.embeds[0]["fields"]}
        assert "from a 1200×800 image" in fields["Options"]
        assert stored_images(run) == [f"{job.request['image']['sha256']}.png"]
        assert await run.available(ALICE) == 200 - 24
        # a portrait WebP is converted and animated upright, in its own shape
        webp = image_bytes(600, 900, "WEBP", seed=2)
        await reply_text(await animate(run, image=("tall.webp", webp), duration=3))
        newest = (await run.service.jobs.by_user(GUILD, ALICE, limit=1))[0]
        assert newest.request["image"]["mime"] == "image/jpeg"  # a photo without alpha
        assert "prompt" not in newest.request or newest.request["prompt"] is None
        _, portrait = await delivered(run, newest.id)
        assert clip_size(portrait) == (720, 1080)


async def test_bad_images_are_refused_specifically_with_nothing_held(
    tmp_path: Path, double: DiscordDouble
) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        await run.fund(ALICE, 200)
        await run.fund(CAROL, 200)
        big = noise_png(2048, 2048)
        assert len(big) > 12 * 1024 * 1024
        cases: list[tuple[int, tuple[str, bytes], list[str]]] = [
            (ALICE, ("tiny.png", image_bytes(200, 200)), ["'tiny.png' is 200×200 px", "300 px"]),
            (
                ALICE,
                ("panorama.jpg", image_bytes(1500, 500, "JPEG")),
                ["1500×500 px (aspect 3.00:1)", "between 1:2.5 and 2.5:1"],
            ),
            (CAROL, ("huge.png", big), [f"{len(big) / 1_048_576:.1f} MB", "limit is 10 MB"]),
            (
                ALICE,
                ("notes.txt", b"just some words\n" * 50),
                ["'notes.txt' is not an image", "text/plain", "JPEG, PNG or WebP"],
            ),
        ]
        for user, file, expected in cases:
            inter = await animate(run, user_id=user, image=file, prompt="move")
            text = await reply_text(inter)
            assert all(part in text for part in expected), (file[0], text)
            assert ((await inter.wait_ack()).data or {}).get("flags") == EPHEMERAL
        huge = next(a for a in double.world.attachments.values() if a.filename == "huge.png")
        assert huge.downloads == 0  # refused from its size, never downloaded
        for user in (ALICE, CAROL):
            assert await run.service.jobs.by_user(GUILD, user) == []
            assert await run.available(user) == 200
        assert stored_images(run) == []


async def test_animate_where_the_provider_cannot_names_those_that_can(tmp_path: Path) -> None:
    double = await make_double()
    try:
        async with PixelDojoDouble() as vendor:
            settings = make_settings(
                tmp_path,
                provider="pixeldojo",
                pixeldojo=PixelDojoSettings(
                    api_key=SecretStr(PIXELDOJO_KEY), base_url=vendor.api_base
                ),
            )
            async with running_bot(double, settings) as run:
                await run.fund(ALICE, 200)
                inter = await animate(run, image=("cat.png", image_bytes(800, 600)), prompt="purr")
                text = await reply_text(inter)
                assert "PixelDojo has no documented Kling v3 image-to-video" in text
                for name in ("Kling", "EachLabs", "fal.ai", "Replicate", "local preview"):
                    assert name in text, text
                assert await run.service.jobs.by_user(GUILD, ALICE) == []
                assert await run.available(ALICE) == 200
                assert stored_images(run) == []
                assert vendor.creates == 0
    finally:
        await double.stop()


async def test_animate_message_command_opens_a_form_then_animates_the_image(
    tmp_path: Path, double: DiscordDouble
) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        await run.fund(ALICE, 200)
        menus = [c for c in double.commands(GUILD) if c["type"] == 3]
        assert [(c["name"], c["contexts"]) for c in menus] == [("Animate", [0])]  # servers only
        # no image: told at once, no form
        chat = double.post_as_member(CHANNEL, "hello", user_id=ALICE)
        bare = await double.invoke_message_command("Animate", chat.id, user_id=ALICE)
        assert "no attached image" in await reply_text(bare)
        text_only = double.post_as_member(
            CHANNEL, attachments=[("notes.txt", b"words")], user_id=ALICE
        )
        wrong = await double.invoke_message_command("Animate", text_only.id, user_id=ALICE)
        assert "only 'notes.txt' (text/plain)" in await reply_text(wrong)
        # a member posted a square photo; Alice animates it from the Apps menu
        posted = double.post_as_member(
            CHANNEL,
            "our cat",
            attachments=[("cat.jpg", image_bytes(900, 900, "JPEG"))],
            user_id=BOB,
        )
        opened = await double.invoke_message_command("Animate", posted.id, user_id=ALICE)
        ack = await opened.wait_ack()
        assert ack.callback_type == 9 and opened.modal is not None
        assert posted.attachments[0].downloads == 0  # read when the form is sent, not before
        bad = await double.submit_modal(
            opened, opened.modal["custom_id"], {"duration": "5s"}, user_id=ALICE
        )
        assert "whole number of seconds" in await reply_text(bad)
        opened = await double.invoke_message_command("Animate", posted.id, user_id=ALICE)
        await opened.wait_ack()
        assert opened.modal is not None
        sent = await double.submit_modal(
            opened,
            opened.modal["custom_id"],
            {"prompt": "the cat blinks", "duration": "3"},
            user_id=ALICE,
        )
        assert "Queued as job" in await reply_text(sent)
        job = await run.only_job()
        assert job.request["prompt"] == "the cat blinks" and job.request["duration_s"] == 3
        job, result = await delivered(run, job.id)
        assert clip_size(result) == (720, 720)


async def test_reroll_and_remix_an_animation(tmp_path: Path, double: DiscordDouble) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        await run.fund(ALICE, 500)
        await reply_text(
            await animate(run, image=("dog.png", image_bytes(640, 960)), prompt="wag", duration=3)
        )
        first, result = await delivered(run, (await run.only_job()).id)
        reroll = await double.click(
            result.id, f"kb:reroll:{first.id}", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL
        )
        assert "Queued as job" in await reply_text(reroll)
        [child] = [
            j for j in await run.service.jobs.by_user(GUILD, ALICE) if j.parent_job_id == first.id
        ]
        assert child.request["image"] == first.request["image"]
        _, rerolled = await delivered(run, child.id)
        assert clip_size(rerolled) == (720, 1080)
        # Remix: the prompt is optional with an image; emptied, the animation goes without
        remix = await double.click(
            result.id, f"kb:remix:{first.id}", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL
        )
        await remix.wait_ack()
        assert remix.modal is not None
        [prompt_field] = [
            c for c in walk_components(remix.modal["components"]) if c.get("custom_id") == "prompt"
        ]
        assert prompt_field["required"] is False and prompt_field["value"] == "wag"
        remixed = await double.submit_modal(
            remix, remix.modal["custom_id"], {"prompt": ""}, user_id=ALICE
        )
        assert "Queued as job" in await reply_text(remixed)
        children = [
            j for j in await run.service.jobs.by_user(GUILD, ALICE) if j.parent_job_id == first.id
        ]
        remixed_job = next(j for j in children if j.id != child.id)
        assert remixed_job.request.get("prompt") is None
        await delivered(run, remixed_job.id)
        # once the image is no longer kept, Reroll says so and holds nothing
        for path in run.service.media.images_dir.iterdir():
            path.unlink()
        before = await run.available(ALICE)
        gone = await double.click(
            result.id, f"kb:reroll:{first.id}", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL
        )
        assert "no longer kept" in await reply_text(gone)
        assert await run.available(ALICE) == before


async def test_restart_mid_animation_resumes_and_delivers_once(
    tmp_path: Path, double: DiscordDouble
) -> None:
    async with EachLabsDouble() as vendor:
        vendor.default_script = ["created", "processing"]
        settings = make_settings(
            tmp_path,
            provider="eachlabs",
            eachlabs=EachLabsSettings(
                api_key=SecretStr(EACHLABS_KEY), base_url=vendor.api_base, max_concurrent=1
            ),
        )
        async with running_bot(double, settings) as run:
            await run.fund(ALICE, 500)
            await reply_text(await animate(run, image=("a.png", image_bytes(800, 450)), prompt="a"))
            await reply_text(
                await animate(run, image=("b.png", image_bytes(450, 800, seed=3)), prompt="b")
            )
            first, second = sorted(
                await run.service.jobs.by_user(GUILD, ALICE), key=lambda j: j.created_at_ms
            )
            first = await run.wait_state(first.id, JobState.RUNNING)
            assert (await run.service.jobs.get(second.id)).state is JobState.QUEUED  # one slot
        # the bot is gone; Discord's links to the uploads expire; the vendor finishes the first
        double.clock.advance(25 * 3600)
        vendor.jobs[first.provider_job_id or ""].script = ["succeeded"]
        vendor.default_script = ["succeeded"]
        async with running_bot(double, settings) as run:
            first, _ = await delivered(run, first.id)
            second, _ = await delivered(run, second.id)  # sent after the restart, from disk
            sent = vendor.jobs[second.provider_job_id or ""].request["input"]
            async with aiohttp.ClientSession() as http, http.get(sent["start_image_url"]) as resp:
                assert resp.status == 200
                assert len(await resp.read()) == second.request["image"]["size_bytes"]
            for job in (first, second):
                results = [
                    m for m in double.messages(CHANNEL) if m.attachments and job.id in str(m.embeds)
                ]
                assert len(results) == 1, "delivered once"
                kinds = [t.kind.value for t in await run.service.ledger.transfers_for_job(job.id)]
                assert kinds == ["pending", "post"]
            assert vendor.creates == 2
            assert (await run.service.ledger.audit()).ok
