"""A klingbot pipeline process for the restart tests (driven by test_pipeline_restart.py).

    python -m tests.pipeline_worker CONFIG.json

It runs the real Pipeline against the EachLabs double whose URL the config names, and
delivers into a folder, appending one line per delivery to deliveries.log (so a test can count
them). Without the gate file, delivery never comes: the test kills the process while it waits. With "stage": "after_reserve" it
submits one job and SIGKILLs itself right after the hold is committed, before anything else runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import aiohttp
from pydantic import SecretStr

from bot.pipeline import Delivered, Fence, MediaStore, Pipeline, PipelineConfig, Requester
from bot.pricing import PriceTable
from bot.providers import ProviderHttp
from bot.providers.eachlabs import EachLabsProvider
from bot.settings import EachLabsSettings
from storage import Database, Job, SystemClock


class GatedSink:
    def __init__(self, out_dir: Path, gate: Path) -> None:
        self.out_dir = out_dir
        self.gate = gate

    async def deliver(self, job: Job, clip: Path, *, link: str | None, fence: Fence) -> Delivered:
        if not await asyncio.to_thread(self.gate.exists):
            await asyncio.Event().wait()  # held here until the test kills this process
        self.out_dir.mkdir(parents=True, exist_ok=True)
        async with fence():
            await asyncio.to_thread(shutil.copyfile, clip, self.out_dir / f"{job.id}.mp4")
            with (self.out_dir / "deliveries.log").open("a") as log:
                log.write(job.id + "\n")
        return Delivered("file")


async def main(config: dict[str, str]) -> None:
    root = Path(config["root"])
    db = await Database.open(root / "bot.db")
    async with aiohttp.ClientSession() as session:
        http = ProviderHttp(session, timeout_s=5.0)
        provider = EachLabsProvider(
            EachLabsSettings(api_key=SecretStr(config["api_key"]), base_url=config["base_url"]),
            http,
        )
        service = Pipeline(
            db=db,
            providers={"eachlabs": provider},
            default_provider="eachlabs",
            pricing=PriceTable(),
            media=MediaStore(root / "media", None, 86400, 10**10, SystemClock()),
            delivery=GatedSink(root / "out", root / "gate"),
            session=session,
            config=PipelineConfig(poll_initial_s=0.05, poll_max_s=0.1, deadline_s=600),
        )
        request = {"prompt": "a fox in the snow", "duration_s": 5}
        if config.get("stage") == "after_reserve":
            service.open_intake()  # intake only: nothing else runs before the kill
            receipt = await service.submit(Requester(guild_id=1, user_id=7), request)
            print(receipt.job.id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        await service.start()
        if config.get("submit"):
            receipt = await service.submit(Requester(guild_id=1, user_id=7), request)
            print(receipt.job.id, flush=True)
        print("running", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
