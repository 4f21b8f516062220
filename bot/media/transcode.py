"""Re-encode a clip so that it fills, and never exceeds, an upload size limit.

Two-pass x264 (through PyAV's bundled libx264 and its stats file): a fast first pass measures
how hard each frame is to code and encodes the audio once to learn its exact size; the second
pass spends exactly the bits that are left on the video. x264 lands the second pass within about
a percent of its target, so the result fills the allowance to ``FILL_MIN``-100 % in one second
pass; a miss is corrected with at most ``MAX_EXTRA_PASSES`` further second passes (the first
pass's stats are reused), and the largest attempt that fits is kept.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.codec.context import Flags
from av.video.frame import PictureType
from av.video.reformatter import Interpolation, VideoReformatter

from bot.media._files import atomic_output, temp_path_for
from bot.media.errors import CannotFitError, MediaError
from bot.media.probe import MediaInfo, probe

AUDIO_BITRATE_BPS = 64_000
TARGET_BITS_PER_PIXEL = 0.1  # below this the frame is scaled down
MIN_BITS_PER_PIXEL = 0.02  # never encode below this, even at the minimum size
AIM = 0.985  # fraction of the allowance the second pass aims at
FILL_MIN = 0.95  # a result below this fraction of the allowance is encoded again
MAX_EXTRA_PASSES = 2  # second passes after the first one, to correct a miss
# MP4 boxes: a fixed part plus about this much per sample (stsz, ctts, stts, stss, stco).
CONTAINER_FIXED_BYTES = 4_096
CONTAINER_BYTES_PER_PACKET = 16
# x264 presets from slowest to fastest, with the encoding work (output pixels x frames) up to
# which each is used: small outputs get a slower, better preset; a 1080p clip of more than 5 s
# gets veryfast, the speed of the baseline (ffmpeg's two-pass veryfast), with 3 reference frames
# instead of 1 (+4 % CPU; +0.002 SSIM on bench/transcode.py's textured, grainy pan).
_PRESETS_BY_WORK: tuple[tuple[str, str, float], ...] = (
    ("medium", "", 60_000_000),  # e.g. 5 s at 1280x720 or 15 s at 640x360, 24 fps
    ("fast", "", 120_000_000),
    ("faster", "", 250_000_000),  # e.g. 5 s at 1920x1080
    ("veryfast", "ref=3", math.inf),
)
_AAC_RATES_HZ = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})


@dataclass(frozen=True)
class Plan:
    """How a clip will be re-encoded."""

    width: int
    height: int
    keep_audio: bool
    preset: str
    x264_params: str  # on top of the preset
    video_bps: float  # the estimated video bitrate
    floor_bps: float  # the lowest video bitrate still worth encoding


@dataclass(frozen=True)
class _FirstPass:
    video_packets: int
    audio_packets: int
    audio_bytes: int


@dataclass(frozen=True)
class _Encoded:
    size_bytes: int
    video_bytes: int


def shrink_to_fit(src: Path, dst: Path, *, max_bytes: int, min_height: int = 240) -> MediaInfo:
    """Write a copy of ``src`` to ``dst`` that is at most ``max_bytes`` long.

    If ``src`` already fits it is copied byte for byte (no re-encode). Otherwise it is
    re-encoded to H.264 (two-pass libx264) + 64 kb/s AAC MP4 that fills ``FILL_MIN``-100 % of
    ``max_bytes``, keeping frame timing and duration; the frame is scaled down (aspect kept,
    even sizes) when the bitrate budget is too small for the resolution, but its short side
    never goes below ``min_height`` (so 240 means "240p" for portrait clips too). Audio is kept
    unless its bits would push the video below ``MIN_BITS_PER_PIXEL`` at the minimum size. The
    x264 preset follows the amount of work (see ``plan_for``). Everything is streamed frame by
    frame; ``dst`` is written via a temporary file and an atomic rename, and the stats files of
    the first pass are removed.

    Raises ValueError for bad arguments, MediaError if ``src`` is unreadable or not a video and
    CannotFitError (nothing written to ``dst``) if even the smallest encode is too large.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if min_height < 2:
        raise ValueError(f"min_height must be at least 2, got {min_height}")
    info = probe(src)
    if info.size_bytes <= max_bytes:
        if not (dst.exists() and dst.samefile(src)):
            try:
                with atomic_output(dst) as tmp:
                    shutil.copyfile(src, tmp)
            except OSError as exc:
                raise MediaError(f"could not copy {src.name} to {dst.name}: {exc}") from exc
        return info

    plan = plan_for(info, max_bytes, min_height)
    duration_s, floor_bps = info.duration_s, plan.floor_bps
    with atomic_output(dst) as tmp, _stats_file(dst) as stats:
        first = _first_pass(src, stats, plan, plan.video_bps)
        overhead = CONTAINER_FIXED_BYTES + CONTAINER_BYTES_PER_PACKET * (
            first.video_packets + first.audio_packets
        )
        video_bytes = max_bytes * AIM - overhead - first.audio_bytes
        video_bps = max(video_bytes * 8 / duration_s, floor_bps)
        attempts: list[_Attempt] = []
        try:
            for _attempt in range(1 + MAX_EXTRA_PASSES):
                out = temp_path_for(dst)
                try:
                    encoded = _second_pass(src, out, stats, plan, video_bps)
                except _Refused:
                    out.unlink(missing_ok=True)
                    if _best(attempts, max_bytes) is not None:
                        break
                    smallest = min((a.encoded.size_bytes for a in attempts), default=None)
                    raise CannotFitError(max_bytes, smallest or info.size_bytes) from None
                except BaseException:
                    out.unlink(missing_ok=True)
                    raise
                attempts.append(_Attempt(video_bps, encoded, out))
                best = _best(attempts, max_bytes)
                if best is not None and best.encoded.size_bytes >= FILL_MIN * max_bytes:
                    break
                next_bps = _next_bps(attempts, max_bytes, floor_bps)
                if next_bps is None:
                    break
                video_bps = next_bps
            best = _best(attempts, max_bytes)
            if best is None:
                raise CannotFitError(max_bytes, min(a.encoded.size_bytes for a in attempts))
            best.path.replace(tmp)
        finally:
            for attempt in attempts:
                attempt.path.unlink(missing_ok=True)
    return probe(dst)


