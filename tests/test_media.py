"""bot.media: real encodes and decodes with PyAV (no mocks, except one injected crash)."""

from __future__ import annotations

import asyncio
import filecmp
import os
import pickle
import signal
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from bot.media import (
    CannotFitError,
    MediaError,
    MediaInfo,
    RenderStopped,
    Transcoder,
    probe,
    render_preview,
    shrink_to_fit,
)
from bot.media import render as render_module
from bot.media import transcode as transcode_module
from bot.pipeline import fit_clip
from bot.pipeline.delivery import FittedClip
from bot.settings import Settings

MIB = 1024 * 1024
PROMPT = "A red fox trots through a snowy birch forest at dawn, low sun, cinematic, 35mm film"


@dataclass(frozen=True)
class Decoded:
    n_frames: int
    width: int
    height: int
    duration_s: float
    audio_streams: int
    audio_rate_hz: int | None
    audio_channels: int | None
    first: np.ndarray
    middle: np.ndarray
    last: np.ndarray


def decode(path: Path) -> Decoded:
    """Decode every video frame (and all audio) to prove the file plays end to end."""
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="gray"))
        if audio is not None:
            container.seek(0)
            n_samples = sum(f.samples for f in container.decode(audio=0))
            assert n_samples > 0
        assert container.duration is not None
        return Decoded(
            n_frames=len(frames),
            width=video.codec_context.width,
            height=video.codec_context.height,
            duration_s=container.duration / av.time_base,
            audio_streams=len(container.streams.audio),
            audio_rate_hz=audio.codec_context.sample_rate if audio is not None else None,
            audio_channels=audio.codec_context.channels if audio is not None else None,
            first=frames[0],
            middle=frames[len(frames) // 2],
            last=frames[-1],
        )


def changed(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def only_file(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def make_noisy_clip(
    path: Path,
    *,
    width: int,
    height: int,
    duration_s: float,
    fps: int,
    audio: bool = True,
    block_px: int = 1,
) -> None:
    """A deliberately large H.264 (+ AAC) clip: scrolling random noise (in blocks of `block_px`
    pixels, coarser noise is cheaper to encode) at a low CRF."""
    rng = np.random.default_rng(7)
    n_frames = round(duration_s * fps)
    with av.open(str(path), mode="w") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "16"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio_stream = out.add_stream("aac", rate=48_000) if audio else None
        if audio_stream is not None:
            audio_stream.layout = "stereo"
        rows, cols = -(-height * 3 // 2 // block_px), -(-width // block_px)
        coarse = rng.integers(0, 256, (rows, cols), np.uint8)
        noise = np.repeat(np.repeat(coarse, block_px, axis=0), block_px, axis=1)
        noise = noise[: height * 3 // 2, :width]
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.roll(noise, 7 * i, axis=1), format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio_stream is None:
            return
        total = round(duration_s * 48_000)
        for start in range(0, total, 1024):
            n = min(1024, total - start)
            samples = (rng.standard_normal((2, n)) * 0.1).astype(np.float32)
            chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
            chunk.sample_rate, chunk.pts, chunk.time_base = 48_000, start, Fraction(1, 48_000)
            out.mux(audio_stream.encode(chunk))
        out.mux(audio_stream.encode(None))


@pytest.fixture(scope="module")
def clip_5s(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MediaInfo, float]:
    """One 5 s 1280x720 render with audio, shared by several tests."""
    out = tmp_path_factory.mktemp("clip5") / "preview.mp4"
    started = time.perf_counter()
    info = render_preview(out, prompt=PROMPT, duration_s=5, width=1280, height=720, audio=True)
    return out, info, time.perf_counter() - started


@pytest.fixture(scope="module")
def noisy_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("noisy") / "noisy.mp4"
    make_noisy_clip(path, width=640, height=360, duration_s=4, fps=24)
    return path


# --- render_preview ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "duration_s", "audio"),
    [(1280, 720, 1.5, True), (720, 1280, 1.0, False), (720, 720, 1.0, True)],
    ids=["16:9", "9:16", "1:1"],
)
def test_render_aspect_ratios(
    tmp_path: Path, width: int, height: int, duration_s: float, audio: bool
) -> None:
    out = tmp_path / "clip.mp4"
    info = render_preview(
        out, prompt=PROMPT, duration_s=duration_s, width=width, height=height, audio=audio
    )
    assert only_file(tmp_path) == ["clip.mp4"]
    assert (info.width, info.height, info.fps) == (width, height, 24.0)
    assert info.has_audio is audio
    assert info.video_codec == "h264"
    assert info.audio_codec == ("aac" if audio else None)
    assert info.size_bytes == out.stat().st_size
    assert abs(info.duration_s - duration_s) <= 1 / 24

    decoded = decode(out)
    assert (decoded.width, decoded.height) == (width, height)
    assert decoded.n_frames == round(duration_s * 24)
    assert abs(decoded.duration_s - duration_s) <= 1 / 24
    assert decoded.audio_streams == (1 if audio else 0)
    if audio:
        assert (decoded.audio_rate_hz, decoded.audio_channels) == (48_000, 2)
    assert changed(decoded.first, decoded.middle) > 2  # animated, not a still
    assert changed(decoded.middle, decoded.last) > 2


def test_render_5s_720p(clip_5s: tuple[Path, MediaInfo, float]) -> None:
    out, info, elapsed_s = clip_5s
    print(f"5 s 1280x720 render: {elapsed_s:.2f} s, {info.size_bytes / 1e6:.2f} MB")
    assert abs(info.duration_s - 5) <= 1 / 24
    assert info.size_bytes < 4_000_000
    decoded = decode(out)
    assert decoded.n_frames == 120
    assert changed(decoded.first, decoded.last) > 2
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.codec_context.profile is not None


def test_render_is_faststart(clip_5s: tuple[Path, MediaInfo, float]) -> None:
    head = clip_5s[0].read_bytes()
    assert 0 <= head.find(b"moov") < head.find(b"mdat")


def test_render_1080p_and_long_prompt(tmp_path: Path) -> None:
    out = tmp_path / "big.mp4"
    prompt = ("an extremely detailed prompt with many words " * 80)[:2600]
    info = render_preview(
        out, prompt=prompt, duration_s=0.5, width=1920, height=1080, audio=False, fps=30
    )
    assert (info.width, info.height, info.fps) == (1920, 1080, 30.0)
    assert decode(out).n_frames == 15


def test_render_prompt_wrap_truncates_with_ellipsis() -> None:
    font, lines, line_h = render_module._fit_paragraph("word " * 2000, 300, 200, 240)
    assert lines and lines[-1].endswith("…")
    assert len(lines) * line_h <= 200
    assert all(font.getlength(line) <= 300 for line in lines)
    _, short_lines, _ = render_module._fit_paragraph("hello world", 300, 200, 240)
    assert short_lines == ["hello world"]
    _, split, _ = render_module._fit_paragraph("x" * 400, 300, 2000, 240)
    assert "".join(split) == "x" * 400


def test_render_small_frame_and_empty_prompt(tmp_path: Path) -> None:
    out = tmp_path / "tiny.mp4"
    info = render_preview(out, prompt=" \n\t ", duration_s=0.25, width=64, height=96, audio=True)
    assert (info.width, info.height, info.has_audio) == (64, 96, True)
    assert decode(out).n_frames == 6


@pytest.mark.parametrize("size", [(1279, 720), (1280, 721), (0, 720), (8000, 720)])
def test_render_rejects_bad_sizes(tmp_path: Path, size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match=r"frame size|even"):
        render_preview(
            tmp_path / "x.mp4", prompt="p", duration_s=1, width=size[0], height=size[1], audio=False
        )
    assert only_file(tmp_path) == []


def test_render_crash_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"previous")
    real_frame = render_module._Scene.frame
    calls = 0

    def crashing_frame(self: render_module._Scene, t_s: float) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls > 10:
            raise RuntimeError("simulated crash")
        return real_frame(self, t_s)

    monkeypatch.setattr(render_module._Scene, "frame", crashing_frame)
    with pytest.raises(RuntimeError, match="simulated crash"):
        render_preview(out, prompt=PROMPT, duration_s=1, width=320, height=240, audio=True)
    assert only_file(tmp_path) == ["clip.mp4"]
    assert out.read_bytes() == b"previous"


def test_render_stops_when_asked_and_leaves_nothing(tmp_path: Path) -> None:
    """Asked mid-clip (from the 11th frame on), the render stops before the next frame."""
    out = tmp_path / "clip.mp4"
    stop = threading.Event()
    real_frame = render_module._Scene.frame
    frames = 0

    def counting_frame(self: render_module._Scene, t_s: float) -> np.ndarray:
        nonlocal frames
        frames += 1
        if frames == 10:
            stop.set()  # as LocalProvider.close() does from the event loop's thread
        return real_frame(self, t_s)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(render_module._Scene, "frame", counting_frame)
        with pytest.raises(RenderStopped, match="stopped at frame 10 of 120"):
            render_preview(
                out, prompt=PROMPT, duration_s=5, width=320, height=240, audio=True, stop=stop
            )
    assert frames == 10
    assert only_file(tmp_path) == []


# --- probe ---------------------------------------------------------------------------------


def test_probe_errors(tmp_path: Path, clip_5s: tuple[Path, MediaInfo, float]) -> None:
    data = clip_5s[0].read_bytes()
    cases = {
        "missing.mp4": None,
        "empty.mp4": b"",
        "half.mp4": data[: len(data) // 2],
        "last_byte_cut.mp4": data[:-1],
        "no_header.mp4": data[4096:],
        "notes.txt": b"just some notes, not a video\n" * 200,
        "notes.mp4": b"just some notes, not a video\n" * 200,
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(MediaError) as excinfo:
            probe(tmp_path / name)
        assert name in str(excinfo.value)
    with pytest.raises(MediaError, match="not a regular file"):
        probe(tmp_path)


def test_probe_rejects_still_image(tmp_path: Path) -> None:
    image = tmp_path / "still.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    with pytest.raises(MediaError, match="not a video"):
        probe(image)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.one_of(
        st.binary(min_size=1, max_size=2048),
        st.tuples(st.integers(0, 40_000), st.binary(max_size=64), st.integers(0, 40_000)),
    )
)
def test_probe_arbitrary_bytes_only_media_error(
    tmp_path: Path, clip_5s: tuple[Path, MediaInfo, float], data: bytes | tuple[int, bytes, int]
) -> None:
    if isinstance(data, tuple):  # a real MP4 with some bytes overwritten, then cut short
        offset, patch, cut = data
        original = clip_5s[0].read_bytes()
        body = original[:offset] + patch + original[offset + len(patch) :]
        data = body[: max(1, len(body) - cut)]
    path = tmp_path / "fuzz.mp4"
    path.write_bytes(data)
    try:
        info = probe(path)
    except MediaError:
        return
    assert info.duration_s > 0 and info.width > 0 and info.height > 0


# --- shrink_to_fit -------------------------------------------------------------------------


def test_shrink_keeps_audio_duration_and_plays(tmp_path: Path, noisy_clip: Path) -> None:
    src = probe(noisy_clip)
    assert src.size_bytes > 5_000_000
    max_bytes = 1_000_000
    dst = tmp_path / "fit.mp4"
    started = time.perf_counter()
    info = shrink_to_fit(noisy_clip, dst, max_bytes=max_bytes)
    elapsed_s = time.perf_counter() - started
    print(
        f"shrink {src.size_bytes / 1e6:.1f} MB -> {info.size_bytes / 1e6:.2f} MB: {elapsed_s:.2f} s"
    )
    assert only_file(tmp_path) == ["fit.mp4"]
    assert info.size_bytes == dst.stat().st_size <= max_bytes
    assert info.has_audio and info.audio_codec == "aac" and info.video_codec == "h264"
    assert info.fps == src.fps
    assert abs(info.duration_s - src.duration_s) <= 1 / src.fps
    decoded = decode(dst)
    assert decoded.n_frames == 96
    assert decoded.audio_streams == 1


def test_shrink_scales_down_for_small_budgets(tmp_path: Path, noisy_clip: Path) -> None:
    dst = tmp_path / "small.mp4"
    info = shrink_to_fit(noisy_clip, dst, max_bytes=120_000)
    assert info.size_bytes <= 120_000
    assert (info.width, info.height) == (426, 240)  # min_height, aspect kept, even
    assert info.has_audio
    assert abs(info.duration_s - 4) <= 1 / 24
    assert decode(dst).n_frames == 96


def test_shrink_portrait_keeps_aspect(tmp_path: Path) -> None:
    src = tmp_path / "portrait.mp4"
    render_preview(src, prompt=PROMPT, duration_s=2, width=720, height=1280, audio=True)
    dst = tmp_path / "portrait_fit.mp4"
    info = shrink_to_fit(src, dst, max_bytes=150_000)
    assert info.size_bytes <= 150_000
    assert info.width % 2 == 0 and info.height % 2 == 0
    assert 240 <= info.width < 720
    assert abs(info.height / info.width - 1280 / 720) < 0.02
    assert info.has_audio
    assert abs(info.duration_s - 2) <= 1 / 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["portrait.mp4", "portrait_fit.mp4"]


def test_shrink_impossible_limit(tmp_path: Path, noisy_clip: Path) -> None:
    dst = tmp_path / "nope.mp4"
    with pytest.raises(CannotFitError) as excinfo:
        shrink_to_fit(noisy_clip, dst, max_bytes=20_000)
    error = excinfo.value
    assert error.max_bytes == 20_000 and error.best_bytes > 20_000
    assert "20 KB" in str(error)
    assert only_file(tmp_path) == []
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.max_bytes, clone.best_bytes, str(clone)) == (20_000, error.best_bytes, str(error))


def test_shrink_copies_when_it_already_fits(
    tmp_path: Path, clip_5s: tuple[Path, MediaInfo, float]
) -> None:
    src, src_info, _ = clip_5s
    dst = tmp_path / "copy.mp4"
    info = shrink_to_fit(src, dst, max_bytes=src_info.size_bytes)
    assert info == src_info
    assert filecmp.cmp(src, dst, shallow=False)
    assert only_file(tmp_path) == ["copy.mp4"]


def test_shrink_rejects_bad_arguments(tmp_path: Path, noisy_clip: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        shrink_to_fit(noisy_clip, tmp_path / "x.mp4", max_bytes=0)
    with pytest.raises(MediaError, match="not found"):
        shrink_to_fit(tmp_path / "missing.mp4", tmp_path / "x.mp4", max_bytes=1000)
    assert only_file(tmp_path) == []


# --- two-pass fitting: every output under the limit, full, with the source's duration and aspect


def assert_fitted(src: Path, dst: Path, max_bytes: int, *, fill_min: float = 0.95) -> MediaInfo:
    """`dst` is at most `max_bytes` and at least `fill_min` of it, and plays end to end with the
    duration (within 0.1 s) and aspect ratio (within a pixel of rounding) of `src`."""
    source, info = probe(src), probe(dst)
    assert fill_min * max_bytes <= info.size_bytes == dst.stat().st_size <= max_bytes
    decoded = decode(dst)
    assert abs(decoded.duration_s - source.duration_s) <= 0.1
    assert abs(info.duration_s - source.duration_s) <= 0.1
    assert decoded.n_frames == round(source.duration_s * source.fps)
    aspect = source.width / source.height
    assert abs(info.width / info.height - aspect) <= aspect * 2 / min(info.width, info.height)
    assert info.width % 2 == 0 and info.height % 2 == 0
    return info


def test_shrink_fills_the_allowance(tmp_path: Path, noisy_clip: Path) -> None:
    for max_bytes in (400_000, 1_500_000):
        dst = tmp_path / f"fit-{max_bytes}.mp4"
        info = shrink_to_fit(noisy_clip, dst, max_bytes=max_bytes)
        assert_fitted(noisy_clip, dst, max_bytes)
        assert info.has_audio
    assert only_file(tmp_path) == ["fit-1500000.mp4", "fit-400000.mp4"]  # no stats left


def test_shrink_clip_without_audio(tmp_path: Path) -> None:
    src = tmp_path / "silent.mp4"
    make_noisy_clip(src, width=320, height=240, duration_s=2, fps=24, audio=False)
    assert not probe(src).has_audio
    dst = tmp_path / "fit.mp4"
    info = shrink_to_fit(src, dst, max_bytes=200_000)
    assert_fitted(src, dst, 200_000)
    assert not info.has_audio and decode(dst).audio_streams == 0


def test_shrink_portrait_fills_and_keeps_aspect(tmp_path: Path) -> None:
    src = tmp_path / "portrait.mp4"
    make_noisy_clip(src, width=360, height=640, duration_s=2, fps=24)
    dst = tmp_path / "fit.mp4"
    info = shrink_to_fit(src, dst, max_bytes=300_000)
    assert_fitted(src, dst, 300_000)
    assert info.height > info.width and info.has_audio


def test_shrink_1080p_to_1_mib_scales_down(tmp_path: Path) -> None:
    """1 MiB cannot keep 1080p for a 5 s clip: the frame is scaled down (aspect kept, short
    side at least 240) and the result still fills the allowance."""
    src = tmp_path / "big.mp4"
    make_noisy_clip(src, width=1920, height=1080, duration_s=5, fps=24, block_px=8)
    assert probe(src).size_bytes > MIB
    dst = tmp_path / "fit.mp4"
    info = shrink_to_fit(src, dst, max_bytes=MIB)
    assert_fitted(src, dst, MIB)
    assert 240 <= info.height < 1080 and info.width < 1920
    assert info.has_audio


def test_shrink_rejects_files_that_are_not_videos(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_bytes(b"just some notes, not a video\n" * 2000)
    image = tmp_path / "still.png"
    Image.new("RGB", (640, 360), (200, 30, 30)).save(image)
    for src in (text, image):
        with pytest.raises(MediaError, match=src.name):
            shrink_to_fit(src, tmp_path / "out.mp4", max_bytes=1000)
    assert only_file(tmp_path) == ["notes.mp4", "still.png"]


def test_plan_picks_slower_presets_for_less_work() -> None:
    def info(width: int, height: int, duration_s: float) -> MediaInfo:
        return MediaInfo(duration_s, width, height, 24.0, True, "h264", "aac", 10**9)

    big = transcode_module.plan_for(info(1920, 1080, 15), 10 * MIB)
    assert (big.width, big.height, big.preset, big.keep_audio) == (1920, 1080, "veryfast", True)
    small = transcode_module.plan_for(info(1920, 1080, 15), MIB)
    assert small.preset == "fast" and small.height < 1080
    assert abs(small.width / small.height - 16 / 9) < 0.02
    short = transcode_module.plan_for(info(1280, 720, 5), MIB // 2)
    assert short.preset == "medium" and short.height < 720
    tiny = transcode_module.plan_for(info(1920, 1080, 15), 40_000)  # audio would starve video
    assert not tiny.keep_audio and (tiny.width, tiny.height) == (426, 240)


# --- Transcoder and fit_clip: worker processes, a concurrency limit, the fitting hook ---------


@pytest.fixture(scope="module")
def tiny_clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("tiny")
    paths = [folder / f"tiny-{n}.mp4" for n in range(3)]
    for path in paths:
        make_noisy_clip(path, width=160, height=96, duration_s=1, fps=24)
    return paths


async def test_transcoder_concurrency_limit_holds(tmp_path: Path, tiny_clips: list[Path]) -> None:
    for limit in (1, 2):
        transcoder = Transcoder(limit)
        try:
            results = await asyncio.gather(
                *(
                    transcoder.shrink(src, tmp_path / f"{limit}-{src.name}", max_bytes=60_000)
                    for src in tiny_clips
                )
            )
        finally:
            transcoder.close()
        assert transcoder.peak_running == limit and transcoder.running == 0
        assert len({r.pid for r in results}) <= limit  # no more worker processes than the limit
        assert all(r.pid != os.getpid() for r in results)  # and not this process
        for result in results:  # at no worker's start were `limit` others still running
            overlapping = [
                other
                for other in results
                if other is not result and other.started_ns <= result.started_ns < other.ended_ns
            ]
            assert len(overlapping) < limit
            assert result.info.size_bytes <= 60_000 and result.cpu_s > 0


async def test_transcoder_rejects_bad_limit() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Transcoder(0)


async def test_transcoder_passes_errors_and_survives_a_killed_worker(
    tmp_path: Path, tiny_clips: list[Path], noisy_clip: Path
) -> None:
    transcoder = Transcoder(1)
    try:
        not_video = tmp_path / "notes.mp4"
        not_video.write_bytes(b"not a video\n" * 100)
        with pytest.raises(MediaError, match=r"notes\.mp4"):
            await transcoder.shrink(not_video, tmp_path / "a.mp4", max_bytes=1000)
        with pytest.raises(CannotFitError) as excinfo:
            await transcoder.shrink(tiny_clips[0], tmp_path / "b.mp4", max_bytes=2_000)
        assert excinfo.value.max_bytes == 2_000

        started = asyncio.Event()

        async def kill_worker() -> None:
            started.set()

        dst = tmp_path / "killed.mp4"
        job = asyncio.create_task(
            transcoder.shrink(noisy_clip, dst, max_bytes=300_000, on_start=kill_worker)
        )
        await started.wait()
        while not transcoder.worker_pids():  # the worker is started by the submission
            await asyncio.sleep(0.01)
        for pid in transcoder.worker_pids():
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(MediaError, match="stopped"):
            await job
        assert only_file(tmp_path) == ["notes.mp4"]  # no partial output, no stats

        again = await transcoder.shrink(tiny_clips[1], tmp_path / "c.mp4", max_bytes=60_000)
        assert again.info.size_bytes <= 60_000
    finally:
        transcoder.close()


async def test_fit_clip_hook_runs_only_for_a_reencode(
    tmp_path: Path, tiny_clips: list[Path]
) -> None:
    transcoder = Transcoder(1)
    calls: list[int] = []

    async def on_fitting() -> None:
        calls.append(transcoder.running)

    src = tiny_clips[2]
    fitted = tmp_path / "fitted" / "clip-60000.mp4"
    try:
        as_is = await fit_clip(
            src, src.stat().st_size, fitted, transcoder=transcoder, on_fitting=on_fitting
        )
        assert as_is == FittedClip(src, False) and calls == [] and not fitted.exists()

        made = await fit_clip(src, 60_000, fitted, transcoder=transcoder, on_fitting=on_fitting)
        assert made == FittedClip(fitted, True) and calls == [1]
        assert_fitted(src, fitted, 60_000, fill_min=0.0)
        mtime = fitted.stat().st_mtime_ns

        # After a restart the fitted copy is reused: no re-encode, no hook.
        again = await fit_clip(src, 60_000, fitted, transcoder=transcoder, on_fitting=on_fitting)
        assert again == FittedClip(fitted, True) and calls == [1]
        assert fitted.stat().st_mtime_ns == mtime

        async def failing_hook() -> None:
            raise RuntimeError("status edit failed")

        other = tmp_path / "fitted" / "clip-50000.mp4"
        still = await fit_clip(src, 50_000, other, transcoder=transcoder, on_fitting=failing_hook)
        assert still == FittedClip(other, True) and other.stat().st_size <= 50_000
    finally:
        transcoder.close()


def test_transcode_concurrency_setting() -> None:
    assert Settings(_env_file=None).transcode_concurrency == 1
    assert Settings(_env_file=None, transcode_concurrency=3).transcode_concurrency == 3
    with pytest.raises(ValidationError, match="transcode_concurrency"):
        Settings(_env_file=None, transcode_concurrency=0)


async def test_transcoder_close_abandons_a_reencode_cleanly(
    tmp_path: Path, noisy_clip: Path
) -> None:
    transcoder = Transcoder(1)
    started = asyncio.Event()

    async def on_start() -> None:
        started.set()

    dst = tmp_path / "fitted.mp4"
    dst.write_bytes(b"before")
    job = asyncio.create_task(
        transcoder.shrink(noisy_clip, dst, max_bytes=300_000, on_start=on_start)
    )
    await started.wait()
    await asyncio.to_thread(transcoder.close)
    with pytest.raises(MediaError, match="stopped"):
        await job
    assert only_file(tmp_path) == ["fitted.mp4"] and dst.read_bytes() == b"before"
