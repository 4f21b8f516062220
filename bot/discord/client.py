"""KlingBot: the discord.py client, built by the entry point with its dependencies injected.

The bot is made first (a discord.py client holding the shards KLINGBOT_SHARD_COUNT and
KLINGBOT_SHARD_IDS give it, or the one shard of an unsharded bot), so that its delivery sink,
status messages and incident reports can be handed to the pipeline when the runtime is built
(bot.discord.cli.open_bot); then `attach(runtime)` gives it the running system. `setup_hook`
loads an explicit tuple of extensions (cogs), registers the persistent buttons (one `DynamicItem`
class per action), starts the pipeline and web server (which resumes unfinished jobs) and, with
KLINGBOT_DEV_GUILD_ID, syncs commands to that guild (only in the process holding shard 0).
Everything the bot posts or edits is addressed by channel id through REST, never through the
guild cache, so a process can deliver to a guild whose shard another process holds. Errors are
answered by the command tree (`tree_cls=KlingTree`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
import yarl
from discord.ext import commands

from bot.discord.ack_first import AckFirst
from bot.discord.buttons import (
    ApproveButton,
    CancelButton,
    ClipButton,
    DeleteButton,
    DenyButton,
    DetailsButton,
    KlingButton,
)
from bot.discord.delivery import DiscordSink
from bot.discord.modlog import post_log
from bot.discord.pacing import Pacer
from bot.discord.rate_limits import PacingLimits
from bot.discord.status import StatusMessages
from bot.discord.tree import KlingTree
from bot.discord.video_requests import ConfirmButton, DiscardButton, RemixButton, RerollButton
from bot.pipeline import JobEvent, Pipeline, ProviderIncident
from bot.settings import Settings
from storage import BotState

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

EXTENSIONS = (
    "cogs.generate",
    "cogs.credits",
    "cogs.jobs",
    "cogs.pool",
    "cogs.admin",
)
DYNAMIC_ITEMS: tuple[type[KlingButton], ...] = (
    CancelButton,
    DetailsButton,
    DeleteButton,
    ClipButton,
    ApproveButton,
    DenyButton,
    RerollButton,
    RemixButton,
    ConfirmButton,
    DiscardButton,
)

# Exactly what the bot needs in a channel: see it, post, embed, attach clips, reply to its status
# message (read history), and work in threads.
BOT_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
)
SCOPES = ("bot", "applications.commands")


@dataclass(frozen=True)
class FrontConfig:
    """What the Discord front end needs from the settings (cogs never read settings)."""

    owner_ids: frozenset[int] = frozenset()
    dev_guild_id: int | None = None
    status_edit_interval_s: float = 5.0
    default_upload_limit_bytes: int = 10 * 1024 * 1024
    public_url: str | None = None
    shard_count: int | None = None  # None: one unsharded connection
    shard_ids: tuple[int, ...] | None = None  # None: every shard of `shard_count`

    @property
    def syncs_commands(self) -> bool:
        """Whether this process syncs commands at startup: only the one holding shard 0 (or the
        only process), so that several processes do not all push the same definitions."""
        return self.shard_ids is None or 0 in self.shard_ids

    @classmethod
    def from_settings(cls, settings: Settings) -> FrontConfig:
        return cls(
            owner_ids=frozenset(settings.owner_ids),
            dev_guild_id=settings.dev_guild_id,
            status_edit_interval_s=settings.status_edit_interval_s,
            default_upload_limit_bytes=settings.default_upload_limit_mb * 1024 * 1024,
            public_url=settings.public_url,
            shard_count=settings.shard_count,
            shard_ids=settings.shard_ids,
        )


def point_discord_py_at(api_base_url: str | None, gateway_url: str | None) -> None:
    """Send discord.py's REST and gateway traffic to a proxy or a loopback double."""
    if api_base_url:
        discord.http.Route.BASE = api_base_url.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class KlingBot(commands.AutoShardedBot):
    """Always discord.py's sharded bot, so that one code path serves one process or many:
    unsharded it holds shard 0 of 1 (Discord treats IDENTIFY with [0, 1] as no sharding) and,
    with the count given, connects to the configured gateway without asking GET /gateway/bot."""

    runtime: Runtime
    service: Pipeline
    state: BotState

    def __init__(
        self,
        config: FrontConfig,
        *,
        start_pipeline: bool = True,
        pacing: PacingLimits | None = None,
        **options: Any,
    ) -> None:
        # Every post and edit in a channel goes through the pacer, which sees all of
        # discord.py's requests and their rate-limit headers through the trace.
        self.pacer = Pacer(pacing)
        if config.shard_ids is not None:
            options["shard_ids"] = list(config.shard_ids)
        intents = discord.Intents.none()
        intents.guilds = True  # channels and roles; no privileged intents
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            tree_cls=KlingTree,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
            http_trace=self.pacer.trace_config(),
            shard_count=config.shard_count or 1,
            **options,
        )
        self.config = config
        self.ack_first = AckFirst()
        self.status_messages = StatusMessages(self, self.pacer, config.status_edit_interval_s)
        self.sink = DiscordSink(self)  # the pipeline's delivery sink; also Get the clip's
        self.start_pipeline = start_pipeline
        self._status_repair: asyncio.Task[None] | None = None

    def attach(self, runtime: Runtime) -> None:
        """Give the bot the running system (before it logs in)."""
        self.runtime = runtime
        self.service = runtime.service
        self.state = BotState(runtime.db)

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        if not self.start_pipeline:
            return
        await self.runtime.start()
        await self._refresh_status_messages()
        self._status_repair = asyncio.create_task(
            self.status_messages.repair_forever(), name="status-repair"
        )
        if self.config.dev_guild_id and self.config.syncs_commands:
            await sync_commands(self, guild_id=self.config.dev_guild_id)
        # Most of what exists now lives as long as the bot: keep it out of the collector's
        # scans (bot/gc_pacer.py; the runtime repeats this every few minutes).
        self.runtime.gc_pacer.refreeze()

    # -- the one place the front end is plugged into the pipeline ------------------------------
    # (by assignment for now; these become constructor arguments of the pipeline)

    async def _refresh_status_messages(self) -> None:
        """After a restart, every unfinished job's status message shows where the job is now
        (the process may have died between a change and its edit)."""
        for job in await self.service.jobs.unfinished():
            if job.status_message_id:
                await self.status_messages.job_changed(job, JobEvent.POSITION)

    async def report_incident(self, incident: ProviderIncident) -> None:
        """Tell a guild's log channel, once per incident, that jobs moved to another provider."""
        await post_log(
            self,
            incident.guild_id,
            f"⚠️ The video provider **{incident.provider}** refused new jobs ({incident.kind}:"
            f" {incident.detail[:200]}). Waiting videos now go to **{incident.moved_to}**.",
        )

    async def on_ready(self) -> None:
        log.info(
            "connected to Discord as %s in %d guild(s), shard(s) %s of %d",
            self.user,
            len(self.guilds),
            ",".join(str(i) for i in sorted(self.shards)),
            self.shard_count or 1,
        )

    async def is_gateway_ready(self) -> bool:
        return self.is_ready() and not self.is_closed()

    async def close(self) -> None:
        """Stop taking work, finish what is in flight, then disconnect."""
        if self._status_repair is not None:
            self._status_repair.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_repair
        if self.start_pipeline:
            await self.runtime.stop()
        await self.pacer.close()  # sends what is waiting first (a few seconds at most)
        if self._ready is discord.utils.MISSING:
            # Never logged in (a command tree built for a tool): no shard was started, and the
            # sharded close expects its event queue, made at login; the plain close suffices.
            await discord.Client.close(self)
            return
        await super().close()

    def dispatch(self, event: str, /, *args: Any, **kwargs: Any) -> None:
        """Events raised once the client is closed are dropped: discord.py has no loop for them
        any more (a command that finishes during shutdown would leave its completion event
        half-made)."""
        if self.is_closed():
            return
        super().dispatch(event, *args, **kwargs)

    def is_owner_id(self, user_id: int) -> bool:
        return user_id in self.config.owner_ids


def command_payload(
    bot: commands.AutoShardedBot, guild: discord.abc.Snowflake | None
) -> list[dict[str, Any]]:
    commands_ = bot.tree.get_commands(guild=guild)
    return sorted((c.to_dict(bot.tree) for c in commands_), key=lambda c: str(c.get("name")))


async def sync_commands(bot: KlingBot, *, guild_id: int | None = None, force: bool = False) -> bool:
    """Push the command definitions to Discord if they changed since the last sync."""
    guild = discord.Object(guild_id) if guild_id else None
    if guild is not None:
        bot.tree.copy_global_to(guild=guild)
    payload = command_payload(bot, guild)
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    key = f"commands:{bot.application_id}:{guild_id or 'global'}"
    if not force and await bot.state.get(key) == digest:
        log.info("commands unchanged since the last sync (%s); not syncing", guild_id or "global")
        return False
    await bot.tree.sync(guild=guild)
    await bot.state.set(key, digest)
    log.info(
        "synced %d commands to %s", len(payload), f"guild {guild_id}" if guild_id else "all guilds"
    )
    return True


def invite_url(application_id: int) -> str:
    return discord.utils.oauth_url(application_id, permissions=BOT_PERMISSIONS, scopes=SCOPES)
