"""`klingbot run`, `klingbot sync` and `klingbot invite-url`."""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import discord

from bot.discord.client import FrontConfig, KlingBot, invite_url, point_discord_py_at, sync_commands
from bot.discord.modlog import ModLogNotices
from bot.errors import ConfigError
from bot.pipeline import Delivered, DeliveryError, Fence
from bot.runtime import open_runtime
from bot.settings import Settings
from storage import Clock, Job

log = logging.getLogger(__name__)

# Gateway close codes that mean the shard settings are wrong (restarting would not help).
SHARDING_REFUSALS = {
    4010: "Discord refused the shard settings (close code 4010, invalid shard): every process"
    " of the bot must use the same KLINGBOT_SHARD_COUNT, and KLINGBOT_SHARD_IDS must be below it.",
    4011: "Discord requires sharding (close code 4011): the bot is in too many servers for one"
    " connection. Set KLINGBOT_SHARD_COUNT (at least one shard per 2,500 servers; Discord"
    " recommends one per 1,000) and start the processes holding every shard.",
}


class NotConnectedSink:
    """A sink for a runtime that never delivers (sync, benchmarks of the Discord side alone)."""

    async def deliver(self, job: Job, clip: Path, *, link: str | None, fence: Fence) -> Delivered:
        raise DeliveryError("not connected to Discord yet")


def require_token(settings: Settings) -> str:
    missing = settings.missing_for_run()
    if missing:
        raise ConfigError("klingbot cannot start:\n  " + "\n  ".join(missing))
    assert settings.discord_token is not None
    return settings.discord_token.get_secret_value().strip()


@asynccontextmanager
async def open_bot(
    settings: Settings,
    *,
    bot_cls: type[KlingBot] = KlingBot,
    clock: Clock | None = None,
    with_web: bool = True,
    start_pipeline: bool = True,
    **bot_options: Any,
) -> AsyncIterator[KlingBot]:
    """Make the bot, build the runtime around its sink, status messages and incident reports,
    and attach it (not logged in yet)."""
    bot = bot_cls(FrontConfig.from_settings(settings), start_pipeline=start_pipeline, **bot_options)
    async with open_runtime(
        settings,
        delivery=bot.sink,
        observers=[bot.status_messages, ModLogNotices(bot)],
        incident_handlers=[bot.report_incident],
        clock=clock,
        with_web=with_web,
        ready_checks={"discord": bot.is_gateway_ready},
    ) as runtime:
        bot.attach(runtime)
        yield bot


async def run(args: argparse.Namespace, settings: Settings) -> int:
    token = require_token(settings)
    point_discord_py_at(settings.discord_api_base_url, settings.discord_gateway_url)
    async with open_bot(settings) as bot:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, lambda: asyncio.ensure_future(bot.close()))
        try:
            async with bot:
                await bot.start(token)
        except discord.LoginFailure:
            print(
                "Discord refused DISCORD_TOKEN: reset the token in the developer portal and set it again.",
                file=sys.stderr,
            )
            return 2
        except discord.PrivilegedIntentsRequired:  # pragma: no cover - klingbot asks for none
            print("Discord refused the requested intents.", file=sys.stderr)
            return 2
        except discord.ConnectionClosed as closed:
            if closed.code not in SHARDING_REFUSALS:
                raise
            print(SHARDING_REFUSALS[closed.code], file=sys.stderr)
            return 2
    return 0


async def sync(args: argparse.Namespace, settings: Settings) -> int:
    token = require_token(settings)
    point_discord_py_at(settings.discord_api_base_url, settings.discord_gateway_url)
    async with open_bot(settings, with_web=False, start_pipeline=False) as bot, bot:
        try:
            await bot.login(token)
        except discord.LoginFailure:
            print("Discord refused DISCORD_TOKEN.", file=sys.stderr)
            return 2
        changed = await sync_commands(bot, guild_id=args.guild, force=args.force)
    where = (
        f"guild {args.guild}"
        if args.guild
        else "every guild (global; may take up to an hour to show)"
    )
    print(
        f"Commands synced to {where}."
        if changed
        else f"Commands for {where} are already up to date."
    )
    return 0


def application_id_from_token(token: str) -> int | None:
    """A bot token starts with its bot user's id in base64, which is the application id."""
    head = token.split(".", 1)[0]
    try:
        text = base64.b64decode(head + "=" * (-len(head) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return int(text) if text.isdigit() else None


async def invite(args: argparse.Namespace, settings: Settings) -> int:
    app_id = args.client_id
    if app_id is None and settings.discord_token is not None:
        app_id = application_id_from_token(settings.discord_token.get_secret_value())
    if app_id is None:
        raise ConfigError(
            "I need the application id: pass --client-id (Developer Portal > General Information"
            " > Application ID) or set DISCORD_TOKEN."
        )
    print(invite_url(app_id))
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("run", help="start the bot, the job pipeline and the web server").set_defaults(
        func=run
    )
    sync_parser = sub.add_parser(
        "sync", help="push slash commands to Discord (only if they changed)"
    )
    sync_parser.add_argument("--guild", type=int, help="sync to one guild only (instant)")
    sync_parser.add_argument("--force", action="store_true", help="sync even if nothing changed")
    sync_parser.set_defaults(func=sync)
    invite_parser = sub.add_parser(
        "invite-url", help="print the link that adds the bot to a server"
    )
    invite_parser.add_argument(
        "--client-id", type=int, help="application id (default: from DISCORD_TOKEN)"
    )
    invite_parser.set_defaults(func=invite)
