"""Offline preview renderer used by the "local" provider.

Frames are composed directly in YUV 4:2:0 with numpy: an animated gradient,
two moving discs and a progress bar, under a text overlay (label and prompt)
that is rasterised once with Pillow and alpha-blended per frame.
`render_image_preview` animates an image instead: a slow pan across it (and a
cross-fade into the end image when one is given), under the label and counter.

Why one module of this length: the offline renderer draws frames, text and audio for both text and image previews with shared helpers.
"""

from __future__ import annotations

import math
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from bot.media._files import atomic_output
from bot.media.errors import MediaError
from bot.media.probe import MediaInfo, probe

U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
F32 = npt.NDArray[np.float32]
Font = ImageFont.FreeTypeFont

DEFAULT_LABEL = "LOCAL PREVIEW · not AI-generated"
MAX_PROMPT_CHARS = 2500
MIN_DIMENSION_PX = 64
MAX_DIMENSION_PX = 4096
MAX_DURATION_S = 600.0
AUDIO_RATE_HZ = 48_000

_X264_OPTIONS = {"preset": "superfast", "crf": "23"}
_AUDIO_BITRATE_BPS = 96_000
_AUDIO_CHUNK_SAMPLES = 1024
_CHORD_HZ = (220.0, 277.18, 329.63, 440.0)  # A major, soft
_ELLIPSIS = "…"
_REF_FONT_PX = 64
_FONT_DIR = Path(__file__).with_name("fonts")


def render_preview(
    out_path: Path,
    *,
    prompt: str,
    duration_s: float,
    width: int,
    height: int,
    audio: bool,
    fps: int = 24,
    label: str = DEFAULT_LABEL,
    stop: threading.Event | None = None,
) -> MediaInfo:
    """Render a labelled, animated placeholder clip to ``out_path`` (H.264/AAC MP4).

    The clip lasts ``round(duration_s * fps)`` frames, shows ``label``, the
    (wrapped, possibly truncated) ``prompt`` and an elapsed-time counter, and has
    a stereo 48 kHz AAC tone iff ``audio``. The file is written to a temporary
    file next to ``out_path`` and renamed into place. Raises ValueError for bad
    arguments and MediaError if encoding fails; once ``stop`` is set it raises
    RenderStopped before the next frame and writes nothing.
    """
    _check_args(width, height, fps, duration_s)
    n_frames = max(1, round(duration_s * fps))
    scene = _Scene(width, height, prompt=prompt, label=label, total_s=n_frames / fps)
    try:
        with atomic_output(out_path) as tmp:
            _encode(tmp, scene, n_frames=n_frames, fps=fps, audio=audio, stop=stop)
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"could not write the preview clip {out_path.name}: {exc}") from exc
    return probe(out_path)


PAN_ZOOM = 1.15  # the image is scaled to cover the frame this much larger, then panned across
CROSSFADE_FRACTION = 0.3  # with an end image: the last 30% of the clip fades into it


def image_frame_size(image_w: int, image_h: int, short_side_px: int) -> tuple[int, int]:
    """A frame with the image's aspect ratio whose shorter side is ``short_side_px`` (even)."""
    if image_w <= 0 or image_h <= 0:
        raise ValueError(f"image size must be positive, got {image_w}x{image_h}")
    ratio = image_w / image_h
    if ratio >= 1:
        width, height = short_side_px * ratio, float(short_side_px)
    else:
        width, height = float(short_side_px), short_side_px / ratio
    scale = min(1.0, MAX_DIMENSION_PX / max(width, height))
    return _even(width * scale), _even(height * scale)


