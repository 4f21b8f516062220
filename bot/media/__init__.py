"""Media helpers: probe clips, render offline previews, shrink clips to upload limits.

All functions are synchronous and CPU-bound; call them via ``asyncio.to_thread``.
"""

from bot.media.errors import CannotFitError, MediaError
from bot.media.probe import MediaInfo, probe
from bot.media.render import image_frame_size, render_image_preview, render_preview
from bot.media.transcode import shrink_to_fit

__all__ = [
    "CannotFitError",
    "MediaError",
    "MediaInfo",
    "image_frame_size",
    "probe",
    "render_image_preview",
    "render_preview",
    "shrink_to_fit",
]
