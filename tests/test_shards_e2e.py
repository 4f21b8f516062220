"""Several `klingbot run` processes share one bot: three processes holding shards 0, 1 and 2 of 3
against one Discord double (speaking sharding) and one database, with the `local` provider.
Guilds on every shard; each guild's commands reach, and are answered by, only the process holding
its shard; every /video is delivered once in its channel (by whichever process worked the job,
through REST), captured once, and the ledger audit is clean.

The database is one parameter (`SharedDatabase`): a SQLite file today; PostgreSQL joins as a
second one. Also: `klingbot run` explains Discord's refusals of its shard settings (4010, 4011).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import aiohttp
import pytest

from bot.playground.double import DiscordDouble
from bot.shards import shard_of
from storage import Database, JobState, JobStore, Ledger
from tests.e2e_support import ALICE, APP_ID, BOB, BOT_ID, OWNER, TOKEN, ask_video, reply_text
from tests.provider_support import free_port
from tests.test_cli_bot import clean_env

COUNT = 3
MEMBERS = (ALICE, BOB)
VIDEOS_PER_MEMBER = 2
STARTED_WITHIN_S = 60.0
DELIVERED_WITHIN_S = 60.0


def guild_on(shard: int, count: int = COUNT) -> int:
    """A guild id whose events belong to `shard`: (id >> 22) % count == shard."""
    return ((count * 240_000_000 + shard) << 22) | 777


def channel_of(guild_id: int) -> int:
    return guild_id + 1


# -- the shared database: one parameter ----------------------------------------------------------


@dataclass(frozen=True)
class SharedDatabase:
    """Where the processes keep one set of books: the settings that point a process at it, and
    how the test opens it to check the outcome."""

    env: dict[str, str]
    open: Callable[[], Awaitable[Database]]


def sqlite_file(tmp_path: Path) -> SharedDatabase:
    path = tmp_path / "shared" / "klingbot.db"
    path.parent.mkdir()
    return SharedDatabase({"KLINGBOT_DB_PATH": str(path)}, lambda: Database.open(path))


DATABASES: dict[str, Callable[[Path], SharedDatabase]] = {"sqlite": sqlite_file}


@pytest.fixture(params=sorted(DATABASES))
def database(request: pytest.FixtureRequest, tmp_path: Path) -> SharedDatabase:
    return DATABASES[request.param](tmp_path)


# -- the processes -----------------------------------------------------------------------------


def bot_env(double: DiscordDouble, database: SharedDatabase, **extra: str) -> dict[str, str]:
    return clean_env(
        DISCORD_TOKEN=TOKEN,
        KLINGBOT_DISCORD_API_BASE_URL=double.api_base,
        KLINGBOT_DISCORD_GATEWAY_URL=double.gateway_url,
        KLINGBOT_OWNER_IDS=str(OWNER),
        KLINGBOT_PROVIDER="local",
        KLINGBOT_LOCAL_RENDER_S="0.3",
        KLINGBOT_POLL_INITIAL_INTERVAL_S="0.2",
        KLINGBOT_POLL_MAX_INTERVAL_S="0.5",
        KLINGBOT_STATUS_EDIT_INTERVAL_S="0.2",
        **database.env,
        **extra,
    )


async def klingbot(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run a `klingbot` command to its end; its exit code and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), STARTED_WITHIN_S)
    assert proc.returncode is not None
    return proc.returncode, stderr.decode()


@dataclass
class Process:
    """One `klingbot run` holding some shards, with its own web port and working directory."""

    shard_ids: str
    port: int
    proc: asyncio.subprocess.Process

    async def ready(self, http: aiohttp.ClientSession) -> bool:
        try:
            async with http.get(f"http://127.0.0.1:{self.port}/readyz") as response:
                return (
                    response.status == 200 and (await response.json())["checks"]["discord"] is True
                )
        except aiohttp.ClientError:
            return False

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            finally:
                if self.proc.returncode is None:
                    self.proc.kill()
                    await self.proc.wait()
        assert self.proc.returncode is not None
        return self.proc.returncode


async def start_shards(
    started: list[Process],
    tmp_path: Path,
    double: DiscordDouble,
    env_of: Callable[[int, int], dict[str, str]],
    *,
    count: int = COUNT,
) -> None:
    """`klingbot run` as shards 0 to `count` - 1 of `count`, each in a working folder of its own
    (its stderr in stderr.log there) with the environment `env_of(shard, port)`; each is added to
    `started` as it starts (the caller stops them, also if this fails). Returns once every shard
    is connected to the stand-in and every process answers ready."""
    for shard in range(count):
        workdir = tmp_path / f"process{shard}"
        workdir.mkdir()
        port = free_port()
        with (workdir / "stderr.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "run",
                cwd=workdir,
                env=env_of(shard, port),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        started.append(Process(str(shard), port, proc))
    wanted = [(shard, count) for shard in range(count)]
    await double.wait_for(lambda: double.gateway.live_shards() == wanted, STARTED_WITHIN_S)
    async with aiohttp.ClientSession() as http:
        for process in started:
            await poll(partial(process.ready, http), what=f"shard {process.shard_ids} ready")


@asynccontextmanager
async def processes(
    tmp_path: Path, double: DiscordDouble, database: SharedDatabase
) -> AsyncIterator[list[Process]]:
    """`klingbot run` with KLINGBOT_SHARD_IDS=0, 1 and 2 of KLINGBOT_SHARD_COUNT=3, each ready
    (each with its own media; the database is shared)."""
    started: list[Process] = []

    def env_of(shard: int, port: int) -> dict[str, str]:
        return bot_env(
            double,
            database,
            KLINGBOT_SHARD_COUNT=str(COUNT),
            KLINGBOT_SHARD_IDS=str(shard),
            KLINGBOT_HTTP_PORT=str(port),
        )

    try:
        await start_shards(started, tmp_path, double, env_of)
        yield started
    finally:
        codes = [await process.stop() for process in started]
    assert codes == [0] * len(started), f"exit codes {codes}"  # each stopped cleanly


async def poll(
    check: Callable[[], Awaitable[bool]], *, what: str, timeout_s: float = STARTED_WITHIN_S
) -> None:
    """Ask `check()` (a coroutine function) again until it is true, up to `timeout_s`."""

    async def until() -> None:
        while not await check():
            await asyncio.sleep(0.1)  # the next look at a process's /readyz, not a wait for it

    try:
        await asyncio.wait_for(until(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"{what} (not within {timeout_s} s)") from None


# -- the test ----------------------------------------------------------------------------------


async def make_world() -> DiscordDouble:
    double = DiscordDouble(app_id=APP_ID, bot_user_id=BOT_ID, token=TOKEN)
    await double.start()
    for shard in range(COUNT):
        guild_id = guild_on(shard)
        assert shard_of(guild_id, COUNT) == shard
        double.add_guild(guild_id, name=f"shard-{shard}", owner_id=OWNER)
        double.add_channel(guild_id, channel_of(guild_id), "videos")
        for member in MEMBERS:
            double.add_member(guild_id, member, f"member{member % 1000}")
    return double


def session_shards(double: DiscordDouble) -> dict[str, int]:
    return {s.id: s.shard[0] for s in double.gateway.live_sessions}


def interaction_shards(double: DiscordDouble) -> list[int]:
    """For each INTERACTION_CREATE the double sent, in order, the shard of the session it went to."""
    shards = session_shards(double)
    return [
        shards[r.session_id or ""]
        for r in double.gateway_log
        if r.direction == "send" and r.t == "INTERACTION_CREATE"
    ]


def worked_by(tmp_path: Path, job_id: str) -> list[int]:
    """The processes (by shard) whose media folder holds the job's downloaded clip."""
    return [
        shard
        for shard in range(COUNT)
        if (tmp_path / f"process{shard}" / "data" / "media" / "clips" / f"{job_id}.mp4").exists()
    ]


