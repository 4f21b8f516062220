"""Careful reading of untrusted vendor JSON: every helper returns None rather than raising."""

from __future__ import annotations

import json
import math
from typing import Any

URL_KEYS = ("url", "video_url", "video", "uri", "output", "file", "download_url")


def dig(data: Any, *path: str | int) -> Any:
    """data[path[0]][path[1]]..., or None where any step is missing or of the wrong type."""
    for step in path:
        if isinstance(step, int) and isinstance(data, list) and -len(data) <= step < len(data):
            data = data[step]
        elif isinstance(step, str) and isinstance(data, dict):
            data = data.get(step)
        else:
            return None
    return data


def text(value: Any) -> str | None:
    """A non-empty string (numbers are accepted as ids), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float):
        return str(value)
    return None


def number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def percent(value: Any) -> int | None:
    """A progress value as 0..100, accepting 0..1 fractions too."""
    found = number(value)
    if found is None or not math.isfinite(found):
        return None
    if 0 < found <= 1 and not float(found).is_integer():
        found *= 100
    return max(0, min(100, round(found)))


def find_url(value: Any, depth: int = 0) -> str | None:
    """The first http(s) URL in a string, a list, or a dict under a URL-ish key."""
    if depth > 4:
        return None
    if isinstance(value, str):
        stripped = value.strip()
        return stripped if stripped.startswith(("https://", "http://")) else None
    if isinstance(value, list):
        for item in value:
            found = find_url(item, depth + 1)
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key in URL_KEYS:
            if key in value:
                found = find_url(value[key], depth + 1)
                if found:
                    return found
    return None


def loads_object(body: bytes) -> dict[str, Any] | None:
    """Parse a JSON object from bytes; None if it is not one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None
