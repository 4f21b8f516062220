"""The double's world: every entity, the clock, the logs, JSON renderings and waiting."""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .commands import CommandRegistry
from .faults import FaultInjector
from .model import (
    ADMINISTRATOR,
    ALL_CHANNEL_PERMISSIONS,
    ALL_PERMISSIONS,
    ATTACHMENT_URL_LIFETIME_S,
    DEFAULT_EVERYONE,
    MIB,
    NEEDS_SEND,
    SEND_MESSAGES,
    VIEW_CHANNEL,
    Attachment,
    Channel,
    Clock,
    GatewayRecord,
    Guild,
    Message,
    RecordedRequest,
    Snowflakes,
    User,
    iso,
)
from .ratelimits import RateLimiter
from .sharding import ShardRules

if TYPE_CHECKING:
    from .interactions import DoubleInteraction

JSON = dict[str, Any]
Listener = Callable[[str, object], None]
"""Called with an event name and its subject: ``MESSAGE_CREATE``/``MESSAGE_UPDATE``/
``MESSAGE_DELETE`` with the :class:`Message` (ephemeral ones too), ``INTERACTION_RESPONSE`` with
the ``DoubleInteraction``, ``COMMANDS_SYNCED`` with the scope (a guild id or ``None``)."""


class World:
    """Everything the double knows; REST, gateway and the test API all act on this."""

    def __init__(
        self,
        *,
        app_id: int,
        bot_user_id: int,
        token: str,
        ack_deadline_s: float,
        app_owner_id: int,
        bot_name: str,
    ) -> None:
        self.app_id = app_id
        self.token = token
        self.ack_deadline_s = ack_deadline_s
        self.clock = Clock()
        self.ids = Snowflakes(self.clock)
        self.bot = User(bot_user_id, bot_name, bot=True)
        self.app_owner = User(app_owner_id, "app-owner")
        self.users: dict[int, User] = {self.bot.id: self.bot, self.app_owner.id: self.app_owner}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.dm_channels: dict[int, int] = {}
        self.closed_dms: set[int] = set()
        self.messages: dict[int, Message] = {}
        self.attachments: dict[int, Attachment] = {}
        self.interactions: dict[int, DoubleInteraction] = {}
        self.commands = CommandRegistry(app_id=app_id, ids=self.ids.next)
        self.faults = FaultInjector()
        self.ratelimiter: RateLimiter | None = None  # None: no limits enforced
        self.sharding = ShardRules()
        self.requests: list[RecordedRequest] = []
        self.internal_errors: list[Exception] = []
        self.gateway_log: list[GatewayRecord] = []
        self.base_url = ""
        self.dispatch: Callable[[str, JSON], None] = lambda event, data: None
        self.listeners: list[Listener] = []
        self._changed = asyncio.Event()

    # -- change notification -------------------------------------------------------------

    def changed(self) -> None:
        """Wake everything waiting in :meth:`wait_for`."""
        self._changed.set()
        self._changed = asyncio.Event()

    def notify(self, event: str, subject: object) -> None:
        """Tell every listener (see ``DiscordDouble.subscribe``) what just happened; a listener
        that raises is recorded in :attr:`internal_errors` and never stops the double."""
        for listener in list(self.listeners):
            try:
                listener(event, subject)
            except Exception as exc:
                self.internal_errors.append(exc)

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float, describe: Callable[[], str]
    ) -> Any:
        """Return the first truthy ``predicate()``; raise ``TimeoutError`` after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(describe())
            event = self._changed
            # Poll too: predicates may look at state the double does not own.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.05))

    # -- lookups -------------------------------------------------------------------------

    def guild(self, guild_id: int) -> Guild:
        try:
            return self.guilds[guild_id]
        except KeyError:
            raise KeyError(f"unknown guild {guild_id}; add it with add_guild()") from None

    def member_permissions(self, guild: Guild, user_id: int) -> int:
        """Guild-level permissions of a member (owner and administrators get everything)."""
        if user_id == guild.owner_id:
            return ALL_PERMISSIONS
        member = guild.members.get(user_id)
        if member is None:
            return 0
        if member.permissions is not None:
            return member.permissions
        perms = guild.roles[guild.id].permissions
        for role_id in member.roles:
            role = guild.roles.get(role_id)
            if role is not None:
                perms |= role.permissions
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms

    def channel_permissions(self, channel: Channel, user_id: int) -> int:
        """A member's permissions in a guild channel, as Discord computes them: the guild-level
        ones (everything for the owner and administrators), then the @everyone overwrite, the
        member's roles' overwrites (denies, then allows), the member's own overwrite, and the
        implicit denials (no SEND_MESSAGES: no files, embeds, TTS or @everyone; no VIEW_CHANNEL:
        nothing the channel grants)."""
        guild = self.guilds[channel.guild_id or 0]
        perms = self.member_permissions(guild, user_id)
        if perms & ADMINISTRATOR:
            return perms
        everyone = channel.overwrites.get(guild.id)
        if everyone is not None:
            perms = (perms & ~everyone.deny) | everyone.allow
        member = guild.members.get(user_id)
        roles = set(member.roles) if member is not None else set()
        deny = allow = 0
        for overwrite in channel.overwrites.values():
            if overwrite.type == 0 and overwrite.id in roles:
                deny |= overwrite.deny
                allow |= overwrite.allow
        perms = (perms & ~deny) | allow
        own = channel.overwrites.get(user_id)
        if own is not None and own.type == 1:
            perms = (perms & ~own.deny) | own.allow
        if not perms & SEND_MESSAGES:
            perms &= ~NEEDS_SEND
        if not perms & VIEW_CHANNEL:
            perms &= ~ALL_CHANNEL_PERMISSIONS
        return perms

    def app_permissions(self, channel: Channel) -> int:
        """The bot's permissions in ``channel``, overwrites included."""
        if channel.guild_id is None:
            return DEFAULT_EVERYONE
        return self.channel_permissions(channel, self.bot.id)

    def filesize_limit(self, channel: Channel) -> int:
        """The per-attachment limit of uploads in ``channel`` (the server's, or the channel's
        own when it has a smaller one)."""
        if channel.guild_id is None:
            return 10 * MIB
        return _capped(self.guilds[channel.guild_id].filesize_limit, channel)

    def user_upload_limit(self, user: User, channel: Channel) -> int:
        """What a member may attach here: their own (Nitro) limit or the server's, if larger
        (never more than the channel's own limit)."""
        if channel.guild_id is None:
            return max(user.upload_limit, 10 * MIB)
        server = self.guilds[channel.guild_id].filesize_limit
        return _capped(max(user.upload_limit, server), channel)

    def new_attachment(
        self,
        channel: Channel,
        filename: str,
        data: bytes,
        *,
        content_type: str | None = None,
        ephemeral: bool = False,
        description: str | None = None,
    ) -> Attachment:
        """Store an upload behind a signed link that expires like a CDN link (``ex``/``hm``)."""
        att_id = self.ids.next()
        now = self.clock.wall()
        expires = now + ATTACHMENT_URL_LIFETIME_S
        query = f"ex={int(expires):x}&is={int(now):x}&hm={secrets.token_hex(32)}&"
        if content_type in (None, "application/octet-stream"):
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        att = Attachment(
            id=att_id,
            filename=filename,
            content_type=content_type,
            data=data,
            url=f"{self.base_url}/attachments/{channel.id}/{att_id}/{quote(filename)}?{query}",
            description=description,
            ephemeral=ephemeral,
            expires_at=expires,
        )
        self.attachments[att_id] = att
        return att

    # -- JSON renderings -----------------------------------------------------------------

    def channel_json(self, channel: Channel) -> JSON:
        if channel.guild_id is None:
            recipient = self.users[channel.recipient_id or 0]
            return {
                "id": str(channel.id),
                "type": 1,
                "recipients": [recipient.to_json()],
                "last_message_id": _opt_str(channel.last_message_id),
                "flags": 0,
            }
        overwrites = [o.to_json() for o in channel.overwrites.values()]
        return {
            "id": str(channel.id),
            "type": channel.type,
            "guild_id": str(channel.guild_id),
            "name": channel.name,
            "position": channel.position,
            "permission_overwrites": overwrites,
            "nsfw": False,
            "topic": channel.topic,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "last_message_id": _opt_str(channel.last_message_id),
            "flags": 0,
        }

    def guild_json(self, guild: Guild) -> JSON:
        """The GUILD_CREATE / GET /guilds/{id} object."""
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(guild.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": guild.premium_tier,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": guild.locale,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "features": [],
            "roles": [r.to_json() for r in guild.roles.values()],
            "emojis": [],
            "stickers": [],
            "max_members": 500000,
            "max_video_channel_users": 25,
            "application_id": None,
            "incidents_data": None,
        }

    def guild_create_json(self, guild: Guild) -> JSON:
        """GUILD_CREATE payload: the guild plus channels, the bot's member and gateway fields."""
        out = self.guild_json(guild)
        out.update(
            {
                "unavailable": False,
                "large": len(guild.members) >= 250,
                "member_count": len(guild.members),
                "joined_at": iso(self.clock.wall()),
                "channels": [self.channel_json(c) for c in guild.channels.values()],
                # Like Discord without the presences intent: only the bot itself; the rest
                # comes from REQUEST_GUILD_MEMBERS (members intent) or from interactions.
                "members": [
                    m.to_json() for m in guild.members.values() if m.user.id == self.bot.id
                ],
                "threads": [],
                "presences": [],
                "voice_states": [],
                "stage_instances": [],
                "guild_scheduled_events": [],
                "soundboard_sounds": [],
                "lazy": True,
            }
        )
        return out

    def message_json(self, msg: Message, *, gateway: bool = False, nested: bool = False) -> JSON:
        """A message object; gateway events also carry ``guild_id``."""
        out: JSON = {
            "id": str(msg.id),
            "channel_id": str(msg.channel_id),
            "author": msg.author.to_json(),
            "content": msg.content,
            "timestamp": msg.timestamp,
            "edited_timestamp": msg.edited_timestamp,
            "tts": msg.tts,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.to_json() for a in msg.attachments],
            "embeds": list(msg.embeds),
            "components": list(msg.components),
            "pinned": False,
            "type": msg.type,
            "flags": msg.flags,
        }
        if msg.nonce is not None:
            out["nonce"] = msg.nonce
        if msg.webhook_id is not None:
            out["webhook_id"] = str(msg.webhook_id)
            out["application_id"] = str(self.app_id)
        if msg.interaction_metadata is not None:
            out["interaction_metadata"] = msg.interaction_metadata
        if msg.message_reference is not None:
            out["message_reference"] = msg.message_reference
            ref = self.messages.get(int(msg.message_reference.get("message_id") or 0))
            if ref is not None and not nested:  # Discord resolves one level only
                out["referenced_message"] = (
                    None if ref.deleted else self.message_json(ref, gateway=gateway, nested=True)
                )
        if gateway and msg.guild_id is not None:
            out["guild_id"] = str(msg.guild_id)
        return out


def _capped(limit: int, channel: Channel) -> int:
    own = channel.upload_limit_bytes
    return limit if own is None else min(limit, own)


def _opt_str(value: int | None) -> str | None:
    return None if value is None else str(value)
