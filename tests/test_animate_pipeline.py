"""Image-to-video through the real pipeline: the dispatcher reads the stored images for each create,
the bot serves them to vendors at a tokenized /media link, failover only moves an animation to a
provider that can animate, and images are kept while their job may still need them.

Images are made with Pillow in the tests; the vendors are the loopback doubles and the local
renderer.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import aiohttp
import av
from PIL import Image
from pydantic import SecretStr

from bot.media.images import NormalizedImage, check_image
from bot.pipeline import MediaStore
from bot.providers import ProviderHttp, VideoProvider
from bot.providers.eachlabs import EachLabsProvider
from bot.providers.fal import FalProvider
from bot.providers.local import LocalProvider
from bot.providers.pixeldojo import PixelDojoProvider
from bot.request import VideoRequest
from bot.settings import EachLabsSettings, FalSettings, LocalSettings, PixelDojoSettings
from storage import AccountRef, JobState, ManualClock, OffsetClock
from tests.pipeline_support import Harness, ProviderFactory, member, pipeline
from tests.provider_doubles.eachlabs import API_KEY as EACHLABS_KEY
from tests.provider_doubles.eachlabs import EachLabsDouble
from tests.provider_doubles.fal import API_KEY as FAL_KEY
from tests.provider_doubles.fal import FalDouble
from tests.provider_doubles.pixeldojo import API_KEY as PIXELDOJO_KEY
from tests.provider_doubles.pixeldojo import PixelDojoDouble

FUNDS = 1000


def png(width: int, height: int, colour: tuple[int, int, int] = (30, 140, 90)) -> bytes:
    """A PNG with a gradient (so a pan shows) of the given size."""
    image = Image.new("RGB", (width, height), colour)
    for x in range(0, width, max(1, width // 32)):
        image.paste((x * 255 // width, colour[1], 255 - x * 255 // width), (x, 0, x + 8, height))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def stored(p: Harness, data: bytes) -> NormalizedImage:
    image = check_image(data, filename="test.png")
    p.service.media.store_image(image)
    return image


async def fund(p: Harness, user: int = 7) -> None:
    await p.ledger.issue_to_member(1, user, FUNDS, key=f"seed:{user}")


def eachlabs_only(double: EachLabsDouble) -> ProviderFactory:
    def build(http: ProviderHttp) -> dict[str, VideoProvider]:
        settings = EachLabsSettings(api_key=SecretStr(EACHLABS_KEY), base_url=double.api_base)
        return {"eachlabs": EachLabsProvider(settings, http)}

    return build


async def test_local_animation_follows_the_image_aspect(tmp_path: Path) -> None:
    def build(http: ProviderHttp) -> dict[str, VideoProvider]:
        settings = LocalSettings(render_s=0.2)
        return {"local": LocalProvider(settings, http, work_dir=tmp_path / "local")}

    async with pipeline(tmp_path, build, default_provider="local", public=False) as p:
        await fund(p)
        image = stored(p, png(1200, 800))
        receipt = await p.service.submit(
            member(), {"image": image.ref.model_dump(), "duration_s": 3, "resolution": "720p"}
        )
        assert receipt.job.request["aspect_ratio"] == "16:9"  # the nearest label, never sent
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED, JobState.FAILED)
        assert job.state is JobState.DELIVERED, job.error_message
        with av.open(str(p.sink.out_dir / f"{job.id}.mp4")) as clip:
            video = clip.streams.video[0]
            assert (video.width, video.height) == (1080, 720)  # 3:2, the image's own shape


async def test_animation_fails_over_only_to_a_provider_that_can_animate(tmp_path: Path) -> None:
    async with EachLabsDouble() as first, PixelDojoDouble() as text_only, FalDouble() as animator:
        first.next_create(
            "status", 402, {"status": "error", "message": "Insufficient balance"}, times=10
        )

        def build(http: ProviderHttp) -> dict[str, VideoProvider]:
            return {
                "eachlabs": EachLabsProvider(
                    EachLabsSettings(api_key=SecretStr(EACHLABS_KEY), base_url=first.api_base),
                    http,
                ),
                "pixeldojo": PixelDojoProvider(
                    PixelDojoSettings(
                        api_key=SecretStr(PIXELDOJO_KEY), base_url=text_only.api_base
                    ),
                    http,
                ),
                "fal": FalProvider(
                    FalSettings(
                        api_key=SecretStr(FAL_KEY),
                        base_url=animator.base_url,
                        jwks_url=animator.jwks_url,
                    ),
                    http,
                ),
            }

        async with pipeline(
            tmp_path,
            build,
            default_provider="eachlabs",
            provider_chain=("eachlabs", "pixeldojo", "fal"),
        ) as p:
            await fund(p)
            image = stored(p, png(800, 800))
            animation = await p.service.submit(
                member(), {"image": image.ref.model_dump(), "prompt": "it turns", "duration_s": 5}
            )
            text = await p.service.submit(member(), {"prompt": "a fox", "duration_s": 5})
            animated = await p.wait_for_state(animation.job.id, JobState.DELIVERED)
            told = await p.wait_for_state(text.job.id, JobState.DELIVERED)
            assert (animated.provider, told.provider) == ("fal", "pixeldojo")
            [vendor_job] = animator.jobs.values()
            link = vendor_job.request["start_image_url"]
            assert link.startswith(f"{p.url}/media/{animated.id}/{animated.media_token}/")
            assert "aspect_ratio" not in vendor_job.request
            async with p.session.get(link) as resp:  # the vendor fetches the image from the bot
                assert resp.status == 200 and resp.content_type == "image/png"
                assert await resp.read() == image.data
            assert (await p.ledger.audit()).ok


async def test_image_links_need_the_job_token_and_name_its_own_image(tmp_path: Path) -> None:
    async with EachLabsDouble() as double:
        double.default_script = ["processing"]
        async with pipeline(tmp_path, eachlabs_only(double), default_provider="eachlabs") as p:
            await fund(p)
            image = stored(p, png(640, 480))
            other = stored(p, png(480, 640, (200, 20, 20)))
            receipt = await p.service.submit(
                member(), {"image": image.ref.model_dump(), "prompt": "wind", "duration_s": 5}
            )
            job = receipt.job
            await p.wait_for_state(job.id, JobState.RUNNING)
            [vendor_job] = double.jobs.values()
            link = vendor_job.request["input"]["start_image_url"]
            assert link == p.service.media.image_link(job, image.ref)
            base = f"{p.url}/media/{job.id}"
            async with aiohttp.ClientSession() as http:
                for url, status in (
                    (link, 200),
                    (f"{base}/{'0' * 32}/{image.sha256}.png", 404),  # wrong token
                    (f"{base}/{job.media_token}/{other.sha256}.png", 404),  # not this job's
                    (f"{base}/{job.media_token}/{image.sha256}.jpg", 404),
                    (f"{p.url}/media/nosuchjob00/{job.media_token}/{image.sha256}.png", 404),
                ):
                    async with http.get(url) as resp:
                        assert resp.status == status, url
                (p.service.media.images_dir / f"{image.sha256}.png").unlink()
                async with http.get(link) as resp:
                    assert resp.status == 410


async def test_a_missing_image_fails_the_job_before_the_vendor_is_called(tmp_path: Path) -> None:
    async with (
        EachLabsDouble() as double,
        pipeline(tmp_path, eachlabs_only(double), default_provider="eachlabs") as p,
    ):
        await fund(p)
        ref = check_image(png(640, 640), filename="gone.png").ref  # checked, never stored
        receipt = await p.service.submit(
            member(), {"image": ref.model_dump(), "prompt": "spin", "duration_s": 5}
        )
        job = await p.wait_for_state(receipt.job.id, JobState.FAILED)
        assert job.error_message is not None and "cannot be read" in job.error_message
        assert double.creates == 0
        balance = await p.ledger.balance(AccountRef.member(1, 7))
        assert (balance.available, balance.pending) == (FUNDS, 0)


async def test_images_are_kept_while_their_job_may_still_send_them(tmp_path: Path) -> None:
    clock = OffsetClock()
    async with (
        EachLabsDouble() as double,
        pipeline(
            tmp_path,
            eachlabs_only(double),
            default_provider="eachlabs",
            clock=clock,
            start=False,
            deadline_s=7 * 86400,
        ) as p,
    ):
        p.service.open_intake()  # queued, never sent: the image must stay
        await fund(p)
        waiting = stored(p, png(700, 400))
        unused = stored(p, png(400, 700, (10, 10, 200)))
        await p.service.submit(
            member(), {"image": waiting.ref.model_dump(), "prompt": "pan", "duration_s": 5}
        )
        clock.advance(seconds=2 * 86400)  # past the harness's one-day retention
        await p.service.sweep()
        images = p.service.media.images_dir
        assert (images / f"{waiting.sha256}.png").exists()
        assert not (images / f"{unused.sha256}.png").exists()


def test_reusing_a_stored_image_renews_it_and_a_pruned_one_is_named(tmp_path: Path) -> None:
    clock = ManualClock()
    store = MediaStore(tmp_path, None, retention_s=3600, max_total_bytes=10**9, clock=clock)
    image = check_image(png(500, 500), filename="a.png")
    path = store.store_image(image)
    now_s = clock.now_ms() / 1000
    os.utime(path, (now_s - 7200, now_s - 7200))
    parsed = VideoRequest.model_validate({"image": image.ref.model_dump(), "prompt": "x"})
    assert store.reuse_images(parsed) == []
    assert now_s - path.stat().st_mtime < 60  # renewed: not pruned as two hours old
    assert store.prune() == []
    path.unlink()
    [missing] = store.reuse_images(parsed)
    assert "no longer kept" in missing and "kept 1 hour after" in missing
    store.store_image(image)  # the same image again: stored once, under its hash
    assert [p.name for p in store.images_dir.iterdir()] == [f"{image.sha256}.png"]
