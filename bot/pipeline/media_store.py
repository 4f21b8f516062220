"""Where clips and the images of image-to-video jobs live on disk, their public links, and
retention by age and total size."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bot.media.images import NormalizedImage, image_path, save_image
from bot.providers.images import ImageInputs
from bot.request import ImageRef, VideoRequest
from storage import Clock, Job

IMAGE_SUFFIXES = (".png", ".jpg")
DIR_MODE = 0o700


@dataclass(frozen=True)
class MediaStore:
    root: Path
    public_url: str | None
    retention_s: int
    max_total_bytes: int
    clock: Clock

    @property
    def clips_dir(self) -> Path:
        return self.root / "clips"

    @property
    def images_dir(self) -> Path:
        """The checked images of image-to-video jobs, kept under their sha256."""
        return self.root / "images"

    @property
    def retention_text(self) -> str:
        """How long media is kept, in words ("7 days")."""
        return _period(self.retention_s)

    def clip_path(self, job_id: str) -> Path:
        """The original clip as downloaded from the provider."""
        return self.clips_dir / f"{job_id}.mp4"

    def fitted_path(self, job_id: str, max_bytes: int) -> Path:
        """A copy re-encoded to fit an upload limit."""
        return self.root / "fitted" / f"{job_id}-{max_bytes}.mp4"

    def link(self, job: Job) -> str | None:
        """The bot's own link to the original clip (None without KLINGBOT_PUBLIC_URL, or once
        the link is retired)."""
        if not self.public_url or job.media_retired_at_ms is not None:
            return None
        return f"{self.public_url}/media/{job.id}/{job.media_token}.mp4"

    def prepare(self) -> None:
        """Create the media folders readable by the bot's user only (0700; existing ones are
        tightened): clips, re-encoded copies, images and the providers' work files live below."""
        for folder in (self.root, self.clips_dir, self.root / "fitted"):
            folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            if folder.stat().st_mode & 0o077:
                folder.chmod(DIR_MODE)

    def remove(self, job_id: str) -> list[Path]:
        """Delete a job's clip and its re-encoded copies (its link was retired)."""
        removed = []
        candidates = [self.clip_path(job_id), *(self.root / "fitted").glob(f"{job_id}-*.mp4")]
        for path in candidates:
            try:
                os.remove(path)
            except FileNotFoundError:
                continue
            removed.append(path)
        return removed

    # -- images ----------------------------------------------------------------------------------

    def store_image(self, image: NormalizedImage) -> Path:
        """Keep a checked image with the job about to be asked for (blocking: use a thread).

        The same image is stored once; its retention counts from its latest use.
        """
        self.images_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        path = save_image(self.images_dir, image)
        os.utime(path)
        return path

    def image_link(self, job: Job, ref: ImageRef) -> str | None:
        """The bot's link to one of a job's images, for a vendor that fetches it (None without
        KLINGBOT_PUBLIC_URL). It carries the job's media token, like the clip's link."""
        if not self.public_url:
            return None
        return f"{self.public_url}/media/{job.id}/{job.media_token}/{image_name(ref)}"

    def job_image(self, job: Job, name: str) -> tuple[Path, ImageRef] | None:
        """The stored file of the job's image called `name` (`<sha256>.<ext>`), if it has one."""
        request = VideoRequest.model_validate(job.request)
        for ref in (request.image, request.end_image):
            if ref is not None and image_name(ref) == name:
                return image_path(self.images_dir, ref), ref
        return None

    def load_images(self, job: Job, request: VideoRequest) -> ImageInputs | None:
        """The contents of the request's images for `submit` (blocking: use a thread).

        Raises ProviderError (invalid input) when a stored image is gone or damaged.
        """
        return ImageInputs.load(request, self.images_dir, url_for=partial(self.image_link, job))

    def reuse_images(self, request: VideoRequest) -> list[str]:
        """Before a request's stored images are used again (Reroll, Remix, Confirm): renew their
        retention, and return a sentence for each one that is no longer kept (blocking)."""
        missing: list[str] = []
        for which, ref in (("image", request.image), ("end image", request.end_image)):
            if ref is None:
                continue
            path = image_path(self.images_dir, ref)
            try:
                os.utime(path)
            except FileNotFoundError:
                missing.append(
                    f"The {which} of this video is no longer kept (images are kept"
                    f" {_period(self.retention_s)} after their last use): use /animate with it"
                    " again."
                )
        return missing

    # -- retention -------------------------------------------------------------------------------

    def prune(self, keep: Collection[str] = (), keep_images: Collection[str] = ()) -> list[Path]:
        """Delete media older than the retention, then the oldest until under the size cap.

        Clips of jobs in `keep` (not yet delivered) and images whose sha256 is in `keep_images`
        (of jobs not finished: a retry or a move to another provider reads them again) are never
        deleted.
        """
        now_s = self.clock.now_ms() / 1000
        files: list[tuple[float, int, Path]] = []
        for folder in (self.clips_dir, self.root / "fitted", self.images_dir):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if folder == self.images_dir:
                    if path.suffix not in IMAGE_SUFFIXES or path.stem in keep_images:
                        continue
                elif path.suffix != ".mp4" or path.stem.split("-")[0] in keep:
                    continue
                stat = path.stat()
                files.append((stat.st_mtime, stat.st_size, path))
        files.sort()
        removed: list[Path] = []
        total = sum(size for _, size, _ in files)
        for mtime, size, path in files:
            if now_s - mtime > self.retention_s or total > self.max_total_bytes:
                try:
                    os.remove(path)
                except FileNotFoundError:
                    continue
                total -= size
                removed.append(path)
        return removed


def image_hashes(jobs: Iterable[Job]) -> set[str]:
    """The sha256 of every image the jobs were asked with."""
    found: set[str] = set()
    for job in jobs:
        if job.request.get("image") is None:
            continue
        request = VideoRequest.model_validate(job.request)
        found.update(ref.sha256 for ref in (request.image, request.end_image) if ref is not None)
    return found


def image_name(ref: ImageRef) -> str:
    """The stored file's name, `<sha256>.<png|jpg>` (the last part of its link)."""
    return image_path(Path(), ref).name


def _period(seconds: int) -> str:
    """ "7 days", "1 hour", "1.5 days"."""
    for unit, size_s in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size_s:
            count = seconds / size_s
            return f"{count:g} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} seconds"
