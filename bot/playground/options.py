"""Turning what the page sends into what the double takes: option values typed as text (parsed
by the synced option's type) and the byte range of a video request."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = range(3, 12)
_ID_TYPES = (USER, CHANNEL, ROLE, MENTIONABLE)
_INTEGER = re.compile(r"[+-]?[0-9]{1,16}")
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?")
_SNOWFLAKE = re.compile(r"[0-9]{1,20}")
_TRUE, _FALSE = ("true", "yes", "on"), ("false", "no", "off")
_RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")


class PageInputError(ValueError):
    """What the page sent cannot be what a Discord client sends; the message says why."""


def parse_option(definition: dict[str, Any], text: str) -> Any:
    """The value of a synced option from the text typed into its field: an int, a float, a bool,
    a snowflake for users, roles and channels, or the text itself. Ranges and choices are left to
    the double, which checks them as Discord does."""
    name, otype = definition.get("name", "?"), definition.get("type")
    if otype == STRING:
        return text
    value = text.strip()
    if otype == INTEGER:
        if not _INTEGER.fullmatch(value):
            raise PageInputError(f"{name}: {text!r} is not a whole number")
        return int(value)
    if otype == NUMBER:
        if not _NUMBER.fullmatch(value) or not math.isfinite(float(value)):
            raise PageInputError(f"{name}: {text!r} is not a number")
        return float(value)
    if otype == BOOLEAN:
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise PageInputError(f"{name}: {text!r} is not true or false")
    if otype in _ID_TYPES:
        if not _SNOWFLAKE.fullmatch(value):
            raise PageInputError(f"{name}: {text!r} is not an id")
        return int(value)
    raise PageInputError(f"{name}: options of type {otype!r} are not typed as text")


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` inclusive of a body of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single range of a ``Range: bytes=a-b`` header (what a <video> asks for), clipped to
    ``size``; ``None`` for no header or one this server ignores (multiple ranges, other units).
    Raises :class:`PageInputError` for a range that does not overlap the body (answered 416)."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise PageInputError(f"range {header!r} is outside the {size} bytes")
        return ByteRange(max(0, size - suffix), size - 1, size)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise PageInputError(f"range {header!r} is outside the {size} bytes")
    return ByteRange(start, end, size)
