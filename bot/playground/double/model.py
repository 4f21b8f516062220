"""The entities of the double's Discord: users, roles, members, channels, guilds, messages."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000
MIB = 1024 * 1024

# Permission bits (https://discord.com/developers/docs/topics/permissions).
CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_EXTERNAL_EMOJIS = 1 << 18
CHANGE_NICKNAME = 1 << 26
USE_APPLICATION_COMMANDS = 1 << 31
SEND_TTS_MESSAGES = 1 << 12
MENTION_EVERYONE = 1 << 17
ALL_PERMISSIONS = (1 << 51) - 1
# What a channel can grant (discord.py's Permissions.all_channel()): lost without VIEW_CHANNEL.
ALL_CHANNEL_PERMISSIONS = 8_555_290_110_197_585
# Lost implicitly without SEND_MESSAGES (Discord's "implicit permissions").
NEEDS_SEND = SEND_TTS_MESSAGES | MENTION_EVERYONE | EMBED_LINKS | ATTACH_FILES
DEFAULT_EVERYONE = (
    CREATE_INSTANT_INVITE
    | ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | CHANGE_NICKNAME
    | USE_APPLICATION_COMMANDS
)
DEFAULT_BOT = DEFAULT_EVERYONE | MANAGE_MESSAGES

EPHEMERAL = 1 << 6
LOADING = 1 << 7

# A member's own upload limit by Nitro tier (premium_type 0 none, 1 Classic, 2 Nitro, 3 Basic);
# in a boosted server the server's limit applies when it is larger.
NITRO_UPLOAD_LIMITS = {0: 10 * MIB, 1: 50 * MIB, 2: 500 * MIB, 3: 50 * MIB}
ATTACHMENT_URL_LIFETIME_S = 24 * 3600  # signed CDN links expire (the `ex` parameter)


class DoubleUsageError(AssertionError):
    """The test asked the double for something Discord would never send or allow."""


def iso(ts: float) -> str:
    """ISO-8601 timestamp as Discord writes it."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


