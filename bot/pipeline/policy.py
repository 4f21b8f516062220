"""Server rules applied before anything is charged: channels, frozen members, the prompt
blocklist, who may draw from the pool, and the daily pool cap.

The cap is checked inside the same write transaction that takes the hold, so concurrent requests
cannot overshoot it; the database separately refuses any hold the pool cannot cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.errors import InvalidRequest, PolicyRefusal
from bot.pipeline.blocklist import first_blocked
from bot.request import VideoRequest
from storage import (
    AccountRef,
    GuildPolicy,
    InsufficientCredits,
    Ledger,
    PolicySnapshot,
    Tx,
)

DAY_MS = 86_400_000


def blocked_entry(snapshot: PolicySnapshot, request: VideoRequest) -> str | None:
    """The first blocklist entry found in any text of the request."""
    texts = [request.prompt or "", request.negative_prompt or ""]
    texts += [shot.prompt for shot in request.shots]
    return first_blocked(snapshot.blocklist, texts)


def day_start_ms(now_ms: int) -> int:
    """Midnight UTC of the day containing `now_ms` (caps reset at 00:00 UTC)."""
    return now_ms - now_ms % DAY_MS


@dataclass(frozen=True)
class Payer:
    account: AccountRef
    kind: str  # "member" or "pool"
    cap: int | None = None
    drawn_today: int = 0


class PolicyGate:
    def __init__(self, policy: GuildPolicy, ledger: Ledger) -> None:
        self.policy = policy
        self.ledger = ledger

    async def check(
        self, *, guild_id: int, channel_id: int, user_id: int, request: VideoRequest
    ) -> PolicySnapshot:
        """Refuse requests the server's rules forbid; return the rules for later checks."""
        snapshot = await self.policy.get(guild_id)
        if not guild_id:
            return snapshot
        if user_id in snapshot.frozen_user_ids:
            raise PolicyRefusal(
                "frozen", "A moderator has paused your video requests in this server."
            )
        if not snapshot.channel_allowed(channel_id):
            channels = ", ".join(f"<#{c}>" for c in sorted(snapshot.allowed_channel_ids))
            raise PolicyRefusal("channel", f"/video is not allowed here. Use it in {channels}.")
        entry = blocked_entry(snapshot, request)
        if entry is not None:
            raise InvalidRequest(
                ["Your prompt contains something this server does not allow; please rephrase it."]
            )
        return snapshot

    async def choose_payer(
        self,
        tx: Tx,
        *,
        snapshot: PolicySnapshot,
        guild_id: int,
        user_id: int,
        role_ids: frozenset[int],
        cost: int,
        now_ms: int,
    ) -> Payer:
        """Own balance first; else the pool within the member's daily cap. Runs in the hold's tx."""
        member = AccountRef.member(guild_id, user_id)
        own = await self.ledger.balance(member, tx=tx)
        if own.available >= cost:
            return Payer(member, "member")
        pool = AccountRef.pool(guild_id)
        pool_balance = await self.ledger.balance(pool, tx=tx)
        if not snapshot.may_draw(role_ids):
            raise InsufficientCredits(cost, own.available)
        cap = snapshot.cap_for(role_ids)
        drawn = 0
        if cap is not None:
            since = day_start_ms(now_ms)
            drawn = await self.ledger.drawn_from_pool(guild_id, user_id, since, tx=tx)
            if drawn + cost > cap:
                raise PolicyRefusal(
                    "daily_cap",
                    f"This needs {cost} credits. You have used {drawn} of your {cap} daily"
                    f" credits from the server pool, and have {own.available} of your own.",
                    resets_at_ms=since + DAY_MS,
                )
        if pool_balance.available < cost:
            raise InsufficientCredits(cost, own.available)
        return Payer(pool, "pool", cap, drawn)


def next_reset(now_ms: int) -> datetime:
    return datetime.fromtimestamp(day_start_ms(now_ms) / 1000, UTC) + timedelta(days=1)
