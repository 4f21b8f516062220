"""A running playground for tests: the real `Playground` runner (the scenario's Discord double,
the real KlingBot with every cog and the `local` provider logged into it, the page, the bot's own
web app) in this test's event loop, on a free port of 127.0.0.1, with its data under tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.discord.client import KlingBot
from bot.playground.double import DiscordDouble
from bot.playground.runner import Playground
from tests.e2e_support import make_settings, settle_discord_py_events


@dataclass
class Stack:
    double: DiscordDouble
    bot: KlingBot
    url: str


@asynccontextmanager
async def playground_stack(tmp_path: Path, **settings: Any) -> AsyncIterator[Stack]:
    """The playground as `klingbot playground --port 0` runs it; its URL in ``Stack.url``
    (without the trailing slash). `settings` override the test defaults (fast polls, short
    local renders)."""
    base = make_settings(tmp_path, **settings)
    async with Playground(base, port=0, data_dir=tmp_path / "data") as playground:
        yield Stack(playground.double, playground.bot, playground.url.rstrip("/"))
    await settle_discord_py_events()
