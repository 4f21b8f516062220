"""End-to-end harness: the real KlingBot and discord.py against the loopback Discord double,
the real pipeline and web server on 127.0.0.1, and the `local` provider or a vendor double."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bot.discord.cli import open_bot
from bot.discord.client import KlingBot
from bot.playground.double import DiscordDouble, DoubleInteraction, Message, patch_discord_py
from bot.runtime import Runtime
from bot.settings import LocalSettings, Settings
from storage import AccountRef, Clock, Job, JobState, OffsetClock
from tests.backends import database_for_sync, default_backend
from tests.provider_support import free_port
from tests.waits import until_stored

APP_ID = 900_000_000_000_000_001
BOT_ID = 900_000_000_000_000_002
GUILD = 910_000_000_000_000_001
CHANNEL = 920_000_000_000_000_001
OTHER_CHANNEL = 920_000_000_000_000_002
LOG_CHANNEL = 920_000_000_000_000_003
OWNER = 930_000_000_000_000_001
MOD = 930_000_000_000_000_002
ALICE = 930_000_000_000_000_003
BOB = 930_000_000_000_000_004
MOD_ROLE = 940_000_000_000_000_001
VIP_ROLE = 940_000_000_000_000_002
MANAGE_GUILD = 1 << 5
TOKEN = "test-token"


async def make_double(**kwargs: Any) -> DiscordDouble:
    double = DiscordDouble(app_id=APP_ID, bot_user_id=BOT_ID, token=TOKEN, **kwargs)
    await double.start()
    double.add_guild(GUILD, name="Klingers", owner_id=OWNER)
    for channel, name in ((CHANNEL, "videos"), (OTHER_CHANNEL, "chat"), (LOG_CHANNEL, "mod-log")):
        double.add_channel(GUILD, channel, name)
    double.add_role(GUILD, MOD_ROLE, "moderators", permissions=0)
    double.add_role(GUILD, VIP_ROLE, "vip", permissions=0)
    double.add_member(GUILD, OWNER, "owner", permissions=MANAGE_GUILD)
    double.add_member(GUILD, MOD, "mod", permissions=MANAGE_GUILD)
    double.add_member(GUILD, ALICE, "alice")
    double.add_member(GUILD, BOB, "bob", roles=[VIP_ROLE])
    return double


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    port = free_port()
    values: dict[str, Any] = {
        "discord_token": SecretStr(TOKEN),
        "dev_guild_id": GUILD,
        "owner_ids": [OWNER],
        "db_path": tmp_path / "bot.db",
        "media_dir": tmp_path / "media",
        "http_host": "127.0.0.1",
        "http_port": port,
        "public_url": f"http://127.0.0.1:{port}",
        "local": LocalSettings(render_s=0.3, max_concurrent=4),
        "poll_initial_interval_s": 0.1,
        "poll_max_interval_s": 0.3,
        "status_edit_interval_s": 0.2,
        "job_deadline_s": 3600,
    }
    if default_backend() == "postgresql":  # KLINGBOT_TEST_BACKEND=postgresql
        values["database_url"] = SecretStr(database_for_sync(tmp_path))
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class Running:
    double: DiscordDouble
    bot: KlingBot
    runtime: Runtime
    settings: Settings
    clock: Clock

    @property
    def service(self) -> Any:
        return self.runtime.service

    async def fund(self, user_id: int, amount: int) -> None:
        await self.service.ledger.issue_to_member(
            GUILD, user_id, amount, key=f"fund:{user_id}:{amount}:{self.clock.now_ms()}"
        )

    async def available(self, user_id: int) -> int:
        return int((await self.service.ledger.balance(AccountRef.member(GUILD, user_id))).available)

    async def video(
        self, user_id: int = ALICE, channel_id: int = CHANNEL, **options: Any
    ) -> DoubleInteraction:
        options.setdefault("prompt", "a red fox running through snow")
        return await self.double.invoke(
            "video", options, user_id=user_id, guild_id=GUILD, channel_id=channel_id
        )

    async def only_job(self, user_id: int = ALICE) -> Job:
        jobs = await self.service.jobs.by_user(GUILD, user_id, limit=5)
        assert len(jobs) == 1, f"expected one job, found {len(jobs)}"
        return jobs[0]  # type: ignore[no-any-return]

    async def wait_state(self, job_id: str, *states: JobState, timeout_s: float = 30.0) -> Job:
        """The job once it is in one of `states` (looked at again after every commit)."""

        async def arrived() -> Job | None:
            job: Job = await self.service.jobs.get(job_id)
            return job if job.state in states else None

        return await until_stored(
            self.service.db, arrived, timeout_s=timeout_s, what=f"job {job_id} reached {states}"
        )

    async def result_message(
        self, job: Job, channel_id: int = CHANNEL, timeout_s: float = 10.0
    ) -> Message:
        def found() -> bool:
            return any(m.id == job.result_message_id for m in self.double.messages(channel_id))

        await self.double.wait_for(found, timeout=timeout_s)
        return next(m for m in self.double.messages(channel_id) if m.id == job.result_message_id)


DISCORD_PY_TASKS = ("discord.py:", "CommandTree-invoker", "discord-ui-view-")


async def settle_discord_py_events() -> None:
    """Let the command handlers and event handlers discord.py started run to their end (each may
    start another), so none is left half-made when the test's event loop closes ("coroutine
    Client._run_event was never awaited")."""
    current = asyncio.current_task()
    for _ in range(100):
        pending = [
            task
            for task in asyncio.all_tasks()
            if task is not current
            and not task.done()
            and task.get_name().startswith(DISCORD_PY_TASKS)
        ]
        if not pending:
            return
        await asyncio.wait(pending, timeout=5)


@asynccontextmanager
async def running_bot(
    double: DiscordDouble, settings: Settings, *, clock: Clock | None = None, **bot_options: Any
) -> AsyncIterator[Running]:
    """Start KlingBot (pipeline, web server, gateway) against `double`; stop it on exit."""
    clock = clock or OffsetClock()
    with patch_discord_py(double):
        async with open_bot(settings, clock=clock, guild_ready_timeout=0.1, **bot_options) as bot:
            runtime = bot.runtime
            task = asyncio.create_task(bot.start(TOKEN))
            try:
                await double.wait_until_connected(timeout=15)
                await double.wait_for(lambda: bool(double.commands(GUILD)), timeout=15)
                yield Running(double, bot, runtime, settings, clock)
            finally:
                await bot.close()
                await asyncio.wait_for(task, 15)
                await settle_discord_py_events()


async def ask_video(
    double: DiscordDouble,
    prompt: str,
    *,
    user_id: int,
    guild_id: int,
    channel_id: int,
    duration: int,
    timeout_s: float = 30.0,
) -> str:
    """/video as `user_id`; the job id the bot's receipt names."""
    inter = await double.invoke(
        "video",
        {"prompt": prompt, "duration": duration},
        user_id=user_id,
        guild_id=guild_id,
        channel_id=channel_id,
    )
    receipt = await reply_text(inter, timeout_s=timeout_s)
    found = re.search(r"job `([0-9a-f]{12})`", receipt)
    assert found is not None, receipt
    return found.group(1)


async def reply_text(inter: DoubleInteraction, timeout_s: float = 30.0) -> str:
    """What the bot answered: the callback's content, or the followup's after a deferral."""
    ack = await inter.wait_ack(timeout=timeout_s)
    if ack.callback_type == 5:
        record = await inter.wait_for_followup(timeout=timeout_s)
        return str((record.data or {}).get("content") or "")
    return str((ack.data or {}).get("content") or "")
