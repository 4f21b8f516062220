"""Read the basic properties of a video file with PyAV."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.container import InputContainer

from bot.media.errors import MediaError

# Demuxers that turn still images or text into a one-frame "video" stream.
_NON_VIDEO_FORMATS = frozenset({"image2", "tty", "bin", "idf", "xbin", "adf"})
_NON_VIDEO_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})
# A video whose packets end this much earlier than its header claims is truncated.
_TRUNCATION_TOLERANCE = 0.9


@dataclass(frozen=True)
class MediaInfo:
    """Basic properties of a video file (first video and first audio stream)."""

    duration_s: float
    width: int
    height: int
    fps: float
    has_audio: bool
    video_codec: str
    audio_codec: str | None
    size_bytes: int


def probe(path: Path) -> MediaInfo:
    """Describe the video at ``path``.

    The whole file is demuxed (not decoded) so that truncated files are
    detected, and the first video frame is decoded to prove the stream is
    readable. Raises :class:`MediaError` for a missing, empty, truncated or
    non-video file.
    """
    try:
        size_bytes = path.stat().st_size
    except FileNotFoundError:
        raise MediaError(f"{path.name}: file not found") from None
    except OSError as exc:
        raise MediaError(f"{path.name}: cannot read file ({exc.strerror})") from None
    if not path.is_file():
        raise MediaError(f"{path.name}: not a regular file")
    if size_bytes == 0:
        raise MediaError(f"{path.name}: file is empty")

    try:
        with av.open(str(path), mode="r") as container:
            return _probe_container(container, path, size_bytes)
    except MediaError:
        raise
    except Exception as exc:  # PyAV raises many error types on malformed input.
        raise MediaError(f"{path.name}: not a readable video file") from exc


def _probe_container(container: InputContainer, path: Path, size_bytes: int) -> MediaInfo:
    if not container.streams.video:
        raise MediaError(f"{path.name}: file has no video stream")
    video = container.streams.video[0]
    audio = container.streams.audio[0] if container.streams.audio else None
    format_name = container.format.name
    if (
        format_name in _NON_VIDEO_FORMATS
        or format_name.endswith("_pipe")
        or video.codec_context.name in _NON_VIDEO_CODECS
    ):
        raise MediaError(f"{path.name}: not a video file (it looks like an image or text)")

    # Walk all packets: finds the real end of the video and proves the file is complete.
    video_start: float | None = None
    video_end = 0.0
    n_video_packets = 0
    n_audio_packets = 0
    decoded_frame = False
    codec_context = video.codec_context
    streams = [video] if audio is None else [video, audio]
    for packet in container.demux(streams):
        if packet.size == 0:  # flush packet at end of stream
            continue
        if packet.is_corrupt:
            raise MediaError(f"{path.name}: file is truncated or its data is corrupt")
        if packet.stream_index != video.index:
            n_audio_packets += 1
            continue
        n_video_packets += 1
        if packet.pts is not None:
            tb = packet.time_base
            start = float(packet.pts * tb)
            end = float((packet.pts + max(packet.duration or 0, 0)) * tb)
            video_start = start if video_start is None else min(video_start, start)
            video_end = max(video_end, end)
        if not decoded_frame:
            decoded_frame = bool(codec_context.decode(packet))
    if not decoded_frame:
        decoded_frame = bool(codec_context.decode(None))
    if n_video_packets == 0 or not decoded_frame:
        raise MediaError(f"{path.name}: video stream contains no decodable frames")

    packets_s = video_end - (video_start or 0.0)
    stream_s = _stream_duration_s(video.duration, video.time_base)
    container_s = container.duration / av.time_base if container.duration else None
    # Only trust header-declared durations (MP4/MOV, Matroska/WebM), not bitrate estimates.
    header_s = container_s if ("mov" in format_name or "matroska" in format_name) else None
    declared_s = stream_s or header_s
    if (video.frames and n_video_packets < video.frames) or (
        audio is not None and audio.frames and n_audio_packets < audio.frames
    ):
        raise MediaError(f"{path.name}: file is truncated")
    if declared_s and packets_s < declared_s * _TRUNCATION_TOLERANCE:
        raise MediaError(f"{path.name}: file is truncated")
    duration_s = container_s or stream_s or packets_s
    if not duration_s or duration_s <= 0:
        raise MediaError(f"{path.name}: video has no duration")

    if codec_context.width <= 0 or codec_context.height <= 0:
        raise MediaError(f"{path.name}: video has no frame size")

    rate = video.average_rate or video.guessed_rate or video.base_rate
    fps = float(rate) if rate else n_video_packets / duration_s
    return MediaInfo(
        duration_s=duration_s,
        width=codec_context.width,
        height=codec_context.height,
        fps=fps,
        has_audio=audio is not None,
        video_codec=codec_context.name,
        audio_codec=audio.codec_context.name if audio is not None else None,
        size_bytes=size_bytes,
    )


def _stream_duration_s(duration: int | None, time_base: Fraction | None) -> float | None:
    if not duration or time_base is None or duration <= 0:
        return None
    return float(duration * time_base)
