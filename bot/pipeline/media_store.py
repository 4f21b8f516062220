"""Where clips live on disk, their public links, and retention by age and total size."""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from storage import Clock, Job

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
        tightened): clips, re-encoded copies and the providers' work files all live below."""
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

    def prune(self, keep: Collection[str] = ()) -> list[Path]:
        """Delete clips older than the retention, then the oldest until under the size cap.

        Clips of jobs in `keep` (not yet delivered) are never deleted.
        """
        now_s = self.clock.now_ms() / 1000
        files: list[tuple[float, int, Path]] = []
        for folder in (self.clips_dir, self.root / "fitted"):
            if not folder.is_dir():
                continue
            for path in folder.glob("*.mp4"):
                job_id = path.stem.split("-")[0]
                if job_id in keep:
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
