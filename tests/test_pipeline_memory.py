"""The clip is never held whole in memory: delivering a 100 MiB clip raises the peak RSS of the
bot's process by less than 30 MB.

Peak RSS (VmHWM) is process-wide and monotonic, so the pipeline runs in a fresh worker process
(tests/pipeline_memory_worker.py) and reports VmHWM itself. The EachLabs double runs here, in the
test process, and generates the 100 MiB as it streams them: the worker's RSS holds only what the
pipeline (download, capture, delivery by stream copy) keeps in memory.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.provider_doubles.clip import padded_clip_head
from tests.provider_doubles.eachlabs import EachLabsDouble

ROOT = Path(__file__).resolve().parent.parent
CLIP_BYTES = 100 * 1024 * 1024
LIMIT_BYTES = 30 * 1000 * 1000
FILL = b"\x5a"  # the byte the double serves after the clip's head


@pytest.fixture
async def double() -> AsyncIterator[EachLabsDouble]:
    async with EachLabsDouble() as d:
        yield d


async def read_event(proc: asyncio.subprocess.Process, event: str) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    assert line, f"the worker ended before {event!r} (exit {await proc.wait()})"
    data: dict[str, Any] = json.loads(line)
    assert data["event"] == event, data
    return data


async def run_worker(
    root: Path, double: EachLabsDouble, sink: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One small job (warm-up), then the large one; the worker's two reports."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.pipeline_memory_worker",
        str(root),
        double.api_base,
        sink,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        warm = await read_event(proc, "warm")
        double.large_video_bytes = CLIP_BYTES
        double.file_delay_s = 0.5  # the worker reads VmHWM while its download waits for bytes
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        done = await read_event(proc, "done")
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return warm, done


def as_served(path: Path) -> bool:
    """The file is the double's large clip: a real video's head, then filler to the end."""
    chunk_size = 1 << 20
    expected = FILL * chunk_size
    head = padded_clip_head(CLIP_BYTES)
    with path.open("rb") as clip:
        if clip.read(len(head)) != head:
            return False
        while chunk := clip.read(chunk_size):
            if chunk != expected[: len(chunk)]:
                return False
    return True


async def test_a_100_mib_clip_raises_peak_rss_by_less_than_30_mb(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    warm, done = await run_worker(tmp_path, double, "copy")
    assert done["state"] == "delivered", done
    assert done["captures"] == [40]
    assert done["media_size_bytes"] == CLIP_BYTES
    delivered = Path(done["path"])
    assert done["size"] == CLIP_BYTES == delivered.stat().st_size
    assert await asyncio.to_thread(as_served, delivered), "the delivered clip is what was served"
    assert len(double.creates_of("/prediction/")) == 2
    increase = (done["after_kb"] - done["before_kb"]) * 1024
    assert done["before_kb"] >= warm["hwm_kb"]
    assert increase < LIMIT_BYTES, (
        f"peak RSS rose by {increase / 1e6:.1f} MB delivering a {CLIP_BYTES / 1e6:.0f} MB clip"
        f" (VmHWM {done['before_kb']} kB -> {done['after_kb']} kB)"
    )


async def test_the_measurement_sees_a_clip_held_whole(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    """The control: a sink that reads the clip into memory shows up (at least 90 % of it; the
    process may reuse a little memory it already had)."""
    _, done = await run_worker(tmp_path, double, "whole")
    assert done["state"] == "delivered", done
    assert done["size"] == CLIP_BYTES
    increase = (done["after_kb"] - done["before_kb"]) * 1024
    assert increase >= CLIP_BYTES * 9 // 10, f"peak RSS rose by only {increase / 1e6:.1f} MB"
