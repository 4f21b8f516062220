"""Discord's message, embed, component and modal limits (400 50035 when broken)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .wire import ApiError, form_error, invalid_form

JSON = dict[str, Any]

COMPONENTS_V2 = 1 << 15
_SELECT_TYPES = (3, 5, 6, 7, 8)
_EMBED_TEXT = (("title", 256), ("description", 4096))


def _too_long(path: list[str], limit: int) -> ApiError:
    leaf = form_error("BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
    for key in reversed(path):
        leaf = {key: leaf}
    return invalid_form(leaf)


def _bad(path: list[str], code: str, message: str) -> ApiError:
    leaf = form_error(code, message)
    for key in reversed(path):
        leaf = {key: leaf}
    return invalid_form(leaf)


def walk_components(components: list[JSON]) -> Iterator[JSON]:
    """Every component in a tree (action rows, sections, containers, labels)."""
    for comp in components:
        yield comp
        yield from walk_components(comp.get("components") or [])
        for key in ("accessory", "component"):
            child = comp.get(key)
            if isinstance(child, dict):
                yield from walk_components([child])


def number_components(components: list[JSON]) -> list[JSON]:
    """Assign the sequential ``id`` Discord gives every component that lacks one."""
    used = {c["id"] for c in walk_components(components) if isinstance(c.get("id"), int)}
    next_id = 1
    for comp in walk_components(components):
        if "id" not in comp:
            while next_id in used:
                next_id += 1
            comp["id"] = next_id
            used.add(next_id)
    return components


def validate_message(payload: JSON, *, files: int, creating: bool) -> None:
    """Reject what Discord rejects: empty messages, over-long content, embeds, components."""
    content = payload.get("content")
    if content is not None and not isinstance(content, str):
        raise _bad(["content"], "STRING_TYPE_CONVERT", "Could not interpret as string.")
    flags = int(payload.get("flags") or 0)
    v2 = bool(flags & COMPONENTS_V2)
    if v2 and (content or payload.get("embeds")):
        raise _bad(
            ["content"],
            "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
            "The 'content' and 'embeds' fields cannot be used with components v2",
        )
    if content and len(content) > 2000:
        raise _too_long(["content"], 2000)
    embeds = payload.get("embeds") or []
    _validate_embeds(embeds)
    components = payload.get("components") or []
    _validate_components(components, v2=v2)
    has_body = bool(
        content
        or embeds
        or components
        or files
        or payload.get("sticker_ids")
        or payload.get("poll")
    )
    if creating and not has_body:
        raise ApiError(400, 50006, "Cannot send an empty message")


def _validate_embeds(embeds: Any) -> None:
    if not isinstance(embeds, list):
        raise _bad(["embeds"], "LIST_TYPE_CONVERT", "Must be a list.")
    if len(embeds) > 10:
        raise _too_long(["embeds"], 10)
    total = 0
    for i, embed in enumerate(embeds):
        path = ["embeds", str(i)]
        for key, limit in _EMBED_TEXT:
            text = embed.get(key) or ""
            if len(text) > limit:
                raise _too_long([*path, key], limit)
            total += len(text)
        for key, sub, limit in (("footer", "text", 2048), ("author", "name", 256)):
            text = (embed.get(key) or {}).get(sub) or ""
            if len(text) > limit:
                raise _too_long([*path, key, sub], limit)
            total += len(text)
        fields = embed.get("fields") or []
        if len(fields) > 25:
            raise _too_long([*path, "fields"], 25)
        for j, fld in enumerate(fields):
            for key, limit in (("name", 256), ("value", 1024)):
                text = fld.get(key)
                fpath = [*path, "fields", str(j), key]
                if not isinstance(text, str) or not text:
                    raise _bad(fpath, "BASE_TYPE_REQUIRED", "This field is required")
                if len(text) > limit:
                    raise _too_long(fpath, limit)
                total += len(text)
    if total > 6000:
        raise _bad(["embeds"], "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")


def _validate_components(components: Any, *, v2: bool) -> None:
    if not isinstance(components, list):
        raise _bad(["components"], "LIST_TYPE_CONVERT", "Must be a list.")
    if not v2:
        if len(components) > 5:
            raise _too_long(["components"], 5)
        for i, row in enumerate(components):
            children = row.get("components") or []
            path = ["components", str(i)]
            if row.get("type") != 1:
                raise _bad([*path, "type"], "UNION_TYPE_CHOICES", "Top level must be action rows")
            selects = sum(c.get("type") in _SELECT_TYPES for c in children)
            if not children or len(children) > 5 or (selects and len(children) > 1):
                raise _bad(
                    [*path, "components"],
                    "BASE_TYPE_BAD_LENGTH",
                    "An action row holds 1-5 buttons or a single select",
                )
    elif sum(1 for _ in walk_components(components)) > 40:
        raise _too_long(["components"], 40)
    seen: set[str] = set()
    for comp in walk_components(components):
        _validate_interactive(comp, seen)


def _validate_interactive(comp: JSON, seen: set[str]) -> None:
    ctype = comp.get("type")
    if ctype not in (2, 4, *_SELECT_TYPES):
        return
    custom_id = comp.get("custom_id")
    if ctype == 2 and comp.get("style") in (5, 6):  # link / premium buttons have no custom_id
        if custom_id is not None:
            raise _bad(["components"], "BUTTON_COMPONENT_CUSTOM_ID_INVALID", "link with custom_id")
        return
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
        raise _bad(["components"], "BASE_TYPE_BAD_LENGTH", f"custom_id {custom_id!r}: 1-100 chars")
    if custom_id in seen:
        raise _bad(["components"], "COMPONENT_CUSTOM_ID_DUPLICATED", f"duplicate {custom_id!r}")
    seen.add(custom_id)
    label = comp.get("label")
    if ctype == 2 and label is not None and len(label) > 80:
        raise _too_long(["components", "label"], 80)


def validate_modal(data: JSON) -> None:
    """A modal (callback type 9): title 1-45, custom_id 1-100, 1-5 top-level components."""
    title = data.get("title")
    if not isinstance(title, str) or not 1 <= len(title) <= 45:
        raise _bad(["data", "title"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
        raise _bad(["data", "custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be 1-100 in length.")
    components = data.get("components") or []
    if not 1 <= len(components) <= 5:
        raise _bad(["data", "components"], "BASE_TYPE_BAD_LENGTH", "Must be 1-5 in length.")
    seen: set[str] = set()
    for comp in walk_components(components):
        _validate_interactive(comp, seen)
