"""Image-to-video on every provider: each double receives the image in its vendor's documented
field and form (URL, raw base64, data URI, upload), without `aspect_ratio` where the vendor
ignores or lacks it; PixelDojo and AIHubMax refuse before any request, naming who can."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from bot.media.images import NormalizedImage, check_image, save_image
from bot.providers import image_to_video_providers
from bot.providers.aihubmax import AIHubMaxProvider
from bot.providers.base import ProviderJob, ProviderState, VideoProvider
from bot.providers.capabilities import CAPABILITIES
from bot.providers.eachlabs import EachLabsProvider
from bot.providers.errors import ErrorKind, ProviderError
from bot.providers.fal import FalProvider
from bot.providers.http import ProviderHttp
from bot.providers.images import ImageInput, ImageInputs
from bot.providers.kling import KlingProvider
from bot.providers.local import LocalProvider
from bot.providers.novita import NovitaProvider
from bot.providers.pixeldojo import PixelDojoProvider
from bot.providers.replicate import ReplicateProvider
from bot.providers.segmind import SegmindProvider
from bot.request import ImageRef, Shot, VideoRequest
from bot.settings import (
    AIHubMaxSettings,
    EachLabsSettings,
    FalSettings,
    KlingSettings,
    LocalSettings,
    NovitaSettings,
    PixelDojoSettings,
    ProviderSettings,
    ReplicateSettings,
    SegmindSettings,
)
from tests.provider_doubles import eachlabs, fal, kling, novita, replicate, segmind
from tests.provider_doubles.base import RecordedRequest, decode_data_uri
from tests.provider_support import free_port, http

__all__ = ["http"]
PUBLIC = "https://bot.example/media/job-1/tok/image.png"
PUBLIC_END = "https://bot.example/media/job-1/tok/end.png"


def png(width: int, height: int, color: tuple[int, int, int]) -> NormalizedImage:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return check_image(out.getvalue(), filename="frame.png")


def noisy_png(width: int, height: int) -> NormalizedImage:
    """A PNG that does not compress: well over 1 MB."""
    pixels = np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "PNG")
    return check_image(out.getvalue())


START = png(640, 360, (220, 40, 40))
END = png(640, 360, (40, 40, 220))


def request_for(
    start: NormalizedImage = START, end: NormalizedImage | None = None, **fields: Any
) -> VideoRequest:
    data: dict[str, Any] = {
        "prompt": "The fox turns its head toward the camera",
        "duration_s": 5,
        "audio": False,
        "resolution": "1080p",
        "image": start.ref,
        "end_image": end.ref if end else None,
        **fields,
    }
    request = VideoRequest.model_validate(data)
    assert request.problems() == []
    return request


def inputs(
    start: NormalizedImage = START, end: NormalizedImage | None = None, *, public: bool = False
) -> ImageInputs:
    return ImageInputs(
        start=ImageInput(start.data, start.mime, PUBLIC if public else None),
        end=ImageInput(end.data, end.mime, PUBLIC_END if public else None) if end else None,
    )


def data_uri_bytes(value: Any, mime: str = "image/png") -> bytes:
    decoded = decode_data_uri(value)
    assert decoded is not None and decoded[0] == mime, value[:40]
    return decoded[1]


def only_create(requests: list[RecordedRequest]) -> RecordedRequest:
    [create] = [r for r in requests if r.method == "POST"]
    return create


# -- the canonical request ----------------------------------------------------------------------


def test_an_image_request_takes_the_image_aspect_and_needs_no_prompt() -> None:
    portrait = png(360, 640, (0, 0, 0))
    request = VideoRequest.model_validate({"image": portrait.ref})
    assert request.aspect_ratio == "9:16" and request.problems() == []
    assert "360×640" in request.summary
    chosen = VideoRequest.model_validate({"image": portrait.ref, "aspect_ratio": "16:9"})
    assert chosen.problems() == [
        "The video takes the image's own aspect ratio (360×640): leave the aspect ratio out."
    ]
    stored = VideoRequest.model_validate(request.model_dump(mode="json"))
    assert stored == request  # the job's JSON round-trips


def test_end_frames_and_shots_do_not_mix() -> None:
    request = VideoRequest.model_validate(
        {
            "image": START.ref,
            "end_image": END.ref,
            "duration_s": 5,
            "shots": [{"prompt": "a", "duration_s": 2}, {"prompt": "b", "duration_s": 3}],
        }
    )
    assert request.problems() == ["An end frame cannot be combined with multiple shots."]
    alone = VideoRequest.model_validate({"prompt": "x", "end_image": END.ref})
    assert alone.problems() == ["An end frame needs a start image too."]


def test_the_capability_table() -> None:
    assert image_to_video_providers() == [
        "kling",
        "eachlabs",
        "novita",
        "segmind",
        "fal",
        "replicate",
        "local",
    ]
    assert image_to_video_providers(["pixeldojo", "fal", "local"]) == ["fal", "local"]
    for name in ("pixeldojo", "aihubmax"):
        assert not CAPABILITIES[name].image_to_video and not CAPABILITIES[name].end_frame
    for name in image_to_video_providers():
        caps = CAPABILITIES[name]
        assert caps.end_frame and caps.image_forms
        assert caps.image_max_bytes >= 10 * 1024 * 1024 and caps.image_min_side_px == 300
        assert caps.image_max_aspect == 2.5
    no_prompt = VideoRequest.model_validate({"image": START.ref})
    assert CAPABILITIES["kling"].problems(no_prompt) == []
    assert CAPABILITIES["local"].problems(no_prompt) == []
    assert CAPABILITIES["fal"].problems(no_prompt) == [
        "fal.ai needs a prompt with the image: say how it should move."
    ]


# -- vendors that cannot: refused before anything is sent --------------------------------------


@pytest.mark.parametrize(
    ("cls", "settings_cls", "label"),
    [
        (PixelDojoProvider, PixelDojoSettings, "PixelDojo"),
        (AIHubMaxProvider, AIHubMaxSettings, "AIHubMax"),
    ],
)
async def test_vendors_without_image_to_video_refuse_naming_who_can(
    http: ProviderHttp, cls: type[VideoProvider], settings_cls: type[ProviderSettings], label: str
) -> None:
    provider = cls(
        settings_cls(api_key=SecretStr("k"), base_url=f"http://127.0.0.1:{free_port()}"), http
    )
    request = request_for()
    assert CAPABILITIES[provider.name].problems(request) == [
        f"{label} has no documented Kling v3 image-to-video; providers that can animate an"
        " image: Kling, EachLabs, Novita, Segmind, fal.ai, Replicate, The local preview renderer."
    ]
    with pytest.raises(ProviderError) as info:  # a connection attempt would be TRANSIENT
        await provider.submit(request, webhook_url=None, images=inputs())
    assert info.value.kind is ErrorKind.INVALID_INPUT


# -- Kling: raw base64 (or the URL), image2video, no aspect_ratio --------------------------------


@pytest.fixture
async def kling_double() -> AsyncIterator[kling.KlingDouble]:
    async with kling.KlingDouble() as double:
        yield double


def kling_adapter(double: kling.KlingDouble, http: ProviderHttp) -> KlingProvider:
    return KlingProvider(
        KlingSettings(
            access_key=SecretStr(kling.ACCESS_KEY),
            secret_key=SecretStr(kling.SECRET_KEY),
            base_url=double.base_url,
        ),
        http,
    )


async def test_kling_gets_raw_base64_and_polls_the_image_kind(
    kling_double: kling.KlingDouble, http: ProviderHttp
) -> None:
    provider = kling_adapter(kling_double, http)
    sub = await provider.submit(request_for(end=END), webhook_url=None, images=inputs(end=END))
    create = only_create(kling_double.requests)
    assert create.path == "/v1/videos/image2video"
    body = create.json
    assert base64.b64decode(body["image"], validate=True) == START.data  # no data: prefix
    assert base64.b64decode(body["image_tail"], validate=True) == END.data
    assert "aspect_ratio" not in body and body["model_name"] == "kling-v3"
    assert sub.job == ProviderJob(sub.job.id, {"kind": "image2video"})
    statuses = [await provider.poll(sub.job) for _ in range(3)]
    assert statuses[-1].state is ProviderState.SUCCEEDED
    assert kling_double.requests[-1].path == f"/v1/videos/image2video/{sub.job.id}"


async def test_kling_takes_the_public_url_when_there_is_one(
    kling_double: kling.KlingDouble, http: ProviderHttp
) -> None:
    request = request_for(prompt=None)  # the prompt is optional with an image
    await kling_adapter(kling_double, http).submit(
        request, webhook_url=None, images=inputs(public=True)
    )
    body = only_create(kling_double.requests).json
    assert body["image"] == PUBLIC and "prompt" not in body and "aspect_ratio" not in body


async def test_kling_multishot_from_an_image(
    kling_double: kling.KlingDouble, http: ProviderHttp
) -> None:
    shots = (Shot(prompt="the fox looks up", duration_s=2), Shot(prompt="it runs", duration_s=3))
    request = request_for(prompt=None, shots=shots)
    await kling_adapter(kling_double, http).submit(request, webhook_url=None, images=inputs())
    body = only_create(kling_double.requests).json
    assert body["multi_shot"] is True and len(body["multi_prompt"]) == 2 and "image" in body


async def test_an_image_request_without_its_contents_sends_nothing(
    kling_double: kling.KlingDouble, http: ProviderHttp
) -> None:
    with pytest.raises(ProviderError) as info:
        await kling_adapter(kling_double, http).submit(request_for(), webhook_url=None)
    assert info.value.kind is ErrorKind.INVALID_INPUT and kling_double.requests == []


# -- fal: start_image_url / end_image_url, URL or data URI ---------------------------------------


@pytest.mark.parametrize("public", [True, False])
async def test_fal_gets_start_and_end_image_urls(http: ProviderHttp, public: bool) -> None:
    async with fal.FalDouble() as double:
        provider = FalProvider(
            FalSettings(api_key=SecretStr(fal.API_KEY), base_url=double.base_url), http
        )
        sub = await provider.submit(
            request_for(end=END), webhook_url=None, images=inputs(end=END, public=public)
        )
        create = only_create(double.requests)
        assert create.path == "/fal-ai/kling-video/v3/pro/image-to-video"
        body = create.json
        assert "aspect_ratio" not in body
        if public:
            assert (body["start_image_url"], body["end_image_url"]) == (PUBLIC, PUBLIC_END)
        else:
            assert data_uri_bytes(body["start_image_url"]) == START.data
            assert data_uri_bytes(body["end_image_url"]) == END.data
        assert double.jobs[sub.job.id].request == body


# -- Replicate: start_image / end_image, URL, data URI under 1 MB, else the files API -----------


@pytest.fixture
async def replicate_double() -> AsyncIterator[replicate.ReplicateDouble]:
    async with replicate.ReplicateDouble() as double:
        yield double


def replicate_adapter(double: replicate.ReplicateDouble, http: ProviderHttp) -> ReplicateProvider:
    return ReplicateProvider(
        ReplicateSettings(api_key=SecretStr(replicate.API_TOKEN), base_url=double.api_base), http
    )


async def test_replicate_small_images_go_as_data_uris(
    replicate_double: replicate.ReplicateDouble, http: ProviderHttp
) -> None:
    await replicate_adapter(replicate_double, http).submit(
        request_for(end=END), webhook_url=None, images=inputs(end=END)
    )
    data = only_create(replicate_double.requests).json["input"]
    assert data_uri_bytes(data["start_image"]) == START.data
    assert data_uri_bytes(data["end_image"]) == END.data
    assert "aspect_ratio" not in data and replicate_double.files == {}


async def test_replicate_large_images_are_uploaded(
    replicate_double: replicate.ReplicateDouble, http: ProviderHttp
) -> None:
    big = noisy_png(1000, 600)
    assert len(big.data) > replicate.DATA_URI_MAX_BYTES
    await replicate_adapter(replicate_double, http).submit(
        request_for(big), webhook_url=None, images=inputs(big)
    )
    upload, create = [r for r in replicate_double.requests if r.method == "POST"]
    assert upload.path == "/v1/files"
    assert upload.header("Authorization") == f"Bearer {replicate.API_TOKEN}"
    [(mime, stored)] = replicate_double.files.values()
    assert (mime, stored) == ("image/png", big.data)
    data = create.json["input"]
    assert data["start_image"] == f"{replicate_double.api_base}/files/file-0001"
    assert "aspect_ratio" not in data


async def test_replicate_uses_the_public_url(
    replicate_double: replicate.ReplicateDouble, http: ProviderHttp
) -> None:
    big = noisy_png(1000, 600)
    await replicate_adapter(replicate_double, http).submit(
        request_for(big), webhook_url=None, images=inputs(big, public=True)
    )
    data = only_create(replicate_double.requests).json["input"]
    assert data["start_image"] == PUBLIC and replicate_double.files == {}


async def test_the_replicate_double_refuses_large_data_uris(
    replicate_double: replicate.ReplicateDouble, http: ProviderHttp
) -> None:
    big = noisy_png(1000, 600)
    body = {"input": {"prompt": "x", "start_image": ImageInput(big.data, big.mime).data_uri()}}
    reply = await http.call(
        "POST",
        f"{replicate_double.api_base}/models/{replicate.MODEL}/predictions",
        provider="replicate",
        headers={"Authorization": f"Bearer {replicate.API_TOKEN}"},
        json_body=body,
    )
    assert reply.status == 422 and "upload the file" in reply.text


# -- Novita: image / end_image on the i2v endpoint ----------------------------------------------


async def test_novita_gets_image_and_end_image(http: ProviderHttp) -> None:
    async with novita.NovitaDouble() as double:
        provider = NovitaProvider(
            NovitaSettings(api_key=SecretStr(novita.API_KEY), base_url=double.base_url), http
        )
        await provider.submit(request_for(end=END), webhook_url=None, images=inputs(end=END))
        await provider.submit(
            request_for(resolution="720p"), webhook_url=None, images=inputs(public=True)
        )
        first, second = [r for r in double.requests if r.method == "POST"]
        assert first.path == "/v3/async/kling-v3.0-pro-i2v"
        assert data_uri_bytes(first.json["image"]) == START.data
        assert data_uri_bytes(first.json["end_image"]) == END.data
        assert second.path == "/v3/async/kling-v3.0-std-i2v"
        assert second.json["image"] == PUBLIC and "end_image" not in second.json
        assert all("aspect_ratio" not in r.json for r in (first, second))
        without_prompt = request_for(prompt=None)
        with pytest.raises(ProviderError) as info:
            await provider.submit(without_prompt, webhook_url=None, images=inputs())
        assert "Novita needs a prompt" in info.value.detail and double.creates == 2


# -- Segmind: start_image_url on kling-3-pro-image2video ----------------------------------------


async def test_segmind_gets_start_image_url(http: ProviderHttp, tmp_path: Path) -> None:
    async with segmind.SegmindDouble() as double:
        provider = SegmindProvider(
            SegmindSettings(api_key=SecretStr(segmind.API_KEY), base_url=double.base_url),
            http,
            work_dir=tmp_path,
        )
        await provider.submit(request_for(end=END), webhook_url=None, images=inputs(end=END))
        await provider.submit(request_for(), webhook_url=None, images=inputs(public=True))
        first, second = [r for r in double.requests if r.method == "POST"]
        assert first.path == "/v2/kling-3-pro-image2video"
        assert data_uri_bytes(first.json["start_image_url"]) == START.data
        assert data_uri_bytes(first.json["end_image_url"]) == END.data
        assert second.json["start_image_url"] == PUBLIC
        assert all("aspect_ratio" not in r.json for r in (first, second))


# -- EachLabs: kling-v3-pro-image-to-video, start_image_url / end_image_url ---------------------


async def test_eachlabs_gets_start_and_end_image_urls(http: ProviderHttp) -> None:
    async with eachlabs.EachLabsDouble() as double:
        provider = EachLabsProvider(
            EachLabsSettings(api_key=SecretStr(eachlabs.API_KEY), base_url=double.api_base), http
        )
        await provider.submit(request_for(end=END), webhook_url=None, images=inputs(end=END))
        await provider.submit(request_for(), webhook_url=None, images=inputs(public=True))
        first, second = [r for r in double.requests if r.method == "POST"]
        assert first.json["model"] == eachlabs.IMAGE_MODEL
        data = first.json["input"]
        assert data_uri_bytes(data["start_image_url"]) == START.data
        assert data_uri_bytes(data["end_image_url"]) == END.data
        assert second.json["input"]["start_image_url"] == PUBLIC
        assert all("aspect_ratio" not in r.json["input"] for r in (first, second))


# -- local: the image itself, panning, at its own aspect ratio ----------------------------------


def frame_rgb(path: Path, index: int) -> tuple[float, float, float]:
    """The mean colour of frame `index` (negative: from the end) of a clip."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    mean = frames[index].reshape(-1, 3).mean(axis=0)
    return float(mean[0]), float(mean[1]), float(mean[2])


