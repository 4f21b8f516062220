"""A real (tiny) video for the doubles to serve: the bot keeps a download only if it is a video."""

from __future__ import annotations

import functools
import io
from fractions import Fraction

import av
import numpy as np

FREE_BOX_HEADER_BYTES = 8


@functools.cache
def tiny_clip() -> bytes:
    """Half a second of 64x64 H.264 in MP4 (a few kB), made once per process."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(5):
            plane = np.full((96, 64), 16 + 40 * index, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, 10)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def padded_clip_head(total_bytes: int) -> bytes:
    """The first bytes of a valid MP4 of exactly `total_bytes`: the tiny clip, then the header of
    an MP4 `free` box that holds the rest (any filler bytes; players and probes skip it)."""
    clip = tiny_clip()
    rest = total_bytes - len(clip)
    if not FREE_BOX_HEADER_BYTES <= rest < 2**32:
        raise ValueError(f"cannot pad a {len(clip)}-byte clip to {total_bytes} bytes")
    return clip + rest.to_bytes(4, "big") + b"free"
