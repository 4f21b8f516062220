"""Image checks for image-to-video: the limits nearly every vendor shares, applied before anything
is held, and the normalized file that is stored with the job.

`check_image(data, filename=..., content_type=...)` reads the upload with Pillow (the bytes decide
the format, never the name) and returns a `NormalizedImage`: JPEG and PNG are kept as they are
(unless they need turning upright, flattening to one frame or converting to RGB); the other
formats Pillow reads (WebP, GIF, BMP, TIFF, ...) are converted: lossy ones without transparency
(WebP, AVIF, HEIF photos) to JPEG, the rest to PNG (JPEG if the PNG would break the size limit). Each refusal is an `ImageRefused` (an `InvalidRequest`) naming the rule and the image's own
figures. `save_image` keeps the file under its sha256; `image_path` finds it again.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from bot.errors import InvalidRequest
from bot.media._files import atomic_output
from bot.request import (
    IMAGE_MAX_ASPECT,
    IMAGE_MAX_BYTES,
    IMAGE_MIN_SIDE_PX,
    ImageRef,
    aspect_text,
)

__all__ = [
    "IMAGE_MAX_PIXELS",
    "ImageRefused",
    "NormalizedImage",
    "check_image",
    "image_path",
    "save_image",
]

IMAGE_MAX_PIXELS = 50_000_000  # decoding guard: larger images are refused before decoding
KEPT_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}
CONVERTED_FORMATS = frozenset({"WEBP", "GIF", "BMP", "TIFF", "MPO", "AVIF", "HEIF", "ICO", "TGA"})
LOSSY_FORMATS = frozenset({"JPEG", "MPO", "WEBP", "AVIF", "HEIF"})  # converted to JPEG unless alpha
_JPEG_QUALITY = 92
_EXIF_ORIENTATION = 0x0112


class ImageRefused(InvalidRequest):
    """The image breaks one rule; `rule` is format, size, pixels, min_side or aspect."""

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        super().__init__([message])


@dataclass(frozen=True)
class NormalizedImage:
    """A checked image in a form every vendor takes (PNG or JPEG)."""

    data: bytes
    mime: str
    width_px: int
    height_px: int
    converted_from: str | None = None  # the original format when it was converted

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def ref(self) -> ImageRef:
        """The description stored with the job."""
        return ImageRef.model_validate(
            {
                "sha256": self.sha256,
                "mime": self.mime,
                "width_px": self.width_px,
                "height_px": self.height_px,
                "size_bytes": len(self.data),
            }
        )


def _mb(size_bytes: int) -> str:
    return f"{size_bytes / 1_048_576:.1f} MB"


def _name(filename: str) -> str:
    return f"The image {filename!r}" if filename else "The image"


def check_image(data: bytes, *, filename: str = "", content_type: str = "") -> NormalizedImage:
    """Check an uploaded image and return it normalized; raise ImageRefused naming the rule."""
    who = _name(filename)
    if len(data) > IMAGE_MAX_BYTES:
        raise ImageRefused(
            "size", f"{who} is {_mb(len(data))}; the limit is {IMAGE_MAX_BYTES // 1_048_576} MB."
        )
    with warnings.catch_warnings():
        # images above our own pixel cap are refused below, before anything is decoded
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError:
            raise ImageRefused(
                "pixels",
                f"{who} has far more than {IMAGE_MAX_PIXELS // 1_000_000} megapixels, the limit.",
            ) from None
        except (UnidentifiedImageError, OSError, ValueError):
            raise _not_an_image(who, content_type) from None
        fmt = (image.format or "").upper()
        if fmt not in KEPT_FORMATS and fmt not in CONVERTED_FORMATS:
            raise _not_an_image(who, content_type, fmt)
        width, height = image.size
        if width * height > IMAGE_MAX_PIXELS:
            raise ImageRefused(
                "pixels",
                f"{who} is {width}×{height} px ({width * height / 1e6:.0f} megapixels); the limit"
                f" is {IMAGE_MAX_PIXELS // 1_000_000} megapixels.",
            )
        try:
            normalized = _normalize(image, data, fmt)
        except (OSError, ValueError, SyntaxError, EOFError):
            raise _not_an_image(who, content_type, fmt, damaged=True) from None
    _check_shape(who, normalized.width_px, normalized.height_px)
    if len(normalized.data) > IMAGE_MAX_BYTES:
        raise ImageRefused(
            "size",
            f"{who} is {_mb(len(normalized.data))} once converted to"
            f" {normalized.mime.removeprefix('image/').upper()}; the limit is"
            f" {IMAGE_MAX_BYTES // 1_048_576} MB.",
        )
    return normalized


def _not_an_image(
    who: str, content_type: str, fmt: str = "", *, damaged: bool = False
) -> ImageRefused:
    if damaged:
        return ImageRefused("format", f"{who} is a damaged {fmt} file: send it again.")
    what = f"a {fmt} image" if fmt else "not an image this bot can read"
    sent = f" (sent as {content_type})" if content_type and not fmt else ""
    return ImageRefused("format", f"{who} is {what}{sent}: send a JPEG, PNG or WebP image.")


def _check_shape(who: str, width: int, height: int) -> None:
    if min(width, height) < IMAGE_MIN_SIDE_PX:
        raise ImageRefused(
            "min_side",
            f"{who} is {width}×{height} px; each side must be at least {IMAGE_MIN_SIDE_PX} px.",
        )
    ratio = width / height
    if max(ratio, 1 / ratio) > IMAGE_MAX_ASPECT:
        raise ImageRefused(
            "aspect",
            f"{who} is {width}×{height} px (aspect {aspect_text(width, height)}); the aspect"
            " ratio must be between 1:2.5 and 2.5:1.",
        )


def _normalize(image: Image.Image, data: bytes, fmt: str) -> NormalizedImage:
    """Keep a plain JPEG/PNG byte for byte; convert everything else."""
    frames = int(getattr(image, "n_frames", 1) or 1)
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    if (
        fmt in KEPT_FORMATS
        and frames == 1
        and orientation in (0, 1)
        and image.mode in ("RGB", "RGBA", "L", "LA", "P")
    ):
        image.load()  # a truncated or corrupt file fails here, not at the vendor
        width, height = image.size
        return NormalizedImage(data, KEPT_FORMATS[fmt], width, height)
    image.seek(0)
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    upright = image
    has_alpha = upright.mode in ("RGBA", "LA", "PA") or (
        upright.mode == "P" and "transparency" in upright.info
    )
    rgb = upright.convert("RGBA" if has_alpha else "RGB")
    if fmt in LOSSY_FORMATS and not has_alpha:
        encoded = _encode(rgb, "JPEG")  # a photo: PNG would be slow and many times larger
    else:
        encoded = _encode(rgb, "PNG")
        if len(encoded) > IMAGE_MAX_BYTES:
            encoded = _encode(_flatten(rgb), "JPEG")
    mime = "image/png" if encoded.startswith(b"\x89PNG") else "image/jpeg"
    return NormalizedImage(encoded, mime, rgb.width, rgb.height, converted_from=fmt)


def _flatten(image: Image.Image) -> Image.Image:
    """Drop transparency onto white (JPEG has no alpha)."""
    if image.mode == "RGB":
        return image
    if image.mode != "RGBA":
        return image.convert("RGB")
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image, mask=image.getchannel("A"))
    return background


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        _flatten(image).save(out, "JPEG", quality=_JPEG_QUALITY, optimize=True)
    else:
        image.save(out, "PNG", optimize=False, compress_level=3)
    return out.getvalue()


def image_path(directory: Path, ref: ImageRef) -> Path:
    """Where the file described by `ref` is kept under `directory`."""
    return directory / f"{ref.sha256}.{ref.extension}"


def save_image(directory: Path, image: NormalizedImage) -> Path:
    """Keep the image under its sha256 (atomically; an existing copy is reused)."""
    path = image_path(directory, image.ref)
    if path.is_file() and path.stat().st_size == len(image.data):
        return path
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_bytes(image.data)
    return path
