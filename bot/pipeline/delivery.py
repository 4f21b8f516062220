"""Delivering a finished clip: the sink interface, the file sink, and fitting upload limits.

A sink gets the original clip and the job (which knows the destination's upload limit). If the
clip is larger than the limit it is re-encoded to fit (two-pass, filling 95-100 % of the limit, in
a `Transcoder`'s worker processes with their own concurrency limit); if it cannot fit, a link to
the original on the bot's own /media URL is the fallback (only when KLINGBOT_PUBLIC_URL is set).

A clip is posted once even when several processes share the database: a sink runs the post
itself (after any re-encode) inside `async with fence():`, which first confirms that this process
still holds the job's lease (else it raises storage.LeaseLost, which the sink lets through) and
then bounds the post by the upload timeout, which the lease outlasts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bot.errors import KlingbotError
from bot.media import CannotFitError, MediaError, Transcoder
from storage import Job


@dataclass(frozen=True)
class Delivered:
    """Where a clip went. `via`: file (as is), reencoded (shrunk to fit), link, dm."""

    via: str
    message_id: int | None = None
    detail: str = ""


class DeliveryError(KlingbotError):
    """A clip could not be delivered; `retryable` says whether trying later may help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


# Around the post itself: raises storage.LeaseLost when this process may not post the clip (another
# holds the job now), and DeliveryError when the post outlasts the upload timeout.
Fence = Callable[[], AbstractAsyncContextManager[None]]


class DeliverySink(Protocol):
    async def deliver(self, job: Job, clip: Path, *, link: str | None, fence: Fence) -> Delivered:
        """Put the clip where the job's requester sees it, posting inside `async with fence():`
        (each post, if it takes more than one); raise DeliveryError otherwise."""


@dataclass(frozen=True)
class FittedClip:
    path: Path
    reencoded: bool


async def fit_clip(
    clip: Path,
    max_bytes: int,
    fitted: Path,
    *,
    transcoder: Transcoder,
    on_fitting: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> FittedClip:
    """The clip itself if it fits, else a re-encoded copy at `fitted` (kept from before a
    restart, or made now); CannotFitError if neither, MediaError if the clip is unreadable.

    The re-encode runs in `transcoder`'s workers (its limit: KLINGBOT_TRANSCODE_CONCURRENCY)
    when its turn comes; `on_fitting` (e.g. "fitting the clip to this channel" on the status message) is
    awaited then, beside the re-encode. Neither runs when the clip fits as it is.
    """
    ready = await asyncio.to_thread(_already_fitted, clip, max_bytes, fitted)
    if ready is not None:
        return ready
    await transcoder.shrink(clip, fitted, max_bytes=max_bytes, on_start=on_fitting)
    return FittedClip(fitted, True)


def _already_fitted(clip: Path, max_bytes: int, fitted: Path) -> FittedClip | None:
    if clip.stat().st_size <= max_bytes:
        return FittedClip(clip, False)
    if fitted.exists() and fitted.stat().st_size <= max_bytes:
        return FittedClip(fitted, True)  # re-encoded before a restart
    fitted.parent.mkdir(parents=True, exist_ok=True)
    return None


class FileSink:
    """Writes the clip to a file (the CLI's `--out`), fitted to `max_bytes` when given."""

    def __init__(
        self, out: Path, *, max_bytes: int | None = None, transcoder: Transcoder | None = None
    ) -> None:
        self.out = out
        self.max_bytes = max_bytes
        self.transcoder = transcoder

    async def deliver(self, job: Job, clip: Path, *, link: str | None, fence: Fence) -> Delivered:
        source, via = clip, "file"
        size = await asyncio.to_thread(os.path.getsize, clip)
        if self.max_bytes is not None and size > self.max_bytes:
            own = self.transcoder is None  # the CLI's one clip: a worker just for it
            transcoder = self.transcoder or Transcoder(1)
            try:
                fitted = await fit_clip(
                    clip, self.max_bytes, self.out.with_suffix(".fit.mp4"), transcoder=transcoder
                )
            except CannotFitError as error:
                raise DeliveryError(str(error), retryable=False) from error
            except MediaError as error:
                raise DeliveryError(
                    f"cannot re-encode the clip: {error}", retryable=False
                ) from error
            finally:
                if own:
                    transcoder.close()
            source, via = fitted.path, "reencoded"
        self.out.parent.mkdir(parents=True, exist_ok=True)
        partial = self.out.with_name(f".{self.out.name}.part")
        try:
            async with fence():
                await asyncio.to_thread(shutil.copyfile, source, partial)
                partial.replace(self.out)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise DeliveryError(f"cannot write {self.out}: {error}") from error
        finally:
            if source != clip:
                source.unlink(missing_ok=True)
        return Delivered(via, detail=str(self.out))
