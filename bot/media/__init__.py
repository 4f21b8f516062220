"""Media helpers: probe clips, render offline previews, shrink clips to upload limits.

The functions are synchronous and CPU-bound: call them via ``asyncio.to_thread``, or, for
re-encodes, through a :class:`Transcoder` (worker processes with a concurrency limit).
"""

from bot.media.errors import CannotFitError, MediaError
from bot.media.probe import MediaInfo, probe
from bot.media.render import (
    RenderStopped,
    image_frame_size,
    render_image_preview,
    render_preview,
)
from bot.media.transcode import shrink_to_fit
from bot.media.worker import Shrunk, Transcoder

__all__ = [
    "CannotFitError",
    "MediaError",
    "MediaInfo",
    "RenderStopped",
    "Shrunk",
    "Transcoder",
    "image_frame_size",
    "probe",
    "render_image_preview",
    "render_preview",
    "shrink_to_fit",
]
