"""Application commands synced by the bot (bulk PUT), validated like Discord does."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .wire import ApiError, form_error, invalid_form

JSON = dict[str, Any]

SUB_COMMAND = 1
SUB_COMMAND_GROUP = 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = (
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
)
CHAT_INPUT, USER_COMMAND, MESSAGE_COMMAND = 1, 2, 3
_NAME = re.compile(r"^[-_'\w]{1,32}$")
_MENU_NAME = re.compile(r"^[-_' \w]{1,32}$")  # context menus: any case, spaces allowed


class CommandRegistry:
    """Commands per scope (``None`` = global, else a guild id), keyed by (name, type)."""

    def __init__(self, *, app_id: int, ids: Callable[[], int]) -> None:
        self._app_id = app_id
        self._ids = ids
        self._scopes: dict[int | None, dict[tuple[str, int], JSON]] = {}
        self.put_count = 0

    def put(self, guild_id: int | None, definitions: Any) -> list[JSON]:
        """Bulk-overwrite a scope; ids survive for unchanged names, versions change on edits."""
        if not isinstance(definitions, list):
            raise invalid_form(form_error("LIST_TYPE_CONVERT", "Must be a list."))
        _validate_list(definitions)
        old = self._scopes.get(guild_id, {})
        new: dict[tuple[str, int], JSON] = {}
        for raw in definitions:
            key = (raw["name"], int(raw.get("type", 1)))
            stored = self._store(raw, guild_id)
            previous = old.get(key)
            if previous is not None:
                stored["id"] = previous["id"]
                if _comparable(previous) == _comparable(stored):
                    stored["version"] = previous["version"]
            new[key] = stored
        self._scopes[guild_id] = new
        self.put_count += 1
        return list(new.values())

    def get(self, guild_id: int | None) -> list[JSON]:
        """The stored commands of a scope (GET)."""
        return list(self._scopes.get(guild_id, {}).values())

    def synced(self, guild_id: int | None) -> bool:
        """Whether the bot ever synced this scope."""
        return guild_id in self._scopes

    def find(self, name: str, guild_id: int | None, ctype: int = CHAT_INPUT) -> JSON | None:
        """A command of type ``ctype`` visible in ``guild_id``: guild commands first, then
        global."""
        for scope in (guild_id, None) if guild_id is not None else (None,):
            found = self._scopes.get(scope, {}).get((name, ctype))
            if found is not None:
                return found
        return None

    def names(self, guild_id: int | None) -> list[str]:
        """Names visible in ``guild_id`` (for error messages)."""
        scopes = (guild_id, None) if guild_id is not None else (None,)
        return sorted({k[0] for s in scopes for k in self._scopes.get(s, {})})

    def _store(self, raw: JSON, guild_id: int | None) -> JSON:
        new_id = self._ids()
        stored: JSON = {
            "id": str(new_id),
            "application_id": str(self._app_id),
            "version": str(new_id),
            "type": int(raw.get("type", 1)),
            "name": raw["name"],
            "name_localizations": raw.get("name_localizations"),
            "description": raw.get("description", ""),
            "description_localizations": raw.get("description_localizations"),
            "default_member_permissions": raw.get("default_member_permissions"),
            "dm_permission": raw.get("dm_permission", True),
            "contexts": raw.get("contexts"),
            "integration_types": raw.get("integration_types") or [0],
            "nsfw": bool(raw.get("nsfw", False)),
            "options": raw.get("options") or [],
        }
        if guild_id is not None:
            stored["guild_id"] = str(guild_id)
        return stored


def _comparable(cmd: JSON) -> JSON:
    return {k: v for k, v in cmd.items() if k not in ("id", "version")}


def _nested(path: list[str], leaf: JSON) -> JSON:
    out = leaf
    for key in reversed(path):
        out = {key: out}
    return out


def _fail(path: list[str], code: str, message: str) -> ApiError:
    return invalid_form(_nested(path, form_error(code, message)))


def _validate_list(definitions: list[Any]) -> None:
    seen: set[tuple[str, int]] = set()
    chat_inputs = 0
    for index, raw in enumerate(definitions):
        path = [str(index)]
        if not isinstance(raw, dict):
            raise _fail(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
        ctype = int(raw.get("type", 1))
        if ctype not in (CHAT_INPUT, USER_COMMAND, MESSAGE_COMMAND):
            raise _fail([*path, "type"], "BASE_TYPE_CHOICES", f"Invalid command type {ctype!r}")
        if ctype == CHAT_INPUT:
            _validate_named(raw, path, description_required=True)
        else:
            _validate_menu(raw, path)
        key = (raw["name"], ctype)
        if key in seen:
            raise _fail([*path, "name"], "APPLICATION_COMMANDS_DUPLICATE_NAME", "Duplicate name")
        seen.add(key)
        chat_inputs += ctype == CHAT_INPUT
        _validate_options(raw.get("options") or [], [*path, "options"], depth=0)
    if chat_inputs > 100:
        raise invalid_form(form_error("BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length."))


def _validate_named(raw: JSON, path: list[str], *, description_required: bool) -> None:
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or name != name.lower():
        raise _fail([*path, "name"], "APPLICATION_COMMAND_INVALID_NAME", f"Invalid name {name!r}")
    description = raw.get("description", "")
    if description_required and not (isinstance(description, str) and 1 <= len(description) <= 100):
        raise _fail([*path, "description"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100")


def _validate_menu(raw: JSON, path: list[str]) -> None:
    """A user or message command: a name of any case (spaces allowed), no description or
    options ([?] the error codes for the last two are not documented)."""
    name = raw.get("name")
    if not isinstance(name, str) or not _MENU_NAME.match(name) or name != name.strip():
        raise _fail([*path, "name"], "APPLICATION_COMMAND_INVALID_NAME", f"Invalid name {name!r}")
    if raw.get("description"):
        raise _fail(
            [*path, "description"],
            "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION_INVALID",
            "Context menu commands cannot have a description",
        )
    if raw.get("options"):
        raise _fail(
            [*path, "options"],
            "APPLICATION_COMMAND_CONTEXT_MENU_OPTIONS_INVALID",
            "Context menu commands cannot have options",
        )


def _validate_options(options: Any, path: list[str], *, depth: int) -> None:
    if not isinstance(options, list) or len(options) > 25:
        raise _fail(path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    names: set[str] = set()
    optional_seen = False
    for index, opt in enumerate(options):
        opath = [*path, str(index)]
        _validate_named(opt, opath, description_required=True)
        if opt["name"] in names:
            raise _fail([*opath, "name"], "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS", "dup")
        names.add(opt["name"])
        otype = opt.get("type")
        if otype in (SUB_COMMAND, SUB_COMMAND_GROUP):
            if depth >= (1 if otype == SUB_COMMAND_GROUP else 2):
                raise _fail(opath, "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID", "bad nesting")
            _validate_options(opt.get("options") or [], [*opath, "options"], depth=depth + 1)
            continue
        if otype not in (
            STRING,
            INTEGER,
            BOOLEAN,
            USER,
            CHANNEL,
            ROLE,
            MENTIONABLE,
            NUMBER,
            ATTACHMENT,
        ):
            raise _fail([*opath, "type"], "BASE_TYPE_CHOICES", f"Invalid option type {otype!r}")
        if opt.get("required"):
            if optional_seen:
                raise _fail(
                    opath,
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            optional_seen = True
        choices = opt.get("choices") or []
        if len(choices) > 25:
            raise _fail([*opath, "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer")
        if choices and opt.get("autocomplete"):
            raise _fail([*opath, "autocomplete"], "APPLICATION_COMMAND_OPTION_INVALID", "choices")
        for bound, lo, hi in (("min_length", 0, 6000), ("max_length", 1, 6000)):
            value = opt.get(bound)
            if value is not None and not lo <= int(value) <= hi:
                raise _fail([*opath, bound], "NUMBER_TYPE_MAX", f"{bound} out of range")
