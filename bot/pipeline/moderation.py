"""What moderators and bot owners do with credits, each recorded as a moderation event (actor,
action, target, reason, time) in the same transaction as the ledger entry: grants, revokes,
funding, refunds; plus the pool's status and the usage report."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.errors import NotFound, UserError
from bot.pipeline.facade import Pipeline
from bot.pipeline.policy import DAY_MS, day_start_ms
from storage import (
    AccountRef,
    Balance,
    JobState,
    MemberUsage,
    ModerationEvent,
    RefundExceedsCapture,
    Transfer,
    Tx,
)
from storage.ledger import ISSUANCE

NOT_DELIVERED = frozenset(
    {JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED, JobState.REJECTED}
)


@dataclass(frozen=True)
class PoolStatus:
    balance: Balance
    spent_today: int
    spent_week: int
    top_today: list[tuple[int, int]]  # (user id, credits spent), most first
    top_week: list[tuple[int, int]]


@dataclass(frozen=True)
class Report:
    since_ms: int
    until_ms: int
    usage_csv: str
    events_csv: str
    members: int
    spent: int


class Moderation:
    def __init__(self, service: Pipeline) -> None:
        self.service = service
        self.db = service.db
        self.ledger = service.ledger
        self.policy = service.policy

    async def _move(
        self,
        *,
        key: str,
        debit: AccountRef,
        credit: AccountRef,
        amount: int,
        reason: str,
        guild_id: int,
        user_id: int,
        actor_id: int,
        memo: str | None,
        job_id: str | None = None,
    ) -> Transfer:
        async def run(tx: Tx) -> Transfer:
            transfer = await self.ledger.transfer(
                key=key,
                debit=debit,
                credit=credit,
                amount=amount,
                reason=reason,
                user_id=user_id,
                actor_id=actor_id,
                job_id=job_id,
                memo=memo,
                tx=tx,
            )
            await self.policy.record(
                guild_id,
                actor_id=actor_id,
                action=reason,
                target_id=user_id or None,
                detail=f"{amount} credits" + (f", job {job_id}" if job_id else ""),
                reason=memo,
                tx=tx,
            )
            return transfer

        return await self.db.write(run)

    async def grant(
        self,
        guild_id: int,
        user_id: int,
        amount: int,
        *,
        actor_id: int,
        reason: str | None,
        key: str,
    ) -> Transfer:
        """Pool → member."""
        return await self._move(
            key=key,
            debit=AccountRef.pool(guild_id),
            credit=AccountRef.member(guild_id, user_id),
            amount=amount,
            reason="grant",
            guild_id=guild_id,
            user_id=user_id,
            actor_id=actor_id,
            memo=reason,
        )

    async def revoke(
        self,
        guild_id: int,
        user_id: int,
        amount: int,
        *,
        actor_id: int,
        reason: str | None,
        key: str,
    ) -> Transfer:
        """Member → pool."""
        return await self._move(
            key=key,
            debit=AccountRef.member(guild_id, user_id),
            credit=AccountRef.pool(guild_id),
            amount=amount,
            reason="revoke",
            guild_id=guild_id,
            user_id=user_id,
            actor_id=actor_id,
            memo=reason,
        )

    async def fund(
        self, guild_id: int, amount: int, *, actor_id: int, reason: str | None, key: str
    ) -> Transfer:
        """New credits into a guild's pool (bot owners)."""
        return await self._move(
            key=key,
            debit=ISSUANCE,
            credit=AccountRef.pool(guild_id),
            amount=amount,
            reason="fund",
            guild_id=guild_id,
            user_id=0,
            actor_id=actor_id,
            memo=reason,
        )

    async def refund(
        self, job_id: str, amount: int | None, *, actor_id: int, reason: str | None, key: str
    ) -> Transfer:
        """Give back credits charged for a job, to whoever paid (bot owners).

        What is left to refund is read inside the write, and the ledger itself refuses a refund
        beyond what was captured for the job, so two refunds at once never give back twice.
        """
        job = await self.service.jobs.find(job_id)
        if job is None:
            raise NotFound(f"There is no job {job_id}.")
        payer = (
            AccountRef.pool(job.guild_id)
            if job.payer == "pool"
            else AccountRef.member(job.guild_id, job.user_id)
        )

        async def run(tx: Tx) -> Transfer:
            captured, refunded = await self.ledger.captured_and_refunded(job.id, tx=tx)
            left = captured - refunded
            wanted = left if amount is None else amount
            if left <= 0:
                raise UserError(
                    f"Job {job.id} has nothing left to refund (charged {captured},"
                    f" refunded {refunded})."
                )
            if wanted > left:
                raise UserError(f"At most {left} credits of job {job.id} can still be refunded.")
            try:
                transfer = await self.ledger.refund(
                    payer,
                    wanted,
                    key=key,
                    job_id=job.id,
                    actor_id=actor_id,
                    memo=reason,
                    user_id=job.user_id,
                    tx=tx,
                )
            except RefundExceedsCapture:
                raise UserError(
                    f"At most {left} credits of job {job.id} can still be refunded."
                ) from None
            await self.policy.record(
                job.guild_id,
                actor_id=actor_id,
                action="refund",
                target_id=job.user_id or None,
                detail=f"{wanted} credits, job {job.id}",
                reason=reason,
                tx=tx,
            )
            return transfer

        return await self.db.write(run)

    async def pool_status(self, guild_id: int) -> PoolStatus:
        now = self.service.clock.now_ms()
        today = day_start_ms(now)
        week = today - 6 * DAY_MS
        balance = await self.ledger.balance(AccountRef.pool(guild_id))

        def pool_spend(usage: list[MemberUsage]) -> tuple[int, list[tuple[int, int]]]:
            spenders = sorted(
                ((u.user_id, u.spent_pool) for u in usage if u.spent_pool), key=lambda x: -x[1]
            )
            return sum(s for _, s in spenders), spenders[:5]

        spent_today, top_today = pool_spend(await self.ledger.usage(guild_id, today, now + 1))
        spent_week, top_week = pool_spend(await self.ledger.usage(guild_id, week, now + 1))
        return PoolStatus(balance, spent_today, spent_week, top_today, top_week)

    async def report(self, guild_id: int, since_ms: int, until_ms: int) -> Report:
        """Usage by member over a period, and the moderation events in it, as CSV."""
        usage = {u.user_id: u for u in await self.ledger.usage(guild_id, since_ms, until_ms)}
        outcomes = await self.service.jobs.outcomes_by_member(guild_id, since_ms, until_ms)
        columns = [
            "user_id",
            "jobs_requested",
            "jobs_delivered",
            "jobs_not_delivered",
            "credits_spent_own",
            "credits_spent_pool",
            "credits_refunded",
            "credits_granted",
            "credits_revoked",
        ]
        out = io.StringIO()
        writer = _SafeWriter(out)
        writer.writerow(columns)
        totals = [0] * (len(columns) - 1)
        for user_id in sorted(set(usage) | set(outcomes)):
            u = usage.get(user_id, MemberUsage(user_id))
            states = outcomes.get(user_id, {})
            row = [
                sum(states.values()),
                states.get(JobState.DELIVERED, 0),
                sum(n for s, n in states.items() if s in NOT_DELIVERED),
                u.spent_own,
                u.spent_pool,
                u.refunded,
                u.granted,
                u.revoked,
            ]
            totals = [a + b for a, b in zip(totals, row, strict=True)]
            writer.writerow([user_id, *row])
        writer.writerow(["TOTAL", *totals])
        events = await self.policy.events(guild_id, since_ms=since_ms, until_ms=until_ms)
        return Report(
            since_ms,
            until_ms,
            out.getvalue(),
            events_csv(events),
            members=len(set(usage) | set(outcomes)),
            spent=totals[3] + totals[4],
        )


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula, made plain text (a leading ');
    numbers and other text unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class _SafeWriter:
    """csv.writer whose text cells cannot start a formula (moderators' reasons, patterns)."""

    def __init__(self, out: io.StringIO) -> None:
        self._writer = csv.writer(out, lineterminator="\n")

    def writerow(self, row: Sequence[object]) -> None:
        self._writer.writerow([csv_cell(cell) for cell in row])


def events_csv(events: list[ModerationEvent]) -> str:
    out = io.StringIO()
    writer = _SafeWriter(out)
    writer.writerow(["time_utc", "actor_id", "action", "target_id", "detail", "reason"])
    for e in events:
        when = datetime.fromtimestamp(e.at_ms / 1000, UTC).isoformat(timespec="seconds")
        writer.writerow(
            [when, e.actor_id, e.action, e.target_id or "", e.detail or "", e.reason or ""]
        )
    return out.getvalue()
