"""A klingbot pipeline process for the memory test (driven by test_pipeline_memory.py).

    python -m tests.pipeline_memory_worker ROOT API_BASE SINK

Peak RSS (VmHWM) is process-wide and only grows, so the pipeline runs alone in this fresh process:
the real Harness, database, web server and EachLabs adapter (tests.pipeline_support),
pointed at the EachLabs double that the parent test process serves; the vendor's bytes are
generated and streamed over loopback by the parent, so they are not part of this RSS.

SINK "copy" delivers with RecordingSink (shutil.copyfile: a streamed copy); "whole" reads the clip
into memory first (the control: shows the measurement sees a clip held whole).

Protocol, one JSON object per stdout line:
    -> {"event": "warm", ...}   one small job was delivered: imports, database, web server,
                                HTTP connections and the download/delivery path are all warm
    <- "go" on stdin            the parent serves the large clip now (after a short delay)
    -> {"event": "done", ...}   VmHWM when the download began (the job is succeeded; the double
                                holds the file back) and after delivery; the job's outcome
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bot.pipeline import Delivered, Fence
from bot.providers import ProviderHttp, VideoProvider
from bot.providers.eachlabs import EachLabsProvider
from bot.settings import EachLabsSettings
from storage import Job, JobState
from tests.pipeline_support import member, pipeline
from tests.provider_doubles.eachlabs import API_KEY

REQUEST = {"prompt": "a red fox running through snow", "duration_s": 5}


def status_kb(field: str) -> int:
    """A `kB` field of /proc/self/status (VmHWM: peak RSS, VmRSS: current RSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


class WholeSink:
    """Delivers by reading the clip into memory (what the pipeline must never do)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    async def deliver(self, job: Job, clip: Path, *, link: str | None, fence: Fence) -> Delivered:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        target = self.out_dir / f"{job.id}.mp4"
        data = await asyncio.to_thread(clip.read_bytes)
        async with fence():
            await asyncio.to_thread(target.write_bytes, data)
        return Delivered("file", detail=str(target))


async def main(root: Path, api_base: str, sink: str) -> None:
    def providers(http: ProviderHttp) -> dict[str, VideoProvider]:
        settings = EachLabsSettings(api_key=SecretStr(API_KEY), base_url=api_base)
        return {"eachlabs": EachLabsProvider(settings, http)}

    if sink not in ("whole", "copy"):
        raise SystemExit(f"unknown sink {sink!r}")
    whole = WholeSink(root / "delivered") if sink == "whole" else None
    async with pipeline(
        root, providers, default_provider="eachlabs", public=False, sink=whole
    ) as p:
        await p.ledger.issue_to_member(1, 7, 1000, key="seed")

        small = await p.service.submit(member(), REQUEST)
        await p.wait_for_state(small.job.id, JobState.DELIVERED)
        gc.collect()
        emit("warm", hwm_kb=status_kb("VmHWM"), rss_kb=status_kb("VmRSS"))

        if (await asyncio.to_thread(sys.stdin.readline)).strip() != "go":
            raise SystemExit("expected go")
        receipt = await p.service.submit(member(), REQUEST)
        await p.wait_for_state(receipt.job.id, JobState.SUCCEEDED)
        before_kb = status_kb("VmHWM")  # the download has started; no byte has arrived yet
        job = await p.wait_for_state(
            receipt.job.id, JobState.DELIVERED, JobState.FAILED, timeout_s=60
        )
        after_kb = status_kb("VmHWM")
        delivered = p.sink.out_dir / f"{job.id}.mp4"
        emit(
            "done",
            before_kb=before_kb,
            after_kb=after_kb,
            rss_kb=status_kb("VmRSS"),
            state=job.state.value,
            error=job.error_message,
            media_size_bytes=job.media_size_bytes,
            path=str(delivered),
            size=delivered.stat().st_size if delivered.exists() else None,
            captures=await p.captures(job.id),
        )


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))
