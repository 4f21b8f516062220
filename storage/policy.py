"""Per-guild pool policy and the moderation event log.

Every change is recorded as a moderation event (actor, action, target, reason, time) in the same
transaction as the change itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from storage.database import Database, Tx

__all__ = ["BlockedPattern", "GuildPolicy", "ModerationEvent", "PolicySnapshot"]

DEFAULT_APPROVAL_TIMEOUT_S = 24 * 3600


@dataclass(frozen=True)
class BlockedPattern:
    pattern: str
    is_regex: bool


@dataclass(frozen=True)
class PolicySnapshot:
    """Everything a guild decided about its pool, read at one moment."""

    guild_id: int
    member_cap_per_day: int | None = None
    role_caps: dict[int, int] = field(default_factory=dict)
    draw_role_ids: frozenset[int] = frozenset()
    approval_threshold: int | None = None
    confirm_threshold: int | None = None
    approval_timeout_s: int = DEFAULT_APPROVAL_TIMEOUT_S
    log_channel_id: int | None = None
    moderator_role_id: int | None = None
    frozen_user_ids: frozenset[int] = frozenset()
    blocklist: tuple[BlockedPattern, ...] = ()
    allowed_channel_ids: frozenset[int] = frozenset()
    member_max_live: int | None = None
    member_max_queued: int | None = None
    member_cooldown_s: int | None = None
    moderators_exempt: bool = False

    def cap_for(self, role_ids: frozenset[int] | set[int]) -> int | None:
        """The member's daily pool cap: the most generous matching role cap, else the member cap."""
        role_caps = [cap for role, cap in self.role_caps.items() if role in role_ids]
        if role_caps:
            return max(role_caps)
        return self.member_cap_per_day

    def may_draw(self, role_ids: frozenset[int] | set[int]) -> bool:
        return not self.draw_role_ids or bool(self.draw_role_ids & set(role_ids))

    def channel_allowed(self, channel_id: int) -> bool:
        return not self.allowed_channel_ids or channel_id in self.allowed_channel_ids


@dataclass(frozen=True)
class ModerationEvent:
    id: int
    guild_id: int
    actor_id: int
    action: str
    target_id: int | None
    detail: str | None
    reason: str | None
    at_ms: int


_POLICY_COLUMNS = frozenset(
    {
        "member_cap_per_day",
        "approval_threshold",
        "confirm_threshold",
        "approval_timeout_s",
        "log_channel_id",
        "moderator_role_id",
        "member_max_live",
        "member_max_queued",
        "member_cooldown_s",
        "moderators_exempt",
    }
)


