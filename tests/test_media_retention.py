"""Media retention: clips go after their retention age or when the folder is over its size cap,
oldest first, but never while their job still needs them."""

from __future__ import annotations

import os
from pathlib import Path

from bot.pipeline import MediaStore
from storage import ManualClock


def clip(store: MediaStore, job_id: str, size: int, age_s: float, now_s: float) -> Path:
    path = store.clip_path(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (now_s - age_s, now_s - age_s))
    return path


def test_prune_by_age_and_size_keeping_unfinished_jobs(tmp_path: Path) -> None:
    clock = ManualClock()
    now_s = clock.now_ms() / 1000
    store = MediaStore(tmp_path, None, retention_s=3600, max_total_bytes=2500, clock=clock)
    old = clip(store, "aaaaaaaaaaaa", 100, 7200, now_s)
    old_but_live = clip(store, "bbbbbbbbbbbb", 100, 7200, now_s)
    oldest_recent = clip(store, "cccccccccccc", 1000, 600, now_s)
    middle = clip(store, "dddddddddddd", 1000, 300, now_s)
    newest = clip(store, "eeeeeeeeeeee", 1000, 10, now_s)
    removed = store.prune(keep={"bbbbbbbbbbbb"})
    assert set(removed) == {old, oldest_recent}  # too old; then oldest until under 2500 bytes
    assert old_but_live.exists() and middle.exists() and newest.exists()
    assert store.prune(keep={"bbbbbbbbbbbb"}) == []
