"""The Discord double speaks sharding, exercised by real discord.py 2.7.1 sharded clients over
loopback: GET /gateway/bot recommends a shard count, IDENTIFY carries [id, count], each guild's
events reach only the session of the shard owning it ((guild_id >> 22) % count), DMs shard 0,
and impossible shards are closed with Discord's codes (4010, 4011)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import warnings
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.playground.double import DiscordDouble, DoubleUsageError, patch_discord_py

with warnings.catch_warnings():  # discord.py 2.7.1 imports the deprecated stdlib audioop
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    from discord.ext import commands

APP_ID = 900_000_000_000_000_001
BOT_ID = 900_000_000_000_000_002
OWNER_ID = 900_000_000_000_000_003
USER_ID = 900_000_000_000_000_004
TOKEN = "test-token"
COUNT = 3


def guild_on(shard: int, n: int = 0, count: int = COUNT) -> int:
    """A guild id whose events belong to `shard` of `count`: (id >> 22) % count == shard."""
    return ((count * (250_000_000 + n) + shard) << 22) | 4321


def channel_of(guild_id: int) -> int:
    return guild_id + 1


Inter = discord.Interaction[discord.Client]


class ShardBot(commands.AutoShardedBot):
    """A sharded bot that says which process it is and records the events it gets."""

    def __init__(self, name: str, *, sync: bool = False, **options: Any) -> None:
        intents = discord.Intents.none()
        intents.guilds = intents.guild_messages = intents.dm_messages = True
        super().__init__(command_prefix="!", intents=intents, guild_ready_timeout=0.1, **options)
        self.name = name
        self.sync = sync
        self.ready = asyncio.Event()
        self.messages: list[tuple[int | None, int]] = []  # MESSAGE_CREATE: guild (None: DM), author

        @self.tree.command(description="which process answers")
        async def where(interaction: Inter) -> None:
            await interaction.response.send_message(f"{self.name} shard {interaction.guild_id}")

    async def setup_hook(self) -> None:
        if self.sync:
            await self.tree.sync()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Identify at once (discord.py waits 5 s between a process's shards, for Discord's
        identify rate limit, which the double reports but does not enforce)."""

    async def on_ready(self) -> None:
        self.ready.set()

    async def on_message(self, message: discord.Message) -> None:
        self.messages.append((message.guild.id if message.guild else None, message.author.id))