class Clock:
    """The double's "now": real monotonic time plus whatever a test advanced it by."""

    def __init__(self) -> None:
        self._offset = 0.0

    def now(self) -> float:
        """Monotonic seconds, shifted by :meth:`advance`."""
        return time.monotonic() + self._offset

    def wall(self) -> float:
        """Unix time, shifted by :meth:`advance` (used for timestamps and snowflakes)."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Jump forward (interaction deadlines and token lifetimes follow this clock)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset += seconds


class Snowflakes:
    """Strictly increasing, time-based Discord snowflakes."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last = 0

    def next(self) -> int:
        """A fresh id, larger than any handed out before."""
        candidate = (int(self._clock.wall() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(candidate, self._last + 1)
        return self._last


@dataclass
class User:
    """A Discord user (members, the bot, DM recipients)."""

    id: int
    username: str
    bot: bool = False
    global_name: str | None = None
    premium_type: int = 0

    @property
    def upload_limit(self) -> int:
        """What this user may attach to a message or an ATTACHMENT option (Nitro)."""
        return NITRO_UPLOAD_LIMITS.get(self.premium_type, 10 * MIB)

    def to_json(self) -> JSON:
        return {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
        }


@dataclass
class Role:
    """A guild role; the @everyone role has the guild's id."""

    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False

    def to_json(self) -> JSON:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": self.managed,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }


@dataclass
class Member:
    """A user's membership in a guild; ``permissions`` overrides the role-derived value."""

    user: User
    roles: list[int]
    joined_at: str
    permissions: int | None = None
    nick: str | None = None

    def to_json(self) -> JSON:
        return {
            "user": self.user.to_json(),
            "roles": [str(r) for r in self.roles],
            "joined_at": self.joined_at,
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "premium_since": None,
            "communication_disabled_until": None,
        }


@dataclass
class Overwrite:
    """A channel's permission overwrite for a role (``type`` 0; @everyone has the guild's id)
    or a member (``type`` 1)."""

    id: int
    type: int
    allow: int = 0
    deny: int = 0

    def to_json(self) -> JSON:
        return {
            "id": str(self.id),
            "type": self.type,
            "allow": str(self.allow),
            "deny": str(self.deny),
        }


@dataclass
class Channel:
    """A guild text channel (type 0) or a DM channel (type 1, ``recipient_id`` set).

    ``upload_limit_bytes`` is not a Discord setting: Discord's limit is the server's (boost
    tier). It lets one channel stand for a server with a smaller limit: every upload there,
    the bot's and members', is held to the smaller of the two, and interactions in it report it
    as ``attachment_size_limit``.
    """

    id: int
    guild_id: int | None
    name: str
    type: int = 0
    position: int = 0
    overwrites: dict[int, Overwrite] = field(default_factory=dict)
    recipient_id: int | None = None
    topic: str | None = None
    last_message_id: int | None = None
    upload_limit_bytes: int | None = None


@dataclass
class Guild:
    """A guild with its roles, channels and members."""

    id: int
    name: str
    owner_id: int
    premium_tier: int = 0
    locale: str = "en-US"
    bot_role_id: int = 0
    default_user_id: int | None = None
    roles: dict[int, Role] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)

    @property
    def filesize_limit(self) -> int:
        """Per-attachment upload limit for this boost tier."""
        return {2: 50 * MIB, 3: 100 * MIB}.get(self.premium_tier, 10 * MIB)


@dataclass
class Attachment:
    """A stored upload, served back at ``url`` by the double until ``expires_at`` (wall clock,
    like the ``ex`` of a signed CDN link); ``downloads`` counts the times it was served."""

    id: int
    filename: str
    content_type: str
    data: bytes
    url: str
    description: str | None = None
    ephemeral: bool = False
    expires_at: float | None = None
    downloads: int = 0

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self) -> bytes:
        """The stored bytes."""
        return self.data

    def to_json(self) -> JSON:
        out: JSON = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            out["description"] = self.description
        if self.ephemeral:
            out["ephemeral"] = True
        return out


@dataclass
class Message:
    """A message the double stores (channel, DM or ephemeral interaction message)."""

    id: int
    channel_id: int
    guild_id: int | None
    author: User
    content: str
    timestamp: str
    type: int = 0
    flags: int = 0
    embeds: list[JSON] = field(default_factory=list)
    components: list[JSON] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    message_reference: JSON | None = None
    nonce: str | int | None = None
    tts: bool = False
    webhook_id: int | None = None
    interaction_id: int | None = None
    interaction_metadata: JSON | None = None
    edited_timestamp: str | None = None
    edits: list[JSON] = field(default_factory=list)
    deleted: bool = False

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True while this is a deferred "thinking…" placeholder."""
        return bool(self.flags & LOADING)

    @property
    def edit_count(self) -> int:
        return len(self.edits)

    def snapshot(self) -> JSON:
        """The editable fields, as recorded in :attr:`edits` before each edit."""
        return {
            "content": self.content,
            "embeds": list(self.embeds),
            "components": list(self.components),
            "attachments": [a.filename for a in self.attachments],
            "flags": self.flags,
            "edited_timestamp": self.edited_timestamp,
        }


@dataclass(frozen=True)
class PartInfo:
    """A multipart file part as logged: field name, filename, size, content type."""

    name: str
    filename: str
    size: int
    content_type: str


@dataclass
class RecordedRequest:
    """One REST request the double received and the status it answered."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    parts: list[PartInfo]
    status: int = 0
    code: int | None = None
    at: float = 0.0
    unrouted: bool = False
    rate_limit_scope: str | None = None  # on a 429: "user" (a route's bucket), "global", ...


@dataclass(frozen=True)
class GatewayRecord:
    """One gateway frame: ``direction`` "recv" (from the bot) or "send" (to the bot)."""

    direction: str
    op: int
    t: str | None
    session_id: str | None
    path: str
    at: float