async def test_local_renders_the_image_panning(http: ProviderHttp, tmp_path: Path) -> None:
    provider = LocalProvider(LocalSettings(render_s=0), http, work_dir=tmp_path)
    portrait, portrait_end = png(400, 700, (220, 40, 40)), png(400, 700, (40, 40, 220))
    request = VideoRequest.model_validate(
        {
            "image": portrait.ref,
            "end_image": portrait_end.ref,
            "duration_s": 3,
            "resolution": "720p",
            "audio": False,
        }
    )
    try:
        sub = await provider.submit(
            request, webhook_url=None, images=inputs(portrait, portrait_end)
        )
        task = provider.render_task(sub.job.id)
        assert task is not None
        await task
        status = await provider.poll(sub.job)
        assert status.state is ProviderState.SUCCEEDED and status.video_url
        clip = Path(status.video_url.removeprefix("file://"))
        from bot.media import probe

        info = probe(clip)
        assert (info.width, info.height) == (720, 1260)  # the image's 4:7, short side 720
        first, last = frame_rgb(clip, 0), frame_rgb(clip, -1)
        assert first[0] > 150 and first[2] < 90  # red: the start image
        assert last[2] > 150 and last[0] < 90  # blue: faded into the end image
    finally:
        await provider.close()


async def test_local_restarted_render_finds_its_image(http: ProviderHttp, tmp_path: Path) -> None:
    provider = LocalProvider(LocalSettings(render_s=0), http, work_dir=tmp_path)
    sub = await provider.submit(request_for(), webhook_url=None, images=inputs())
    interrupted = provider.render_task(sub.job.id)
    assert interrupted is not None
    interrupted.cancel()
    await provider.close()
    restarted = LocalProvider(LocalSettings(render_s=0), http, work_dir=tmp_path)
    try:
        assert (await restarted.poll(sub.job)).state is ProviderState.RUNNING  # renders again
        again = restarted.render_task(sub.job.id)
        assert again is not None
        await again
        assert (await restarted.poll(sub.job)).state is ProviderState.SUCCEEDED
    finally:
        await restarted.close()