def render_image_preview(
    out_path: Path,
    *,
    image: Path,
    end_image: Path | None = None,
    duration_s: float,
    width: int,
    height: int,
    audio: bool,
    fps: int = 24,
    label: str = DEFAULT_LABEL,
    stop: threading.Event | None = None,
) -> MediaInfo:
    """Render ``image`` panning (and fading into ``end_image``) as an H.264/AAC MP4.

    Same clip rules as `render_preview` (frame count, label, counter, progress bar,
    audio tone, atomic write); give a frame size with the image's aspect ratio
    (`image_frame_size`). Raises ValueError for bad arguments and MediaError if an
    image cannot be read or encoding fails (RenderStopped once ``stop`` is set).
    """
    _check_args(width, height, fps, duration_s)
    n_frames = max(1, round(duration_s * fps))
    total_s = n_frames / fps
    pan = _Pan(width, height, image, end_image, total_s=total_s)
    scene = _Scene(width, height, prompt="", label=label, total_s=total_s, background=pan)
    try:
        with atomic_output(out_path) as tmp:
            _encode(tmp, scene, n_frames=n_frames, fps=fps, audio=audio, stop=stop)
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"could not write the preview clip {out_path.name}: {exc}") from exc
    return probe(out_path)


def _check_args(width: int, height: int, fps: int, duration_s: float) -> None:
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"width and height must be positive and even, got {width}x{height}")
    if not MIN_DIMENSION_PX <= min(width, height) <= max(width, height) <= MAX_DIMENSION_PX:
        raise ValueError(
            f"frame size {width}x{height} is outside {MIN_DIMENSION_PX}..{MAX_DIMENSION_PX} px"
        )
    if not 1 <= fps <= 120:
        raise ValueError(f"fps must be between 1 and 120, got {fps}")
    if not (math.isfinite(duration_s) and 0 < duration_s <= MAX_DURATION_S):
        raise ValueError(f"duration_s must be in (0, {MAX_DURATION_S:g}], got {duration_s}")


