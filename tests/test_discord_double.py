"""The Discord double, exercised by a real discord.py 2.7.1 bot over loopback."""

from __future__ import annotations

import asyncio
import io
import re
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.playground.double import (
    DISCORD_RATE_LIMITS,
    DiscordDouble,
    DoubleInteraction,
    DoubleUsageError,
    Limit,
    patch_discord_py,
)

with warnings.catch_warnings():  # discord.py 2.7.1 imports the deprecated stdlib audioop
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    from discord import app_commands
    from discord.ext import commands

APP_ID = 900_000_000_000_000_001
BOT_ID = 900_000_000_000_000_002
OWNER_ID = 900_000_000_000_000_003
USER_ID = 900_000_000_000_000_004
GUILD_ID = 900_000_000_000_000_010
CHANNEL_ID = 900_000_000_000_000_020
DENIED_ID = 900_000_000_000_000_021
TOKEN = "test-token"
REPORT = b"id,seconds\n1,5\n" * 80
COMMANDS = {"ping", "slow", "ticket", "note", "late", "twice", "post", "big", "expire", "pool",
            "upload", "dm", "edit", "secret", "pick", "Read Files"}  # fmt: skip


@dataclass
class Probe:
    """What the throwaway bot observed, for the tests to assert on."""

    ready: asyncio.Event = field(default_factory=asyncio.Event)
    resumed: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    errors: list[discord.HTTPException] = field(default_factory=list)
    downloads: list[bytes] = field(default_factory=list)


Inter = discord.Interaction[discord.Client]


class TicketButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"t:(?P<n>[0-9]+)"
):
    """A persistent button whose state lives in its custom_id."""

    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label=f"ticket {n}", custom_id=f"t:{n}"))
        self.n = n

    @classmethod
    async def from_custom_id(
        cls, interaction: Inter, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> TicketButton:
        return cls(int(match["n"]))

    async def callback(self, interaction: Inter) -> None:
        await interaction.response.send_message(
            f"ticket {self.n} clicked by {interaction.user.id}", ephemeral=True
        )


class NoteModal(discord.ui.Modal, title="Note"):
    text: discord.ui.TextInput[NoteModal] = discord.ui.TextInput(
        label="Text", custom_id="note_text", max_length=100
    )

    async def on_submit(self, interaction: Inter, /) -> None:
        await interaction.response.send_message(f"noted: {self.text.value}")


class ThrowawayBot(commands.Bot):
    """A minimal bot with one command per behaviour under test."""

    def __init__(self, probe: Probe, *, members: bool = False) -> None:
        intents = discord.Intents.default()
        intents.members = members
        super().__init__(command_prefix="!", intents=intents, guild_ready_timeout=0.1)
        self.probe = probe
        _add_commands(self.tree, probe)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(TicketButton)
        guild = discord.Object(GUILD_ID)
        self.tree.copy_global_to(guild=guild)
        await self.tree.sync(guild=guild)

    async def on_ready(self) -> None:
        self.probe.ready.set()

    async def on_resumed(self) -> None:
        self.probe.resumed.set()


def _add_commands(tree: app_commands.CommandTree[Any], probe: Probe) -> None:
    @tree.command(description="pong", guild=discord.Object(GUILD_ID))  # guild-only
    async def ping(interaction: Inter) -> None:
        await interaction.response.send_message("pong")

    @tree.command(description="defer, then a file")
    async def slow(interaction: Inter) -> None:
        await interaction.response.defer(thinking=True)
        msg = await interaction.followup.send(
            "report", file=discord.File(io.BytesIO(REPORT), "report.csv"), wait=True
        )
        probe.downloads.append(await msg.attachments[0].read())

    @tree.command(description="post a ticket button")
    @app_commands.describe(n="ticket number")
    async def ticket(interaction: Inter, n: app_commands.Range[int, 1, 99]) -> None:
        view = discord.ui.View(timeout=None)
        view.add_item(TicketButton(n))
        await interaction.response.send_message("posting", ephemeral=True)
        assert isinstance(interaction.channel, discord.TextChannel)
        await interaction.channel.send(f"ticket {n}", view=view)

    @tree.command(description="open a modal")
    async def note(interaction: Inter) -> None:
        await interaction.response.send_modal(NoteModal(custom_id="note"))

    @tree.command(description="answer once the test opens the gate")
    async def late(interaction: Inter) -> None:
        await probe.gate.wait()
        try:
            await interaction.response.send_message("too late?")
        except discord.HTTPException as exc:
            probe.errors.append(exc)

    @tree.command(description="answer twice")
    async def twice(interaction: Inter) -> None:
        await interaction.response.send_message("one")
        try:  # a fresh InteractionResponse forgets the first answer, as a second process would
            await discord.InteractionResponse(interaction).send_message("two")
        except discord.HTTPException as exc:
            probe.errors.append(exc)

    @tree.command(description="post in a channel")
    async def post(interaction: Inter, channel: discord.TextChannel) -> None:
        await interaction.response.defer(ephemeral=True)
        target = interaction.client.get_channel(channel.id)
        assert isinstance(target, discord.TextChannel)
        try:
            await target.send("hello")
        except discord.HTTPException as exc:
            probe.errors.append(exc)
            await interaction.followup.send("could not post")
        else:
            await interaction.followup.send("posted")

    @tree.command(description="followup with a file over the limit")
    async def big(interaction: Inter) -> None:
        await interaction.response.defer()
        size = interaction.filesize_limit + 1
        try:
            await interaction.followup.send(file=discord.File(io.BytesIO(b"\0" * size), "big.bin"))
        except discord.HTTPException as exc:
            probe.errors.append(exc)
            await interaction.followup.send("file too big")

    @tree.command(description="followup after the test opens the gate")
    async def expire(interaction: Inter) -> None:
        await interaction.response.defer()
        await probe.gate.wait()
        try:
            await interaction.followup.send("still there?")
        except discord.HTTPException as exc:
            probe.errors.append(exc)

    pool = app_commands.Group(name="pool", description="credit pool")
    admin = app_commands.Group(name="admin", description="pool admin", parent=pool)
    tree.add_command(pool)

    @pool.command(description="grant credits")
    async def grant(interaction: Inter, member: discord.Member, amount: int) -> None:
        kind = type(member).__name__
        await interaction.response.send_message(f"granted {amount} to {member.name} ({kind})")

    @admin.command(description="reset the pool")
    async def reset(interaction: Inter) -> None:
        await interaction.response.send_message("reset")

    @tree.command(description="read an attachment option")
    async def upload(interaction: Inter, file: discord.Attachment) -> None:
        data = await file.read()
        await interaction.response.send_message(f"{file.filename}: {len(data)} bytes")

    @tree.context_menu(name="Read Files")
    async def read_files(interaction: Inter, message: discord.Message) -> None:
        sizes = [f"{a.filename}: {len(await a.read())} bytes" for a in message.attachments]
        await interaction.response.send_message(
            f"{', '.join(sizes)} from {message.author.name}", ephemeral=True
        )

    @tree.command(description="DM the invoker")
    async def dm(interaction: Inter) -> None:
        try:
            await interaction.user.send("hi in dm")
        except discord.HTTPException as exc:
            probe.errors.append(exc)
        await interaction.response.send_message("done", ephemeral=True)

    @tree.command(description="edit the response, then reply to it")
    async def edit(interaction: Inter) -> None:
        await interaction.response.send_message("v1")
        await interaction.edit_original_response(content="v2")
        original = await interaction.original_response()
        await original.reply("a reply")

    async def colours(interaction: Inter, current: str) -> list[app_commands.Choice[str]]:
        shade = interaction.namespace.shade
        names = [c for c in ("red", "green", "reef") if c.startswith(current)]
        return [app_commands.Choice(name=f"{c} {shade}", value=c) for c in names]

    @tree.command(description="pick a colour")
    @app_commands.autocomplete(colour=colours)
    async def pick(interaction: Inter, shade: int, colour: str) -> None:
        await interaction.response.send_message(f"{colour} {shade}")

    @tree.command(description="ephemeral defer, then two followups")
    async def secret(interaction: Inter) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send("secret")
        await interaction.followup.send("public")


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
async def double() -> AsyncIterator[DiscordDouble]:
    async with DiscordDouble(
        app_id=APP_ID, bot_user_id=BOT_ID, token=TOKEN, ack_deadline_s=3.0
    ) as d:
        d.add_guild(GUILD_ID, name="kling", premium_tier=0, owner_id=OWNER_ID)
        d.add_channel(GUILD_ID, CHANNEL_ID, "general")
        d.add_channel(GUILD_ID, DENIED_ID, "announcements")
        d.set_channel_permissions(DENIED_ID, deny_send=True)
        d.add_member(GUILD_ID, USER_ID, "alice")
        with patch_discord_py(d):
            yield d


class Running:
    """A started bot and the task running it."""

    def __init__(self, *, members: bool = False) -> None:
        self.probe = Probe()
        self.bot = ThrowawayBot(self.probe, members=members)
        self.task: asyncio.Task[None] = asyncio.create_task(self.bot.start(TOKEN))

    async def ready(self) -> Running:
        waiter = asyncio.create_task(self.probe.ready.wait())
        done, _ = await asyncio.wait(
            {waiter, self.task}, timeout=5, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
        if self.task in done:
            self.task.result()  # re-raise the startup failure
        assert waiter in done, "bot never became ready"
        return self

    async def close(self) -> None:
        await self.bot.close()
        await self.task


@pytest.fixture
async def running(double: DiscordDouble) -> AsyncIterator[Running]:
    run = await Running().ready()
    yield run
    await run.close()
    assert double.internal_errors == []


# -- tests ---------------------------------------------------------------------------------


async def test_startup_syncs_commands_and_receives_guild(
    double: DiscordDouble, running: Running
) -> None:
    assert [(r.method, r.path, r.status) for r in double.requests[:3]] == [
        ("GET", "/users/@me", 200),
        ("GET", "/oauth2/applications/@me", 200),
        ("PUT", f"/applications/{APP_ID}/guilds/{GUILD_ID}/commands", 200),
    ]
    synced = {c["name"]: c for c in double.commands(GUILD_ID)}
    assert set(synced) == COMMANDS
    assert synced["ticket"]["options"][0]["max_value"] == 99
    fetched = await running.bot.tree.fetch_commands(guild=discord.Object(GUILD_ID))
    assert {c.name: c.id for c in fetched} == {n: int(c["id"]) for n, c in synced.items()}
    await running.bot.tree.sync(guild=discord.Object(GUILD_ID))  # unchanged: same ids/versions
    assert double.commands(GUILD_ID) == list(synced.values())
    sent = [g.t for g in double.gateway_log if g.direction == "send" and g.op == 0]
    assert sent[:2] == ["READY", "GUILD_CREATE"]
    assert running.bot.application_id == APP_ID
    guild = running.bot.get_guild(GUILD_ID)
    assert guild is not None
    assert (guild.name, guild.me.id, guild.filesize_limit) == ("kling", BOT_ID, 10 * 1024 * 1024)
    assert {c.id for c in guild.text_channels} == {CHANNEL_ID, DENIED_ID}
    assert guild.get_member(USER_ID) is None  # no members intent: only interactions carry them
    denied = guild.get_channel(DENIED_ID)
    assert denied is not None
    assert not denied.permissions_for(guild.me).send_messages
    assert double.unrouted_requests() == []


async def test_ping_is_answered_within_deadline(double: DiscordDouble, running: Running) -> None:
    inter = await double.invoke("ping", user_id=USER_ID)
    ack = await inter.wait_ack()
    assert (ack.callback_type, ack.data, ack.status) == (4, {"tts": False, "content": "pong"}, 200)
    assert 0 <= ack.elapsed_s < 3
    [msg] = double.messages(CHANNEL_ID)
    assert (msg.content, msg.type, msg.id) == ("pong", 20, inter.original_message_id)
    assert msg.interaction_metadata is not None
    assert msg.interaction_metadata["user"]["id"] == str(USER_ID)
    # The bot receives its own reply as MESSAGE_CREATE.
    await double.wait_for(lambda: any(m.id == msg.id for m in running.bot.cached_messages))


async def test_defer_then_followup_with_file_fills_loading_message(
    double: DiscordDouble, running: Running
) -> None:
    inter = await double.invoke("slow")
    assert (await inter.wait_ack()).callback_type == 5
    followup = await inter.wait_for_followup()
    assert followup.message_id == inter.original_message_id  # replaced the "thinking" message
    assert [(p.name, p.filename) for p in followup.files] == [("files[0]", "report.csv")]
    msg = double.message(inter.original_message_id or 0)
    assert (msg.content, msg.loading, msg.ephemeral, msg.edit_count) == ("report", False, False, 0)
    [att] = msg.attachments
    assert (att.filename, att.size, att.content_type) == ("report.csv", len(REPORT), "text/csv")
    await double.wait_for(lambda: running.probe.downloads)  # Attachment.read() via the double
    assert running.probe.downloads == [REPORT] == [att.read()]


async def test_ack_after_deadline_is_unknown_interaction(
    double: DiscordDouble, running: Running
) -> None:
    inter = await double.invoke("late")
    double.clock.advance(3.5)
    running.probe.gate.set()
    ack = await inter.wait_ack(allow_rejected=True)
    assert (ack.status, ack.code) == (404, 10062)
    assert ack.elapsed_s > 3
    await double.wait_for(lambda: running.probe.errors)
    [err] = running.probe.errors
    assert isinstance(err, discord.NotFound)
    assert err.code == 10062
    assert double.messages(CHANNEL_ID) == []


async def test_second_callback_is_already_acknowledged(
    double: DiscordDouble, running: Running
) -> None:
    inter = await double.invoke("twice")
    await double.wait_for(lambda: running.probe.errors)
    first, second = [r for r in inter.responses if r.kind == "callback"]
    assert (first.status, second.status, second.code) == (200, 400, 40060)
    assert [e.code for e in running.probe.errors] == [40060]
    assert [m.content for m in double.messages(CHANNEL_ID)] == ["one"]


async def test_dynamic_button_and_modal_round_trip(double: DiscordDouble, running: Running) -> None:
    inter = await double.invoke("ticket", {"n": 7})
    posted = await double.wait_for_message(CHANNEL_ID, lambda m: m.content == "ticket 7")
    assert (await inter.wait_ack()).data == {"tts": False, "content": "posting", "flags": 64}
    click = await double.click(posted.id, "t:7", user_id=USER_ID)
    ack = await click.wait_ack()
    assert ack.data is not None
    assert ack.data["content"] == f"ticket 7 clicked by {USER_ID}"
    assert click.original_message is not None
    assert click.original_message.ephemeral
    assert [m.content for m in double.messages(CHANNEL_ID)] == ["ticket 7"]  # ephemeral hidden

    opener = await double.invoke("note")
    assert (await opener.wait_ack()).callback_type == 9
    assert opener.modal is not None
    assert opener.modal["title"] == "Note"
    submit = await double.submit_modal(opener, "note", {"note_text": "hello there"})
    assert (await submit.wait_ack()).callback_type == 4
    await double.wait_for_message(CHANNEL_ID, lambda m: m.content == "noted: hello there")


async def test_invoke_is_checked_against_the_synced_definition(
    double: DiscordDouble, running: Running
) -> None:
    with pytest.raises(DoubleUsageError, match="never synced"):
        await double.invoke("nope")
    with pytest.raises(DoubleUsageError, match=r"outside 1\.\.99"):
        await double.invoke("ticket", {"n": 100})
    with pytest.raises(DoubleUsageError, match="required option 'n' missing"):
        await double.invoke("ticket")
    with pytest.raises(DoubleUsageError, match="no option"):
        await double.invoke("ticket", {"n": 1, "colour": "red"})
    opener = await double.invoke("note")
    await opener.wait_ack()
    with pytest.raises(DoubleUsageError, match="length 101"):
        await double.submit_modal(opener, "note", {"note_text": "x" * 101})
    post = await double.invoke("post", {"channel": CHANNEL_ID})
    _assert_channel_option_payload(post)
    await post.wait_for_followup()


def _assert_channel_option_payload(inter: DoubleInteraction) -> None:
    data = inter.payload["data"]
    assert data["guild_id"] == str(GUILD_ID)
    assert data["options"] == [{"name": "channel", "type": 7, "value": str(CHANNEL_ID)}]
    assert data["resolved"]["channels"][str(CHANNEL_ID)]["name"] == "general"
    assert inter.payload["attachment_size_limit"] == 10 * 1024 * 1024
    assert inter.payload["member"]["user"]["id"] == str(USER_ID)


async def test_rate_limited_post_is_retried_by_discord_py(
    double: DiscordDouble, running: Running
) -> None:
    route = rf"/channels/{CHANNEL_ID}/messages"
    double.fail("POST", route, status=429, retry_after_s=0.2)
    inter = await double.invoke("post", {"channel": CHANNEL_ID})
    await inter.wait_for_followup()
    posts = [r for r in double.requests if r.method == "POST" and re.fullmatch(route, r.path)]
    assert [r.status for r in posts] == [429, 200]
    assert posts[1].at - posts[0].at >= 0.19  # discord.py slept retry_after by itself
    assert [m.content for m in double.messages(CHANNEL_ID)] == ["hello"]
    assert running.probe.errors == []


async def test_denied_channel_raises_forbidden(double: DiscordDouble, running: Running) -> None:
    inter = await double.invoke("post", {"channel": DENIED_ID}, channel_id=DENIED_ID)
    followup = await inter.wait_for_followup()
    assert followup.data is not None
    assert followup.data["content"] == "could not post"
    [err] = running.probe.errors
    assert isinstance(err, discord.Forbidden)
    assert (err.status, err.code) == (403, 50013)
    assert double.messages(DENIED_ID) == []
    assert int(inter.payload["app_permissions"]) & (1 << 11) == 0  # no SEND_MESSAGES


async def test_file_over_the_guild_limit_is_rejected(
    double: DiscordDouble, running: Running
) -> None:
    inter = await double.invoke("big")
    await inter.wait_for_followup()
    [err] = running.probe.errors
    assert (err.status, err.code) == (413, 40005)
    [rejected] = [r for r in inter.responses if r.kind == "followup" and not r.ok]
    assert rejected.files[0].size == 10 * 1024 * 1024 + 1
    assert [m.content for m in double.messages(CHANNEL_ID)] == ["file too big"]


async def test_a_channel_with_its_own_upload_limit_holds_every_upload_to_it(
    double: DiscordDouble, running: Running
) -> None:
    small = 900_000_000_000_000_022
    double.add_channel(GUILD_ID, small, "small-uploads", upload_limit_bytes=1024 * 1024)
    inter = await double.invoke("big", channel_id=small)
    await inter.wait_for_followup()
    assert inter.payload["attachment_size_limit"] == 1024 * 1024
    [err] = running.probe.errors
    assert (err.status, err.code) == (413, 40005)
    [rejected] = [r for r in inter.responses if r.kind == "followup" and not r.ok]
    assert rejected.files[0].size == 1024 * 1024 + 1
    assert [m.content for m in double.messages(small)] == ["file too big"]
    nitro = 900_000_000_000_000_005
    double.add_member(GUILD_ID, nitro, "nitro", premium_type=2)
    with pytest.raises(DoubleUsageError, match="upload limit"):  # Nitro does not lift it
        double.post_as_member(
            small, attachments=[("a.bin", b"\0" * (1024 * 1024 + 1))], user_id=nitro
        )
    double.post_as_member(small, attachments=[("a.bin", b"\0" * 1024 * 1024)], user_id=nitro)
    with pytest.raises(DoubleUsageError, match="positive"):
        double.add_channel(GUILD_ID, small + 1, "zero", upload_limit_bytes=0)


async def ping(double: DiscordDouble, channel_id: int) -> DoubleInteraction:
    inter = await double.invoke("ping", user_id=USER_ID, channel_id=channel_id)
    await inter.wait_ack()
    return inter


async def test_overwrites_are_applied_as_discord_applies_them(
    double: DiscordDouble, running: Running
) -> None:
    send, attach = 1 << 11, 1 << 15
    no_files = 900_000_000_000_000_023
    double.add_channel(GUILD_ID, no_files, "no-files")
    double.set_permission_overwrite(no_files, BOT_ID, deny=attach)

    def updated() -> discord.TextChannel | None:  # CHANNEL_CREATE and _UPDATE reached discord.py
        found = running.bot.get_channel(no_files)
        return found if isinstance(found, discord.TextChannel) and found.overwrites else None

    channel = await double.wait_for(updated)
    await channel.send("text is fine")
    with pytest.raises(discord.Forbidden) as raised:
        await channel.send(file=discord.File(io.BytesIO(b"data"), "a.bin"))
    assert (raised.value.status, raised.value.code) == (403, 50013)
    assert [m.content for m in double.messages(no_files)] == ["text is fine"]
    # @everyone denies sending, a role of the member allows it back, the member's own denies it
    role = 900_000_000_000_000_030
    double.add_role(GUILD_ID, role, "talkers")
    double.add_member(GUILD_ID, USER_ID, "alice", roles=[role])
    double.set_permission_overwrite(no_files, GUILD_ID, deny=send, role=True)
    inter = await ping(double, no_files)
    assert not int(inter.payload["member"]["permissions"]) & send
    double.set_permission_overwrite(no_files, role, allow=send, role=True)
    inter = await ping(double, no_files)
    assert int(inter.payload["member"]["permissions"]) & send
    double.set_permission_overwrite(no_files, USER_ID, deny=send)
    inter = await ping(double, no_files)
    assert not int(inter.payload["member"]["permissions"]) & send
    # discord.py computes the same from the overwrites the double sent
    guild = channel.guild
    member = await guild.fetch_member(USER_ID)
    assert channel.permissions_for(member).send_messages is False
    assert channel.permissions_for(guild.me).attach_files is False
    text_channel_bits = ~discord.Permissions.voice().value  # discord.py drops voice bits here
    assert int(inter.payload["app_permissions"]) & text_channel_bits == (
        channel.permissions_for(guild.me).value
    )
    assert int(inter.payload["member"]["permissions"]) & text_channel_bits == (
        channel.permissions_for(member).value
    )
    with pytest.raises(DoubleUsageError, match="allow and deny"):
        double.set_permission_overwrite(no_files, USER_ID, allow=send, deny=send)
    with pytest.raises(DoubleUsageError, match="not a member"):
        double.set_permission_overwrite(no_files, 123, deny=send)
    double.set_permission_overwrite(no_files, USER_ID)  # removed
    inter = await ping(double, no_files)
    assert int(inter.payload["member"]["permissions"]) & send


async def test_followup_after_token_expiry_is_401(double: DiscordDouble, running: Running) -> None:
    inter = await double.invoke("expire")
    assert (await inter.wait_ack()).callback_type == 5
    double.clock.advance(16 * 60)
    running.probe.gate.set()
    await double.wait_for(lambda: running.probe.errors)
    [err] = running.probe.errors
    assert (err.status, err.code) == (401, 50027)
    assert [(r.kind, r.status) for r in inter.responses] == [("callback", 200), ("followup", 401)]


async def test_restarted_bot_still_handles_old_buttons(double: DiscordDouble) -> None:
    first = await Running().ready()
    inter = await double.invoke("ticket", {"n": 3})
    posted = await double.wait_for_message(CHANNEL_ID, lambda m: m.content == "ticket 3")
    await inter.wait_ack()
    [first_session] = [s.id for s in double.gateway.live_sessions]
    await first.close()
    assert not double.connected

    second = await Running().ready()
    try:
        ack = await (await double.click(posted.id, "t:3")).wait_ack()
        assert ack.data is not None
        assert ack.data["content"] == f"ticket 3 clicked by {USER_ID}"
        identifies = [g for g in double.gateway_log if g.direction == "recv" and g.op == 2]
        assert len(identifies) == 2
        [live] = double.gateway.live_sessions
        assert live.id != first_session
    finally:
        await second.close()


async def test_gateway_disconnect_is_resumed_with_replay(
    double: DiscordDouble, running: Running
) -> None:
    await double.disconnect_gateway()
    inter = await double.invoke("ping")  # dispatched while the bot is away
    await asyncio.wait_for(running.probe.resumed.wait(), 5)
    assert (await inter.wait_ack()).status == 200
    recv = [(g.op, g.path) for g in double.gateway_log if g.direction == "recv" and g.op in (2, 6)]
    assert recv == [(2, "/gateway/"), (6, "/gateway/resume/")]
    replayed = [g for g in double.gateway_log if g.t == "INTERACTION_CREATE"]
    assert [g.path for g in replayed] == ["/gateway/resume/"]


async def test_subcommands_and_resolved_options(double: DiscordDouble, running: Running) -> None:
    grant = await double.invoke("pool", {"member": USER_ID, "amount": 5}, sub="grant")
    assert (await grant.wait_ack()).data == {"tts": False, "content": "granted 5 to alice (Member)"}
    reset = await double.invoke("pool", group="admin", sub="reset")
    assert (await reset.wait_ack()).status == 200
    with pytest.raises(DoubleUsageError, match="pass sub="):
        await double.invoke("pool")
    upload = await double.invoke("upload", {"file": ("clip.mp4", b"\0" * 4321)})
    ack = await upload.wait_ack()
    assert ack.data is not None
    assert ack.data["content"] == "clip.mp4: 4321 bytes"


async def test_autocomplete_sends_the_typed_text_and_gets_choices(
    double: DiscordDouble, running: Running
) -> None:
    inter = await double.autocomplete("pick", {"shade": 3, "colour": "re"}, "colour")
    focused = [o for o in inter.payload["data"]["options"] if o.get("focused")]
    assert focused == [{"name": "colour", "type": 3, "value": "re", "focused": True}]
    ack = await inter.wait_ack()
    assert ack.callback_type == 8 and ack.data is not None
    assert ack.data["choices"] == [
        {"name": "red 3", "value": "red"},
        {"name": "reef 3", "value": "reef"},
    ]
    partial = await double.autocomplete("pick", {"colour": "g"}, "colour")  # shade not yet given
    assert (await partial.wait_ack()).data == {
        "choices": [{"name": "green None", "value": "green"}]
    }
    with pytest.raises(DoubleUsageError, match="no synced autocomplete"):
        await double.autocomplete("pick", {"shade": "3"}, "shade")
    with pytest.raises(DoubleUsageError, match="numeric option"):
        await double.autocomplete("pick", {"shade": "x", "colour": "r"}, "colour")


async def test_listeners_see_messages_responses_and_syncs(
    double: DiscordDouble, running: Running
) -> None:
    seen: list[tuple[str, object]] = []
    unsubscribe = double.subscribe(lambda event, subject: seen.append((event, subject)))
    inter = await double.invoke("secret")
    await inter.wait_for_followup(count=2)
    events = [e for e, _ in seen]
    assert events.count("INTERACTION_RESPONSE") == len(inter.responses) == 3
    created = [s for e, s in seen if e == "MESSAGE_CREATE"]
    assert [getattr(m, "ephemeral", None) for m in created] == [True, False]  # ephemeral too
    assert "MESSAGE_UPDATE" in events  # the "thinking" message filled by the first followup
    await running.bot.tree.sync(guild=discord.Object(GUILD_ID))
    assert ("COMMANDS_SYNCED", GUILD_ID) in seen
    unsubscribe()
    before = len(seen)
    await (await double.invoke("ping")).wait_ack()
    assert len(seen) == before

    def broken(event: str, subject: object) -> None:
        raise RuntimeError("listener bug")

    double.subscribe(broken)
    assert (await (await double.invoke("ping")).wait_ack()).ok  # the double carries on
    assert [str(e) for e in double.internal_errors] == ["listener bug", "listener bug"]
    double.internal_errors.clear()


async def test_dm_edit_reply_and_ephemeral_defer(double: DiscordDouble, running: Running) -> None:
    await (await double.invoke("dm")).wait_ack()
    assert [m.content for m in double.dm_messages(USER_ID)] == ["hi in dm"]
    double.close_dms(USER_ID)
    await (await double.invoke("dm")).wait_ack()
    assert [(e.status, e.code) for e in running.probe.errors] == [(403, 50007)]

    edit = await double.invoke("edit")
    reply = await double.wait_for_message(CHANNEL_ID, lambda m: m.content == "a reply")
    original = double.message(edit.original_message_id or 0)
    assert (original.content, original.edit_count, original.edits[0]["content"]) == ("v2", 1, "v1")
    assert reply.type == 19
    assert reply.message_reference is not None
    assert reply.message_reference["message_id"] == str(original.id)

    secret = await double.invoke("secret")
    await secret.wait_for_followup(count=2)
    filled = secret.original_message  # the first followup kept the defer's ephemeral flag
    assert filled is not None
    assert (filled.content, filled.ephemeral) == ("secret", True)
    visible = [m.content for m in double.messages(CHANNEL_ID)]
    assert "public" in visible
    assert "secret" not in visible


async def test_members_intent_chunks_guild(double: DiscordDouble) -> None:
    run = await Running(members=True).ready()
    try:
        guild = run.bot.get_guild(GUILD_ID)
        assert guild is not None
        assert guild.chunked
        assert {m.id for m in guild.members} == {BOT_ID, OWNER_ID, USER_ID}
        assert any(g.op == 8 for g in double.gateway_log if g.direction == "recv")
    finally:
        await run.close()


async def test_http_surface_and_control_api(double: DiscordDouble, running: Running) -> None:
    auth = {"Authorization": f"Bot {TOKEN}"}
    control = double.control_url
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{double.api_base}/nope", headers=auth) as resp:
            assert resp.status == 404
            assert resp.headers["Content-Type"] == "application/json"
            assert "no route for GET /api/v10/nope" in (await resp.json())["message"]
        async with http.get(f"{double.api_base}/users/@me") as resp:
            assert resp.status == 401
        double.fail("GET", "/users/@me", status=429, retry_after_s=0.25)
        async with http.get(f"{double.api_base}/users/@me", headers=auth) as resp:
            assert resp.status == 429
            assert await resp.json() == {
                "message": "You are being rate limited.", "code": 0, "retry_after": 0.25,
                "global": False,
            }  # fmt: skip
            headers = resp.headers
            assert (headers["Retry-After"], headers["X-RateLimit-Remaining"]) == ("1", "0")
            assert headers["X-RateLimit-Reset-After"] == "0.250"
            assert headers["X-RateLimit-Scope"] == "user"
            assert {"Via", "X-RateLimit-Bucket", "X-RateLimit-Reset"} <= set(headers)
        async with http.post(f"{control}/invoke", json={"name": "ping"}) as resp:
            iid = int((await resp.json())["id"])
        await double.interaction(iid).wait_ack()
        async with http.get(f"{control}/interactions/{iid}") as resp:
            assert (await resp.json())["responses"][0]["callback_type"] == 4
        async with http.get(f"{control}/messages/{CHANNEL_ID}") as resp:
            assert [m["content"] for m in await resp.json()] == ["pong"]
        async with http.post(f"{control}/clock/advance", json={"seconds": 60}) as resp:
            assert resp.status == 200
        fail = {"method": "GET", "path_regex": "/guilds/.*", "status": 500, "times": 2}
        async with http.post(f"{control}/fail", json=fail) as resp:
            assert await resp.json() == {"status": 500, "code": 0, "times": 2}
        async with http.post(f"{control}/invoke", json={"name": "nope"}) as resp:
            assert resp.status == 400
            assert "never synced" in (await resp.json())["error"]
    assert [r.path for r in double.unrouted_requests()] == ["/nope"]
    assert double.world.faults.faults[-1].times == 2


async def test_message_command_gets_the_target_with_its_attachments(
    double: DiscordDouble, running: Running
) -> None:
    posted = double.post_as_member(
        CHANNEL_ID, "the notes", user_id=USER_ID, attachments=[("notes.txt", REPORT)]
    )
    [att] = posted.attachments
    assert (att.content_type, att.ephemeral, att.downloads) == ("text/plain", False, 0)
    inter = await double.invoke_message_command("Read Files", posted.id, user_id=OWNER_ID)
    assert inter.payload["data"]["target_id"] == str(posted.id)
    ack = await inter.wait_ack()
    assert ack.data is not None
    assert ack.data["content"] == f"notes.txt: {len(REPORT)} bytes from alice"
    assert att.downloads == 1  # Attachment.read() fetched the signed link from the double
    reply = double.message(inter.original_message_id or 0)
    assert reply.interaction_metadata is not None
    assert reply.interaction_metadata["command_type"] == 3
    assert reply.interaction_metadata["target_message_id"] == str(posted.id)
    with pytest.raises(DoubleUsageError, match="never synced"):
        await double.invoke_message_command("ping", posted.id)  # a slash command, not a menu
    with pytest.raises(DoubleUsageError, match="never synced"):
        await double.invoke("Read Files")
    with pytest.raises(DoubleUsageError, match="empty"):
        double.post_as_member(CHANNEL_ID, "")


async def test_context_menu_definitions_are_validated(double: DiscordDouble) -> None:
    url = f"{double.api_base}/applications/{APP_ID}/guilds/{GUILD_ID}/commands"
    auth = {"Authorization": f"Bot {TOKEN}"}
    bad = [
        [{"name": "Read Files", "type": 1, "description": "capitals and a space"}],
        [{"name": "Read Files", "type": 3, "description": "menus have none"}],
        [{"name": "Read Files", "type": 3, "options": [{"name": "x", "type": 3}]}],
        [{"name": " Read", "type": 3}],
        [{"name": "Read", "type": 4}],
    ]
    async with aiohttp.ClientSession() as http:
        for definitions in bad:
            async with http.put(url, json=definitions, headers=auth) as resp:
                assert resp.status == 400, definitions
                assert (await resp.json())["code"] == 50035
        good = [{"name": "Read Files", "type": 3}, {"name": "read", "description": "d"}]
        async with http.put(url, json=good, headers=auth) as resp:
            assert resp.status == 200
    assert double.world.commands.find("Read Files", GUILD_ID, 3) is not None
    assert double.world.commands.find("Read Files", GUILD_ID) is None


async def test_attachment_links_are_signed_and_expire(double: DiscordDouble) -> None:
    posted = double.post_as_member(CHANNEL_ID, attachments=[("a.png", b"png")], user_id=USER_ID)
    [att] = posted.attachments
    assert "?ex=" in att.url and "&hm=" in att.url
    forged = re.sub(r"hm=[0-9a-f]+", "hm=" + "0" * 64, att.url)
    async with aiohttp.ClientSession() as http:
        async with http.get(att.url) as resp:
            assert (resp.status, await resp.read()) == (200, b"png")
        async with http.get(forged) as resp:
            assert resp.status == 404
        async with http.get(att.url.split("?")[0]) as resp:
            assert resp.status == 404
        double.clock.advance(24 * 3600 + 1)
        async with http.get(att.url) as resp:
            assert resp.status == 404
            assert "no longer available" in await resp.text()
    assert att.downloads == 1


async def test_member_upload_limit_follows_nitro_and_server_boosts(
    double: DiscordDouble, running: Running
) -> None:
    twelve_mb = b"\0" * (12 * 1024 * 1024)
    with pytest.raises(DoubleUsageError, match="upload limit"):
        double.post_as_member(CHANNEL_ID, attachments=[("big.bin", twelve_mb)], user_id=USER_ID)
    with pytest.raises(DoubleUsageError, match="upload limit"):
        await double.invoke("upload", {"file": ("big.bin", twelve_mb)}, user_id=USER_ID)
    nitro = 900_000_000_000_000_005
    double.add_member(GUILD_ID, nitro, "nitro", premium_type=2)
    double.post_as_member(CHANNEL_ID, attachments=[("big.bin", twelve_mb)], user_id=nitro)
    upload = await double.invoke("upload", {"file": ("big.bin", twelve_mb)}, user_id=nitro)
    ack = await upload.wait_ack()
    assert ack.data is not None and ack.data["content"] == f"big.bin: {len(twelve_mb)} bytes"


async def test_rate_limits_are_enforced_like_discord_when_asked_for() -> None:
    limits = DISCORD_RATE_LIMITS.with_global(Limit(8, 60.0))
    auth = {"Authorization": f"Bot {TOKEN}"}
    async with (
        DiscordDouble(app_id=APP_ID, bot_user_id=BOT_ID, token=TOKEN, rate_limits=limits) as d,
        aiohttp.ClientSession() as http,
    ):
        d.add_guild(GUILD_ID, owner_id=OWNER_ID)
        d.add_channel(GUILD_ID, CHANNEL_ID, "general")
        d.add_channel(GUILD_ID, DENIED_ID, "other")
        posts = f"{d.api_base}/channels/{CHANNEL_ID}/messages"
        remaining = []
        for n in range(5):
            async with http.post(posts, json={"content": f"m{n}"}, headers=auth) as resp:
                assert resp.status == 200
                remaining.append(resp.headers["X-RateLimit-Remaining"])
                bucket = resp.headers["X-RateLimit-Bucket"]
                message_id = (await resp.json())["id"]
        assert remaining == ["4", "3", "2", "1", "0"]
        async with http.post(posts, json={"content": "one too many"}, headers=auth) as resp:
            assert resp.status == 429
            body = await resp.json()
            assert body["global"] is False and 0 < body["retry_after"] <= 5
            assert resp.headers["X-RateLimit-Scope"] == "user" and resp.headers["Via"]
        # Edits report the same bucket but are counted apart; another channel has its own.
        async with http.patch(f"{posts}/{message_id}", json={"content": "e"}, headers=auth) as r:
            assert (r.status, r.headers["X-RateLimit-Bucket"]) == (200, bucket)
        other = f"{d.api_base}/channels/{DENIED_ID}/messages"
        async with http.post(other, json={"content": "x"}, headers=auth) as resp:
            assert (resp.status, resp.headers["X-RateLimit-Remaining"]) == (200, "4")
        # The global limit (8 here) counts every request but interaction responses.
        async with http.get(f"{d.api_base}/users/@me", headers=auth) as resp:
            assert resp.status == 200
        async with http.get(f"{d.api_base}/users/@me", headers=auth) as resp:
            assert resp.status == 429
            assert resp.headers["X-RateLimit-Global"] == "true"
            assert (await resp.json())["global"] is True
        async with http.post(f"{d.api_base}/interactions/1/nope/callback", json={}) as resp:
            assert resp.status != 429  # exempt (and unknown, so refused for that)
        d.clock.advance(60)
        async with http.post(posts, json={"content": "later"}, headers=auth) as resp:
            assert resp.status == 200
    scopes = [r.rate_limit_scope for r in d.rate_limited()]
    assert scopes == ["user", "global"]
    assert len(d.invalid_requests()) == 2


async def test_without_rate_limits_nothing_is_refused_for_its_rate(double: DiscordDouble) -> None:
    auth = {"Authorization": f"Bot {TOKEN}"}
    posts = f"{double.api_base}/channels/{CHANNEL_ID}/messages"
    async with aiohttp.ClientSession() as http:
        for n in range(60):
            async with http.post(posts, json={"content": f"m{n}"}, headers=auth) as resp:
                assert resp.status == 200
    assert double.rate_limited() == []


async def test_discord_py_waits_out_a_channel_bucket() -> None:
    limits = DISCORD_RATE_LIMITS.faster(20)
    async with DiscordDouble(
        app_id=APP_ID, bot_user_id=BOT_ID, token=TOKEN, rate_limits=limits
    ) as d:
        d.add_guild(GUILD_ID, owner_id=OWNER_ID)
        d.add_channel(GUILD_ID, CHANNEL_ID, "general")
        with patch_discord_py(d):
            run = await Running().ready()
            try:
                channel = run.bot.get_partial_messageable(CHANNEL_ID)
                for n in range(12):  # one at a time: discord.py keeps to the headers
                    await channel.send(f"m{n}")
            finally:
                await run.close()
    assert len(d.messages(CHANNEL_ID)) == 12
    assert d.rate_limited() == []


async def test_a_repeated_post_with_the_same_nonce_returns_the_first_message(
    double: DiscordDouble, running: Running
) -> None:
    """discord.py sends enforce_nonce with a nonce; Discord (and the double) answers a repeat
    with the message already posted. The clip's post relies on this when a process died between
    posting a clip and recording it, and the process that took the job over posts it again."""
    channel = running.bot.get_partial_messageable(CHANNEL_ID)
    first = await channel.send("clip", nonce=0xABC123)
    again = await channel.send("clip", nonce=0xABC123)
    other = await channel.send("clip", nonce=0xABC124)
    assert again.id == first.id != other.id
    assert [m.id for m in double.messages(CHANNEL_ID)] == [first.id, other.id]


async def test_installed_in_another_application_the_double_keeps_its_own_limits() -> None:
    """Served from someone else's app (1 MiB client_max_size, its own routes), the bot still
    uploads a 5 MiB file and the app's routes still answer."""
    double = DiscordDouble(app_id=APP_ID, bot_user_id=BOT_ID, token=TOKEN)

    async def index(_: web.Request) -> web.Response:
        return web.Response(text="the host app")

    app = web.Application()
    app.router.add_get("/", index)
    double.install(app)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    double.served_at(int(runner.addresses[0][1]))
    double.add_guild(GUILD_ID, name="kling", owner_id=OWNER_ID)
    double.add_channel(GUILD_ID, CHANNEL_ID, "general")
    try:
        with patch_discord_py(double):
            run = await Running().ready()
            try:
                channel = run.bot.get_channel(CHANNEL_ID)
                assert isinstance(channel, discord.TextChannel)
                data = b"\1" * (5 * 1024 * 1024)
                sent = await channel.send(file=discord.File(io.BytesIO(data), "five.bin"))
                async with aiohttp.ClientSession() as http:
                    async with http.get(double.base_url + "/") as response:
                        assert await response.text() == "the host app"
                    async with http.get(sent.attachments[0].url) as response:
                        assert await response.read() == data
            finally:
                await run.close()
    finally:
        await double.stop()
        await runner.cleanup()
    assert double.internal_errors == []
