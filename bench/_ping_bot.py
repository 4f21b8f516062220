"""The bot that bench/interactions.py measures: KlingBot plus two baseline commands, runnable in
the benchmark's process or in a process of its own.

    python -m bench._ping_bot DIR VENDOR_URL API_BASE GATEWAY_URL

runs it against the Discord double at API_BASE/GATEWAY_URL and the EachLabs double at
VENDOR_URL, with its database and media under DIR (the settings of `bot_settings`), until
SIGTERM. It prints one JSON line, {"pid": ...}, once the runtime is open.

With BENCH_REENCODE_CLIP set (bench/transcode.py), SIGUSR1 starts BENCH_REENCODE_COUNT re-encodes
of that clip to BENCH_REENCODE_MAX_BYTES in the runtime's Transcoder, back to back, and prints
{"running": n} once they run; SIGUSR2 stops them and prints {"running": 0, "finished": n} once
the last one has ended.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import discord
from discord import app_commands
from pydantic import SecretStr

from bot.discord.cli import open_bot
from bot.discord.client import KlingBot
from bot.media import Transcoder
from bot.playground.double import patch_discord_py
from bot.runtime import Runtime
from bot.settings import EachLabsSettings, Settings
from storage import OffsetClock
from tests.e2e_support import TOKEN, make_settings
from tests.provider_doubles.eachlabs import API_KEY


class PingBot(KlingBot):
    """KlingBot plus two no-op commands, added before setup_hook syncs the commands: /ping
    answers at once; /pingdefer has /video's shape (defer, then the answer as a followup)."""

    async def setup_hook(self) -> None:
        @app_commands.command(name="ping", description="Answer at once (benchmark baseline)")
        async def ping(interaction: discord.Interaction[Any]) -> None:
            await interaction.response.send_message("pong", ephemeral=True)

        @app_commands.command(name="pingdefer", description="Defer, then answer (baseline)")
        async def pingdefer(interaction: discord.Interaction[Any]) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            await interaction.followup.send("pong", ephemeral=True)

        self.tree.add_command(ping)
        self.tree.add_command(pingdefer)
        await super().setup_hook()


def bot_settings(data_dir: Path, vendor_url: str) -> Settings:
    """The end-to-end settings with EachLabs (at `vendor_url`) and the shipped poll pacing."""
    return make_settings(
        data_dir,
        provider="eachlabs",
        eachlabs=EachLabsSettings(api_key=SecretStr(API_KEY), base_url=vendor_url),
        poll_initial_interval_s=5.0,
        poll_max_interval_s=60.0,
        status_edit_interval_s=5.0,
    )


@asynccontextmanager
async def running_ping_bot(settings: Settings) -> AsyncIterator[tuple[PingBot, Runtime]]:
    """Open the runtime and log PingBot in (discord.py must already point at the double)."""
    async with open_bot(
        settings, bot_cls=PingBot, clock=OffsetClock(), guild_ready_timeout=0.1
    ) as bot:
        assert isinstance(bot, PingBot)
        task = asyncio.create_task(bot.start(TOKEN))
        try:
            yield bot, bot.runtime
        finally:
            await bot.close()
            await asyncio.wait_for(task, 15)


class Reencodes:
    """Re-encodes of one clip, `count` at once, back to back, between start() and stop()."""

    def __init__(self, transcoder: Transcoder, clip: Path, max_bytes: int, count: int) -> None:
        self.transcoder = transcoder
        self.clip = clip
        self.max_bytes = max_bytes
        self.count = count
        self.finished = 0
        self._stopping = False
        self._reported = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._stopping, self._reported, self.finished = False, False, 0
        self._tasks = [asyncio.create_task(self._loop(n)) for n in range(self.count)]

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*self._tasks)
        print(json.dumps({"running": 0, "finished": self.finished}), flush=True)

    async def _loop(self, n: int) -> None:
        out = self.clip.with_name(f"reencoded-{n}.mp4")
        while not self._stopping:
            await self.transcoder.shrink(
                self.clip, out, max_bytes=self.max_bytes, on_start=self._started
            )
            self.finished += 1

    async def _started(self) -> None:
        if not self._reported and self.transcoder.running >= self.count:
            self._reported = True
            print(json.dumps({"running": self.transcoder.running}), flush=True)


async def serve(data_dir: Path, vendor_url: str, api_base: str, gateway_url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    target = _Target(api_base, gateway_url)
    with patch_discord_py(target):  # type: ignore[arg-type]
        async with running_ping_bot(bot_settings(data_dir, vendor_url)) as (_bot, runtime):
            clip = os.environ.get("BENCH_REENCODE_CLIP")
            if clip:
                reencodes = Reencodes(
                    runtime.transcoder,
                    Path(clip),
                    int(os.environ["BENCH_REENCODE_MAX_BYTES"]),
                    int(os.environ.get("BENCH_REENCODE_COUNT", "2")),
                )
                stopping: set[asyncio.Task[None]] = set()

                def stop_reencodes() -> None:
                    task = asyncio.create_task(reencodes.stop())
                    stopping.add(task)
                    task.add_done_callback(stopping.discard)

                loop.add_signal_handler(signal.SIGUSR1, reencodes.start)
                loop.add_signal_handler(signal.SIGUSR2, stop_reencodes)
            print(json.dumps({"pid": os.getpid()}), flush=True)
            await stop.wait()


class _Target:
    """What `patch_discord_py` reads of a double: where its REST API and gateway listen."""

    def __init__(self, api_base: str, gateway_url: str) -> None:
        self.api_base = api_base
        self.gateway_url = gateway_url


if __name__ == "__main__":
    directory, vendor, api, gateway = sys.argv[1:5]
    asyncio.run(serve(Path(directory), vendor, api, gateway))
