"""Which Discord shards this process holds: `KLINGBOT_SHARD_COUNT` and `KLINGBOT_SHARD_IDS`.

Discord sends a guild's events to the one shard that owns it, `(guild_id >> 22) % shard_count`.
Several klingbot processes share a bot by each holding some shards (all started with the same
count). The ids are written as a list of numbers and ranges: "0,1", "0-2", "0-3,8,10-11".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MAX_SHARD_COUNT = 100_000  # far above any bot's; keeps a typo from building huge lists

_ITEM = re.compile(r"([0-9]+)(?:\s*-\s*([0-9]+))?")


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that receives a guild's events."""
    return (guild_id >> 22) % shard_count


def parse_shard_ids(text: str, shard_count: int) -> tuple[int, ...]:
    """The shard ids in `text` ("0,1", "0-2", "0-3,8"), sorted; ValueError naming what is wrong:
    not a number or range, a range that runs backwards, an id not below `shard_count`, an id
    given twice, or nothing at all."""
    if not text.strip():
        raise ValueError("is empty; give shard ids such as 0,1 or 0-2 (or leave it unset)")
    seen: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ValueError(
                f"{item!r} is not a shard id or a range: write numbers and ranges"
                " separated by commas, such as 0,1 or 0-2"
            )
        first = _number(match[1], shard_count)
        last = first if match[2] is None else _number(match[2], shard_count)
        if last < first:
            raise ValueError(f"the range {item!r} runs backwards; write {last}-{first}")
        if last >= shard_count:
            raise ValueError(
                f"shard {last} does not exist with KLINGBOT_SHARD_COUNT={shard_count}"
                f" (ids run from 0 to {shard_count - 1})"
            )
        ids = range(first, last + 1)
        twice = seen.intersection(ids)
        if twice:
            raise ValueError(f"shard {min(twice)} is listed twice")
        seen.update(ids)
    return tuple(sorted(seen))


def _number(digits: str, shard_count: int) -> int:
    if len(digits) > len(str(MAX_SHARD_COUNT)):
        raise ValueError(
            f"shard {digits[:12]}... does not exist with KLINGBOT_SHARD_COUNT={shard_count}"
        )
    return int(digits)


def check_shard_ids(ids: Sequence[int], shard_count: int) -> tuple[int, ...]:
    """The same rules for ids given as numbers (not text)."""
    return parse_shard_ids(",".join(str(i) for i in ids), shard_count)
