"""INTERACTION_CREATE payloads, with options typed and validated against the synced command."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .commands import (
    ATTACHMENT,
    BOOLEAN,
    CHANNEL,
    INTEGER,
    MENTIONABLE,
    NUMBER,
    ROLE,
    STRING,
    SUB_COMMAND,
    SUB_COMMAND_GROUP,
    USER,
)
from .model import Channel, DoubleUsageError, Guild, Message, User
from .state import World
from .validate import walk_components

JSON = dict[str, Any]
OptionValue = Any
"""str/int/float/bool, an id (or object with ``.id``) for USER/CHANNEL/ROLE, AttachmentInput."""
AttachmentInput = tuple[str, bytes]
"""An ATTACHMENT option value: ``(filename, data)``."""


def interaction_payload(
    world: World,
    *,
    interaction_id: int,
    token: str,
    itype: int,
    data: JSON,
    channel: Channel,
    user: User,
    locale: str = "en-US",
    message: JSON | None = None,
) -> JSON:
    """A complete INTERACTION_CREATE ``d`` as discord.py 2.7.1 parses it."""
    payload: JSON = {
        "id": str(interaction_id),
        "application_id": str(world.app_id),
        "type": itype,
        "token": token,
        "version": 1,
        "data": data,
        "channel_id": str(channel.id),
        "app_permissions": str(world.app_permissions(channel)),
        "locale": locale,
        "entitlements": [],
        "entitlement_sku_ids": [],
        "attachment_size_limit": world.filesize_limit(channel),
    }
    channel_json = world.channel_json(channel)
    if channel.guild_id is not None:
        guild = world.guilds[channel.guild_id]
        member = guild.members[user.id].to_json()
        member["permissions"] = str(world.channel_permissions(channel, user.id))
        channel_json["permissions"] = member["permissions"]
        payload.update(
            guild_id=str(guild.id),
            guild={"id": str(guild.id), "locale": guild.locale, "features": []},
            guild_locale=guild.locale,
            member=member,
            context=0,
            authorizing_integration_owners={"0": str(guild.id)},
        )
    else:
        payload.update(user=user.to_json(), context=1, authorizing_integration_owners={"0": "0"})
    payload["channel"] = channel_json
    if message is not None:
        payload["message"] = message
    return payload


def command_data(
    world: World,
    command: JSON,
    guild: Guild,
    channel: Channel,
    user: User,
    options: Mapping[str, OptionValue] | list[JSON] | None,
    *,
    sub: str | None,
    group: str | None,
    partial: bool = False,
) -> JSON:
    """``data`` of a CHAT_INPUT interaction; raises :class:`DoubleUsageError` if invalid
    (``partial``: required options may be missing, as while autocompleting)."""
    label = f"/{command['name']}"
    defs: list[JSON] = command.get("options") or []
    nesting: list[tuple[int, str]] = []
    for wanted, otype in ((group, SUB_COMMAND_GROUP), (sub, SUB_COMMAND)):
        if wanted is None:
            continue
        found = next((o for o in defs if o["name"] == wanted and o["type"] == otype), None)
        if found is None:
            raise DoubleUsageError(
                f"{label} has no synced {'group' if otype == 2 else 'sub'}command {wanted!r}"
            )
        label += f" {wanted}"
        defs = found.get("options") or []
        nesting.append((otype, wanted))
    if any(o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in defs):
        raise DoubleUsageError(f"{label} has subcommands; pass sub= (and group=)")
    resolved: JSON = {}
    if isinstance(options, list):
        if nesting:
            raise DoubleUsageError("a raw option list already contains the subcommand; drop sub=")
        leaf = options
    else:
        leaf = _typed(
            world, label, defs, dict(options or {}), guild, channel, user, resolved, partial=partial
        )
    for otype, name in reversed(nesting):
        leaf = [{"name": name, "type": otype, "options": leaf}]
    data: JSON = {"id": command["id"], "name": command["name"], "type": 1, "options": leaf}
    if resolved:
        data["resolved"] = resolved
    if "guild_id" in command:
        data["guild_id"] = command["guild_id"]
    return data


def autocomplete_data(
    world: World,
    command: JSON,
    guild: Guild,
    channel: Channel,
    user: User,
    options: Mapping[str, OptionValue],
    focused: str,
    *,
    sub: str | None,
    group: str | None,
) -> JSON:
    """``data`` of an AUTOCOMPLETE interaction: the options filled in so far, typed and checked
    like a command's (required ones may be missing), plus ``focused``, an option synced with
    ``autocomplete``, holding the text typed into it so far."""
    given = dict(options)
    typed = given.pop(focused, "")
    if not isinstance(typed, str):
        raise DoubleUsageError(f"focused option {focused!r} holds the text typed, got {typed!r}")
    data = command_data(
        world, command, guild, channel, user, given, sub=sub, group=group, partial=True
    )
    defs: list[JSON] = command.get("options") or []
    holder: JSON = data
    for wanted in (group, sub):
        if wanted is not None:
            defs = next(o for o in defs if o["name"] == wanted).get("options") or []
            holder = holder["options"][0]
    definition = next((d for d in defs if d["name"] == focused), None)
    if definition is None or not definition.get("autocomplete"):
        raise DoubleUsageError(f"/{command['name']}: option {focused!r} has no synced autocomplete")
    order = [d["name"] for d in defs]
    entry = {"name": focused, "type": definition["type"], "value": typed, "focused": True}
    holder["options"] = sorted([*holder["options"], entry], key=lambda o: order.index(o["name"]))
    return data


def _typed(
    world: World,
    label: str,
    defs: list[JSON],
    given: dict[str, OptionValue],
    guild: Guild,
    channel: Channel,
    user: User,
    resolved: JSON,
    *,
    partial: bool = False,
) -> list[JSON]:
    known = {d["name"]: d for d in defs}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise DoubleUsageError(f"{label} has no option(s) {unknown}; synced: {sorted(known)}")
    out: list[JSON] = []
    for definition in defs:
        name = definition["name"]
        if name not in given:
            if definition.get("required") and not partial:
                raise DoubleUsageError(f"{label}: required option {name!r} missing")
            continue
        value = _convert(
            world, f"{label} {name}", definition, given[name], guild, channel, user, resolved
        )
        out.append({"name": name, "type": definition["type"], "value": value})
    return out


def _convert(
    world: World,
    label: str,
    definition: JSON,
    value: OptionValue,
    guild: Guild,
    channel: Channel,
    user: User,
    resolved: JSON,
) -> OptionValue:
    otype = definition["type"]
    if otype == STRING:
        if not isinstance(value, str):
            raise DoubleUsageError(f"{label}: STRING option needs a str, got {value!r}")
        lo, hi = definition.get("min_length") or 0, definition.get("max_length") or 6000
        if not lo <= len(value) <= hi:
            raise DoubleUsageError(f"{label}: length {len(value)} outside {lo}..{hi}")
        _check_choice(label, definition, value)
        return value
    if otype in (INTEGER, NUMBER):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DoubleUsageError(f"{label}: numeric option needs a number, got {value!r}")
        if otype == INTEGER and not isinstance(value, int):
            raise DoubleUsageError(f"{label}: INTEGER option got non-integer {value!r}")
        if not math.isfinite(value) or abs(value) > 2**53:
            raise DoubleUsageError(f"{label}: {value!r} outside Discord's number range")
        lo, hi = definition.get("min_value"), definition.get("max_value")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise DoubleUsageError(f"{label}: {value!r} outside {lo}..{hi}")
        _check_choice(label, definition, value)
        return value
    if otype == BOOLEAN:
        if not isinstance(value, bool):
            raise DoubleUsageError(f"{label}: BOOLEAN option needs a bool, got {value!r}")
        return value
    if otype == ATTACHMENT:
        return _attachment(world, label, value, channel, user, resolved)
    snowflake = _snowflake(label, value)
    if otype in (USER, MENTIONABLE) and snowflake in world.users:
        return _resolve_user(world, snowflake, guild, resolved)
    if otype in (ROLE, MENTIONABLE) and snowflake in guild.roles:
        resolved.setdefault("roles", {})[str(snowflake)] = guild.roles[snowflake].to_json()
        return str(snowflake)
    if otype == CHANNEL and snowflake in guild.channels:
        target = guild.channels[snowflake]
        allowed = definition.get("channel_types")
        if allowed and target.type not in allowed:
            raise DoubleUsageError(f"{label}: channel type {target.type} not in {allowed}")
        entry = world.channel_json(target)
        entry["permissions"] = str(world.channel_permissions(target, user.id))
        resolved.setdefault("channels", {})[str(snowflake)] = entry
        return str(snowflake)
    raise DoubleUsageError(
        f"{label}: no such user/role/channel {snowflake} for option type {otype}"
    )


def _check_choice(label: str, definition: JSON, value: OptionValue) -> None:
    choices = definition.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise DoubleUsageError(f"{label}: {value!r} is not one of the synced choices {choices}")


def _snowflake(label: str, value: OptionValue) -> int:
    raw = getattr(value, "id", value)
    if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).isdigit():
        raise DoubleUsageError(f"{label}: expected an id, got {value!r}")
    return int(raw)


def _resolve_user(world: World, user_id: int, guild: Guild, resolved: JSON) -> str:
    resolved.setdefault("users", {})[str(user_id)] = world.users[user_id].to_json()
    member = guild.members.get(user_id)
    if member is not None:
        entry = member.to_json()
        del entry["user"]
        entry["permissions"] = str(world.member_permissions(guild, user_id))
        resolved.setdefault("members", {})[str(user_id)] = entry
    return str(user_id)


def _attachment(
    world: World, label: str, value: OptionValue, channel: Channel, user: User, resolved: JSON
) -> str:
    if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], bytes)):
        raise DoubleUsageError(f"{label}: ATTACHMENT option needs (filename, bytes)")
    filename, data = str(value[0]), value[1]
    limit = world.user_upload_limit(user, channel)
    if len(data) > limit:
        raise DoubleUsageError(
            f"{label}: {len(data)} bytes exceeds the member's upload limit ({limit} bytes)"
        )
    att = world.new_attachment(channel, filename, data, ephemeral=True)
    resolved.setdefault("attachments", {})[str(att.id)] = att.to_json()
    return str(att.id)


def message_command_data(world: World, command: JSON, msg: Message) -> JSON:
    """``data`` of a MESSAGE context-menu interaction: the target, resolved in full (Discord
    sends the target's content and attachments without the message content intent)."""
    data: JSON = {
        "id": command["id"],
        "name": command["name"],
        "type": 3,
        "target_id": str(msg.id),
        "resolved": {"messages": {str(msg.id): world.message_json(msg)}},
    }
    if "guild_id" in command:
        data["guild_id"] = command["guild_id"]
    return data


def find_component(msg: Message, custom_id: str) -> JSON | None:
    """The interactive component with ``custom_id`` on a stored message."""
    return next(
        (c for c in walk_components(msg.components) if c.get("custom_id") == custom_id), None
    )


def component_data(component: JSON, values: list[str] | None) -> JSON:
    """``data`` of a MESSAGE_COMPONENT interaction for a button or select."""
    data: JSON = {
        "custom_id": component["custom_id"],
        "component_type": component["type"],
        "id": component.get("id"),
    }
    if component["type"] == 2:
        if values is not None:
            raise DoubleUsageError("buttons take no values")
        return data
    options = [o.get("value") for o in component.get("options") or []]
    chosen = list(values or [])
    lo, hi = component.get("min_values", 1), component.get("max_values", 1)
    if not lo <= len(chosen) <= hi:
        raise DoubleUsageError(f"select {component['custom_id']!r} takes {lo}..{hi} values")
    if component["type"] == 3 and any(v not in options for v in chosen):
        raise DoubleUsageError(f"select values {chosen} not among options {options}")
    data["values"] = chosen
    return data


def modal_components(modal: JSON, values: Mapping[str, str | list[str]]) -> list[JSON]:
    """The submitted ``components`` mirroring the modal's layout (rows or labels)."""
    inputs = {
        c["custom_id"]: c
        for c in walk_components(modal.get("components") or [])
        if c.get("type") in (3, 4)
    }
    unknown = sorted(set(values) - set(inputs))
    if unknown:
        raise DoubleUsageError(f"modal {modal['custom_id']!r} has no inputs {unknown}")

    def submitted(comp: JSON) -> JSON:
        cid = comp["custom_id"]
        if comp["type"] == 3:
            chosen = values.get(cid, [])
            return {
                "type": 3,
                "id": comp.get("id"),
                "custom_id": cid,
                "values": [chosen] if isinstance(chosen, str) else list(chosen),
            }
        text = values.get(cid, comp.get("value") or "")
        if not isinstance(text, str):
            raise DoubleUsageError(f"text input {cid!r} takes a str")
        if comp.get("required", True) and not text:
            raise DoubleUsageError(f"text input {cid!r} is required")
        lo, hi = comp.get("min_length") or 0, comp.get("max_length") or 4000
        if text and not lo <= len(text) <= hi:
            raise DoubleUsageError(f"text input {cid!r}: length {len(text)} outside {lo}..{hi}")
        return {"type": 4, "id": comp.get("id"), "custom_id": cid, "value": text}

    out: list[JSON] = []
    for top in modal.get("components") or []:
        if top.get("type") == 1:
            row = [submitted(c) for c in top.get("components") or [] if c.get("type") in (3, 4)]
            out.append({"type": 1, "id": top.get("id"), "components": row})
        elif top.get("type") == 18 and top.get("component", {}).get("type") in (3, 4):
            out.append({"type": 18, "id": top.get("id"), "component": submitted(top["component"])})
    return out
