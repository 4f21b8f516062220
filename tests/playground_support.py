"""A running playground for tests: the scenario's Discord double, the real KlingBot (every cog,
the `local` provider) logged into it, and the page's app (bot.playground.web) on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.discord.cli import open_bot
from bot.discord.client import KlingBot
from bot.playground.double import DiscordDouble, patch_discord_py
from bot.playground.scenario import PLAYGROUND, PLAYGROUND_GUILD, build_world, make_double
from bot.playground.web import create_app
from storage import OffsetClock
from tests.e2e_support import make_settings, settle_discord_py_events

TOKEN = "playground-test-token"


@dataclass
class Stack:
    double: DiscordDouble
    bot: KlingBot
    url: str


@asynccontextmanager
async def playground_stack(tmp_path: Path, **settings: Any) -> AsyncIterator[Stack]:
    """Double + bot + page app; the page's URL in ``Stack.url``."""
    double = make_double(PLAYGROUND, token=TOKEN)
    await double.start()
    build_world(double, PLAYGROUND)
    values: dict[str, Any] = {
        "dev_guild_id": PLAYGROUND_GUILD,
        "owner_ids": [PLAYGROUND.owner.id],
    }
    values.update(settings)
    config = make_settings(tmp_path, **values)
    runner = web.AppRunner(create_app(double, PLAYGROUND), handle_signals=False)
    try:
        with patch_discord_py(double):
            async with open_bot(config, clock=OffsetClock(), guild_ready_timeout=0.1) as bot:
                task = asyncio.create_task(bot.start(TOKEN))
                try:
                    await double.wait_until_connected(timeout=15)
                    await double.wait_for(lambda: bool(double.commands(PLAYGROUND_GUILD)), 15)
                    await runner.setup()
                    site = web.TCPSite(runner, "127.0.0.1", 0)
                    await site.start()
                    port = int(runner.addresses[0][1])
                    yield Stack(double, bot, f"http://127.0.0.1:{port}")
                finally:
                    await runner.cleanup()
                    await bot.close()
                    await asyncio.wait_for(task, 15)
                    await settle_discord_py_events()
    finally:
        await double.stop()
