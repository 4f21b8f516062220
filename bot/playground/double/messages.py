"""Creating, editing and deleting stored messages (shared by channel and interaction routes)."""

from __future__ import annotations

import copy
import re
from typing import Any

from .model import EPHEMERAL, LOADING, Attachment, Channel, Message, User, iso
from .state import World
from .validate import number_components, validate_message
from .wire import ApiError, FilePart, form_error, invalid_form

JSON = dict[str, Any]

SUPPRESS_EMBEDS = 1 << 2
SUPPRESS_NOTIFICATIONS = 1 << 12
COMPONENTS_V2 = 1 << 15
CHANNEL_FLAGS = SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | COMPONENTS_V2
INTERACTION_FLAGS = CHANNEL_FLAGS | EPHEMERAL
_FILE_FIELD = re.compile(r"^files\[(\d+)\]$")


def store_uploads(
    world: World, channel: Channel, files: list[FilePart], entries: list[JSON], *, ephemeral: bool
) -> dict[int, Attachment]:
    """Turn uploaded parts into attachments keyed by upload index; 413 above the size limit."""
    limit = world.filesize_limit(channel)
    by_index = {int(e["id"]): e for e in entries if str(e.get("id", "")).isdigit()}
    out: dict[int, Attachment] = {}
    for position, part in enumerate(files):
        if part.size > limit:
            raise ApiError(413, 40005, "Request entity too large")
        match = _FILE_FIELD.match(part.field)
        index = int(match.group(1)) if match else position
        entry = by_index.get(index, {})
        filename = str(entry.get("filename") or part.filename)
        att = world.new_attachment(
            channel,
            filename,
            part.data,
            content_type=part.content_type,
            description=entry.get("description"),
            ephemeral=ephemeral,
        )
        out[index] = att
    return out


def create_message(
    world: World,
    channel: Channel,
    payload: JSON,
    files: list[FilePart],
    *,
    allowed_flags: int,
    author: User | None = None,
    msg_type: int = 0,
    extra_flags: int = 0,
    webhook_id: int | None = None,
    interaction_id: int | None = None,
    interaction_metadata: JSON | None = None,
    validate: bool = True,
) -> Message:
    """Validate and store a new message, then broadcast MESSAGE_CREATE unless ephemeral."""
    if validate:
        validate_message(payload, files=len(files), creating=True)
    flags = (int(payload.get("flags") or 0) & allowed_flags) | extra_flags
    reference = _reference(world, channel, payload.get("message_reference"))
    if reference is not None and msg_type == 0 and reference.get("type", 0) == 0:
        msg_type = 19
    uploads = store_uploads(
        world, channel, files, payload.get("attachments") or [], ephemeral=bool(flags & EPHEMERAL)
    )
    msg = Message(
        id=world.ids.next(),
        channel_id=channel.id,
        guild_id=channel.guild_id,
        author=author or world.bot,
        content=payload.get("content") or "",
        timestamp=iso(world.clock.wall()),
        type=msg_type,
        flags=flags,
        embeds=[_embed(e) for e in payload.get("embeds") or []],
        components=number_components(copy.deepcopy(payload.get("components") or [])),
        attachments=list(uploads.values()),
        message_reference=reference,
        nonce=payload.get("nonce"),
        tts=bool(payload.get("tts", False)),
        webhook_id=webhook_id,
        interaction_id=interaction_id,
        interaction_metadata=interaction_metadata,
    )
    world.messages[msg.id] = msg
    if not msg.ephemeral:
        channel.last_message_id = msg.id
    broadcast(world, "MESSAGE_CREATE", msg)
    return msg


def find_by_nonce(world: World, channel: Channel, nonce: Any) -> Message | None:
    """The bot's earlier message with this nonce (``enforce_nonce`` deduplication)."""
    for msg in world.messages.values():
        if msg.channel_id == channel.id and msg.nonce == nonce and not msg.deleted:
            return msg
    return None


def edit_message(
    world: World, msg: Message, payload: JSON, files: list[FilePart], *, clear_loading: bool = True
) -> Message:
    """Apply an edit (only the keys present change), keeping edit history, and broadcast it."""
    validate_message(payload, files=len(files), creating=False)
    channel = world.channels[msg.channel_id]
    before = msg.snapshot()
    was_loading = msg.loading
    uploads = store_uploads(
        world, channel, files, payload.get("attachments") or [], ephemeral=msg.ephemeral
    )
    if "attachments" in payload:
        kept = {str(a.id): a for a in msg.attachments}
        attachments: list[Attachment] = []
        for entry in payload["attachments"] or []:
            key = str(entry.get("id"))
            if key in kept:
                attachments.append(kept[key])
            elif key.isdigit() and int(key) in uploads:
                attachments.append(uploads[int(key)])
        msg.attachments = attachments
    else:
        msg.attachments = msg.attachments + list(uploads.values())
    if "content" in payload:
        msg.content = payload["content"] or ""
    if "embeds" in payload:
        msg.embeds = [_embed(e) for e in payload["embeds"] or []]
    if "components" in payload:
        msg.components = number_components(copy.deepcopy(payload["components"] or []))
    if payload.get("flags") is not None:
        keep = msg.flags & (EPHEMERAL | LOADING)
        msg.flags = keep | (int(payload["flags"]) & (SUPPRESS_EMBEDS | COMPONENTS_V2))
    if clear_loading:
        msg.flags &= ~LOADING
    validate_message(
        {
            "content": msg.content,
            "embeds": msg.embeds,
            "components": msg.components,
            "flags": msg.flags,
        },
        files=len(msg.attachments),
        creating=not msg.loading,
    )
    if not was_loading:  # filling a deferred "thinking" message is not an edit
        msg.edited_timestamp = iso(world.clock.wall())
        msg.edits.append(before)
    broadcast(world, "MESSAGE_UPDATE", msg)
    return msg


def delete_message(world: World, msg: Message) -> None:
    """Mark deleted and broadcast MESSAGE_DELETE unless ephemeral."""
    msg.deleted = True
    if not msg.ephemeral:
        data: JSON = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
        if msg.guild_id is not None:
            data["guild_id"] = str(msg.guild_id)
        world.dispatch("MESSAGE_DELETE", data)
    world.notify("MESSAGE_DELETE", msg)
    world.changed()


def broadcast(world: World, event: str, msg: Message) -> None:
    """Send MESSAGE_CREATE/UPDATE to the gateway; ephemeral messages are never broadcast."""
    if not msg.ephemeral:
        world.dispatch(event, world.message_json(msg, gateway=True))
    world.notify(event, msg)
    world.changed()


def _embed(embed: Any) -> JSON:
    out = dict(embed) if isinstance(embed, dict) else {}
    out.setdefault("type", "rich")
    return out


def _reference(world: World, channel: Channel, ref: Any) -> JSON | None:
    if not isinstance(ref, dict) or ref.get("message_id") is None:
        return None
    target = world.messages.get(int(ref["message_id"]))
    if target is None or target.deleted or target.ephemeral:
        if ref.get("fail_if_not_exists", True):
            raise invalid_form(
                {
                    "message_reference": form_error(
                        "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                    )
                }
            )
        return None
    out: JSON = {
        "type": int(ref.get("type", 0)),
        "message_id": str(target.id),
        "channel_id": str(target.channel_id),
    }
    if target.guild_id is not None:
        out["guild_id"] = str(target.guild_id)
    return out