class _Refused(Exception):
    """x264 would not start the second pass at this bitrate (below what it can reach)."""


@dataclass(frozen=True)
class _Attempt:
    video_bps: float
    encoded: _Encoded
    path: Path


def _best(attempts: list[_Attempt], max_bytes: int) -> _Attempt | None:
    """The largest attempt that fits."""
    fitting = [a for a in attempts if a.encoded.size_bytes <= max_bytes]
    return max(fitting, key=lambda a: a.encoded.size_bytes, default=None)


def _next_bps(attempts: list[_Attempt], max_bytes: int, floor_bps: float) -> float | None:
    """The video bitrate of the next second pass, aiming at ``AIM`` of ``max_bytes``: between
    the closest attempts on either side of it (linearly), else scaled from the last one; None
    when another pass cannot help (the floor is reached, or x264 does not spend more bits)."""
    target = max_bytes * AIM
    below = [a for a in attempts if a.encoded.size_bytes <= target]
    above = [a for a in attempts if a.encoded.size_bytes > target]
    last = attempts[-1]
    if below and above:
        lo = max(below, key=lambda a: a.encoded.size_bytes)
        hi = min(above, key=lambda a: a.encoded.size_bytes)
        share = (target - lo.encoded.size_bytes) / (hi.encoded.size_bytes - lo.encoded.size_bytes)
        next_bps = lo.video_bps + (hi.video_bps - lo.video_bps) * share
    else:
        others = last.encoded.size_bytes - last.encoded.video_bytes
        scale = (target - others) / max(last.encoded.video_bytes, 1)
        next_bps = last.video_bps * scale
    next_bps = max(next_bps, floor_bps)
    if next_bps <= floor_bps and last.video_bps <= floor_bps:
        return None  # already at the quality floor
    if below and not above and len(below) > 1:
        grown = below[-1].encoded.size_bytes / below[-2].encoded.size_bytes
        if below[-1].video_bps > below[-2].video_bps and grown < 1.01:
            return None  # more bitrate bought no more bytes: x264 has what it needs
    return next_bps