class GuildPolicy:
    """Reads and changes guild policies; each change is logged as a moderation event.

    Snapshots are cached: a change made through this object is visible at once; one made by
    another process within `cache_ttl_s`.
    """

    def __init__(self, db: Database, *, cache_ttl_s: float = 5.0) -> None:
        self._db = db
        self._cache_ttl_ms = int(cache_ttl_s * 1000)
        self._cache: dict[int, tuple[int, PolicySnapshot]] = {}
        self._changes: dict[int, int] = {}  # per guild: changes made through this object

    async def get(self, guild_id: int, *, tx: Tx | None = None) -> PolicySnapshot:
        now = self._db.clock.now_ms()
        cached = self._cache.get(guild_id)
        if tx is None and cached is not None and now - cached[0] < self._cache_ttl_ms:
            return cached[1]
        changes = self._changes.get(guild_id, 0)
        snapshot = await self._read(guild_id, tx)
        if tx is None and self._changes.get(guild_id, 0) == changes:  # else it may be stale
            self._cache[guild_id] = (now, snapshot)
        return snapshot

    def _forget(self, guild_id: int) -> None:
        self._changes[guild_id] = self._changes.get(guild_id, 0) + 1
        self._cache.pop(guild_id, None)

    async def _read(self, guild_id: int, tx: Tx | None) -> PolicySnapshot:
        q = tx.fetchall if tx is not None else self._db.fetchall
        rows = await q("SELECT * FROM guild_policies WHERE guild_id = ?", (guild_id,))
        base = rows[0] if rows else None
        role_caps = await q(
            "SELECT role_id, cap_per_day FROM guild_role_caps WHERE guild_id = ?", (guild_id,)
        )
        draw = await q("SELECT role_id FROM guild_draw_roles WHERE guild_id = ?", (guild_id,))
        frozen = await q("SELECT user_id FROM guild_frozen_members WHERE guild_id = ?", (guild_id,))
        blocks = await q(
            "SELECT pattern, is_regex FROM guild_blocklist WHERE guild_id = ? ORDER BY added_at_ms, rowid",
            (guild_id,),
        )
        channels = await q(
            "SELECT channel_id FROM guild_allowed_channels WHERE guild_id = ?", (guild_id,)
        )
        return PolicySnapshot(
            guild_id=guild_id,
            member_cap_per_day=base["member_cap_per_day"] if base else None,
            role_caps={r["role_id"]: r["cap_per_day"] for r in role_caps},
            draw_role_ids=frozenset(r["role_id"] for r in draw),
            approval_threshold=base["approval_threshold"] if base else None,
            confirm_threshold=base["confirm_threshold"] if base else None,
            approval_timeout_s=base["approval_timeout_s"] if base else DEFAULT_APPROVAL_TIMEOUT_S,
            log_channel_id=base["log_channel_id"] if base else None,
            moderator_role_id=base["moderator_role_id"] if base else None,
            frozen_user_ids=frozenset(r["user_id"] for r in frozen),
            blocklist=tuple(BlockedPattern(r["pattern"], bool(r["is_regex"])) for r in blocks),
            allowed_channel_ids=frozenset(r["channel_id"] for r in channels),
            member_max_live=base["member_max_live"] if base else None,
            member_max_queued=base["member_max_queued"] if base else None,
            member_cooldown_s=base["member_cooldown_s"] if base else None,
            moderators_exempt=bool(base["moderators_exempt"]) if base else False,
        )

    async def set(
        self, guild_id: int, *, actor_id: int, reason: str | None = None, **values: int | None
    ) -> PolicySnapshot:
        """Set scalar policy fields (member_cap_per_day, approval_threshold, ...)."""
        return await self.set_values(guild_id, values, actor_id=actor_id, reason=reason)

    async def set_values(
        self,
        guild_id: int,
        values: Mapping[str, int | None],
        *,
        actor_id: int,
        reason: str | None = None,
    ) -> PolicySnapshot:
        """Set scalar policy fields from a mapping of field name to value."""
        unknown = set(values) - _POLICY_COLUMNS
        if unknown:
            raise ValueError(f"unknown policy fields: {sorted(unknown)}")
        now = self._db.clock.now_ms()

        async def run(t: Tx) -> None:
            await t.execute(
                "INSERT INTO guild_policies (guild_id, updated_at_ms) VALUES (?, ?)"
                " ON CONFLICT (guild_id) DO NOTHING",
                (guild_id, now),
            )
            for name, value in values.items():
                await t.execute(
                    f"UPDATE guild_policies SET {name} = ?, updated_at_ms = ? WHERE guild_id = ?",
                    (value, now, guild_id),
                )
                await _log(t, guild_id, actor_id, f"set_{name}", None, _show(value), reason, now)

        await self._db.write(run)
        self._forget(guild_id)
        return await self.get(guild_id)

    async def set_role_cap(
        self, guild_id: int, role_id: int, cap_per_day: int | None, *, actor_id: int
    ) -> None:
        """Override the daily cap for members with a role (None removes the override)."""
        now = self._db.clock.now_ms()

        async def run(t: Tx) -> None:
            if cap_per_day is None:
                await t.execute(
                    "DELETE FROM guild_role_caps WHERE guild_id = ? AND role_id = ?",
                    (guild_id, role_id),
                )
            else:
                await t.execute(
                    "INSERT INTO guild_role_caps (guild_id, role_id, cap_per_day) VALUES (?,?,?)"
                    " ON CONFLICT (guild_id, role_id) DO UPDATE SET cap_per_day = excluded.cap_per_day",
                    (guild_id, role_id, cap_per_day),
                )
            await _log(
                t, guild_id, actor_id, "set_role_cap", role_id, _show(cap_per_day), None, now
            )

        await self._db.write(run)
        self._forget(guild_id)

    async def set_draw_role(
        self, guild_id: int, role_id: int, allowed: bool, *, actor_id: int
    ) -> None:
        """Allow or stop a role drawing from the pool (with no roles set, everyone may draw)."""
        await self._toggle(
            "guild_draw_roles", "role_id", guild_id, role_id, allowed, actor_id, "draw_role"
        )

    async def set_channel_allowed(
        self, guild_id: int, channel_id: int, allowed: bool, *, actor_id: int
    ) -> None:
        """Add or remove a channel where /video may be used (none set: everywhere)."""
        await self._toggle(
            "guild_allowed_channels",
            "channel_id",
            guild_id,
            channel_id,
            allowed,
            actor_id,
            "channel",
        )

    async def _toggle(
        self,
        table: str,
        column: str,
        guild_id: int,
        value: int,
        present: bool,
        actor_id: int,
        action: str,
    ) -> None:
        now = self._db.clock.now_ms()

        async def run(t: Tx) -> None:
            if present:
                await t.execute(
                    f"INSERT INTO {table} (guild_id, {column}) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (guild_id, value),
                )
            else:
                await t.execute(
                    f"DELETE FROM {table} WHERE guild_id = ? AND {column} = ?", (guild_id, value)
                )
            verb = "add" if present else "remove"
            await _log(t, guild_id, actor_id, f"{verb}_{action}", value, None, None, now)

        await self._db.write(run)
        self._forget(guild_id)

    async def freeze(
        self, guild_id: int, user_id: int, *, actor_id: int, reason: str | None
    ) -> bool:
        """Stop a member from generating; False if they were already frozen."""
        now = self._db.clock.now_ms()

        async def run(t: Tx) -> bool:
            changed = await t.execute(
                "INSERT INTO guild_frozen_members (guild_id, user_id, actor_id, reason, frozen_at_ms)"
                " VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
                (guild_id, user_id, actor_id, reason, now),
            )
            if changed:
                await _log(t, guild_id, actor_id, "freeze", user_id, None, reason, now)
            return changed > 0

        changed = await self._db.write(run)
        self._forget(guild_id)
        return changed

    async def unfreeze(
        self, guild_id: int, user_id: int, *, actor_id: int, reason: str | None = None
    ) -> bool:
        now = self._db.clock.now_ms()

        async def run(t: Tx) -> bool:
            changed = await t.execute(
                "DELETE FROM guild_frozen_members WHERE guild_id = ? AND user_id = ?",
                (guild_id, user_id),
            )
            if changed:
                await _log(t, guild_id, actor_id, "unfreeze", user_id, None, reason, now)
            return changed > 0

        changed = await self._db.write(run)
        self._forget(guild_id)
        return changed

    async def add_block(
        self, guild_id: int, pattern: str, *, is_regex: bool, actor_id: int
    ) -> bool:
        now = self._db.clock.now_ms()

        async def run(t: Tx) -> bool:
            changed = await t.execute(
                "INSERT INTO guild_blocklist (guild_id, pattern, is_regex, actor_id, added_at_ms)"
                " VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
                (guild_id, pattern, int(is_regex), actor_id, now),
            )
            if changed:
                kind = "regex" if is_regex else "word"
                await _log(
                    t, guild_id, actor_id, "add_block", None, f"{kind}: {pattern}", None, now
                )
            return changed > 0

        changed = await self._db.write(run)
        self._forget(guild_id)
        return changed

    async def remove_block(self, guild_id: int, pattern: str, *, actor_id: int) -> bool:
        now = self._db.clock.now_ms()

        async def run(t: Tx) -> bool:
            changed = await t.execute(
                "DELETE FROM guild_blocklist WHERE guild_id = ? AND pattern = ?",
                (guild_id, pattern),
            )
            if changed:
                await _log(t, guild_id, actor_id, "remove_block", None, pattern, None, now)
            return changed > 0

        changed = await self._db.write(run)
        self._forget(guild_id)
        return changed

    async def record(
        self,
        guild_id: int,
        *,
        actor_id: int,
        action: str,
        target_id: int | None = None,
        detail: str | None = None,
        reason: str | None = None,
        tx: Tx | None = None,
    ) -> None:
        """Append a moderation event that is not a policy change (grant, approve, refund...)."""
        now = self._db.clock.now_ms()

        async def run(t: Tx) -> None:
            await _log(t, guild_id, actor_id, action, target_id, detail, reason, now)

        await (run(tx) if tx is not None else self._db.write(run))

    async def events(
        self, guild_id: int, *, since_ms: int = 0, until_ms: int = 2**62, limit: int = 10_000
    ) -> list[ModerationEvent]:
        rows = await self._db.fetchall(
            "SELECT * FROM moderation_events WHERE guild_id = ? AND at_ms >= ? AND at_ms < ?"
            " ORDER BY id LIMIT ?",
            (guild_id, since_ms, until_ms, limit),
        )
        return [
            ModerationEvent(
                r["id"],
                r["guild_id"],
                r["actor_id"],
                r["action"],
                r["target_id"],
                r["detail"],
                r["reason"],
                r["at_ms"],
            )
            for r in rows
        ]


async def _log(
    t: Tx,
    guild_id: int,
    actor_id: int,
    action: str,
    target_id: int | None,
    detail: str | None,
    reason: str | None,
    at_ms: int,
) -> None:
    await t.execute(
        "INSERT INTO moderation_events (guild_id, actor_id, action, target_id, detail, reason, at_ms)"
        " VALUES (?,?,?,?,?,?,?)",
        (guild_id, actor_id, action, target_id, detail, reason, at_ms),
    )


def _show(value: int | None) -> str:
    return "off" if value is None else str(value)
