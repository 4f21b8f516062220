"""Re-encode a clip so that it fits an upload size limit."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.video.frame import PictureType
from av.video.reformatter import Interpolation, VideoReformatter

from bot.media._files import atomic_output
from bot.media.errors import CannotFitError, MediaError
from bot.media.probe import MediaInfo, probe

AUDIO_BITRATE_BPS = 64_000
CONTAINER_OVERHEAD = 0.04  # fraction of max_bytes reserved for MP4 boxes
FIXED_OVERHEAD_BYTES = 2_048
TARGET_BITS_PER_PIXEL = 0.1  # below this the frame is scaled down
MIN_BITS_PER_PIXEL = 0.02  # never encode below this, even at the minimum size
MAX_RETRIES = 3
_X264_PRESET = "veryfast"
_SAFETY = 0.95  # aim this far below the measured allowance on a retry
_AAC_RATES_HZ = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})


@dataclass(frozen=True)
class _Encoded:
    size_bytes: int
    video_bytes: int
    audio_bytes: int


def shrink_to_fit(src: Path, dst: Path, *, max_bytes: int, min_height: int = 240) -> MediaInfo:
    """Write a copy of ``src`` to ``dst`` that is at most ``max_bytes`` long.

    If ``src`` already fits it is copied byte for byte (no re-encode). Otherwise
    it is re-encoded to H.264 (libx264 ABR with maxrate/bufsize) + 64 kb/s AAC
    MP4, keeping frame timing and duration; the frame is scaled down (aspect
    kept, even sizes) when the bitrate budget is too small for the resolution,
    but its short side never goes below ``min_height`` (so 240 means "240p" for
    portrait clips too). Audio is kept unless its bits would push the video
    below ``MIN_BITS_PER_PIXEL`` at the minimum size. An oversized result is
    re-encoded (at most ``MAX_RETRIES`` times) with a budget corrected by the
    measured overshoot. Everything is streamed frame by frame; ``dst`` is
    written via a temporary file and an atomic rename.

    Raises ValueError for bad arguments, MediaError if ``src`` is unreadable and
    CannotFitError (nothing written to ``dst``) if no attempt fits.
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

    duration_s = info.duration_s
    fps = info.fps if info.fps > 0 else 24.0
    min_w, min_h = _scaled_size(info.width, info.height, min_height / min(info.width, info.height))
    floor_bps = MIN_BITS_PER_PIXEL * min_w * min_h * fps
    usable_bits = (max_bytes * (1 - CONTAINER_OVERHEAD) - FIXED_OVERHEAD_BYTES) * 8
    keep_audio = info.has_audio and usable_bits / duration_s - AUDIO_BITRATE_BPS >= floor_bps
    target_bps = usable_bits / duration_s - (AUDIO_BITRATE_BPS if keep_audio else 0)

    best_bytes = info.size_bytes
    with atomic_output(dst) as tmp:
        for _attempt in range(1 + MAX_RETRIES):
            video_bps = max(target_bps, floor_bps)
            width, height = _choose_size(info, video_bps, fps, min_height)
            result = _encode(src, tmp, width, height, video_bps, keep_audio=keep_audio)
            best_bytes = min(best_bytes, result.size_bytes)
            if result.size_bytes <= max_bytes:
                break
            # Scale the video budget by how far off this attempt was.
            overhead = result.size_bytes - result.video_bytes - result.audio_bytes
            allowed = max_bytes - overhead - result.audio_bytes
            target_bps = video_bps * allowed / max(result.video_bytes, 1) * _SAFETY
            if keep_audio and target_bps < floor_bps:
                keep_audio = False
                target_bps += result.audio_bytes * 8 / duration_s * _SAFETY
            elif video_bps <= floor_bps:
                break  # already at the quality floor: a lower target will not help
        if best_bytes > max_bytes:
            raise CannotFitError(max_bytes, best_bytes)
    return probe(dst)


def _scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    scale = min(1.0, scale)
    return max(2, round(width * scale) // 2 * 2), max(2, round(height * scale) // 2 * 2)


def _choose_size(info: MediaInfo, video_bps: float, fps: float, min_short: int) -> tuple[int, int]:
    """Largest size (<= source) whose bits per pixel reach the target, short side >= min."""
    max_pixels = video_bps / (TARGET_BITS_PER_PIXEL * fps)
    scale = math.sqrt(max_pixels / (info.width * info.height))
    scale = max(scale, min_short / min(info.width, info.height))
    return _scaled_size(info.width, info.height, scale)


def _encode(
    src: Path, dst: Path, width: int, height: int, video_bps: float, *, keep_audio: bool
) -> _Encoded:
    """One streaming decode -> scale -> encode pass from ``src`` to ``dst``."""
    video_bytes = audio_bytes = 0
    try:
        with (
            av.open(str(src), mode="r") as inp,
            av.open(str(dst), mode="w", format="mp4", options={"movflags": "+faststart"}) as out,
        ):
            in_video = inp.streams.video[0]
            in_video.thread_type = "AUTO"
            rate = in_video.average_rate or in_video.guessed_rate or Fraction(24)
            bps = int(video_bps)
            out_video = out.add_stream(
                "libx264",
                rate=rate,
                options={
                    "preset": _X264_PRESET,
                    "maxrate": str(bps),
                    "bufsize": str(bps // 2),
                },
            )
            out_video.width = width
            out_video.height = height
            out_video.pix_fmt = "yuv420p"
            out_video.bit_rate = bps
            time_base = in_video.time_base or Fraction(1, 90_000)
            out_video.codec_context.time_base = time_base

            in_audio = inp.streams.audio[0] if keep_audio and inp.streams.audio else None
            out_audio = None
            if in_audio is not None:
                in_rate = in_audio.codec_context.sample_rate
                out_audio = out.add_stream(
                    "aac", rate=in_rate if in_rate in _AAC_RATES_HZ else 48_000
                )
                out_audio.layout = "mono" if in_audio.codec_context.channels == 1 else "stereo"
                out_audio.bit_rate = AUDIO_BITRATE_BPS

            reformatter = VideoReformatter()
            next_pts = 0
            streams = [in_video] if in_audio is None else [in_video, in_audio]
            for packet in inp.demux(streams):
                if packet.stream.index == in_video.index:  # (stream_index is 0 on flush packets)
                    for frame in in_video.decode(packet):
                        scaled = reformatter.reformat(
                            frame, width, height, "yuv420p", interpolation=Interpolation.AREA
                        )
                        scaled.pts = frame.pts if frame.pts is not None else next_pts
                        scaled.time_base = time_base
                        scaled.pict_type = PictureType.NONE  # let x264 choose frame types
                        next_pts = scaled.pts + 1
                        for out_packet in out_video.encode(scaled):
                            video_bytes += out_packet.size
                            out.mux(out_packet)
                elif in_audio is not None and out_audio is not None:
                    for audio_frame in in_audio.decode(packet):
                        for out_packet in out_audio.encode(audio_frame):
                            audio_bytes += out_packet.size
                            out.mux(out_packet)
            for out_packet in out_video.encode(None):
                video_bytes += out_packet.size
                out.mux(out_packet)
            if out_audio is not None:
                for out_packet in out_audio.encode(None):
                    audio_bytes += out_packet.size
                    out.mux(out_packet)
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"could not re-encode {src.name}: {exc}") from exc
    return _Encoded(dst.stat().st_size, video_bytes, audio_bytes)
