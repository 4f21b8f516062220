"""``DiscordDouble``: the loopback Discord server and the API tests drive it with."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from . import control
from .builders import (
    AttachmentInput,
    OptionValue,
    autocomplete_data,
    command_data,
    component_data,
    find_component,
    interaction_payload,
    message_command_data,
    modal_components,
)
from .commands import MESSAGE_COMMAND
from .faults import Fault
from .gateway import GatewayHub
from .interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    DoubleInteraction,
)
from .messages import broadcast
from .model import (
    DEFAULT_BOT,
    DEFAULT_EVERYONE,
    MIB,
    SEND_MESSAGES,
    Channel,
    Clock,
    DoubleUsageError,
    GatewayRecord,
    Guild,
    Member,
    Message,
    Overwrite,
    RecordedRequest,
    Role,
    User,
    iso,
)
from .ratelimits import RateLimiter, RateLimits
from .rest import API_PREFIX, RestApi
from .state import Listener, World

JSON = dict[str, Any]
_T = TypeVar("_T")


class DiscordDouble:
    """A fake Discord (REST + gateway) on 127.0.0.1 for discord.py bots under test."""

    def __init__(
        self,
        *,
        app_id: int,
        bot_user_id: int,
        token: str = "test-token",
        ack_deadline_s: float = 3.0,
        app_owner_id: int = 1,
        bot_name: str = "klingbot",
        rate_limits: RateLimits | None = None,
    ) -> None:
        """``rate_limits`` (e.g. ``DISCORD_RATE_LIMITS``) turns on Discord's rate limits: over a
        limit the double answers 429 like Discord (see :meth:`rate_limited`); without it no
        request is ever refused for its rate."""
        self.world = World(
            app_id=app_id,
            bot_user_id=bot_user_id,
            token=token,
            ack_deadline_s=ack_deadline_s,
            app_owner_id=app_owner_id,
            bot_name=bot_name,
        )
        if rate_limits is not None:
            self.world.ratelimiter = RateLimiter(rate_limits, self.world.clock)
        self.gateway = GatewayHub(self.world)
        self._rest = RestApi(self.world)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Serve on an ephemeral port of 127.0.0.1."""
        app = web.Application(client_max_size=256 * MIB)
        self.install(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.served_at(int(self._runner.addresses[0][1]))

    def install(self, app: web.Application) -> None:
        """Add the double to an application served by someone else (before it starts): its
        middleware (which only looks at ``/api/v10``) and its routes: REST under ``/api/v10``,
        ``/gateway``, ``/attachments`` and ``/_test``. Call :meth:`served_at` once it listens."""
        app.middlewares.append(self._rest.middleware)
        app.add_routes(self._rest.routes())
        for path in ("/gateway", "/gateway/", "/gateway/resume/"):
            app.router.add_get(path, self.gateway.handle)
        app.add_routes(control.routes(self))

    def served_at(self, port: int) -> None:
        """The port of 127.0.0.1 the double is reached at (its links and gateway URLs)."""
        self.port = port
        self.world.base_url = f"http://127.0.0.1:{port}"
        self.gateway.resume_url = f"ws://127.0.0.1:{port}/gateway/resume/"

    async def stop(self) -> None:
        """Close websockets and the server (only websockets when :meth:`install` was used)."""
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordDouble:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return self.world.base_url

    @property
    def api_base(self) -> str:
        """Assign to ``discord.http.Route.BASE``."""
        return self.world.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """Use as ``DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(double.gateway_url)``."""
        return f"ws://127.0.0.1:{self.port}/gateway/"

    @property
    def control_url(self) -> str:
        return self.world.base_url + "/_test"

    # -- logs and clock --------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        return self.world.clock

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every REST request received, in arrival order, with the status answered."""
        return self.world.requests

    @property
    def internal_errors(self) -> list[Exception]:
        """Exceptions raised inside the double's handlers (answered 500); should stay empty."""
        return self.world.internal_errors

    def rate_limited(self) -> list[RecordedRequest]:
        """Requests answered 429 (by the rate limits or an injected fault)."""
        return [r for r in self.world.requests if r.status == 429]

    def invalid_requests(self) -> list[RecordedRequest]:
        """Requests that count towards Discord's ban of an IP after 10,000 in 10 minutes: 401,
        403 and 429 answers, except 429s of the "shared" scope."""
        return [
            r
            for r in self.world.requests
            if r.status in (401, 403) or (r.status == 429 and r.rate_limit_scope != "shared")
        ]

    def unrouted_requests(self) -> list[RecordedRequest]:
        """Requests for routes the double does not implement (answered 404)."""
        return [r for r in self.world.requests if r.unrouted]

    @property
    def gateway_log(self) -> list[GatewayRecord]:
        """Every gateway frame received from and sent to the bot."""
        return self.world.gateway_log

    @property
    def connected(self) -> bool:
        """Whether a bot websocket is attached to a session right now."""
        return bool(self.gateway.live_sessions)

    @property
    def bot_user(self) -> User:
        return self.world.bot

    # -- world setup -------------------------------------------------------------------------

    def add_guild(
        self,
        guild_id: int,
        name: str = "g",
        premium_tier: int = 0,
        owner_id: int | None = None,
        *,
        locale: str = "en-US",
        bot_permissions: int = DEFAULT_BOT,
        everyone_permissions: int = DEFAULT_EVERYONE,
    ) -> Guild:
        """Add a guild the bot is in (the owner becomes a member)."""
        world = self.world
        owner = world.app_owner.id if owner_id is None else owner_id
        bot_role = Role(world.ids.next(), world.bot.username, bot_permissions, 1, managed=True)
        guild = Guild(guild_id, name, owner, premium_tier, locale, bot_role_id=bot_role.id)
        guild.roles[guild_id] = Role(guild_id, "@everyone", everyone_permissions)
        guild.roles[bot_role.id] = bot_role
        now = iso(world.clock.wall())
        guild.members[world.bot.id] = Member(world.bot, [bot_role.id], now)
        world.guilds[guild_id] = guild
        if owner not in guild.members:
            user = world.users.setdefault(owner, User(owner, f"owner{owner}"))
            guild.members[owner] = Member(user, [], now)
        world.dispatch("GUILD_CREATE", world.guild_create_json(guild))
        world.changed()
        return guild

    def add_user(self, user_id: int, username: str, *, global_name: str | None = None) -> User:
        """Create a Discord account before it joins guilds (``global_name``: its display name);
        the application owner's account exists from the start and is named instead."""
        user = self.world.users.get(user_id)
        if user is not None and user is not self.world.app_owner:
            raise DoubleUsageError(f"user {user_id} exists already")
        if user is None:
            user = self.world.users[user_id] = User(user_id, username)
        user.username, user.global_name = username, global_name
        return user

    def add_channel(
        self,
        guild_id: int,
        channel_id: int,
        name: str = "general",
        *,
        topic: str | None = None,
        upload_limit_bytes: int | None = None,
    ) -> Channel:
        """Add a text channel; ``upload_limit_bytes`` holds every upload in it to less than the
        server's limit (see :class:`Channel`)."""
        guild = self.world.guild(guild_id)
        if upload_limit_bytes is not None and upload_limit_bytes < 1:
            raise DoubleUsageError(f"upload_limit_bytes must be positive, not {upload_limit_bytes}")
        channel = Channel(
            channel_id,
            guild_id,
            name,
            position=len(guild.channels),
            topic=topic,
            upload_limit_bytes=upload_limit_bytes,
        )
        guild.channels[channel_id] = channel
        self.world.channels[channel_id] = channel
        self.world.dispatch("CHANNEL_CREATE", self.world.channel_json(channel))
        return channel

    def add_role(self, guild_id: int, role_id: int, name: str, permissions: int = 0) -> Role:
        """Add a role (grant it with ``add_member(..., roles=[role_id])``)."""
        guild = self.world.guild(guild_id)
        role = Role(role_id, name, permissions, position=len(guild.roles))
        guild.roles[role_id] = role
        self.world.dispatch(
            "GUILD_ROLE_CREATE", {"guild_id": str(guild_id), "role": role.to_json()}
        )
        return role

    def add_member(
        self,
        guild_id: int,
        user_id: int,
        name: str = "alice",
        roles: list[int] | tuple[int, ...] = (),
        permissions: int | None = None,
        *,
        nick: str | None = None,
        premium_type: int = 0,
    ) -> Member:
        """Add a user to a guild; ``permissions`` overrides the role-derived bitfield;
        ``premium_type`` is their Nitro tier (2: Nitro, 500 MiB uploads)."""
        guild = self.world.guild(guild_id)
        unknown = [r for r in roles if r not in guild.roles]
        if unknown:
            raise DoubleUsageError(f"roles {unknown} are not in guild {guild_id}")
        user = self.world.users.setdefault(user_id, User(user_id, name))
        if premium_type:
            user.premium_type = premium_type
        member = Member(user, list(roles), iso(self.world.clock.wall()), permissions, nick)
        guild.members[user_id] = member
        if guild.default_user_id is None:
            guild.default_user_id = user_id
        self.world.dispatch("GUILD_MEMBER_ADD", member.to_json() | {"guild_id": str(guild_id)})
        return member

    def set_channel_permissions(self, channel_id: int, *, deny_send: bool = True) -> None:
        """Deny (or allow again) the bot's SEND_MESSAGES in a channel: posts get 403 50013."""
        current = self._channel(channel_id).overwrites.get(self.world.bot.id)
        allow, deny = (current.allow, current.deny) if current else (0, 0)
        deny = deny | SEND_MESSAGES if deny_send else deny & ~SEND_MESSAGES
        self.set_permission_overwrite(channel_id, self.world.bot.id, allow=allow, deny=deny)

    def set_permission_overwrite(
        self, channel_id: int, target_id: int, *, allow: int = 0, deny: int = 0, role: bool = False
    ) -> None:
        """Set a channel's permission overwrite for a member (or a role with ``role=True``; the
        @everyone role has the guild's id), applied as Discord applies overwrites; with neither
        ``allow`` nor ``deny`` the overwrite is removed."""
        channel = self._channel(channel_id)
        if channel.guild_id is None:
            raise DoubleUsageError("DM channels have no permission overwrites")
        guild = self.world.guilds[channel.guild_id]
        if role and target_id not in guild.roles:
            raise DoubleUsageError(f"role {target_id} is not in guild {guild.id}")
        if not role and target_id not in guild.members:
            raise DoubleUsageError(f"user {target_id} is not a member of guild {guild.id}")
        if allow & deny:
            raise DoubleUsageError("an overwrite cannot allow and deny the same permission")
        if allow or deny:
            channel.overwrites[target_id] = Overwrite(target_id, 0 if role else 1, allow, deny)
        else:
            channel.overwrites.pop(target_id, None)
        self.world.dispatch("CHANNEL_UPDATE", self.world.channel_json(channel))

    def close_dms(self, user_id: int, closed: bool = True) -> None:
        """Make DMs to ``user_id`` fail with 403 50007 (user blocks DMs)."""
        (self.world.closed_dms.add if closed else self.world.closed_dms.discard)(user_id)

    def commands(self, guild_id: int | None = None) -> list[JSON]:
        """Commands the bot synced, globally or for one guild."""
        return self.world.commands.get(guild_id)

    # -- interactions --------------------------------------------------------------------------

    def _where_command(
        self, name: str, guild_id: int | None, channel_id: int | None, user_id: int | None
    ) -> tuple[Guild, Channel, User, JSON]:
        """The guild, channel, user (defaults: the first guild, its first channel, its first
        human member) and the synced command `/name` an interaction would carry."""
        guild = self._guild_or_default(guild_id)
        channel = self._channel(channel_id) if channel_id else _first(guild.channels, "channel")
        user = self._member_user(guild, user_id)
        command = self.world.commands.find(name, guild.id)
        if command is None:
            raise DoubleUsageError(
                f"/{name} was never synced for guild {guild.id} or globally; "
                f"synced: {self.world.commands.names(guild.id)}"
            )
        return guild, channel, user, command

    async def invoke(
        self,
        name: str,
        options: Mapping[str, OptionValue] | list[JSON] | None = None,
        *,
        sub: str | None = None,
        group: str | None = None,
        user_id: int | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        locale: str = "en-US",
    ) -> DoubleInteraction:
        """Run a slash command as a user (defaults: first guild, channel and human member)."""
        guild, channel, user, command = self._where_command(name, guild_id, channel_id, user_id)
        data = command_data(
            self.world, command, guild, channel, user, options, sub=sub, group=group
        )
        label = " ".join(p for p in (name, group, sub) if p)
        return self._send(APPLICATION_COMMAND, data, channel, user, label, locale=locale)

    async def autocomplete(
        self,
        name: str,
        options: Mapping[str, OptionValue] | None,
        focused: str,
        *,
        sub: str | None = None,
        group: str | None = None,
        user_id: int | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        locale: str = "en-US",
    ) -> DoubleInteraction:
        """Type into an autocomplete option: ``options[focused]`` is the text typed so far (the
        others as for :meth:`invoke`, required ones may be missing). The bot answers with
        callback type 8; its ``data["choices"]`` are what a Discord client lists."""
        guild, channel, user, command = self._where_command(name, guild_id, channel_id, user_id)
        data = autocomplete_data(
            self.world, command, guild, channel, user, options or {}, focused, sub=sub, group=group
        )
        label = " ".join(p for p in (name, group, sub) if p)
        return self._send(AUTOCOMPLETE, data, channel, user, label, locale=locale)

    async def invoke_message_command(
        self,
        name: str,
        message_id: int,
        *,
        user_id: int | None = None,
        locale: str = "en-US",
    ) -> DoubleInteraction:
        """Run a message context-menu command ("Apps" menu) on a message, as a member of its
        guild; the message, attachments included, comes resolved in the interaction."""
        msg = self.world.messages.get(message_id)
        if msg is None or msg.deleted or msg.ephemeral:
            raise DoubleUsageError(f"no visible message {message_id} to run {name!r} on")
        channel = self.world.channels[msg.channel_id]
        if channel.guild_id is None:
            raise DoubleUsageError("message commands are only simulated in guild channels")
        guild = self.world.guilds[channel.guild_id]
        user = self._member_user(guild, user_id)
        command = self.world.commands.find(name, guild.id, MESSAGE_COMMAND)
        if command is None:
            raise DoubleUsageError(
                f"message command {name!r} was never synced for guild {guild.id} or globally;"
                f" synced: {self.world.commands.names(guild.id)}"
            )
        data = message_command_data(self.world, command, msg)
        return self._send(APPLICATION_COMMAND, data, channel, user, name, locale=locale)

    def post_as_member(
        self,
        channel_id: int,
        content: str = "",
        *,
        user_id: int | None = None,
        attachments: list[AttachmentInput] | tuple[AttachmentInput, ...] = (),
    ) -> Message:
        """A member posts a message (with files) in a guild channel, as a Discord client would.

        Each file must fit the member's upload limit (their Nitro tier or the server's boost
        tier). The bot gets MESSAGE_CREATE only if it asked for guild message events.
        """
        channel = self._channel(channel_id)
        if channel.guild_id is None:
            raise DoubleUsageError("members post in guild channels here; DMs come from the bot")
        guild = self.world.guilds[channel.guild_id]
        user = self._member_user(guild, user_id)
        limit = self.world.user_upload_limit(user, channel)
        for filename, data in attachments:
            if len(data) > limit:
                raise DoubleUsageError(
                    f"{filename!r}: {len(data)} bytes exceeds the member's upload limit ({limit})"
                )
        if not content and not attachments:
            raise DoubleUsageError("Discord clients do not send empty messages")
        msg = Message(
            id=self.world.ids.next(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=user,
            content=content,
            timestamp=iso(self.world.clock.wall()),
            attachments=[
                self.world.new_attachment(channel, filename, data) for filename, data in attachments
            ],
        )
        self.world.messages[msg.id] = msg
        channel.last_message_id = msg.id
        broadcast(self.world, "MESSAGE_CREATE", msg)
        return msg

    async def click(
        self,
        message_id: int,
        custom_id: str,
        *,
        user_id: int | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        values: list[str] | None = None,
    ) -> DoubleInteraction:
        """Press a button (or pick select ``values``) on one of the bot's messages."""
        msg = self.world.messages.get(message_id)
        if msg is None or msg.deleted or msg.author.id != self.world.bot.id:
            raise DoubleUsageError(f"no live bot message {message_id}")
        if channel_id is not None and channel_id != msg.channel_id:
            raise DoubleUsageError(f"message {message_id} is in channel {msg.channel_id}")
        if guild_id is not None and guild_id != msg.guild_id:
            raise DoubleUsageError(f"message {message_id} is in guild {msg.guild_id}")
        component = find_component(msg, custom_id)
        if component is None or component.get("disabled"):
            raise DoubleUsageError(f"message {message_id} has no enabled component {custom_id!r}")
        channel = self.world.channels[msg.channel_id]
        user = self._clicker(msg, channel, user_id)
        data = component_data(component, values)
        return self._send(
            MESSAGE_COMPONENT,
            data,
            channel,
            user,
            custom_id,
            message=self.world.message_json(msg),
            source=msg.id,
        )

    async def submit_modal(
        self,
        inter_or_id: DoubleInteraction | int,
        custom_id: str,
        values: Mapping[str, str | list[str]] | None = None,
        *,
        user_id: int | None = None,
    ) -> DoubleInteraction:
        """Submit the modal the bot opened in answer to ``inter_or_id``."""
        if isinstance(inter_or_id, DoubleInteraction):
            parent = inter_or_id
        else:
            parent = self.interaction(inter_or_id)
        modal = parent.modal
        if modal is None or modal.get("custom_id") != custom_id:
            opened = None if modal is None else modal.get("custom_id")
            raise DoubleUsageError(f"{parent!r} opened modal {opened!r}, not {custom_id!r}")
        if user_id is not None and user_id != parent.user_id:
            raise DoubleUsageError("only the user the modal was shown to can submit it")
        data = {"custom_id": custom_id, "components": modal_components(modal, values or {})}
        source = parent.source_message_id
        message = self.world.message_json(self.world.messages[source]) if source else None
        return self._send(
            MODAL_SUBMIT,
            data,
            self.world.channels[parent.channel_id],
            self.world.users[parent.user_id],
            custom_id,
            message=message,
            source=source,
        )

    def interaction(self, interaction_id: int) -> DoubleInteraction:
        """An interaction dispatched earlier, by id."""
        try:
            return self.world.interactions[interaction_id]
        except KeyError:
            raise DoubleUsageError(f"unknown interaction {interaction_id}") from None

    @property
    def interactions(self) -> list[DoubleInteraction]:
        return list(self.world.interactions.values())

    # -- messages ------------------------------------------------------------------------------

    def messages(self, channel_id: int) -> list[Message]:
        """Messages visible in a channel (no ephemeral or deleted ones), oldest first."""
        return sorted(
            (
                m
                for m in self.world.messages.values()
                if m.channel_id == channel_id and not m.deleted and not m.ephemeral
            ),
            key=lambda m: m.id,
        )

    def message(self, message_id: int) -> Message:
        """Any stored message, ephemeral and deleted ones included."""
        try:
            return self.world.messages[message_id]
        except KeyError:
            raise DoubleUsageError(f"unknown message {message_id}") from None

    def dm_messages(self, user_id: int) -> list[Message]:
        """Messages the bot sent to ``user_id`` by DM."""
        channel_id = self.world.dm_channels.get(user_id)
        return [] if channel_id is None else self.messages(channel_id)

    # -- listening -----------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event, subject)`` synchronously on every message created, edited or
        deleted (ephemeral ones too), every response the bot gives an interaction and every
        command sync (see :data:`~.state.Listener`); returns the function that unsubscribes."""
        self.world.listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self.world.listeners:
                self.world.listeners.remove(listener)

        return unsubscribe

    # -- waiting -------------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until ``predicate()`` is truthy and return its value."""
        return await self.world.wait_for(predicate, timeout, self._timeout_report)

    async def wait_for_message(
        self,
        channel_id: int,
        predicate: Callable[[Message], bool] | None = None,
        *,
        timeout: float = 10.0,
    ) -> Message:
        """The first visible message in ``channel_id`` matching ``predicate``."""

        def find() -> Message | None:
            return next(
                (m for m in self.messages(channel_id) if not predicate or predicate(m)), None
            )

        found: Message = await self.wait_for(find, timeout)
        return found

    async def wait_until_connected(self, timeout: float = 10.0) -> None:
        """Wait for a bot websocket that has identified (READY sent)."""
        await self.wait_for(lambda: self.connected, timeout)

    def _timeout_report(self) -> str:
        recent = "\n".join(
            f"  {r.method} {r.path} -> {r.status} {r.code or ''}" for r in self.world.requests[-15:]
        )
        return f"condition not met; connected={self.connected}; last requests:\n{recent}"

    # -- failure injection and the gateway -------------------------------------------------------

    def fail(
        self,
        method: str,
        path_regex: str,
        status: int = 500,
        code: int | None = None,
        *,
        times: int = 1,
        retry_after_s: float = 0.5,
        scope: str = "user",
        message: str | None = None,
    ) -> Fault:
        """Answer the next ``times`` matching requests with an error instead of serving them.

        ``path_regex`` must fully match the path below ``/api/v10`` (e.g.
        ``r"/channels/\\d+/messages"``); ``method`` may be ``"*"``.
        """
        return self.world.faults.add(
            method,
            path_regex,
            status=status,
            code=code,
            message=message,
            times=times,
            retry_after_s=retry_after_s,
            scope=scope,
        )

    def disconnect_gateway(self, code: int = 4000) -> asyncio.Task[None]:
        """Drop the bot's websocket(s); sessions stay resumable (await the task to wait)."""
        return self.gateway.disconnect(code)

    # -- helpers -------------------------------------------------------------------------------

    def _send(
        self,
        itype: int,
        data: JSON,
        channel: Channel,
        user: User,
        name: str,
        *,
        locale: str = "en-US",
        message: JSON | None = None,
        source: int | None = None,
    ) -> DoubleInteraction:
        if not self.gateway.reachable(channel.guild_id):
            raise DoubleUsageError(
                "no bot on the gateway (for this guild's shard): nothing would get the interaction"
            )
        iid = self.world.ids.next()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(64)
        payload = interaction_payload(
            self.world,
            interaction_id=iid,
            token=token,
            itype=itype,
            data=data,
            channel=channel,
            user=user,
            locale=locale,
            message=message,
        )
        inter = DoubleInteraction(
            self.world,
            id=iid,
            token=token,
            type=itype,
            payload=payload,
            guild_id=channel.guild_id,
            channel_id=channel.id,
            user_id=user.id,
            name=name,
            source_message_id=source,
        )
        self.world.interactions[iid] = inter
        self.world.dispatch("INTERACTION_CREATE", payload)
        self.world.changed()
        return inter

    def _guild_or_default(self, guild_id: int | None) -> Guild:
        if guild_id is not None:
            return self.world.guild(guild_id)
        return _first(self.world.guilds, "guild")

    def _channel(self, channel_id: int) -> Channel:
        try:
            return self.world.channels[channel_id]
        except KeyError:
            raise DoubleUsageError(f"unknown channel {channel_id}") from None

    def _member_user(self, guild: Guild, user_id: int | None) -> User:
        if user_id is None:  # the first member added with add_member(), else the owner
            user_id = guild.default_user_id or guild.owner_id
        member = guild.members.get(user_id)
        if member is None:
            raise DoubleUsageError(f"user {user_id} is not a member of guild {guild.id}")
        return member.user

    def _clicker(self, msg: Message, channel: Channel, user_id: int | None) -> User:
        if msg.ephemeral and msg.interaction_id is not None:
            owner = self.world.interactions[msg.interaction_id].user_id
            if user_id not in (None, owner):
                raise DoubleUsageError(
                    "only the invoking user can see (and click) an ephemeral message"
                )
            return self.world.users[owner]
        if channel.guild_id is None:
            recipient = channel.recipient_id or 0
            if user_id not in (None, recipient):
                raise DoubleUsageError("only the DM recipient can click in a DM")
            return self.world.users[recipient]
        return self._member_user(self.world.guilds[channel.guild_id], user_id)


def _first(mapping: Mapping[int, _T], what: str) -> _T:
    for value in mapping.values():
        return value
    raise DoubleUsageError(f"no {what} yet; add one first")