# -- building the inputs from the stored files --------------------------------------------------


def test_image_inputs_load_the_stored_files(tmp_path: Path) -> None:
    save_image(tmp_path, START)
    save_image(tmp_path, END)
    request = request_for(end=END)
    loaded = ImageInputs.load(request, tmp_path, url_for=lambda ref: f"https://b/{ref.sha256}")
    assert loaded is not None and loaded.start is not None and loaded.end is not None
    assert (loaded.start.data, loaded.start.mime) == (START.data, "image/png")
    assert loaded.start.url == f"https://b/{START.sha256}" and loaded.end.data == END.data
    assert ImageInputs.load(VideoRequest(prompt="x"), tmp_path) is None
    assert "bytes" in repr(loaded.start) and "\\x89PNG" not in repr(loaded.start)


def test_image_inputs_refuse_missing_or_changed_files(tmp_path: Path) -> None:
    request = request_for()
    with pytest.raises(ProviderError) as info:
        ImageInputs.load(request, tmp_path)
    assert info.value.kind is ErrorKind.INVALID_INPUT
    path = save_image(tmp_path, START)
    path.write_bytes(END.data)
    with pytest.raises(ProviderError) as info:
        ImageInputs.load(request, tmp_path)
    assert "hash" in info.value.detail


def test_an_image_ref_is_what_the_job_stores() -> None:
    ref = START.ref
    assert ref == ImageRef(
        sha256=START.sha256,
        mime="image/png",
        width_px=640,
        height_px=360,
        size_bytes=len(START.data),
    )
    assert set(ref.model_dump()) == {"sha256", "mime", "width_px", "height_px", "size_bytes"}


async def test_closing_local_stops_its_render_threads(http: ProviderHttp, tmp_path: Path) -> None:
    """close() stops a render running in a thread: the loop's executor is free at once, and
    the half-made clip is neither kept nor marked failed (a restart renders it again)."""
    provider = LocalProvider(LocalSettings(render_s=0), http, work_dir=tmp_path)
    request = VideoRequest.model_validate(
        {"prompt": "a long render", "duration_s": 15, "resolution": "1080p", "audio": True}
    )
    sub = await provider.submit(request, webhook_url=None)

    async def started() -> bool:  # the encoder has opened its temporary file
        return any(p.name.endswith(".part") for p in tmp_path.iterdir())

    async with asyncio.timeout(30):
        while not await started():
            await asyncio.sleep(0.05)
    await provider.close()
    await asyncio.get_running_loop().shutdown_default_executor()  # waits for the thread
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{sub.job.id}.json"]