def plan_for(info: MediaInfo, max_bytes: int, min_height: int = 240) -> Plan:
    """The frame size, audio choice, preset and bitrates for fitting ``info`` into
    ``max_bytes``."""
    fps = info.fps if info.fps > 0 else 24.0
    duration_s = info.duration_s
    min_w, min_h = _scaled_size(info.width, info.height, min_height / min(info.width, info.height))
    floor_bps = MIN_BITS_PER_PIXEL * min_w * min_h * fps
    n_frames = max(1, round(duration_s * fps))
    n_packets = n_frames + (duration_s * 48_000 / 1024 if info.has_audio else 0)
    usable_bits = (max_bytes * AIM - CONTAINER_FIXED_BYTES) * 8
    usable_bits -= CONTAINER_BYTES_PER_PACKET * n_packets * 8
    keep_audio = info.has_audio and usable_bits / duration_s - AUDIO_BITRATE_BPS >= floor_bps
    video_bps = max(usable_bits / duration_s - (AUDIO_BITRATE_BPS if keep_audio else 0), floor_bps)
    width, height = _choose_size(info, video_bps, fps, min_height)
    work = width * height * n_frames
    preset, params = next((name, params) for name, params, most in _PRESETS_BY_WORK if work <= most)
    return Plan(width, height, keep_audio, preset, params, video_bps, floor_bps)


def _scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    scale = min(1.0, scale)
    return max(2, round(width * scale) // 2 * 2), max(2, round(height * scale) // 2 * 2)


def _choose_size(info: MediaInfo, video_bps: float, fps: float, min_short: int) -> tuple[int, int]:
    """Largest size (<= source) whose bits per pixel reach the target, short side >= min."""
    max_pixels = video_bps / (TARGET_BITS_PER_PIXEL * fps)
    scale = math.sqrt(max_pixels / (info.width * info.height))
    scale = max(scale, min_short / min(info.width, info.height))
    return _scaled_size(info.width, info.height, scale)


@contextmanager
def _stats_file(dst: Path) -> Iterator[Path]:
    """A temporary path for x264's two-pass stats; it and x264's side files are removed."""
    stats = temp_path_for(dst).with_suffix(".x264stats")
    try:
        yield stats
    finally:
        for suffix in ("", ".temp", ".mbtree", ".mbtree.temp"):
            stats.with_name(stats.name + suffix).unlink(missing_ok=True)


def _video_options(plan: Plan, stats: Path, *, second: bool) -> dict[str, str]:
    options = {"preset": plan.preset, "stats": str(stats), "fastfirstpass": "1"}
    if second and plan.x264_params:  # (x264-params would override the fast first pass)
        options["x264-params"] = plan.x264_params
    return options


def _first_pass(src: Path, stats: Path, plan: Plan, video_bps: float) -> _FirstPass:
    """Analyse the video into ``stats`` (packets discarded) and encode the audio to count it."""
    counts = {"video": 0, "audio": 0}
    audio_bytes = 0
    try:
        with av.open(str(src), mode="r") as inp:
            in_video = inp.streams.video[0]
            encoder = av.CodecContext.create("libx264", "w")
            _configure_video(encoder, in_video, plan, video_bps)
            encoder.flags |= Flags.pass1
            encoder.options = _video_options(plan, stats, second=False)
            in_audio = inp.streams.audio[0] if plan.keep_audio and inp.streams.audio else None
            audio = _audio_encoder(in_audio) if in_audio is not None else None
            audio_encode = audio.encode if audio is not None else None
            for kind, packets in _transcode(inp, in_video, encoder.encode, plan, audio_encode):
                counts[kind] += len(packets)
                if kind == "audio":
                    audio_bytes += sum(p.size for p in packets)
            del encoder  # x264 writes the stats file out when it is freed
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"could not analyse {src.name}: {exc}") from exc
    if not stats.exists():
        raise MediaError(f"could not analyse {src.name}: x264 wrote no stats")
    return _FirstPass(counts["video"], counts["audio"], audio_bytes)