class _Pan:
    """An image (or two) as YUV 4:2:0 planes larger than the frame, cropped along a path."""

    def __init__(
        self, width: int, height: int, image: Path, end_image: Path | None, *, total_s: float
    ) -> None:
        self.width = width
        self.height = height
        self.total_s = total_s
        self.big_w = _even(width * PAN_ZOOM) + 2
        self.big_h = _even(height * PAN_ZOOM) + 2
        self.start = self._planes(image)
        self.end = self._planes(end_image) if end_image is not None else None

    def _planes(self, path: Path) -> tuple[U8, U8, U8]:
        try:
            with Image.open(path) as opened:
                rgb = opened.convert("RGB")
        except (OSError, ValueError) as exc:
            raise MediaError(f"could not read the image {path.name}: {exc}") from exc
        cover = max(self.big_w / rgb.width, self.big_h / rgb.height)
        size = (
            max(self.big_w, math.ceil(rgb.width * cover)),
            max(self.big_h, math.ceil(rgb.height * cover)),
        )
        scaled = rgb.resize(size, Image.Resampling.BILINEAR)
        left, top = (size[0] - self.big_w) // 2, (size[1] - self.big_h) // 2
        cropped = scaled.crop((left, top, left + self.big_w, top + self.big_h))
        return _rgb_to_yuv420(np.asarray(cropped, dtype=np.float32) / 255.0)

    def fill(self, t_s: float, planes: tuple[U8, U8, U8]) -> None:
        """Write the frame at ``t_s`` into ``planes`` (luma, cb, cr)."""
        phase = min(1.0, max(0.0, t_s / max(self.total_s, 1e-6)))
        eased = 0.5 - 0.5 * math.cos(math.pi * phase)
        x = _even((self.big_w - self.width) * eased) if self.big_w > self.width + 1 else 0
        y = _even((self.big_h - self.height) * (1 - eased)) if self.big_h > self.height + 1 else 0
        x = min(x, self.big_w - self.width)
        y = min(y, self.big_h - self.height)
        fade = 0.0
        if self.end is not None:
            start_fade = 1 - CROSSFADE_FRACTION
            fade = min(1.0, max(0.0, (phase - start_fade) / CROSSFADE_FRACTION))
        for index, plane in enumerate(planes):
            div = 1 if index == 0 else 2
            h, w = plane.shape
            src = self.start[index][y // div : y // div + h, x // div : x // div + w]
            if self.end is None or fade <= 0:
                plane[...] = src
                continue
            dst = self.end[index][y // div : y // div + h, x // div : x // div + w]
            weight = round(fade * 256)
            mixed = np.multiply(src, 256 - weight, dtype=np.uint16)
            mixed += np.multiply(dst, weight, dtype=np.uint16)
            mixed >>= 8
            plane[...] = mixed


def _rgb_to_yuv420(rgb: F32) -> tuple[U8, U8, U8]:
    """BT.709 limited-range YUV 4:2:0 planes of an (even-sized) RGB float image."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.2126 * r + 0.7152 * g + 0.0722 * b
    y_plane = 16 + 219 * luma
    cb = 128 + 224 * (b - luma) / 1.8556
    cr = 128 + 224 * (r - luma) / 1.5748

    def pool(arr: F32) -> F32:
        return np.asarray(
            (arr[0::2, 0::2] + arr[1::2, 0::2] + arr[0::2, 1::2] + arr[1::2, 1::2]) / 4,
            dtype=np.float32,
        )

    def u8(arr: F32) -> U8:
        return np.clip(np.round(arr), 0, 255).astype(np.uint8)

    return u8(y_plane), u8(pool(cb)), u8(pool(cr))


class RenderStopped(MediaError):
    """A render was stopped before its end (its provider is closing); nothing was written."""


def _encode(
    path: Path,
    scene: _Scene,
    *,
    n_frames: int,
    fps: int,
    audio: bool,
    stop: threading.Event | None = None,
) -> None:
    total_samples = round(n_frames * AUDIO_RATE_HZ / fps)
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=fps, options=dict(_X264_OPTIONS))
        video.width = scene.width
        video.height = scene.height
        video.pix_fmt = "yuv420p"
        ctx = video.codec_context
        ctx.gop_size = 2 * fps
        ctx.color_range = 1  # MPEG (limited)
        ctx.colorspace = ctx.color_primaries = ctx.color_trc = 1  # BT.709
        sound = None
        if audio:
            sound = out.add_stream("aac", rate=AUDIO_RATE_HZ)
            sound.layout = "stereo"
            sound.bit_rate = _AUDIO_BITRATE_BPS
        tone = _Tone(total_samples)
        samples_done = 0
        for index in range(n_frames):
            if stop is not None and stop.is_set():
                raise RenderStopped(f"stopped at frame {index} of {n_frames}")
            frame = av.VideoFrame.from_ndarray(scene.frame(index / fps), format="yuv420p")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
            if sound is None:
                continue
            until = round((index + 1) * AUDIO_RATE_HZ / fps)
            while samples_done < until:
                n = min(_AUDIO_CHUNK_SAMPLES, until - samples_done)
                out.mux(sound.encode(tone.frame(samples_done, n)))
                samples_done += n
        out.mux(video.encode(None))
        if sound is not None:
            out.mux(sound.encode(None))


class _Tone:
    """A soft, slowly pulsing major chord with short fades at both ends."""

    def __init__(self, total_samples: int) -> None:
        self.total_samples = total_samples
        self.fade_samples = max(1, min(AUDIO_RATE_HZ // 4, total_samples // 4))

    def frame(self, start: int, n_samples: int) -> av.AudioFrame:
        idx = np.arange(start, start + n_samples, dtype=np.float64)
        t = idx / AUDIO_RATE_HZ
        left = np.zeros(n_samples)
        right = np.zeros(n_samples)
        for i, hz in enumerate(_CHORD_HZ):
            wave = np.sin(2 * np.pi * hz * t)
            pan = 0.3 + 0.4 * (i / (len(_CHORD_HZ) - 1))
            left += wave * (1 - pan)
            right += wave * pan
        envelope = 0.12 * (0.8 + 0.2 * np.sin(2 * np.pi * 0.5 * t))
        envelope *= np.clip(idx / self.fade_samples, 0, 1)
        envelope *= np.clip((self.total_samples - idx) / self.fade_samples, 0, 1)
        planar = np.stack([left * envelope, right * envelope]).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
        frame.sample_rate = AUDIO_RATE_HZ
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE_HZ)
        return frame


@dataclass(frozen=True, eq=False)
class _Patch:
    """A pre-converted overlay region: premultiplied YUV plus inverse alpha (x256)."""

    x: int  # even
    y: int  # even
    y_premul: U16
    y_inv_alpha: U16
    uv_premul: tuple[U16, U16]
    uv_inv_alpha: U16

    def blend(self, planes: tuple[U8, U8, U8]) -> None:
        luma, cb, cr = planes
        h, w = self.y_premul.shape
        _blend(luma[self.y : self.y + h, self.x : self.x + w], self.y_premul, self.y_inv_alpha)
        ch, cw = self.uv_inv_alpha.shape
        cy, cx = self.y // 2, self.x // 2
        for plane, premul in zip((cb, cr), self.uv_premul, strict=True):
            _blend(plane[cy : cy + ch, cx : cx + cw], premul, self.uv_inv_alpha)


def _blend(region: U8, premul: U16, inv_alpha: U16) -> None:
    acc = np.multiply(region, inv_alpha, dtype=np.uint16)
    acc += premul
    acc >>= 8
    region[...] = acc


class _Scene:
    """Per-clip state: static overlay patches and cached counter patches."""

    def __init__(
        self,
        width: int,
        height: int,
        *,
        prompt: str,
        label: str,
        total_s: float,
        background: _Pan | None = None,
    ):
        self.width = width
        self.height = height
        self.total_s = total_s
        self._background = background
        short = min(width, height)
        self.margin = max(8, short // 24) // 2 * 2
        self.bar_px = max(4, short // 90) // 2 * 2
        self._buffer = np.empty(width * height * 3 // 2, dtype=np.uint8)
        n_luma = width * height
        self._planes = (
            self._buffer[:n_luma].reshape(height, width),
            self._buffer[n_luma : n_luma * 5 // 4].reshape(height // 2, width // 2),
            self._buffer[n_luma * 5 // 4 :].reshape(height // 2, width // 2),
        )
        self._xs = np.arange(width, dtype=np.float32) / width
        self._ys = np.arange(height, dtype=np.float32) / height
        self._xs_c = self._xs[::2]
        self._ys_c = self._ys[::2]
        self._disc_r = max(4, short // 10)
        self._disc = _disc_alpha(self._disc_r)

        template = f"{_clock(total_s)} / {_clock(total_s)}"
        self._counter_font = _fit_single_line(
            template, width - 4 * self.margin, start_px=max(10, short // 28)
        )
        digit = max("0123456789", key=self._counter_font.getlength)
        widest = "".join(digit if ch.isdigit() else ch for ch in template)
        left, top, right, bottom = self._counter_font.getbbox(widest)
        pad = max(4, short // 120)
        self._counter_size = (_even(right - left + 2 * pad), _even(bottom - top + 2 * pad))
        self._counter_pos = (
            _even(width - self.margin - self._counter_size[0]),
            _even(height - self.margin - self.bar_px - self._counter_size[1]),
        )
        self._counter_cache: dict[str, _Patch] = {}
        self._patches = self._overlay_patches(prompt, label)

    def frame(self, t_s: float) -> U8:
        """Return the frame at ``t_s`` as a (H * 3/2, W) yuv420p array (reused buffer)."""
        luma, cb, cr = self._planes
        phase = t_s / max(self.total_s, 1e-6)
        if self._background is not None:
            self._background.fill(t_s, self._planes)
        else:
            self._animate(t_s)
        bar_w = _even(round(self.width * min(1.0, phase)))
        luma[self.height - self.bar_px :, :bar_w] = 210
        cb[(self.height - self.bar_px) // 2 :, : bar_w // 2] = 100
        cr[(self.height - self.bar_px) // 2 :, : bar_w // 2] = 150
        for patch in self._patches:
            patch.blend(self._planes)
        self._counter_patch(f"{_clock(t_s)} / {_clock(self.total_s)}").blend(self._planes)
        return self._buffer.reshape(self.height * 3 // 2, self.width)

    def _animate(self, t_s: float) -> None:
        luma, cb, cr = self._planes
        # Moving gradient: sum of an x and a y profile, each kept in [0, 127].
        xa = 55 + 35 * np.sin(2 * np.pi * (self._xs - 0.35 * t_s))
        ya = 35 + 25 * np.sin(2 * np.pi * (0.8 * self._ys + 0.2 * t_s))
        np.add(ya.astype(np.uint8)[:, None], xa.astype(np.uint8)[None, :], out=luma)
        for plane, speed, offset in ((cb, 0.13, 0.0), (cr, 0.11, 1.7)):
            px = 64 + 30 * np.sin(2 * np.pi * (self._xs_c + speed * t_s) + offset)
            py = 64 + 30 * np.cos(2 * np.pi * (self._ys_c - speed * t_s) + offset)
            np.add(py.astype(np.uint8)[:, None], px.astype(np.uint8)[None, :], out=plane)
        for i, (color_y, color_u, color_v) in enumerate(((200, 90, 170), (170, 170, 80))):
            cx = 0.5 + 0.4 * math.sin(2 * np.pi * (0.23 + 0.11 * i) * t_s + i * 2.1)
            cy = 0.5 + 0.4 * math.cos(2 * np.pi * (0.17 + 0.07 * i) * t_s + i * 1.3)
            self._draw_disc(cx, cy, (color_y, color_u, color_v))

    def _draw_disc(self, cx: float, cy: float, color: tuple[int, int, int]) -> None:
        r = self._disc_r
        size = 2 * r
        x = _even(r + cx * (self.width - 2 * r) - r)
        y = _even(r + cy * (self.height - 2 * r) - r)
        x = min(max(0, x), self.width - size)
        y = min(max(0, y), self.height - size)
        inv = 256 - self._disc
        luma, cb, cr = self._planes
        _blend(luma[y : y + size, x : x + size], self._disc * color[0], inv)
        inv_c = inv[::2, ::2]
        alpha_c = self._disc[::2, ::2]
        for plane, value in ((cb, color[1]), (cr, color[2])):
            _blend(plane[y // 2 : y // 2 + r, x // 2 : x // 2 + r], alpha_c * value, inv_c)

    def _counter_patch(self, text: str) -> _Patch:
        patch = self._counter_cache.get(text)
        if patch is None:
            image = Image.new("RGBA", self._counter_size, (15, 15, 20, 200))
            draw = ImageDraw.Draw(image)
            draw.text(
                (self._counter_size[0] // 2, self._counter_size[1] // 2),
                text,
                font=self._counter_font,
                fill=(235, 235, 235, 255),
                anchor="mm",
            )
            patch = self._to_patch(image, *self._counter_pos)
            self._counter_cache[text] = patch
        return patch

    def _overlay_patches(self, prompt: str, label: str) -> list[_Patch]:
        w, h, m = self.width, self.height, self.margin
        short = min(w, h)
        patches: list[_Patch] = []

        # Label: large amber text on a dark banner at the top.
        label = _clean(label) or DEFAULT_LABEL
        label_font = _fit_single_line(label, w - 4 * m, start_px=max(12, short // 15), bold=True)
        lb = label_font.getbbox(label)
        pad = max(6, short // 60)
        banner_w = _even(min(w - 2 * m, lb[2] - lb[0] + 2 * pad))
        banner_h = _even(lb[3] - lb[1] + 2 * pad)
        banner = Image.new("RGBA", (banner_w, banner_h), (0, 0, 0, 0))
        draw = ImageDraw.Draw(banner)
        draw.rounded_rectangle((0, 0, banner_w - 1, banner_h - 1), pad, fill=(10, 10, 14, 215))
        draw.text(
            (banner_w // 2, banner_h // 2),
            label,
            font=label_font,
            fill=(255, 196, 40, 255),
            anchor="mm",
        )
        patches.append(self._to_patch(banner, (w - banner_w) // 2, m))

        # Prompt: wrapped, centred, on a translucent panel between banner and counter.
        top = m + banner_h + m
        bottom = self._counter_pos[1] - m
        box_w = w - 2 * m
        pad = max(6, short // 50)
        text = _clean(prompt, keep_newlines=True)
        font, lines, line_h = _fit_paragraph(text, box_w - 2 * pad, bottom - top - 2 * pad, short)
        if text and lines:
            text_w = max(math.ceil(font.getlength(line)) for line in lines)
            panel_w = _even(min(box_w, text_w + 2 * pad))
            panel_h = _even(min(bottom - top, line_h * len(lines) + 2 * pad))
            panel = Image.new("RGBA", (panel_w, panel_h), (0, 0, 0, 0))
            draw = ImageDraw.Draw(panel)
            draw.rounded_rectangle((0, 0, panel_w - 1, panel_h - 1), pad, fill=(0, 0, 0, 140))
            for i, line in enumerate(lines):
                draw.text(
                    (panel_w // 2, pad + i * line_h),
                    line,
                    font=font,
                    fill=(255, 255, 255, 255),
                    anchor="ma",
                )
            y = top + (bottom - top - panel_h) // 2
            patches.append(self._to_patch(panel, (w - panel_w) // 2, y))
        return patches

    def _to_patch(self, image: Image.Image, x: int, y: int) -> _Patch:
        """Place ``image`` at about (x, y), snapped to even pixels and cropped to the frame."""
        x = min(max(0, x), self.width - 2) // 2 * 2
        y = min(max(0, y), self.height - 2) // 2 * 2
        w = min(image.width, self.width - x) // 2 * 2
        h = min(image.height, self.height - y) // 2 * 2
        return _convert_patch(image.crop((0, 0, w, h)), x, y)


def _convert_patch(image: Image.Image, x: int, y: int) -> _Patch:
    """Convert an RGBA image (even size) to premultiplied BT.709 limited-range YUV."""
    rgba = np.asarray(image, dtype=np.float32) / 255.0
    r, g, b, a = (rgba[..., i] for i in range(4))
    luma = 0.2126 * r + 0.7152 * g + 0.0722 * b
    y_plane = 16 + 219 * luma
    cb = 128 + 224 * (b - luma) / 1.8556
    cr = 128 + 224 * (r - luma) / 1.5748
    alpha = np.round(a * 256)

    def pool(arr: F32) -> F32:
        return np.asarray(
            (arr[0::2, 0::2] + arr[1::2, 0::2] + arr[0::2, 1::2] + arr[1::2, 1::2]) / 4,
            dtype=np.float32,
        )

    alpha_c = np.round(pool(a) * 256)
    return _Patch(
        x=x,
        y=y,
        y_premul=np.round(y_plane * alpha).astype(np.uint16),
        y_inv_alpha=(256 - alpha).astype(np.uint16),
        uv_premul=(
            np.round(pool(cb * a) * 256).astype(np.uint16),
            np.round(pool(cr * a) * 256).astype(np.uint16),
        ),
        uv_inv_alpha=(256 - alpha_c).astype(np.uint16),
    )


def _disc_alpha(radius: int) -> U16:
    """Alpha (0..256) of a soft-edged disc in a (2r, 2r) square."""
    coords = np.arange(2 * radius, dtype=np.float32) - radius + 0.5
    dist = np.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2)
    edge = max(1.5, radius / 8)
    alpha = np.clip((radius - dist) / edge, 0, 1) * 0.75
    return np.round(alpha * 256).astype(np.uint16)


def _clean(text: str, *, keep_newlines: bool = False) -> str:
    """Drop control characters; collapse whitespace (optionally keeping line breaks)."""
    lines = text[: MAX_PROMPT_CHARS * 2].replace("\r\n", "\n").split("\n")
    cleaned = []
    for line in lines:
        kept = "".join(
            " " if ch.isspace() else ch
            for ch in line
            if ch.isspace() or not unicodedata.category(ch).startswith("C")
        )
        cleaned.append(" ".join(kept.split()))
    if not keep_newlines:
        return " ".join(part for part in cleaned if part)
    paragraphs = [part for part in cleaned if part]
    return "\n".join(paragraphs)


def _load_font(size_px: int, *, bold: bool = False) -> Font:
    """Bundled DejaVu Sans (wide Unicode coverage); Pillow's default font as a fallback."""
    path = _FONT_DIR / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")
    try:
        return ImageFont.truetype(path, size_px)
    except OSError:
        font = ImageFont.load_default(size=size_px)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise MediaError("Pillow is built without FreeType; cannot draw preview text")
    return font


def _fit_single_line(text: str, max_w: int, *, start_px: int, bold: bool = False) -> Font:
    size = start_px
    while True:
        font = _load_font(size, bold=bold)
        if size <= 8 or font.getlength(text) <= max_w:
            return font
        size = max(8, int(size * 0.9))


def _fit_paragraph(text: str, max_w: int, max_h: int, short: int) -> tuple[Font, list[str], int]:
    """Largest font (down to a floor) at which ``text`` fits; else truncate at the floor.

    Sizes are tried with word widths measured once at a reference size and
    scaled; only the chosen size is measured exactly.
    """
    if len(text) > MAX_PROMPT_CHARS:
        text = text[:MAX_PROMPT_CHARS].rstrip() + _ELLIPSIS
    reference = _Measure(_load_font(_REF_FONT_PX))
    size = max(12, short // 22)
    floor = max(10, short // 48)
    while True:
        line_h = math.ceil(size * 1.25)
        max_lines = max(0, max_h // line_h)
        estimate = _wrap(text, reference.scaled(size / _REF_FONT_PX), max_w * 0.97, max_lines + 1)
        if len(estimate) <= max_lines or size <= floor:
            break
        size = max(floor, int(size * 0.88))
    font = _load_font(size)
    lines = _wrap(text, _Measure(font), max_w, max_lines + 1)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        if lines:
            lines[-1] = _ellipsize(lines[-1], font, max_w)
    return font, lines, line_h


class _Measure:
    """Cached text advance widths (px) for one font."""

    def __init__(self, font: Font, scale: float = 1.0, cache: dict[str, float] | None = None):
        self._font = font
        self._scale = scale
        self._cache = {} if cache is None else cache

    def scaled(self, scale: float) -> _Measure:
        """Widths of this font multiplied by ``scale`` (sharing the cache)."""
        return _Measure(self._font, scale, self._cache)

    def __call__(self, text: str) -> float:
        width = self._cache.get(text)
        if width is None:
            width = self._cache[text] = self._font.getlength(text)
        return width * self._scale


def _wrap(text: str, measure: Callable[[str], float], max_w: float, max_lines: int) -> list[str]:
    """Greedy word wrap; words wider than ``max_w`` are split. Stops after ``max_lines``."""
    lines: list[str] = []
    space_w = measure(" ")
    for paragraph in text.split("\n"):
        line, line_w = "", 0.0
        for word in paragraph.split(" "):
            word_w = measure(word)
            if line and line_w + space_w + word_w <= max_w:
                line, line_w = f"{line} {word}", line_w + space_w + word_w
                continue
            if line:
                lines.append(line)
            line, line_w = word, word_w
            while line_w > max_w and len(line) > 1:
                cut = _longest_prefix(line, measure, max_w)
                lines.append(line[:cut])
                line = line[cut:]
                line_w = measure(line)
            if len(lines) >= max_lines:
                return lines
        lines.append(line)
        if len(lines) >= max_lines:
            return lines
    return lines


def _longest_prefix(word: str, measure: Callable[[str], float], max_w: float) -> int:
    lo, hi = 1, len(word)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if measure(word[:mid]) <= max_w:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _ellipsize(line: str, font: Font, max_w: int) -> str:
    line = line.rstrip(_ELLIPSIS)
    while line and font.getlength(line + _ELLIPSIS) > max_w:
        line = line[:-1]
    return line.rstrip() + _ELLIPSIS


def _clock(t_s: float) -> str:
    tenths = int(t_s * 10 + 1e-6)
    minutes, rest = divmod(tenths, 600)
    return f"{minutes:02d}:{rest // 10:02d}.{rest % 10}"


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)
