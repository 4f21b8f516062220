"""One of several klingbot pipeline processes sharing one database (driven by
test_multi_process.py).

    python -m tests.multi_worker CONFIG.json

It runs the real Pipeline, with the process id and lease time the config names, against the
Kling double at the config's URL, on the shared database file, and delivers into a shared folder:
one line `job id, process id` per delivery appended to deliveries.log, so a test can count them.
It takes no requests itself; the test queues them. It runs until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import aiohttp
from pydantic import SecretStr

from bot.pipeline import Delivered, Fence, MediaStore, Pipeline, PipelineConfig
from bot.pricing import PriceTable
from bot.providers import ProviderHttp
from bot.providers.kling import KlingProvider
from bot.settings import KlingSettings
from storage import Database, Job, SystemClock
from tests.provider_doubles.kling import ACCESS_KEY, SECRET_KEY


class LoggedSink:
    """Copies the clip out and appends `job id, process id` to deliveries.log."""

    def __init__(self, out_dir: Path, process_id: str) -> None:
        self.out_dir = out_dir
        self.process_id = process_id

    async def deliver(self, job: Job, clip: Path, *, link: str | None, fence: Fence) -> Delivered:
        async with fence():
            await asyncio.to_thread(shutil.copyfile, clip, self.out_dir / f"{job.id}.mp4")
            line = f"{job.id},{self.process_id}\n".encode()
            fd = os.open(self.out_dir / "deliveries.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, line)  # one short O_APPEND write: lines of processes never interleave
            finally:
                os.close(fd)
        return Delivered("file")


def pipeline_config(config: dict[str, object]) -> PipelineConfig:
    return PipelineConfig(
        poll_initial_s=0.05,
        poll_max_s=0.2,
        deadline_s=600,
        max_concurrent={"kling": int(str(config["slots"]))},
        creates_per_min={"kling": int(str(config["creates_per_min"]))},
        polls_per_min={"kling": 600_000},
        process_id=str(config["process_id"]),
        lease_s=float(str(config["lease_s"])),
    )


def kling(base_url: str, http: ProviderHttp) -> KlingProvider:
    return KlingProvider(
        KlingSettings(
            access_key=SecretStr(ACCESS_KEY), secret_key=SecretStr(SECRET_KEY), base_url=base_url
        ),
        http,
    )


async def main(config: dict[str, object]) -> None:
    root = Path(str(config["root"]))
    db = await Database.open(str(config["database"]))
    async with aiohttp.ClientSession() as session:
        service = Pipeline(
            db=db,
            providers={"kling": kling(str(config["base_url"]), ProviderHttp(session, timeout_s=5))},
            default_provider="kling",
            pricing=PriceTable(),
            media=MediaStore(root / "media", None, 86400, 10**10, SystemClock()),
            delivery=LoggedSink(root / "out", str(config["process_id"])),
            session=session,
            config=pipeline_config(config),
        )
        await service.start()
        print("running", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
