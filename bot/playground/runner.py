"""`Playground`: the whole bot on this machine, in one process and one event loop.

On one port of 127.0.0.1 it serves the Discord double (REST under `/api/v10`, the gateway,
attachments, `/_test`), the page, and the bot's own web app (webhooks, media links, health) under
`/bot`. The real KlingBot, every cog and unmodified discord.py, logs into the double as it would
into Discord; the pipeline runs on the configured provider (`local` unless another one has its
key). Its database and media are its own (`data/playground.db`, `data/playground/`).

Shutdown runs in reverse: the bot (pipeline included), discord.py's routing, the gateway, the
HTTP server, the runtime (database, sessions).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import shutil
import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from aiohttp import web
from pydantic import SecretStr

from bot.discord.cli import open_bot
from bot.discord.client import KlingBot, sync_commands
from bot.errors import KlingbotError
from bot.pipeline.moderation import Moderation
from bot.playground.double import DISCORD_RATE_LIMITS, DiscordDouble, patch_discord_py
from bot.playground.scenario import PLAYGROUND, Scenario, build_world, make_double
from bot.playground.web import create_app
from bot.runtime import build_web_app
from bot.settings import ProviderName, Settings

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765
HOST = "127.0.0.1"
BOT_WEB_PREFIX = "/bot"  # the bot's webhooks, media links and health checks
STARTUP_TIMEOUT_S = 60.0
BOT_CLOSE_TIMEOUT_S = 10.0
HTTP_SHUTDOWN_TIMEOUT_S = 1.0  # open event streams are ended by the page's on_shutdown


class PlaygroundError(KlingbotError):
    """The playground could not start (the message says why and what to do)."""


@dataclass(frozen=True)
class PlaygroundPaths:
    """Where the playground keeps its database and media (never the real install's)."""

    db_path: Path
    media_dir: Path

    @classmethod
    def under(cls, data_dir: Path) -> PlaygroundPaths:
        return cls(data_dir / "playground.db", data_dir / "playground")

    def reset(self) -> None:
        """Delete the database (with its journal files) and the media."""
        for suffix in ("", "-wal", "-shm", "-journal"):
            self.db_path.with_name(self.db_path.name + suffix).unlink(missing_ok=True)
        shutil.rmtree(self.media_dir, ignore_errors=True)


def choose_providers(settings: Settings) -> tuple[ProviderName, list[ProviderName]]:
    """The configured provider if its keys are set, else `local`; failovers with their keys."""

    def has_keys(name: str) -> bool:
        return name == "local" or not settings.provider_settings(name).missing_keys()

    failover = [p for p in settings.failover_providers if has_keys(p) and p != settings.provider]
    if has_keys(settings.provider):
        return settings.provider, failover
    log.warning(
        "KLINGBOT_PROVIDER=%s has no API key set: the playground renders with `local` instead",
        settings.provider,
    )
    return "local", [p for p in failover if p != "local"]


def playground_settings(
    base: Settings, paths: PlaygroundPaths, port: int, token: str, scenario: Scenario
) -> Settings:
    """`base` with the playground's own storage, token, owner and addresses."""
    provider, failover = choose_providers(base)
    return base.model_copy(
        update={
            "discord_token": SecretStr(token),
            "discord_api_base_url": None,
            "discord_gateway_url": None,
            "dev_guild_id": None,  # commands are synced globally, which the double applies at once
            "owner_ids": [scenario.owner.id],
            "provider": provider,
            "failover_providers": failover,
            "db_path": paths.db_path,
            "database_url": None,  # never a real install's PostgreSQL
            "media_dir": paths.media_dir,
            "shard_count": None,  # one process holds the stand-in's one connection
            "shard_ids": None,
            "http_host": HOST,
            "http_port": port,
            "public_url": f"http://{HOST}:{port}{BOT_WEB_PREFIX}",
        }
    )


def bind_port(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:`port` (0: a free one), bound before anything starts so
    that every link can name the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise PlaygroundError(
                f"Port {port} is in use (another playground?): pass --port N, or --port 0 for"
                " any free port."
            ) from None
        raise PlaygroundError(f"Cannot listen on {HOST}:{port}: {error.strerror}.") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class Playground:
    """Starts everything on entry (the URL answers and commands are synced when it returns);
    stops everything on exit."""

    def __init__(
        self,
        settings: Settings,
        *,
        port: int = DEFAULT_PORT,
        data_dir: Path = Path("data"),
        reset: bool = False,
        scenario: Scenario = PLAYGROUND,
    ) -> None:
        self.base_settings = settings
        self.requested_port = port
        self.paths = PlaygroundPaths.under(data_dir)
        self.reset = reset
        self.scenario = scenario
        self.port = 0
        self._stack = AsyncExitStack()
        self._double: DiscordDouble | None = None
        self._bot: KlingBot | None = None
        self._settings: Settings | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    @property
    def double(self) -> DiscordDouble:
        assert self._double is not None, "the playground is not running"
        return self._double

    @property
    def bot(self) -> KlingBot:
        assert self._bot is not None, "the playground is not running"
        return self._bot

    @property
    def settings(self) -> Settings:
        assert self._settings is not None, "the playground is not running"
        return self._settings

    async def __aenter__(self) -> Playground:
        try:
            await asyncio.wait_for(self._start(), STARTUP_TIMEOUT_S)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        stack = self._stack
        if self.reset:
            await asyncio.to_thread(self.paths.reset)
        sock = bind_port(self.requested_port)
        stack.callback(sock.close)
        self.port = int(sock.getsockname()[1])
        token = secrets.token_urlsafe(32)
        settings = playground_settings(
            self.base_settings, self.paths, self.port, token, self.scenario
        )
        self._settings = settings
        await asyncio.to_thread(settings.db_path.parent.mkdir, parents=True, exist_ok=True)

        double = make_double(self.scenario, token=token, rate_limits=DISCORD_RATE_LIMITS)
        double.served_at(self.port)
        build_world(double, self.scenario)
        self._double = double

        bot = await stack.enter_async_context(
            open_bot(settings, with_web=False, guild_ready_timeout=0.2)
        )
        self._bot = bot
        app = create_app(double, self.scenario)  # the page: "/", its API and static files
        double.install(app)
        app.add_subapp(BOT_WEB_PREFIX, build_web_app(settings, bot.runtime.service))
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT_S
        )
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.SockSite(runner, sock).start()
        stack.push_async_callback(double.stop)  # the gateway's websockets, before the server

        stack.enter_context(patch_discord_py(double))
        task = asyncio.create_task(bot.start(token), name="playground-bot")
        stack.push_async_callback(self._close_bot, bot, task)
        await _until_ready(bot, task)
        await sync_commands(bot, force=True)  # the double is new on every start
        await self._seed(bot)
        log.info("playground ready at %s (provider %s)", self.url, settings.provider)

    async def _seed(self, bot: KlingBot) -> None:
        """Fund each server's starting pool and set its log channel, once per database."""
        owner = self.scenario.owner.id
        for guild in self.scenario.guilds:
            if guild.starting_pool_credits:
                await Moderation(bot.service).fund(
                    guild.id,
                    guild.starting_pool_credits,
                    actor_id=owner,
                    reason="the playground's starting credits",
                    key=f"playground:fund:{guild.id}",  # the ledger keeps one per key
                )
            key = f"playground:log_channel:{guild.id}"
            if guild.log_channel_id is not None and await bot.state.get(key) is None:
                await bot.service.policy.set(
                    guild.id, actor_id=owner, log_channel_id=guild.log_channel_id
                )
                await bot.state.set(key, str(guild.log_channel_id))

    @staticmethod
    async def _close_bot(bot: KlingBot, task: asyncio.Task[None]) -> None:
        await bot.close()
        try:
            await asyncio.wait_for(task, BOT_CLOSE_TIMEOUT_S)
        except Exception as error:  # already closing: log, and go on stopping the rest
            log.warning("the bot stopped with %r", error)


async def _until_ready(bot: KlingBot, task: asyncio.Task[None]) -> None:
    """Wait for the bot's READY; if it stops first, raise why."""
    ready = asyncio.create_task(bot.wait_until_ready(), name="playground-ready")
    done, _ = await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
    if ready in done:
        return
    ready.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ready
    error = None if task.cancelled() else task.exception()
    raise PlaygroundError(f"The bot stopped before it connected to the playground: {error!r}")
