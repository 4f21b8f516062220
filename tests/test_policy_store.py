"""Guild policy storage and the moderation log."""

from __future__ import annotations

import asyncio

from storage import BlockedPattern, Database, GuildPolicy, ManualClock, PolicySnapshot, Tx
from tests.backends import both_backends

pytestmark = both_backends

G = 5


async def test_defaults_when_nothing_is_set(policy: GuildPolicy) -> None:
    snap = await policy.get(G)
    assert snap.member_cap_per_day is None and snap.approval_threshold is None
    assert snap.may_draw({1}) and snap.channel_allowed(123) and snap.cap_for(set()) is None


async def test_settings_roles_channels_and_log(policy: GuildPolicy, clock: ManualClock) -> None:
    await policy.set(G, actor_id=9, reason="budget", member_cap_per_day=50, approval_threshold=100)
    await policy.set_role_cap(G, 700, 200, actor_id=9)
    await policy.set_role_cap(G, 701, 80, actor_id=9)
    await policy.set_draw_role(G, 700, True, actor_id=9)
    await policy.set_channel_allowed(G, 42, True, actor_id=9)
    assert await policy.freeze(G, 3, actor_id=9, reason="spam")
    assert not await policy.freeze(G, 3, actor_id=9, reason="spam")
    assert await policy.add_block(G, "gore", is_regex=False, actor_id=9)
    assert await policy.add_block(G, r"bl(oo)+d", is_regex=True, actor_id=9)
    snap = await policy.get(G)
    assert snap.member_cap_per_day == 50 and snap.approval_threshold == 100
    assert (
        snap.cap_for({700, 701}) == 200 and snap.cap_for({701}) == 80 and snap.cap_for(set()) == 50
    )
    assert snap.may_draw({700}) and not snap.may_draw({701})
    assert snap.channel_allowed(42) and not snap.channel_allowed(43)
    assert snap.frozen_user_ids == {3}
    assert snap.blocklist == (BlockedPattern("gore", False), BlockedPattern(r"bl(oo)+d", True))
    assert await policy.unfreeze(G, 3, actor_id=9)
    assert await policy.remove_block(G, "gore", actor_id=9)
    await policy.set(G, actor_id=9, member_cap_per_day=None)
    snap = await policy.get(G)
    assert snap.frozen_user_ids == frozenset() and snap.member_cap_per_day is None
    events = await policy.events(G)
    actions = [e.action for e in events]
    assert actions[:2] == ["set_member_cap_per_day", "set_approval_threshold"]
    assert "freeze" in actions and "unfreeze" in actions and actions.count("freeze") == 1
    assert events[0].reason == "budget" and events[0].detail == "50" and events[-1].detail == "off"
    assert all(e.actor_id == 9 and e.at_ms == clock.now_ms() for e in events)
    assert await policy.events(G, since_ms=clock.now_ms() + 1) == []


class GatedReads(GuildPolicy):
    """The real store, except that a read, once done, waits at a gate before it returns: the
    test seam that pins "a change lands while a read is in flight" (asyncio cannot be made to
    interleave there on its own)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.read_done = asyncio.Event()
        self.gate = asyncio.Event()

    async def _read(self, guild_id: int, tx: Tx | None) -> PolicySnapshot:
        snapshot = await super()._read(guild_id, tx)
        if not self.gate.is_set():
            self.read_done.set()
            await self.gate.wait()
        return snapshot


async def test_a_read_racing_a_change_is_not_cached_stale(db: Database) -> None:
    """As when /pool logs an action (a read) while the next /pool command adds a pattern: the
    read began before the change, so the next lookup must not be served from it."""
    policy = GatedReads(db)
    reader = asyncio.create_task(policy.get(G))
    await policy.read_done.wait()
    assert await policy.add_block(G, "gore", is_regex=False, actor_id=9)
    policy.gate.set()
    assert (await reader).blocklist == ()  # it began before the change
    assert (await policy.get(G)).blocklist == (BlockedPattern("gore", False),)