def clips(double: DiscordDouble, guild_id: int, job_id: str) -> int:
    """The clip messages posted for a job in its guild's channel."""
    return sum(
        1
        for message in double.messages(channel_of(guild_id))
        if "your video is ready" in (message.content or "")
        and message.attachments
        and any(job_id in str(embed.get("footer", "")) for embed in message.embeds)
    )


@pytest.mark.slow
async def test_three_processes_hold_one_shard_each_and_deliver_every_video(
    tmp_path: Path, database: SharedDatabase
) -> None:
    double = await make_world()
    try:
        # Global commands, once, by the admin (`klingbot sync`), as the README says.
        code, stderr = await klingbot("sync", cwd=tmp_path, env=bot_env(double, database))
        assert code == 0, stderr
        assert {"video", "klingadmin"} <= {c["name"] for c in double.commands(None)}

        async with processes(tmp_path, double, database):
            expected_shards: list[int] = []
            for shard in range(COUNT):
                funded = await double.invoke(
                    "klingadmin",
                    {"credits": 10_000},
                    sub="fund",
                    user_id=OWNER,
                    guild_id=guild_on(shard),
                )
                assert "now has 10000 available" in await reply_text(funded, timeout_s=30)
                expected_shards.append(shard)

            jobs: dict[str, int] = {}  # job id -> guild
            for take in range(VIDEOS_PER_MEMBER):
                for shard in range(COUNT):
                    for member in MEMBERS:
                        guild_id = guild_on(shard)
                        job_id = await ask_video(
                            double,
                            f"a fox in guild {shard}, take {take}",
                            user_id=member,
                            guild_id=guild_id,
                            channel_id=channel_of(guild_id),
                            duration=3,
                        )
                        jobs[job_id] = guild_id
                        expected_shards.append(shard)

            # Each interaction went to the one process holding its guild's shard (and was
            # answered: reply_text saw the answer).
            assert interaction_shards(double) == expected_shards

            await double.wait_for(
                lambda: all(clips(double, g, job_id) >= 1 for job_id, g in jobs.items()),
                DELIVERED_WITHIN_S,
            )
            assert [clips(double, g, job_id) for job_id, g in jobs.items()] == [1] * len(jobs)
            # Each job was worked (its clip downloaded and posted) by exactly one process, which
            # may hold another shard than the job's guild: its clip is in that process's media.
            workers = {job_id: worked_by(tmp_path, job_id) for job_id in jobs}
            assert all(len(found) == 1 for found in workers.values()), workers
            elsewhere = sum(workers[j] != [shard_of(g, COUNT)] for j, g in jobs.items())
            print(f"{elsewhere} of {len(jobs)} jobs worked by a process not holding their guild")
        status_ids = await settled_once(database, jobs)
        # The status message (posted by the process that took the command) shows the end,
        # edited by the process that worked the job.
        assert all("✅ Done" in str(double.message(m).embeds) for m in status_ids)
        assert double.internal_errors == []
    finally:
        await double.stop()


