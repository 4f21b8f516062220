"""The image contents an adapter gets at submit time (the request itself only holds `ImageRef`s).

The pipeline builds `ImageInputs` from the files stored with the job (`ImageInputs.load`), with
the bot's public `/media` URL of each image when KLINGBOT_PUBLIC_URL is set. Each adapter picks the
form its vendor takes: the URL when there is one, else raw base64 (Kling), a data URI, or the
vendor's own upload.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.media.images import image_path
from bot.providers.errors import ErrorKind, ProviderError
from bot.request import ImageRef, VideoRequest

__all__ = ["ImageInput", "ImageInputs", "pick_image"]


@dataclass(frozen=True)
class ImageInput:
    """One image's bytes, MIME type and, when the bot serves it publicly, its URL."""

    data: bytes
    mime: str
    url: str | None = None

    def base64(self) -> str:
        """Plain base64 without a `data:` prefix (what Kling's API takes)."""
        return base64.b64encode(self.data).decode("ascii")

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{self.base64()}"

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:  # never print megabytes of image into a log
        return f"ImageInput({self.mime}, {len(self.data)} bytes, url={self.url!r})"


@dataclass(frozen=True)
class ImageInputs:
    """The start frame and (optional) end frame of an image-to-video request."""

    start: ImageInput | None = None
    end: ImageInput | None = None

    @classmethod
    def load(
        cls,
        request: VideoRequest,
        directory: Path,
        *,
        url_for: Callable[[ImageRef], str | None] | None = None,
    ) -> ImageInputs | None:
        """Read the request's images from `directory` (see `bot.media.images.save_image`).

        None for a text-to-video request. Raises ProviderError (invalid input: nothing can be
        sent) when a stored image is missing or no longer matches its hash. Blocking: call it in
        a thread.
        """
        if request.image is None:
            return None
        return cls(
            start=_read(directory, request.image, url_for),
            end=_read(directory, request.end_image, url_for) if request.end_image else None,
        )


def _read(
    directory: Path, ref: ImageRef, url_for: Callable[[ImageRef], str | None] | None
) -> ImageInput:
    path = image_path(directory, ref)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ProviderError(
            ErrorKind.INVALID_INPUT, f"the stored image {path.name} cannot be read: {error}"
        ) from error
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise ProviderError(
            ErrorKind.INVALID_INPUT, f"the stored image {path.name} does not match its hash"
        )
    return ImageInput(data, ref.mime, url_for(ref) if url_for is not None else None)


def pick_image(
    images: ImageInputs | None, ref: ImageRef | None, which: str, *, provider: str
) -> ImageInput | None:
    """The input for `ref` (None when the request has no such image).

    Raises ProviderError (invalid input) when the request names an image whose contents were not
    passed to `submit`: a caller's mistake, found before anything is sent.
    """
    if ref is None:
        return None
    found = None if images is None else (images.start if which == "start" else images.end)
    if found is None:
        raise ProviderError(
            ErrorKind.INVALID_INPUT,
            f"the request has a {which} image but submit() got no image contents for it",
            provider=provider,
        )
    return found
