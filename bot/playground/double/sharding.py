"""Discord's sharding rules, as the double applies them to gateway sessions.

A session that identified with ``shard: [id, count]`` gets the events of the guilds it owns,
``(guild_id >> 22) % count == id``; events outside any guild (DMs) go to shard 0. A session
without ``shard`` is shard 0 of 1. Discord closes an IDENTIFY with an impossible shard with 4010
and one that would hold too many guilds with 4011; ``GET /gateway/bot`` recommends one shard
per 1,000 guilds and counts session starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INVALID_SHARD = 4010
SHARDING_REQUIRED = 4011

Shard = tuple[int, int]  # (id, count)
UNSHARDED: Shard = (0, 1)


@dataclass
class ShardRules:
    """Limits the gateway enforces (Discord's values; tests may lower them)."""

    guilds_per_recommended_shard: int = 1000
    max_guilds_per_session: int = 2500  # more: IDENTIFY closed with 4011
    session_start_total: int = 1000  # per 24 hours
    max_concurrency: int = 1  # IDENTIFYs per 5 s (reported, not enforced)
    session_starts: int = 0  # IDENTIFYs received

    def recommended_shards(self, guild_count: int) -> int:
        return max(1, -(-guild_count // self.guilds_per_recommended_shard))

    def gateway_bot_json(self, url: str, guild_count: int) -> dict[str, Any]:
        """The body of ``GET /gateway/bot``."""
        return {
            "url": url,
            "shards": self.recommended_shards(guild_count),
            "session_start_limit": {
                "total": self.session_start_total,
                "remaining": max(0, self.session_start_total - self.session_starts),
                "reset_after": 24 * 3600 * 1000,
                "max_concurrency": self.max_concurrency,
            },
        }


def shard_of(guild_id: int, count: int) -> int:
    return (guild_id >> 22) % count


def parse_shard(value: Any) -> Shard | None:
    """The ``shard`` field of an IDENTIFY; None when it is not a possible [id, count]."""
    if value is None:
        return UNSHARDED
    if not isinstance(value, list) or len(value) != 2:
        return None
    shard_id, count = value
    if type(shard_id) is not int or type(count) is not int:
        return None
    if count < 1 or not 0 <= shard_id < count:
        return None
    return shard_id, count


def owns(shard: Shard, guild_id: int | None) -> bool:
    """Whether events of `guild_id` (None: outside any guild) go to this shard."""
    shard_id, count = shard
    if guild_id is None:
        return shard_id == 0
    return shard_of(guild_id, count) == shard_id


def event_guild_id(event: str, data: Any) -> int | None:
    """The guild an event belongs to (a guild event carries it as ``id``), None for DMs."""
    if not isinstance(data, dict):
        return None
    raw = data.get("id") if event in ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE") else None
    raw = raw or data.get("guild_id")
    return int(raw) if raw else None