async def settled_once(database: SharedDatabase, jobs: dict[str, int]) -> list[int]:
    """Every job delivered and captured once, the audit clean; the jobs' status messages."""
    db = await database.open()
    status_ids = []
    try:
        store, ledger = JobStore(db), Ledger(db)
        for job_id, guild_id in jobs.items():
            job = await store.get(job_id)
            assert (job.state, job.guild_id) == (JobState.DELIVERED, guild_id), job_id
            posts = [t.amount for t in await ledger.transfers_for_job(job_id) if t.kind == "post"]
            assert posts == [job.cost], f"{job_id} captured {posts}"
            assert job.status_message_id is not None
            status_ids.append(job.status_message_id)
        assert (await ledger.audit()).ok
    finally:
        await db.close()
    return status_ids


# -- Discord's refusals of shard settings ------------------------------------------------------


async def test_run_explains_a_shard_count_discord_refuses(tmp_path: Path) -> None:
    double = await make_world()
    database = sqlite_file(tmp_path)
    try:
        # Another process of the bot holds shard 0 of 2: a process saying 3 is refused (4010).
        async with aiohttp.ClientSession() as http, http.ws_connect(double.gateway_url) as ws:
            await ws.receive_json()  # HELLO
            identify = {"token": TOKEN, "intents": 1, "properties": {}, "shard": [0, 2]}
            await ws.send_str(json.dumps({"op": 2, "d": identify}))
            await double.wait_for(lambda: double.gateway.live_shards() == [(0, 2)])
            env = bot_env(
                double,
                database,
                KLINGBOT_SHARD_COUNT="3",
                KLINGBOT_SHARD_IDS="1",
                KLINGBOT_HTTP_PORT=str(free_port()),
            )
            code, stderr = await klingbot("run", cwd=tmp_path, env=env)
        assert code == 2 and "Traceback" not in stderr, stderr
        assert "close code 4010" in stderr and "same KLINGBOT_SHARD_COUNT" in stderr

        # Too many guilds for one connection: Discord requires sharding (4011).
        double.world.sharding.max_guilds_per_session = COUNT - 1
        env = bot_env(double, database, KLINGBOT_HTTP_PORT=str(free_port()))
        code, stderr = await klingbot("run", cwd=tmp_path, env=env)
        assert code == 2 and "Traceback" not in stderr, stderr
        assert "close code 4011" in stderr and "Set KLINGBOT_SHARD_COUNT" in stderr
    finally:
        await double.stop()