class Started:
    """A started bot and the task running it."""

    def __init__(self, bot: ShardBot) -> None:
        self.bot = bot
        self.task: asyncio.Task[None] = asyncio.create_task(bot.start(TOKEN))

    async def ready(self) -> Started:
        waiter = asyncio.create_task(self.bot.ready.wait())
        done, _ = await asyncio.wait(
            {waiter, self.task}, timeout=10, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
        if self.task in done:
            self.task.result()  # re-raise the startup failure
        assert waiter in done, f"{self.bot.name} never became ready"
        return self

    async def refused(self) -> discord.ConnectionClosed:
        """The exception the bot stopped with, after the double closed its gateway."""
        with pytest.raises(discord.ConnectionClosed) as info:
            await asyncio.wait_for(self.task, 10)
        return info.value

    async def close(self) -> None:
        await self.bot.close()
        with contextlib.suppress(discord.ConnectionClosed):
            await self.task


@pytest.fixture
async def double() -> AsyncIterator[DiscordDouble]:
    async with DiscordDouble(app_id=APP_ID, bot_user_id=BOT_ID, token=TOKEN) as d:
        for shard in range(COUNT):
            for n in range(2):
                add_guild(d, guild_on(shard, n))
        with patch_discord_py(d):
            yield d
        assert d.internal_errors == []


def add_guild(double: DiscordDouble, guild_id: int) -> None:
    double.add_guild(guild_id, name=f"g{guild_id}", owner_id=OWNER_ID)
    double.add_channel(guild_id, channel_of(guild_id), "general")
    double.add_member(guild_id, USER_ID, "alice")


async def three_processes(double: DiscordDouble) -> list[Started]:
    """Shards 0, 1 and 2 of 3 in three clients (as three processes would hold them)."""
    started = []
    for shard in range(COUNT):
        bot = ShardBot(f"p{shard}", sync=shard == 0, shard_count=COUNT, shard_ids=[shard])
        started.append(await Started(bot).ready())
    return started


def members(run: Started) -> list[int | None]:
    """Guilds of the members' messages a bot received, in order."""
    return [guild for guild, author in run.bot.messages if author == USER_ID]


def sessions_by_shard(double: DiscordDouble) -> dict[str, int]:
    return {s.id: s.shard[0] for s in double.gateway.live_sessions}


async def test_each_guilds_events_reach_only_the_shard_owning_it(double: DiscordDouble) -> None:
    bots = await three_processes(double)
    try:
        assert double.gateway.live_shards() == [(0, 3), (1, 3), (2, 3)]
        for shard, run in enumerate(bots):
            assert sorted(g.id for g in run.bot.guilds) == [guild_on(shard, 0), guild_on(shard, 1)]
            assert all(g.shard_id == shard for g in run.bot.guilds)

        # A command in each guild is answered by the process holding that guild's shard.
        for shard in range(COUNT):
            for n in range(2):
                guild_id = guild_on(shard, n)
                inter = await double.invoke("where", guild_id=guild_id)
                ack = await inter.wait_ack()
                assert ack.data is not None
                assert ack.data["content"] == f"p{shard} shard {guild_id}"
        sessions = sessions_by_shard(double)
        sent = [g for g in double.gateway_log if g.direction == "send" and g.t]
        interactions = [sessions[g.session_id or ""] for g in sent if g.t == "INTERACTION_CREATE"]
        assert interactions == [0, 0, 1, 1, 2, 2]

        # Members' messages and a guild added later go to the owning shard only.
        for shard in range(COUNT):
            double.post_as_member(channel_of(guild_on(shard, 1)), f"hello {shard}")
        late = guild_on(1, 7)
        add_guild(double, late)
        await double.wait_for(lambda: all(members(run) for run in bots))
        await double.wait_for(lambda: bots[1].bot.get_guild(late))
        # A DM (the bot's own, echoed by the gateway) goes to shard 0 only, whoever sent it.
        user = await bots[2].bot.fetch_user(USER_ID)
        await user.send("hi")
        await double.wait_for(lambda: (None, BOT_ID) in bots[0].bot.messages)
        # Events reach a session in order: once a later one reached shard 2, the DM would have.
        double.post_as_member(channel_of(guild_on(2, 0)), "last")
        await double.wait_for(lambda: len(members(bots[2])) == 2)
        assert [members(run) for run in bots] == [
            [guild_on(0, 1)],
            [guild_on(1, 1)],
            [guild_on(2, 1), guild_on(2, 0)],
        ]
        for shard, run in enumerate(bots):  # the bot's own answers too: each in its shard
            guilds = {g for g, _ in run.bot.messages}
            assert guilds == ({None} if shard == 0 else set()) | {
                guild_on(shard, n) for n in (0, 1)
            }
            assert all((g >> 22) % COUNT == shard for g in guilds if g is not None)
        assert (bots[0].bot.get_guild(late), bots[2].bot.get_guild(late)) == (None, None)
        guild_events = [g for g in double.gateway_log if g.direction == "send" and g.t]
        creates = [sessions[g.session_id or ""] for g in guild_events if g.t == "GUILD_CREATE"]
        assert creates.count(0) == 2 and creates.count(1) == 3 and creates.count(2) == 2
    finally:
        for run in bots:
            await run.close()


async def test_gateway_bot_recommends_shards_and_counts_session_starts(
    double: DiscordDouble,
) -> None:
    double.world.sharding.guilds_per_recommended_shard = 4  # 6 guilds: 2 shards
    async with aiohttp.ClientSession() as http:
        async with http.get(double.api_base + "/gateway/bot") as response:
            assert response.status == 401  # the bot's token is required
        async with http.get(double.api_base + "/gateway") as response:
            assert (await response.json())["url"] == double.gateway_url
    # Without a count, discord.py asks GET /gateway/bot and opens what it recommends.
    run = await Started(ShardBot("auto")).ready()
    try:
        assert double.gateway.live_shards() == [(0, 2), (1, 2)]
        assert run.bot.shard_count == 2 and len(run.bot.guilds) == 6
        limits = await run.bot.fetch_session_start_limits()
        assert (limits.total, limits.remaining, limits.max_concurrency) == (1000, 998, 1)
    finally:
        await run.close()


async def test_impossible_shards_are_closed_with_4010(double: DiscordDouble) -> None:
    beyond = Started(ShardBot("beyond", shard_count=COUNT, shard_ids=[COUNT]))
    assert (await beyond.refused()).code == 4010
    await beyond.close()

    first = await Started(ShardBot("first", shard_count=2, shard_ids=[0])).ready()
    try:
        other_count = Started(ShardBot("other", shard_count=COUNT, shard_ids=[1]))
        assert (await other_count.refused()).code == 4010  # the bot already runs 2 shards
        await other_count.close()
        assert double.gateway.live_shards() == [(0, 2)]
    finally:
        await first.close()

    for shard in ([0, 0], [-1, 2], [0], "0,1", [0.0, 1]):
        assert await raw_identify(double, shard) == 4010


async def raw_identify(double: DiscordDouble, shard: object) -> int | None:
    """IDENTIFY over a bare websocket; the close code the double answers with."""
    async with aiohttp.ClientSession() as http, http.ws_connect(double.gateway_url) as ws:
        hello = await ws.receive_json()
        assert hello["op"] == 10
        identify = {"token": TOKEN, "intents": 1, "properties": {}, "shard": shard}
        await ws.send_str(json.dumps({"op": 2, "d": identify}))
        message = await ws.receive()
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        return ws.close_code


async def test_a_session_with_too_many_guilds_is_closed_with_4011(double: DiscordDouble) -> None:
    double.world.sharding.max_guilds_per_session = 4  # 6 guilds: one session may not hold them
    unsharded = Started(ShardBot("one", shard_count=1))
    assert (await unsharded.refused()).code == 4011
    await unsharded.close()
    run = await Started(ShardBot("two", shard_count=2)).ready()  # 3 guilds each: accepted
    try:
        assert double.gateway.live_shards() == [(0, 2), (1, 2)]
    finally:
        await run.close()


async def test_an_interaction_nobody_would_receive_is_a_usage_error(double: DiscordDouble) -> None:
    run = await Started(ShardBot("p0", sync=True, shard_count=COUNT, shard_ids=[0])).ready()
    try:
        ack = await (await double.invoke("where", guild_id=guild_on(0))).wait_ack()
        assert ack.status == 200
        with pytest.raises(DoubleUsageError, match="for this guild's shard"):
            await double.invoke("where", guild_id=guild_on(1))
    finally:
        await run.close()