def _second_pass(src: Path, dst: Path, stats: Path, plan: Plan, video_bps: float) -> _Encoded:
    """Encode ``src`` into ``dst`` at ``video_bps`` with the first pass's stats."""
    video_bytes = 0
    try:
        with (
            av.open(str(src), mode="r") as inp,
            av.open(str(dst), mode="w", format="mp4", options={"movflags": "+faststart"}) as out,
        ):
            in_video = inp.streams.video[0]
            rate = in_video.average_rate or in_video.guessed_rate or Fraction(24)
            out_video = out.add_stream("libx264", rate=rate)
            _configure_video(out_video.codec_context, in_video, plan, video_bps)
            out_video.codec_context.flags |= Flags.pass2
            out_video.codec_context.options = _video_options(plan, stats, second=True)
            try:
                out_video.codec_context.open()
            except av.FFmpegError as exc:  # x264: "requested bitrate is too low"
                raise _Refused(str(exc)) from exc
            in_audio = inp.streams.audio[0] if plan.keep_audio and inp.streams.audio else None
            audio_encode = None
            if in_audio is not None:
                template = _audio_encoder(in_audio)
                out_audio = out.add_stream("aac", rate=template.sample_rate)
                out_audio.layout = template.layout
                out_audio.bit_rate = AUDIO_BITRATE_BPS
                audio_encode = out_audio.encode
            for kind, packets in _transcode(inp, in_video, out_video.encode, plan, audio_encode):
                if kind == "video":
                    video_bytes += sum(p.size for p in packets)
                out.mux(packets)
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"could not re-encode {src.name}: {exc}") from exc
    return _Encoded(dst.stat().st_size, video_bytes)


def _configure_video(
    encoder: av.VideoCodecContext, in_video: av.VideoStream, plan: Plan, video_bps: float
) -> None:
    encoder.width = plan.width
    encoder.height = plan.height
    encoder.pix_fmt = "yuv420p"
    encoder.thread_type = "FRAME"  # PyAV's default, slices, costs quality
    encoder.thread_count = 0  # x264 picks (1.5 x cores)
    encoder.bit_rate = int(video_bps)
    encoder.time_base = in_video.time_base or Fraction(1, 90_000)
    encoder.framerate = in_video.average_rate or in_video.guessed_rate or Fraction(24)


def _audio_encoder(in_audio: av.AudioStream) -> av.AudioCodecContext:
    in_rate = in_audio.codec_context.sample_rate
    encoder = av.CodecContext.create("aac", "w")
    encoder.sample_rate = in_rate if in_rate in _AAC_RATES_HZ else 48_000
    encoder.layout = "mono" if in_audio.codec_context.channels == 1 else "stereo"
    encoder.format = "fltp"
    encoder.bit_rate = AUDIO_BITRATE_BPS
    encoder.time_base = Fraction(1, encoder.sample_rate)
    return encoder


_Encode = Callable[[Any], "list[av.Packet[Any]]"]


def _transcode(
    inp: av.container.InputContainer,
    in_video: av.VideoStream,
    encode_video: _Encode,
    plan: Plan,
    encode_audio: _Encode | None,
) -> Iterator[tuple[str, list[av.Packet[Any]]]]:
    """Decode -> scale -> encode, streaming: yields ("video"|"audio", packets) as they come."""
    in_video.thread_type = "AUTO"
    time_base = in_video.time_base or Fraction(1, 90_000)
    reformatter = VideoReformatter()
    next_pts = 0
    in_audio = inp.streams.audio[0] if encode_audio is not None else None
    streams = [in_video] if in_audio is None else [in_video, in_audio]
    for packet in inp.demux(streams):
        if packet.stream.index == in_video.index:  # (stream_index is 0 on flush packets)
            for frame in in_video.decode(packet):
                scaled = reformatter.reformat(
                    frame, plan.width, plan.height, "yuv420p", interpolation=Interpolation.AREA
                )
                scaled.pts = frame.pts if frame.pts is not None else next_pts
                scaled.time_base = time_base
                scaled.pict_type = PictureType.NONE  # let x264 choose frame types
                next_pts = scaled.pts + 1
                yield "video", encode_video(scaled)
        elif in_audio is not None and encode_audio is not None:
            for audio_frame in in_audio.decode(packet):
                yield "audio", encode_audio(audio_frame)
    yield "video", encode_video(None)
    if encode_audio is not None:
        yield "audio", encode_audio(None)
