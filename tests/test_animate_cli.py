"""`klingbot generate --image PATH`: an image animated offline with the local provider, and each
bad image or option refused with its own message before anything runs."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest
from PIL import Image

from tests.test_cli_bot import klingbot


def write_image(path: Path, width: int, height: int, fmt: str = "PNG") -> Path:
    image = Image.new("RGB", (width, height), (40, 120, 200))
    image.paste((250, 200, 40), (width // 4, height // 4, width // 2, height // 2))
    out = io.BytesIO()
    image.save(out, fmt)
    path.write_bytes(out.getvalue())
    return path


def video_size(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as clip:
        video = clip.streams.video[0]
        return video.width, video.height


def test_generate_animates_an_image_offline(tmp_path: Path) -> None:
    image = write_image(tmp_path / "garden.png", 1200, 800)
    end = write_image(tmp_path / "garden-end.jpg", 1200, 800, "JPEG")
    out = tmp_path / "garden.mp4"
    result = klingbot(
        "generate",
        "the leaves sway",
        "--image",
        str(image),
        "--end-image",
        str(end),
        "--duration",
        "3",
        "--out",
        str(out),
        cwd=tmp_path,
        KLINGBOT_LOCAL_RENDER_S="0.2",
    )
    assert result.returncode == 0, result.stderr
    assert "from a 1200×800 image" in result.stderr and "not charged" in result.stderr
    assert video_size(out) == (1080, 720)  # the image's 3:2 at 720p
    stored = sorted(p.suffix for p in (tmp_path / "data" / "media" / "images").iterdir())
    assert stored == [".jpg", ".png"]
    # no prompt: the local renderer animates the image alone
    portrait = write_image(tmp_path / "tall.webp", 600, 900, "WEBP")
    out = tmp_path / "tall.mp4"
    result = klingbot(
        "generate",
        "--image",
        str(portrait),
        "--duration",
        "3",
        "--out",
        str(out),
        cwd=tmp_path,
        KLINGBOT_LOCAL_RENDER_S="0.2",
    )
    assert result.returncode == 0, result.stderr
    assert video_size(out) == (720, 1080)


def bad_file(kind: str, folder: Path) -> Path:
    """A file that breaks one rule (or none exists)."""
    if kind == "tiny":
        return write_image(folder / "tiny.png", 200, 200)
    if kind == "panorama":
        return write_image(folder / "wide.jpg", 1500, 500, "JPEG")
    if kind == "twelve_mb":
        path = folder / "big.png"
        path.write_bytes(b"\0" * (12 * 1024 * 1024))
        return path
    if kind == "text":
        path = folder / "notes.txt"
        path.write_text("just words")
        return path
    if kind == "landscape":
        return write_image(folder / "wide.png", 1280, 720)
    return folder / "missing.png"


@pytest.mark.parametrize(
    ("kind", "extra", "expected"),
    [
        ("tiny", [], "'tiny.png' is 200×200 px; each side must be at least 300 px"),
        ("panorama", [], "1500×500 px (aspect 3.00:1)"),
        ("twelve_mb", [], "'big.png' is 12.0 MB; the limit is 10 MB"),
        ("text", [], "'notes.txt' is not an image this bot can read"),
        ("landscape", ["--aspect", "9:16"], "leave the aspect ratio out"),
        ("missing", [], "No such file"),
    ],
)
def test_generate_refuses_bad_images_before_anything_runs(
    tmp_path: Path, kind: str, extra: list[str], expected: str
) -> None:
    path = bad_file(kind, tmp_path)
    out = tmp_path / "x.mp4"
    result = klingbot(
        "generate", "move", "--image", str(path), *extra, "--out", str(out), cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
    assert not (tmp_path / "data" / "media" / "images").exists()


def test_generate_end_image_needs_an_image(tmp_path: Path) -> None:
    end = write_image(tmp_path / "end.png", 640, 640)
    result = klingbot("generate", "x", "--end-image", str(end), cwd=tmp_path)
    assert result.returncode == 2 and "--end-image needs --image" in result.stderr


def test_generate_with_an_image_on_a_provider_that_cannot_names_those_that_can(
    tmp_path: Path,
) -> None:
    image = write_image(tmp_path / "cat.png", 640, 480)
    result = klingbot(
        "generate",
        "purr",
        "--image",
        str(image),
        cwd=tmp_path,
        KLINGBOT_PROVIDER="pixeldojo",
        KLINGBOT_PIXELDOJO_API_KEY="pd_test",
        KLINGBOT_PIXELDOJO_BASE_URL="http://127.0.0.1:9/api/v1",  # never called
    )
    assert result.returncode == 2, result.stderr
    assert "PixelDojo has no documented Kling v3 image-to-video" in result.stderr
    assert "The local preview renderer" in result.stderr
