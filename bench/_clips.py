"""Realistic test clips and how close a re-encode is to its source, for bench/transcode.py.

A clip is a 1/f-noise texture (the spectrum of natural images) panning at a sub-pixel speed, a
textured disc moving across it, and fresh film grain on every frame, encoded with libx264 near
10 Mb/s like a Kling v3 Pro clip at 1080p, with stereo AAC audio (a tone and noise). A flat or
repeating pattern would compress far better than a real clip and flatter any encoder.

SSIM is ffmpeg's (and x264's): 8x8 windows at a 4-pixel step on each plane, the planes weighted
by their pixel counts ("All"); PSNR is of the mean squared error over all frames and planes. A
re-encode smaller than its source is scaled back up (bicubic) before the comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

FPS = 24
SOURCE_BITRATE_BPS = 10_000_000
AUDIO_RATE_HZ = 48_000


def _pink(rng: np.random.Generator, height: int, width: int, alpha: float) -> NDArray[np.float32]:
    """Zero-mean, unit-variance noise whose amplitude spectrum falls as 1/f**alpha."""
    spectrum = np.fft.rfft2(rng.standard_normal((height, width)).astype(np.float32))
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fx * fx + fy * fy)
    radius[0, 0] = 1.0
    spectrum /= radius**alpha
    spectrum[0, 0] = 0
    out: NDArray[np.float32] = np.fft.irfft2(spectrum, s=(height, width)).astype(np.float32)
    out /= out.std()
    return out


def _crop(
    plane: NDArray[np.float32], x: float, y: float, height: int, width: int
) -> NDArray[np.float32]:
    """A height x width window of `plane` at (x, y), bilinear for the sub-pixel part."""
    ix, iy = int(x), int(y)
    fx, fy = x - ix, y - iy
    top = plane[iy : iy + height, ix : ix + width] * (1 - fx)
    top += plane[iy : iy + height, ix + 1 : ix + width + 1] * fx
    bottom = plane[iy + 1 : iy + height + 1, ix : ix + width] * (1 - fx)
    bottom += plane[iy + 1 : iy + height + 1, ix + 1 : ix + width + 1] * fx
    return top * (1 - fy) + bottom * fy


def make_clip(
    path: Path,
    *,
    width: int,
    height: int,
    duration_s: float,
    audio: bool = True,
    bitrate_bps: int = SOURCE_BITRATE_BPS,
    seed: int = 1,
) -> None:
    """Write a realistic H.264 (+ AAC) MP4 clip to `path` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n_frames = round(duration_s * FPS)
    speed_x, speed_y = 2.7, 0.9  # pixels per frame: a slow diagonal pan
    tex_h, tex_w = (
        height + math.ceil(speed_y * n_frames) + 4,
        width + math.ceil(speed_x * n_frames) + 4,
    )
    luma = _pink(rng, tex_h, tex_w, 1.0) * 40 + 120
    chroma_u = _pink(rng, tex_h // 2 + 2, tex_w // 2 + 2, 1.5) * 14 + 128
    chroma_v = _pink(rng, tex_h // 2 + 2, tex_w // 2 + 2, 1.5) * 14 + 128
    disc_px = max(16, min(width, height) // 4) // 2 * 2
    disc = _pink(rng, disc_px, disc_px, 0.8) * 30 + 175
    half = disc_px / 2
    yy, xx = np.mgrid[0:disc_px, 0:disc_px] - half + 0.5
    mask = np.clip((half - np.sqrt(xx * xx + yy * yy)) / 3, 0, 1).astype(np.float32)
    with av.open(str(path), mode="w") as out:
        video = out.add_stream("libx264", rate=FPS, options={"preset": "faster"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.bit_rate = bitrate_bps
        video.codec_context.thread_type = "FRAME"
        sound = out.add_stream("aac", rate=AUDIO_RATE_HZ) if audio else None
        if sound is not None:
            sound.layout = "stereo"
            sound.bit_rate = 128_000
        for i in range(n_frames):
            x, y = speed_x * i, speed_y * i
            frame_y = _crop(luma, x, y, height, width)
            phase = 2 * math.pi * i / max(n_frames, 1)
            ox = int((width - disc_px) * (0.5 + 0.45 * math.sin(phase)))
            oy = int((height - disc_px) * (0.5 + 0.4 * math.sin(2 * phase)))
            region = frame_y[oy : oy + disc_px, ox : ox + disc_px]
            region += (disc - region) * mask
            frame_y += rng.standard_normal((height, width), dtype=np.float32) * 4  # grain
            planes = np.empty((height * 3 // 2, width), np.uint8)
            planes[:height] = np.clip(frame_y, 0, 255)
            quarter = height // 4
            for k, chroma in enumerate((chroma_u, chroma_v)):
                part = _crop(chroma, x / 2, y / 2, height // 2, width // 2)
                rows = slice(height + k * quarter, height + (k + 1) * quarter)
                planes[rows] = np.clip(part, 0, 255).reshape(quarter, width)
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            _add_audio(out, sound, rng, duration_s)


def _add_audio(
    out: av.container.OutputContainer,
    stream: av.AudioStream,
    rng: np.random.Generator,
    duration_s: float,
) -> None:
    total = round(duration_s * AUDIO_RATE_HZ)
    t = np.arange(total) / AUDIO_RATE_HZ
    tone = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2
    left = tone + 0.05 * rng.standard_normal(total)
    right = tone + 0.05 * rng.standard_normal(total)
    for start in range(0, total, 1024):
        end = min(total, start + 1024)
        samples = np.stack([left[start:end], right[start:end]]).astype(np.float32)
        chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
        chunk.sample_rate, chunk.pts = AUDIO_RATE_HZ, start
        chunk.time_base = Fraction(1, AUDIO_RATE_HZ)
        out.mux(stream.encode(chunk))
    out.mux(stream.encode(None))


# -- quality -----------------------------------------------------------------------------------

_C1 = (0.01 * 255) ** 2 * 64
_C2 = (0.03 * 255) ** 2 * 64 * 63


@dataclass(frozen=True)
class Quality:
    ssim: float  # mean over frames of the plane-weighted SSIM
    psnr_db: float
    frames: int


def _sum8(plane: NDArray[np.int32]) -> NDArray[np.float64]:
    """Sums over 8x8 windows at a 4-pixel step (exact: every sum fits an int32)."""
    h, w = plane.shape[0] // 4 * 4, plane.shape[1] // 4 * 4
    part = plane[:h, :w]
    rows = part[:, 0::4] + part[:, 1::4] + part[:, 2::4] + part[:, 3::4]
    blocks = rows[0::4] + rows[1::4] + rows[2::4] + rows[3::4]
    windows = blocks[:-1, :-1] + blocks[1:, :-1] + blocks[:-1, 1:] + blocks[1:, 1:]
    as_float: NDArray[np.float64] = windows.astype(np.float64)
    return as_float


def plane_ssim(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    """ffmpeg's SSIM of one plane."""
    x, y = a.astype(np.int32), b.astype(np.int32)
    s1, s2 = _sum8(x), _sum8(y)
    ss, s12 = _sum8(x * x + y * y), _sum8(x * y)
    variance = ss * 64 - s1 * s1 - s2 * s2
    covariance = s12 * 64 - s1 * s2
    ssim = (2 * s1 * s2 + _C1) * (2 * covariance + _C2)
    ssim /= (s1 * s1 + s2 * s2 + _C1) * (variance + _C2)
    return float(ssim.mean())


def _planes(frame: av.VideoFrame, width: int, height: int) -> list[NDArray[np.uint8]]:
    scaled = frame.reformat(width, height, "yuv420p", interpolation="BICUBIC")
    data: NDArray[np.uint8] = scaled.to_ndarray()  # type: ignore[assignment]
    quarter = height // 4
    return [
        data[:height],
        data[height : height + quarter].reshape(height // 2, width // 2),
        data[height + quarter :].reshape(height // 2, width // 2),
    ]


def compare(source: Path, encoded: Path) -> Quality:
    """SSIM and PSNR of `encoded` against `source`, frame by frame."""
    ssims: list[float] = []
    squared = np.zeros(3)
    counts = np.zeros(3)
    with av.open(str(source)) as ref, av.open(str(encoded)) as dist:
        ref_video, dist_video = ref.streams.video[0], dist.streams.video[0]
        ref_video.thread_type = dist_video.thread_type = "AUTO"
        width, height = ref_video.codec_context.width, ref_video.codec_context.height
        for ref_frame, dist_frame in zip(
            ref.decode(ref_video), dist.decode(dist_video), strict=False
        ):
            ref_planes = _planes(ref_frame, width, height)
            dist_planes = _planes(dist_frame, width, height)
            per_plane = [plane_ssim(a, b) for a, b in zip(ref_planes, dist_planes, strict=True)]
            ssims.append((4 * per_plane[0] + per_plane[1] + per_plane[2]) / 6)
            for k, (a, b) in enumerate(zip(ref_planes, dist_planes, strict=True)):
                diff = a.astype(np.int32) - b.astype(np.int32)
                squared[k] += float(np.einsum("ij,ij->", diff, diff, dtype=np.int64))
                counts[k] += diff.size
    mse = float(squared.sum() / counts.sum())
    psnr = 10 * math.log10(255**2 / mse) if mse > 0 else math.inf
    return Quality(float(np.mean(ssims)), psnr, len(ssims))
