"""Media retention: clips go after their retention age or when the folder is over its size cap,
oldest first, but never while their job still needs them."""

from __future__ import annotations

import os
from pathlib import Path

from bot.pipeline import MediaStore
from bot.providers import ProviderHttp, VideoProvider
from bot.providers.local import LocalProvider
from bot.settings import LocalSettings
from storage import JobState, ManualClock, OffsetClock
from tests.pipeline_support import member, pipeline


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


async def test_a_clip_that_could_not_be_posted_outlives_the_retention(tmp_path: Path) -> None:
    """The member paid for it and can fetch it with Get the clip at any time: the sweeper keeps
    a delivery_failed job's clip past the retention that removes a delivered one's."""
    clock = OffsetClock()

    def build(http: ProviderHttp) -> dict[str, VideoProvider]:
        settings = LocalSettings(render_s=0.1)
        return {"local": LocalProvider(settings, http, work_dir=tmp_path / "local")}

    async with pipeline(
        tmp_path, build, default_provider="local", clock=clock, delivery_max_attempts=1
    ) as p:
        await p.ledger.issue_to_member(1, 7, 200, key="seed")
        p.sink.fail_next = 1
        request = {"prompt": "a red fox running through snow", "duration_s": 3}
        failed = (await p.service.submit(member(), request)).job
        await p.wait_for_state(failed.id, JobState.DELIVERY_FAILED)
        delivered = (await p.service.submit(member(), request)).job
        await p.wait_for_state(delivered.id, JobState.DELIVERED)
        clock.advance(seconds=2 * 86400)  # the harness keeps media for one day
        await p.service.sweep()
        assert p.service.media.clip_path(failed.id).exists()
        assert not p.service.media.clip_path(delivered.id).exists()
