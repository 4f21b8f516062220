"""Image checks for image-to-video (bot/media/images.py) and the image renderer's frame size."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.errors import InvalidRequest, UserError
from bot.media import image_frame_size
from bot.media.images import (
    IMAGE_MAX_PIXELS,
    ImageRefused,
    NormalizedImage,
    check_image,
    image_path,
    save_image,
)
from bot.request import IMAGE_MAX_BYTES, VideoRequest


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def solid(width: int, height: int, mode: str = "RGB", color: Any = (10, 120, 200)) -> Image.Image:
    return Image.new(mode, (width, height), color)


def outcome(data: bytes) -> NormalizedImage | ImageRefused:
    """The checked image, or the refusal (for property tests that expect either)."""
    try:
        return check_image(data)
    except ImageRefused as error:
        return error


def refused(data: bytes, **kwargs: str) -> ImageRefused:
    with pytest.raises(ImageRefused) as info:
        check_image(data, **kwargs)
    return info.value


# -- kept as they are ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "mime"), [("JPEG", "image/jpeg"), ("PNG", "image/png")])
def test_jpeg_and_png_are_kept_byte_for_byte(fmt: str, mime: str) -> None:
    data = encode(solid(640, 480), fmt)
    image = check_image(data, filename="photo", content_type=mime)
    assert image.data == data and image.mime == mime and image.converted_from is None
    assert (image.width_px, image.height_px) == (640, 480)
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert image.ref.model_dump() == {
        "sha256": image.sha256,
        "mime": mime,
        "width_px": 640,
        "height_px": 480,
        "size_bytes": len(data),
    }


# -- converted ----------------------------------------------------------------------------------


def test_webp_is_converted_to_png_keeping_transparency() -> None:
    data = encode(solid(500, 400, "RGBA", (255, 0, 0, 128)), "WEBP", lossless=True)
    image = check_image(data, filename="sticker.webp")
    assert image.mime == "image/png" and image.converted_from == "WEBP"
    with Image.open(io.BytesIO(image.data)) as reopened:
        assert reopened.format == "PNG" and reopened.size == (500, 400)
        assert reopened.mode == "RGBA" and reopened.getchannel("A").getpixel((0, 0)) == 128


def test_a_webp_photo_is_converted_to_jpeg() -> None:
    data = encode(solid(800, 600), "WEBP", quality=80)
    image = check_image(data, filename="photo.webp")
    assert image.mime == "image/jpeg" and image.converted_from == "WEBP"
    with Image.open(io.BytesIO(image.data)) as reopened:
        assert reopened.format == "JPEG" and reopened.size == (800, 600)


def test_an_animated_gif_becomes_its_first_frame() -> None:
    frames = [solid(400, 400, color=(255, 0, 0)), solid(400, 400, color=(0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    image = check_image(data)
    assert image.mime == "image/png" and image.converted_from == "GIF"
    with Image.open(io.BytesIO(image.data)) as reopened:
        rgb = reopened.convert("RGB")
        red, blue = rgb.getchannel("R").getpixel((10, 10)), rgb.getchannel("B").getpixel((10, 10))
    assert isinstance(red, int) and isinstance(blue, int) and red > 200 and blue < 50


def test_bmp_and_tiff_are_converted() -> None:
    for fmt in ("BMP", "TIFF"):
        image = check_image(encode(solid(320, 640), fmt))
        assert image.mime == "image/png" and image.converted_from == fmt


def test_a_rotated_jpeg_is_turned_upright() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(solid(800, 400), "JPEG", exif=exif.tobytes())
    image = check_image(data)
    assert (image.width_px, image.height_px) == (400, 800)
    assert image.mime == "image/jpeg" and image.converted_from == "JPEG"


def test_a_cmyk_jpeg_becomes_rgb() -> None:
    image = check_image(encode(solid(400, 400, "CMYK", (0, 100, 200, 0)), "JPEG"))
    assert image.mime == "image/jpeg"
    with Image.open(io.BytesIO(image.data)) as reopened:
        assert reopened.mode == "RGB"


# -- refusals: which rule, and the image's own figures ------------------------------------------


def test_too_many_bytes() -> None:
    error = refused(b"\x89PNG" + b"\x00" * (IMAGE_MAX_BYTES + 100_000), filename="huge.png")
    assert error.rule == "size"
    assert str(error) == "The image 'huge.png' is 10.1 MB; the limit is 10 MB."


def test_a_side_under_300_px() -> None:
    error = refused(encode(solid(299, 500), "PNG"), filename="small.png")
    assert error.rule == "min_side"
    assert str(error) == "The image 'small.png' is 299×500 px; each side must be at least 300 px."


@pytest.mark.parametrize(
    ("size", "text"),
    [((751, 300), "751×300 px (aspect 2.50:1)"), ((300, 800), "300×800 px (aspect 1:2.67)")],
)
def test_an_extreme_aspect_ratio(size: tuple[int, int], text: str) -> None:
    error = refused(encode(solid(*size), "PNG"))
    assert error.rule == "aspect"
    assert str(error) == (f"The image is {text}; the aspect ratio must be between 1:2.5 and 2.5:1.")


def test_the_limits_are_inclusive() -> None:
    for size in ((300, 300), (750, 300), (300, 750)):
        assert check_image(encode(solid(*size), "PNG")).width_px == size[0]


def test_not_an_image() -> None:
    error = refused(b"%PDF-1.7 not an image", filename="doc.pdf", content_type="application/pdf")
    assert error.rule == "format"
    assert str(error) == (
        "The image 'doc.pdf' is not an image this bot can read (sent as application/pdf):"
        " send a JPEG, PNG or WebP image."
    )


def test_an_unsupported_image_format() -> None:
    error = refused(encode(solid(400, 400), "PPM"))
    assert error.rule == "format"
    assert str(error) == "The image is a PPM image: send a JPEG, PNG or WebP image."


def test_a_truncated_file() -> None:
    data = encode(solid(600, 600, color=(1, 2, 3)), "JPEG", quality=95)
    error = refused(data[: len(data) // 2], filename="cut.jpg")
    assert error.rule == "format" and "damaged JPEG" in str(error)


def test_too_many_pixels_is_refused_before_decoding() -> None:
    data = encode(Image.new("1", (8000, 7000)), "PNG")  # 56 megapixels, a few kB
    error = refused(data)
    assert error.rule == "pixels"
    assert str(error) == (
        f"The image is 8000×7000 px (56 megapixels); the limit is"
        f" {IMAGE_MAX_PIXELS // 1_000_000} megapixels."
    )


def test_refusals_are_user_errors() -> None:
    error = refused(b"")
    assert isinstance(error, InvalidRequest) and isinstance(error, UserError)
    assert error.problems == [str(error)]


# -- property tests -----------------------------------------------------------------------------


@settings(max_examples=200)
@given(data=st.binary(max_size=2000))
def test_random_bytes_are_refused_only_with_image_refused(data: bytes) -> None:
    result = outcome(data)  # any other exception fails the test
    if isinstance(result, ImageRefused):
        assert result.rule in {"format", "size", "pixels", "min_side", "aspect"}
    else:
        assert result.mime in ("image/png", "image/jpeg")


formats = st.sampled_from(["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(1, 900),
    height=st.integers(1, 900),
    fmt=formats,
    mode=st.sampled_from(["RGB", "RGBA", "L", "P"]),
)
def test_any_image_is_accepted_or_refused_by_its_figures(
    width: int, height: int, fmt: str, mode: str
) -> None:
    picture = solid(width, height, "RGB").convert(mode)
    if fmt == "JPEG" and mode in ("RGBA", "P"):
        picture = picture.convert("RGB")
    data = encode(picture, fmt)
    ratio = width / height
    expected_ok = min(width, height) >= 300 and max(ratio, 1 / ratio) <= 2.5
    image = outcome(data)
    if isinstance(image, ImageRefused):
        assert not expected_ok
        assert image.rule == ("min_side" if min(width, height) < 300 else "aspect")
        assert f"{width}×{height} px" in str(image)
        return
    assert expected_ok
    assert (image.width_px, image.height_px) == (width, height)
    with Image.open(io.BytesIO(image.data)) as reopened:
        assert reopened.size == (width, height)
        assert reopened.format == {"image/png": "PNG", "image/jpeg": "JPEG"}[image.mime]
    assert image.ref.problems("The image") == []


# -- storing ------------------------------------------------------------------------------------


def test_save_image_keeps_one_copy_per_hash(tmp_path: Path) -> None:
    image = check_image(encode(solid(400, 300), "PNG"))
    path = save_image(tmp_path / "images", image)
    assert path == image_path(tmp_path / "images", image.ref)
    assert path.name == f"{image.sha256}.png" and path.read_bytes() == image.data
    assert save_image(tmp_path / "images", image) == path
    assert [p.name for p in (tmp_path / "images").iterdir()] == [path.name]


def test_a_stored_reference_is_checked_again() -> None:
    image = check_image(encode(solid(400, 300), "PNG"))
    tampered = image.ref.model_copy(update={"size_bytes": IMAGE_MAX_BYTES + 1, "width_px": 200})
    request = VideoRequest.model_validate({"prompt": "x", "image": tampered.model_dump()})
    assert request.problems() == [
        "The image is 10.0 MB; the limit is 10 MB.",
        "The image is 200×300 px; each side must be at least 300 px.",
    ]


# -- the renderer's frame size ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "short", "frame"),
    [
        ((1920, 1080), 720, (1280, 720)),
        ((1080, 1920), 1080, (1080, 1920)),
        ((1000, 1000), 720, (720, 720)),
        ((2500, 1000), 1080, (2700, 1080)),
        ((400, 700), 720, (720, 1260)),
    ],
)
def test_the_local_frame_follows_the_image(
    image: tuple[int, int], short: int, frame: tuple[int, int]
) -> None:
    assert image_frame_size(*image, short) == frame
