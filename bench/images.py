"""Image-to-video's local costs: checking an upload and rendering the offline image clip.

Measured, each against a baseline in the same run on the same input:

  check JPEG  `check_image` of a 4000×3000 photo-like JPEG (kept byte for byte: it is opened,
              decoded once to prove it is whole, and hashed), against Pillow's bare decode of it
  check WebP  `check_image` of the same picture as WebP (decoded and re-encoded as JPEG), against
              Pillow's bare decode of the WebP plus a JPEG encode at the same settings
  render      `render_image_preview` of a 5 s 720p clip panning across the image, against
              `render_preview` (the text-to-video preview) of the same frame size and length

Each is the median of `--repeat` runs; the ratio is measured / baseline.

    python -m bench.images [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bot.media import image_frame_size, render_image_preview, render_preview
from bot.media.images import check_image


def median_s(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def photo(width: int, height: int) -> Image.Image:
    """A smooth gradient with mild noise: compresses like a photo, not like a flat colour."""
    rng = np.random.default_rng(1)
    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    base = np.concatenate([xs + 0 * ys, ys + 0 * xs, (xs + ys) / 2], axis=2)
    noisy = base + rng.normal(0, 6, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def bare_decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        image.load()


def decode_and_jpeg(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        image.convert("RGB").save(io.BytesIO(), "JPEG", quality=92, optimize=True)


def report(name: str, measured_s: float, baseline_s: float) -> None:
    print(
        f"{name:<12} {measured_s * 1000:9.1f} ms   baseline {baseline_s * 1000:9.1f} ms"
        f"   ratio {measured_s / baseline_s:5.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    picture = photo(4000, 3000)
    jpeg = encoded(picture, "JPEG", quality=90)
    webp = encoded(picture, "WEBP", quality=90)
    print(f"inputs: JPEG {len(jpeg) / 1e6:.1f} MB, WebP {len(webp) / 1e6:.1f} MB, 4000×3000")
    report(
        "check JPEG",
        median_s(lambda: check_image(jpeg), args.repeat),
        median_s(lambda: bare_decode(jpeg), args.repeat),
    )
    report(
        "check WebP",
        median_s(lambda: check_image(webp), args.repeat),
        median_s(lambda: decode_and_jpeg(webp), args.repeat),
    )
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        source = work / "image.jpg"
        source.write_bytes(jpeg)
        width, height = image_frame_size(4000, 3000, 720)
        report(
            "render",
            median_s(
                lambda: render_image_preview(
                    work / "image.mp4",
                    image=source,
                    duration_s=5,
                    width=width,
                    height=height,
                    audio=True,
                ),
                args.repeat,
            ),
            median_s(
                lambda: render_preview(
                    work / "text.mp4",
                    prompt="A red fox running through snow",
                    duration_s=5,
                    width=width,
                    height=height,
                    audio=True,
                ),
                args.repeat,
            ),
        )


if __name__ == "__main__":
    main()
