"""What the page sees of the double's world, as the person it acts as: servers, channels, people
with their permissions, the commands that person can see, and messages (ephemeral ones only for
the person who got them), in the JSON the page renders."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .double import DiscordDouble, DoubleUsageError, Message
from .double.model import ADMINISTRATOR, MANAGE_GUILD, SEND_MESSAGES
from .scenario import Scenario

JSON = dict[str, Any]
CHAT_INPUT, MESSAGE_COMMAND = 1, 3
PERMISSION_NAMES = {
    ADMINISTRATOR: "Administrator",
    MANAGE_GUILD: "Manage Server",
    1 << 13: "Manage Messages",
    1 << 11: "Send Messages",
    1 << 15: "Attach Files",
    1 << 31: "Use Application Commands",
}


def world_json(double: DiscordDouble, scenario: Scenario) -> JSON:
    """Servers with their channels and roles, the people the page can act as, every user's name."""
    world = double.world
    guilds: list[JSON] = []
    for spec in scenario.guilds:
        guild = world.guild(spec.id)
        channels = []
        for channel_spec in spec.channels:
            channel = world.channels[channel_spec.id]
            channels.append(
                {
                    "id": str(channel.id),
                    "name": channel.name,
                    "topic": channel.topic,
                    "upload_limit_bytes": world.filesize_limit(channel),
                    "bot_can_post": bool(world.app_permissions(channel) & SEND_MESSAGES),
                }
            )
        guilds.append(
            {
                "id": str(guild.id),
                "name": guild.name,
                "owner_id": str(guild.owner_id),
                "channels": channels,
                "roles": [
                    {"id": str(r.id), "name": r.name}
                    for r in guild.roles.values()
                    if r.id != guild.id and not r.managed
                ],
                "members": [
                    member_json(double, guild.id, m.user.id) for m in guild.members.values()
                ],
            }
        )
    return {
        "guilds": guilds,
        "people": [{"id": str(p.id), "name": p.name, "role": p.role} for p in scenario.people],
        "default_person_id": str(scenario.default_person_id),
        "bot": {"id": str(world.bot.id), "name": world.bot.username},
        "users": {str(u.id): u.global_name or u.username for u in world.users.values()},
    }


def member_json(double: DiscordDouble, guild_id: int, user_id: int) -> JSON:
    """A member with the permissions the double computes for them and their role names."""
    world = double.world
    guild = world.guild(guild_id)
    member = guild.members[user_id]
    permissions = world.member_permissions(guild, user_id)
    return {
        "id": str(user_id),
        "name": member.nick or member.user.global_name or member.user.username,
        "bot": member.user.bot,
        "owner": user_id == guild.owner_id,
        "roles": [guild.roles[r].name for r in member.roles if r in guild.roles],
        "permissions": str(permissions),
        "permission_names": [n for bit, n in PERMISSION_NAMES.items() if permissions & bit],
    }


def visible_commands(double: DiscordDouble, guild_id: int, person_id: int) -> list[JSON]:
    """The commands synced for this server (guild ones over global ones of the same name) that
    Discord shows this member: those whose default permissions the member has."""
    world = double.world
    guild = world.guild(guild_id)
    permissions = world.member_permissions(guild, person_id)
    merged: dict[tuple[str, int], JSON] = {}
    for scope in (None, guild_id):
        for command in double.commands(scope):
            merged[(command["name"], command["type"])] = command
    return sorted(
        (c for c in merged.values() if shown_to(c, permissions)),
        key=lambda c: (c["type"], c["name"]),
    )


def shown_to(command: JSON, permissions: int) -> bool:
    """Whether a member with ``permissions`` sees the command (``default_member_permissions``)."""
    required = command.get("default_member_permissions")
    if required is None or permissions & ADMINISTRATOR:
        return True
    bits = int(required)
    return bits != 0 and permissions & bits == bits


def command_for(
    double: DiscordDouble, guild_id: int, person_id: int, name: str, ctype: int
) -> JSON:
    """The command as this member sees it; refused like a Discord client would not offer it."""
    for command in visible_commands(double, guild_id, person_id):
        if command["name"] == name and command["type"] == ctype:
            return command
    raise DoubleUsageError(f"/{name} is not available to this person in this server")


def visible_to(double: DiscordDouble, msg: Message, person_id: int) -> bool:
    """Deleted messages are gone; an ephemeral one is seen only by the person it answered."""
    if msg.deleted:
        return False
    if not msg.ephemeral:
        return True
    inter = double.world.interactions.get(msg.interaction_id or 0)
    return inter is not None and inter.user_id == person_id


def channel_messages(double: DiscordDouble, channel_id: int, person_id: int) -> list[JSON]:
    """A channel's messages as this person sees them, oldest first."""
    if channel_id not in double.world.channels:
        raise DoubleUsageError(f"unknown channel {channel_id}")
    return [
        message_json(double, m)
        for m in sorted(double.world.messages.values(), key=lambda m: m.id)
        if m.channel_id == channel_id and visible_to(double, m, person_id)
    ]


def message_json(double: DiscordDouble, msg: Message) -> JSON:
    """A message as the page renders it: Discord's fields plus who ran the command, whether
    only the invoker sees it, whether it is still "thinking", and attachment links on this page."""
    world = double.world
    out: JSON = {
        "id": str(msg.id),
        "channel_id": str(msg.channel_id),
        "author": {
            "id": str(msg.author.id),
            "name": msg.author.global_name or msg.author.username,
            "bot": msg.author.bot,
        },
        "content": msg.content,
        "timestamp": msg.timestamp,
        "edited": msg.edited_timestamp is not None,
        "edit_count": msg.edit_count,
        "ephemeral": msg.ephemeral,
        "loading": msg.loading,
        "deleted": msg.deleted,
        "embeds": msg.embeds,
        "components": msg.components,
        "attachments": [
            {
                "id": str(a.id),
                "filename": a.filename,
                "size": a.size,
                "content_type": a.content_type,
                "url": f"/api/attachments/{a.id}/{quote(a.filename)}",
            }
            for a in msg.attachments
        ],
        "interaction": None,
        "reference": None,
    }
    meta = msg.interaction_metadata
    if meta is not None:
        user = meta.get("user") or {}
        out["interaction"] = {
            "id": meta.get("id"),
            "name": meta.get("name"),
            "user_id": user.get("id"),
            "user_name": user.get("global_name") or user.get("username"),
        }
    ref_id = (msg.message_reference or {}).get("message_id")
    ref = world.messages.get(int(ref_id)) if ref_id else None
    if ref is not None:
        out["reference"] = {
            "id": str(ref.id),
            "author": ref.author.global_name or ref.author.username,
            "content": "" if ref.deleted else ref.content[:100],
        }
    return out
