"""The credit ledger: two-phase holds and one-phase transfers over immutable entries.

Accounts are credit-normal for members and pools: available = credits posted − debits posted −
debits pending. The database refuses any entry that would make a member or pool account's available
balance negative, any second resolution of a hold (see migrations/0001_ledger.sql), and any refund
that would give back more than was captured for its job (migrations/0008_refund_limit.sql).

Money flows:
    issuance ──fund──> pool ──grant──> member        member ──revoke──> pool
    member|pool ──hold (pending)──> spend  then post (capture ≤ held) | void | expire
    spend ──refund──> member|pool

Every movement has an idempotency key. Reusing a key with the same fields returns the original
entry; reusing it with different fields raises IdempotencyConflict.

Why one module of this length: every ledger movement's SQL lives here, next to the rules the database enforces for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from storage.batching import RowsStatement
from storage.database import Database, Row, Tx
from storage.errors import (
    INTEGRITY_ERRORS,
    HoldAlreadyResolved,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidMovement,
    RefundExceedsCapture,
)

__all__ = [
    "SPEND",
    "AccountKind",
    "AccountRef",
    "AuditReport",
    "Balance",
    "HistoryEntry",
    "Ledger",
    "LedgerTotals",
    "MemberUsage",
    "Transfer",
    "TransferKind",
]


class AccountKind(StrEnum):
    ISSUANCE = "issuance"
    SPEND = "spend"
    POOL = "pool"
    MEMBER = "member"


class TransferKind(StrEnum):
    SINGLE = "single"
    PENDING = "pending"
    POST = "post"
    VOID = "void"
    EXPIRE = "expire"


RESOLUTIONS = (TransferKind.POST, TransferKind.VOID, TransferKind.EXPIRE)


@dataclass(frozen=True)
class AccountRef:
    """Names an account without knowing its row id."""

    kind: AccountKind
    guild_id: int = 0
    user_id: int = 0

    @classmethod
    def pool(cls, guild_id: int) -> AccountRef:
        return cls(AccountKind.POOL, guild_id, 0)

    @classmethod
    def member(cls, guild_id: int, user_id: int) -> AccountRef:
        return cls(AccountKind.MEMBER, guild_id, user_id)

    @property
    def is_system(self) -> bool:
        return self.kind in (AccountKind.ISSUANCE, AccountKind.SPEND)

    def __str__(self) -> str:
        if self.kind is AccountKind.MEMBER:
            return f"member {self.user_id} in guild {self.guild_id}"
        if self.kind is AccountKind.POOL:
            return f"pool of guild {self.guild_id}"
        return self.kind.value


ISSUANCE = AccountRef(AccountKind.ISSUANCE)
SPEND = AccountRef(AccountKind.SPEND)


@dataclass(frozen=True)
class Transfer:
    """One immutable ledger entry."""

    id: int
    key: str
    kind: TransferKind
    debit_account_id: int
    credit_account_id: int
    amount: int
    pending_id: int | None
    reason: str
    guild_id: int
    user_id: int
    actor_id: int
    job_id: str | None
    memo: str | None
    created_at_ms: int

    @classmethod
    def from_row(cls, row: Row) -> Transfer:
        return cls(
            id=row["id"],
            key=row["idempotency_key"],
            kind=TransferKind(row["kind"]),
            debit_account_id=row["debit_account_id"],
            credit_account_id=row["credit_account_id"],
            amount=row["amount"],
            pending_id=row["pending_id"],
            reason=row["reason"],
            guild_id=row["guild_id"],
            user_id=row["user_id"],
            actor_id=row["actor_id"],
            job_id=row["job_id"],
            memo=row["memo"],
            created_at_ms=row["created_at_ms"],
        )


@dataclass(frozen=True)
class Balance:
    """A credit-normal account's balance: posted, held (pending) and available."""

    posted: int
    pending: int

    @property
    def available(self) -> int:
        return self.posted - self.pending

    @classmethod
    def zero(cls) -> Balance:
        return cls(0, 0)


@dataclass(frozen=True)
class HistoryEntry:
    """A movement as one member sees it: signed amount from their point of view."""

    transfer: Transfer
    delta: int  # effect on available credits: + in, - out (a hold is negative until resolved)
    paid_by_pool: bool


@dataclass(frozen=True)
class MemberUsage:
    """One member's credit movements in a guild over a period."""

    user_id: int
    spent_own: int = 0
    spent_pool: int = 0
    refunded: int = 0
    granted: int = 0
    revoked: int = 0

    @property
    def spent(self) -> int:
        return self.spent_own + self.spent_pool


@dataclass(frozen=True)
class LedgerTotals:
    issued: int
    spent: int
    held: int


@dataclass
class AuditReport:
    """Result of recomputing every total from the entries."""

    accounts: int = 0
    transfers: int = 0
    open_holds: int = 0
    issued: int = 0
    spent: int = 0
    held: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def render(self) -> str:
        lines = [
            f"accounts: {self.accounts}",
            f"entries: {self.transfers}",
            f"open holds: {self.open_holds} ({self.held} credits held)",
            f"issued: {self.issued} credits, spent: {self.spent} credits",
            "result: " + ("OK" if self.ok else f"{len(self.violations)} violation(s)"),
        ]
        lines += [f"  - {v}" for v in self.violations]
        return "\n".join(lines)


_ACCOUNT_ID = "(SELECT id FROM accounts WHERE kind = ? AND guild_id = ? AND user_id = ?)"
_INSERT_COLUMNS = (
    "idempotency_key, kind, debit_account_id, credit_account_id, amount, pending_id, reason,"
    " guild_id, user_id, actor_id, job_id, memo, created_at_ms"
)
_ON_CONFLICT_RETURNING = " ON CONFLICT (idempotency_key) DO NOTHING RETURNING *"
# A hold: (key, payer kind, guild, user, spend kind, guild, user, amount, reason, guild, user,
# job, memo, at).
_HOLD_HEAD = f"INSERT INTO transfers ({_INSERT_COLUMNS}) VALUES "
_HOLD_ROW = f"(?, 'pending', {_ACCOUNT_ID}, {_ACCOUNT_ID}, ?, NULL, ?, ?, ?, 0, ?, ?, ?)"
# A hold's resolution: (key, kind, amount or NULL for all, reason, at, hold id). VALUES columns
# are column1..column6 in both SQLite and PostgreSQL; the amount is cast so that a batch of
# NULLs still has a type.
_RESOLUTION_HEAD = (
    f"INSERT INTO transfers ({_INSERT_COLUMNS})"
    " SELECT v.column1, v.column2, p.debit_account_id, p.credit_account_id,"
    "  CASE WHEN v.column2 = 'post' THEN COALESCE(v.column3, p.amount) ELSE p.amount END,"
    "  p.id, v.column4, p.guild_id, p.user_id, 0, p.job_id, NULL, v.column5"
    " FROM (VALUES "
)
_RESOLUTION_ROW = "(?, ?, CAST(? AS BIGINT), ?, ?, ?)"
_RESOLUTION_TAIL = (
    ") AS v, transfers AS p WHERE p.id = v.column6 AND p.kind = 'pending'" + _ON_CONFLICT_RETURNING
)


class Ledger:
    """Credit movements over a Database. Methods accept `tx` to join a caller's transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Holds and resolutions made at the same time share one statement and one commit.
        self._holds = RowsStatement(
            db,
            _HOLD_HEAD,
            _HOLD_ROW,
            _ON_CONFLICT_RETURNING,
            key_columns=("idempotency_key",),
            refusals=INTEGRITY_ERRORS,
        )
        self._resolutions = RowsStatement(
            db,
            _RESOLUTION_HEAD,
            _RESOLUTION_ROW,
            _RESOLUTION_TAIL,
            key_columns=("idempotency_key",),
            refusals=INTEGRITY_ERRORS,
        )

    @property
    def movement_statements(self) -> int:
        """Statements written for holds and resolutions made outside a caller's transaction
        (several made at once share one; for tests and benchmarks)."""
        return self._holds.batches + self._resolutions.batches

    # -- one-phase movements -------------------------------------------------------------------

    async def transfer(
        self,
        *,
        key: str,
        debit: AccountRef,
        credit: AccountRef,
        amount: int,
        reason: str,
        user_id: int = 0,
        actor_id: int = 0,
        job_id: str | None = None,
        memo: str | None = None,
        tx: Tx | None = None,
    ) -> Transfer:
        """Move `amount` from `debit` to `credit` at once (creating the credited account)."""
        _require_positive(amount)
        guild_id = debit.guild_id or credit.guild_id
        user_id = user_id or debit.user_id or credit.user_id

        async def run(t: Tx) -> list[Row]:
            await self.ensure_account(credit, tx=t)
            return await t.fetchall(
                f"INSERT INTO transfers ({_INSERT_COLUMNS})"
                f" VALUES (?, 'single', {_ACCOUNT_ID}, {_ACCOUNT_ID}, ?, NULL, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (idempotency_key) DO NOTHING RETURNING *",
                (
                    key,
                    *_ref_params(debit),
                    *_ref_params(credit),
                    amount,
                    reason,
                    guild_id,
                    user_id,
                    actor_id,
                    job_id,
                    memo,
                    self._db.clock.now_ms(),
                ),
            )

        expected = {
            "kind": TransferKind.SINGLE,
            "amount": amount,
            "pending_id": None,
            "user_id": user_id,
            "job_id": job_id,
            "reason": reason,
        }
        return await self._insert(run, key, expected, amount, debit, (debit, credit), tx)

    async def fund_pool(
        self, guild_id: int, amount: int, *, key: str, actor_id: int = 0, memo: str | None = None
    ) -> Transfer:
        """Issue new credits into a guild's pool."""
        return await self.transfer(
            key=key,
            debit=ISSUANCE,
            credit=AccountRef.pool(guild_id),
            amount=amount,
            reason="fund",
            actor_id=actor_id,
            memo=memo,
        )

    async def issue_to_member(
        self,
        guild_id: int,
        user_id: int,
        amount: int,
        *,
        key: str,
        actor_id: int = 0,
        memo: str | None = None,
    ) -> Transfer:
        """Issue new credits straight to a member's own balance."""
        return await self.transfer(
            key=key,
            debit=ISSUANCE,
            credit=AccountRef.member(guild_id, user_id),
            amount=amount,
            reason="issue",
            actor_id=actor_id,
            memo=memo,
        )

    async def grant(
        self,
        guild_id: int,
        user_id: int,
        amount: int,
        *,
        key: str,
        actor_id: int = 0,
        memo: str | None = None,
    ) -> Transfer:
        """Move credits from the guild pool to a member."""
        return await self.transfer(
            key=key,
            debit=AccountRef.pool(guild_id),
            credit=AccountRef.member(guild_id, user_id),
            amount=amount,
            reason="grant",
            actor_id=actor_id,
            memo=memo,
        )

    async def revoke(
        self,
        guild_id: int,
        user_id: int,
        amount: int,
        *,
        key: str,
        actor_id: int = 0,
        memo: str | None = None,
    ) -> Transfer:
        """Move credits from a member back to the guild pool."""
        return await self.transfer(
            key=key,
            debit=AccountRef.member(guild_id, user_id),
            credit=AccountRef.pool(guild_id),
            amount=amount,
            reason="revoke",
            actor_id=actor_id,
            memo=memo,
        )

    async def refund(
        self,
        account: AccountRef,
        amount: int,
        *,
        key: str,
        job_id: str | None = None,
        actor_id: int = 0,
        memo: str | None = None,
        user_id: int = 0,
        tx: Tx | None = None,
    ) -> Transfer:
        """Give captured credits back from spend to a member or pool.

        RefundExceedsCapture if the job's refunds would exceed what was captured for it (the
        database refuses it, however many refunds race).
        """
        return await self.transfer(
            key=key,
            debit=SPEND,
            credit=account,
            amount=amount,
            reason="refund",
            job_id=job_id,
            actor_id=actor_id,
            memo=memo,
            user_id=user_id,
            tx=tx,
        )

    async def captured_and_refunded(self, job_id: str, *, tx: Tx | None = None) -> tuple[int, int]:
        """Credits captured for a job (posted into spend) and credits refunded for it so far."""
        sql = (
            "SELECT"
            " COALESCE(SUM(CASE WHEN t.credit_account_id = s.id AND t.kind IN ('single', 'post')"
            "   THEN t.amount ELSE 0 END), 0) AS captured,"
            " COALESCE(SUM(CASE WHEN t.debit_account_id = s.id AND t.kind = 'single'"
            "   THEN t.amount ELSE 0 END), 0) AS refunded"
            " FROM transfers AS t, (SELECT id FROM accounts WHERE kind = 'spend') AS s"
            " WHERE t.job_id = ?"
        )
        row = await (tx.fetchone(sql, (job_id,)) if tx else self._db.fetchone(sql, (job_id,)))
        return (int(row["captured"]), int(row["refunded"])) if row else (0, 0)

    # -- two-phase: holds ----------------------------------------------------------------------

    async def reserve(
        self,
        *,
        key: str,
        payer: AccountRef,
        amount: int,
        job_id: str | None = None,
        user_id: int = 0,
        reason: str = "job",
        memo: str | None = None,
        tx: Tx | None = None,
    ) -> Transfer:
        """Hold `amount` on `payer` (a member or pool) for a job; one statement (shared with
        the holds made at the same time, unless it joins the caller's transaction `tx`)."""
        _require_positive(amount)
        if payer.is_system:
            raise InvalidMovement("Holds are taken from members or pools only.")
        user_id = user_id or payer.user_id
        params = (
            key,
            *_ref_params(payer),
            *_ref_params(SPEND),
            amount,
            reason,
            payer.guild_id,
            user_id,
            job_id,
            memo,
            self._db.clock.now_ms(),
        )
        expected = {
            "kind": TransferKind.PENDING,
            "amount": amount,
            "pending_id": None,
            "user_id": user_id,
            "job_id": job_id,
        }
        try:
            rows = await self._holds.write(params, tx)
        except INTEGRITY_ERRORS as error:
            if tx is None and await self._by_key(key, None) is not None:
                # Refused, but a hold with this key was made meanwhile (the same request
                # twice at once): a replay if it is the same hold, else a conflict.
                return await self._first_or_replay([], key, expected, None)
            raise await self._movement_error(error, key, amount, payer) from error
        return await self._first_or_replay(rows, key, expected, tx)

    async def capture(
        self,
        hold_id: int,
        amount: int | None = None,
        *,
        key: str | None = None,
        tx: Tx | None = None,
    ) -> Transfer:
        """Post up to the held amount (all of it by default); the rest is released."""
        if amount is not None and amount < 0:
            raise InvalidMovement("A capture cannot be negative.")
        return await self._resolve(TransferKind.POST, hold_id, amount, key, "capture", tx)

    async def void(
        self, hold_id: int, *, reason: str = "void", key: str | None = None, tx: Tx | None = None
    ) -> Transfer:
        """Release a hold entirely (job failed, cancelled, rejected)."""
        return await self._resolve(TransferKind.VOID, hold_id, None, key, reason, tx)

    async def expire(
        self, hold_id: int, *, key: str | None = None, tx: Tx | None = None
    ) -> Transfer:
        """Release a hold whose deadline passed."""
        return await self._resolve(TransferKind.EXPIRE, hold_id, None, key, "expire", tx)

    async def _resolve(
        self,
        kind: TransferKind,
        hold_id: int,
        amount: int | None,
        key: str | None,
        reason: str,
        tx: Tx | None,
    ) -> Transfer:
        key = key or f"{kind.value}:{hold_id}"
        params = (key, kind.value, amount, reason, self._db.clock.now_ms(), hold_id)
        try:
            rows = await self._resolutions.write(params, tx)
        except INTEGRITY_ERRORS as error:
            raise await self._resolution_error(error, hold_id) from error
        if rows:
            return Transfer.from_row(rows[0])
        existing = await self._by_key(key, tx)
        if existing is None:
            raise HoldNotFound(hold_id)
        hold = await self._by_id(hold_id, tx)
        wanted = amount if amount is not None or hold is None else hold.amount
        if existing.kind != kind or existing.pending_id != hold_id or existing.amount != wanted:
            raise IdempotencyConflict(key)
        return existing

    async def _resolution_error(self, error: Exception, hold_id: int) -> Exception:
        text = str(error)
        row = await self._db.fetchone("SELECT kind FROM transfers WHERE pending_id = ?", (hold_id,))
        if row is not None or "transfers.pending_id" in text:
            return HoldAlreadyResolved(hold_id, row["kind"] if row else None)
        if "hold not found" in text:
            return HoldNotFound(hold_id)
        return InvalidMovement(f"The ledger refused this movement: {text}.")

    # -- shared insert path --------------------------------------------------------------------

    async def _insert(
        self,
        run: Any,
        key: str,
        expected: dict[str, Any],
        amount: int,
        debit: AccountRef,
        refs: tuple[AccountRef, ...],
        tx: Tx | None,
    ) -> Transfer:
        try:
            rows = await run(tx) if tx is not None else await self._db.write(run)
        except INTEGRITY_ERRORS as error:
            raise await self._movement_error(error, key, amount, debit) from error
        return await self._first_or_replay(rows, key, expected, tx)

    async def _first_or_replay(
        self, rows: list[Row], key: str, expected: dict[str, Any], tx: Tx | None
    ) -> Transfer:
        if rows:
            return Transfer.from_row(rows[0])
        existing = await self._by_key(key, tx)
        if existing is None:  # pragma: no cover - the insert either wrote or hit this key
            raise InvalidMovement(f"Movement {key!r} was neither written nor found.")
        for name, value in expected.items():
            if getattr(existing, name) != value:
                raise IdempotencyConflict(key)
        return existing

    async def _movement_error(
        self, error: Exception, key: str, amount: int, debit: AccountRef
    ) -> Exception:
        if await self._by_key(key, None) is not None:
            return IdempotencyConflict(key)  # the key is taken, by a movement with other fields
        text = str(error)
        if "refund exceeds what was captured" in text:
            return RefundExceedsCapture(amount)
        if "available_nonnegative" in text or "transfers.debit_account_id" in text:
            balance = await self.balance(debit)
            return InsufficientCredits(amount, balance.available)
        if "transfers.credit_account_id" in text:
            return InvalidMovement("The receiving account does not exist.")
        return InvalidMovement(f"The ledger refused this movement: {text}.")

    # -- reads ---------------------------------------------------------------------------------

    async def ensure_account(self, ref: AccountRef, *, tx: Tx | None = None) -> None:
        """Create the account if it does not exist yet."""
        sql = (
            "INSERT INTO accounts (kind, guild_id, user_id, created_at_ms) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (kind, guild_id, user_id) DO NOTHING"
        )
        params = (*_ref_params(ref), self._db.clock.now_ms())
        if tx is not None:
            await tx.execute(sql, params)
        else:
            await self._db.write_statement(sql, params)

    async def balance(self, ref: AccountRef, *, tx: Tx | None = None) -> Balance:
        """Posted, held and available credits of an account (zero if it does not exist)."""
        sql = (
            "SELECT credits_posted - debits_posted AS posted, debits_pending AS pending"
            " FROM accounts WHERE kind = ? AND guild_id = ? AND user_id = ?"
        )
        params = _ref_params(ref)
        row = await (tx.fetchone(sql, params) if tx else self._db.fetchone(sql, params))
        return Balance(row["posted"], row["pending"]) if row else Balance.zero()

    async def balance_of_pool(self, guild_id: int) -> int:
        return (await self.balance(AccountRef.pool(guild_id))).available

    async def hold(self, hold_id: int, *, tx: Tx | None = None) -> tuple[Transfer, Transfer | None]:
        """A hold and its resolution (None while it is still pending)."""
        hold = await self._by_id(hold_id, tx)
        if hold is None or hold.kind is not TransferKind.PENDING:
            raise HoldNotFound(hold_id)
        sql = "SELECT * FROM transfers WHERE pending_id = ?"
        row = await (tx.fetchone(sql, (hold_id,)) if tx else self._db.fetchone(sql, (hold_id,)))
        return hold, Transfer.from_row(row) if row else None

    async def drawn_from_pool(
        self, guild_id: int, user_id: int, since_ms: int, *, tx: Tx | None = None
    ) -> int:
        """Credits a member drew from the pool since `since_ms`: open holds, captures, charges."""
        sql = (
            "SELECT COALESCE(SUM(CASE"
            "   WHEN t.kind = 'single' THEN t.amount"
            "   WHEN r.kind = 'post' THEN r.amount"
            "   WHEN r.kind IS NULL THEN t.amount ELSE 0 END), 0) AS drawn"
            " FROM transfers AS t LEFT JOIN transfers AS r ON r.pending_id = t.id"
            " WHERE t.guild_id = ? AND t.user_id = ? AND t.created_at_ms >= ?"
            "   AND t.debit_account_id = (SELECT id FROM accounts"
            "        WHERE kind = 'pool' AND guild_id = ? AND user_id = 0)"
            "   AND (t.kind = 'pending' OR (t.kind = 'single' AND t.reason IN ('job', 'late_capture')))"
        )
        params = (guild_id, user_id, since_ms, guild_id)
        row = await (tx.fetchone(sql, params) if tx else self._db.fetchone(sql, params))
        return int(row["drawn"]) if row else 0

    async def history(
        self, guild_id: int, user_id: int, *, before_id: int | None = None, limit: int = 10
    ) -> list[HistoryEntry]:
        """A member's movements, newest first: their own account, and pool draws made for them."""
        member = await self._account_id(AccountRef.member(guild_id, user_id))
        pool = await self._account_id(AccountRef.pool(guild_id))
        rows = await self._db.fetchall(
            "SELECT t.*, h.amount AS held FROM transfers AS t"
            " LEFT JOIN transfers AS h ON h.id = t.pending_id"
            " WHERE t.id < ? AND (t.debit_account_id = ? OR t.credit_account_id = ?"
            "  OR (t.guild_id = ? AND t.user_id = ?"
            "      AND (t.debit_account_id = ? OR t.credit_account_id = ?)))"
            " ORDER BY t.id DESC LIMIT ?",
            (before_id or 2**62, member, member, guild_id, user_id, pool, pool, limit),
        )
        entries = []
        for row in rows:
            t = Transfer.from_row(row)
            entries.append(HistoryEntry(t, _effect(t, row["held"], member), _via_pool(t, pool)))
        return entries

    async def totals(self) -> LedgerTotals:
        """Credits issued, spent (captured) and held right now, from the running totals."""
        row = await self._db.fetchone(
            "SELECT"
            " (SELECT debits_posted - credits_posted FROM account_totals WHERE kind = 'issuance') AS issued,"
            " (SELECT credits_posted - debits_posted FROM account_totals WHERE kind = 'spend') AS spent,"
            " (SELECT COALESCE(SUM(debits_pending), 0) FROM account_totals"
            "   WHERE kind IN ('pool', 'member')) AS held"
        )
        assert row is not None
        return LedgerTotals(row["issued"] or 0, row["spent"] or 0, row["held"] or 0)

    async def usage(self, guild_id: int, since_ms: int, until_ms: int) -> list[MemberUsage]:
        """Per member: credits spent (captured, own or pool), refunded, granted and revoked
        by entries created in [since_ms, until_ms)."""
        rows = await self._db.fetchall(
            "SELECT t.user_id,"
            " SUM(CASE WHEN (t.kind = 'post' OR t.reason = 'late_capture') AND a.kind = 'member'"
            "   THEN t.amount ELSE 0 END) AS spent_own,"
            " SUM(CASE WHEN (t.kind = 'post' OR t.reason = 'late_capture') AND a.kind = 'pool'"
            "   THEN t.amount ELSE 0 END) AS spent_pool,"
            " SUM(CASE WHEN t.kind = 'single' AND t.reason = 'refund' THEN t.amount ELSE 0 END) AS refunded,"
            " SUM(CASE WHEN t.kind = 'single' AND t.reason = 'grant' THEN t.amount ELSE 0 END) AS granted,"
            " SUM(CASE WHEN t.kind = 'single' AND t.reason = 'revoke' THEN t.amount ELSE 0 END) AS revoked"
            " FROM transfers AS t JOIN accounts AS a ON a.id = t.debit_account_id"
            " WHERE t.guild_id = ? AND t.created_at_ms >= ? AND t.created_at_ms < ? AND t.user_id <> 0"
            " GROUP BY t.user_id ORDER BY t.user_id",
            (guild_id, since_ms, until_ms),
        )
        return [
            MemberUsage(
                r["user_id"],
                r["spent_own"],
                r["spent_pool"],
                r["refunded"],
                r["granted"],
                r["revoked"],
            )
            for r in rows
        ]

    async def open_holds_before(self, created_before_ms: int) -> list[Transfer]:
        """Holds still pending that were taken before `created_before_ms` (the sweeper's list)."""
        rows = await self._db.fetchall(
            "SELECT p.* FROM transfers AS p WHERE p.kind = 'pending' AND p.created_at_ms < ?"
            " AND NOT EXISTS (SELECT 1 FROM transfers AS r WHERE r.pending_id = p.id)",
            (created_before_ms,),
        )
        return [Transfer.from_row(r) for r in rows]

    async def transfers_for_job(self, job_id: str) -> list[Transfer]:
        rows = await self._db.fetchall(
            "SELECT * FROM transfers WHERE job_id = ? ORDER BY id", (job_id,)
        )
        return [Transfer.from_row(r) for r in rows]

    async def _account_id(self, ref: AccountRef) -> int | None:
        row = await self._db.fetchone(
            "SELECT id FROM accounts WHERE kind = ? AND guild_id = ? AND user_id = ?",
            _ref_params(ref),
        )
        return int(row["id"]) if row else None

    async def _by_key(self, key: str, tx: Tx | None) -> Transfer | None:
        sql = "SELECT * FROM transfers WHERE idempotency_key = ?"
        row = await (tx.fetchone(sql, (key,)) if tx else self._db.fetchone(sql, (key,)))
        return Transfer.from_row(row) if row else None

    async def _by_id(self, transfer_id: int, tx: Tx | None) -> Transfer | None:
        sql = "SELECT * FROM transfers WHERE id = ?"
        row = await (
            tx.fetchone(sql, (transfer_id,)) if tx else self._db.fetchone(sql, (transfer_id,))
        )
        return Transfer.from_row(row) if row else None

    # -- audit ---------------------------------------------------------------------------------

    async def audit(self) -> AuditReport:
        """Recompute every account's totals from the entries and check the ledger's invariants.
        Totals are read from the account_totals view (on PostgreSQL the system accounts' totals
        are summed from the entries there, so only member and pool totals can differ)."""
        report = AuditReport()
        db = self._db
        counts = await db.fetchone(
            "SELECT (SELECT COUNT(*) FROM accounts) AS accounts, (SELECT COUNT(*) FROM transfers) AS n"
        )
        assert counts is not None
        report.accounts, report.transfers = counts["accounts"], counts["n"]
        mismatches = await db.fetchall(
            """
            WITH open_holds AS (
                SELECT p.* FROM transfers AS p
                WHERE p.kind = 'pending'
                  AND NOT EXISTS (SELECT 1 FROM transfers AS r WHERE r.pending_id = p.id)
            ),
            recomputed AS (
                SELECT a.id,
                  (SELECT COALESCE(SUM(amount), 0) FROM transfers
                    WHERE debit_account_id = a.id AND kind IN ('single', 'post')) AS dpo,
                  (SELECT COALESCE(SUM(amount), 0) FROM transfers
                    WHERE credit_account_id = a.id AND kind IN ('single', 'post')) AS cpo,
                  (SELECT COALESCE(SUM(amount), 0) FROM open_holds WHERE debit_account_id = a.id) AS dpe,
                  (SELECT COALESCE(SUM(amount), 0) FROM open_holds WHERE credit_account_id = a.id) AS cpe
                FROM accounts AS a
            )
            SELECT a.*, r.dpo, r.cpo, r.dpe, r.cpe FROM account_totals AS a JOIN recomputed AS r USING (id)
            WHERE a.debits_posted <> r.dpo OR a.credits_posted <> r.cpo
               OR a.debits_pending <> r.dpe OR a.credits_pending <> r.cpe
            """
        )
        for row in mismatches:
            report.violations.append(
                f"account {row['id']} ({row['kind']} {row['guild_id']}/{row['user_id']}) totals"
                f" differ from its entries: stored debits {row['debits_posted']}+{row['debits_pending']}"
                f" credits {row['credits_posted']}+{row['credits_pending']}, recomputed"
                f" {row['dpo']}+{row['dpe']} / {row['cpo']}+{row['cpe']}"
            )
        sums = await db.fetchone(
            "SELECT SUM(debits_posted) AS dpo, SUM(credits_posted) AS cpo,"
            " SUM(debits_pending) AS dpe, SUM(credits_pending) AS cpe FROM account_totals"
        )
        assert sums is not None
        if sums["dpo"] != sums["cpo"] or sums["dpe"] != sums["cpe"]:
            report.violations.append(
                f"conservation broken: posted debits {sums['dpo']} vs credits {sums['cpo']},"
                f" pending debits {sums['dpe']} vs credits {sums['cpe']}"
            )
        for row in await db.fetchall(
            "SELECT id, kind, guild_id, user_id,"
            " credits_posted - debits_posted - debits_pending AS available FROM accounts"
            " WHERE kind IN ('pool', 'member') AND credits_posted - debits_posted - debits_pending < 0"
        ):
            report.violations.append(
                f"account {row['id']} has negative available {row['available']}"
            )
        for row in await db.fetchall(
            "SELECT pending_id, COUNT(*) AS n FROM transfers WHERE pending_id IS NOT NULL"
            " GROUP BY pending_id HAVING COUNT(*) > 1"
        ):
            report.violations.append(f"hold {row['pending_id']} resolved {row['n']} times")
        for row in await db.fetchall(
            "SELECT r.id, r.kind, r.amount, p.id AS hold, p.kind AS hold_kind, p.amount AS held"
            " FROM transfers AS r LEFT JOIN transfers AS p ON p.id = r.pending_id"
            " WHERE r.pending_id IS NOT NULL AND (p.id IS NULL OR p.kind <> 'pending'"
            "  OR p.debit_account_id <> r.debit_account_id"
            "  OR p.credit_account_id <> r.credit_account_id"
            "  OR (r.kind = 'post' AND r.amount > p.amount)"
            "  OR (r.kind IN ('void', 'expire') AND r.amount <> p.amount))"
        ):
            report.violations.append(
                f"resolution {row['id']} ({row['kind']}) does not match its hold"
            )
        for row in await db.fetchall(
            "SELECT kind, debits_posted - credits_posted AS issued,"
            " credits_posted - debits_posted AS spent FROM account_totals"
            " WHERE (kind = 'issuance' AND debits_posted - credits_posted < 0)"
            "  OR (kind = 'spend' AND credits_posted - debits_posted < 0)"
        ):
            figure = row["spent"] if row["kind"] == "spend" else row["issued"]
            report.violations.append(
                f"the {row['kind']} account is negative ({figure}): more credits went back than"
                " came in"
            )
        for row in await db.fetchall(
            "SELECT id, amount FROM transfers"
            " WHERE debit_account_id = (SELECT id FROM accounts WHERE kind = 'spend')"
            "  AND (job_id IS NULL OR kind <> 'single')"
        ):
            report.violations.append(
                f"entry {row['id']} takes {row['amount']} credits out of spend without naming a job"
            )
        for row in await db.fetchall(
            """
            SELECT job_id, captured, refunded FROM (
                SELECT t.job_id,
                  SUM(CASE WHEN t.credit_account_id = s.id AND t.kind IN ('single', 'post')
                      THEN t.amount ELSE 0 END) AS captured,
                  SUM(CASE WHEN t.debit_account_id = s.id AND t.kind = 'single'
                      THEN t.amount ELSE 0 END) AS refunded
                FROM transfers AS t, (SELECT id FROM accounts WHERE kind = 'spend') AS s
                WHERE t.job_id IS NOT NULL
                  AND (t.credit_account_id = s.id OR t.debit_account_id = s.id)
                GROUP BY t.job_id
            ) AS per_job WHERE refunded > captured ORDER BY job_id
            """
        ):
            report.violations.append(
                f"job {row['job_id']} was refunded {row['refunded']} credits but only"
                f" {row['captured']} were captured for it"
            )
        totals = await db.fetchone(
            "SELECT (SELECT debits_posted - credits_posted FROM account_totals WHERE kind = 'issuance')"
            " AS issued, (SELECT credits_posted - debits_posted FROM account_totals WHERE kind = 'spend')"
            " AS spent, (SELECT SUM(debits_pending) FROM accounts WHERE kind IN ('pool', 'member'))"
            " AS held, (SELECT COUNT(*) FROM transfers AS p WHERE p.kind = 'pending' AND NOT EXISTS"
            " (SELECT 1 FROM transfers AS r WHERE r.pending_id = p.id)) AS open_holds"
        )
        assert totals is not None
        report.issued = totals["issued"] or 0
        report.spent = totals["spent"] or 0
        report.held = totals["held"] or 0
        report.open_holds = totals["open_holds"] or 0
        return report


def _effect(t: Transfer, held: int | None, member_id: int | None) -> int:
    """How an entry changed the available balance of the account it touched for the member."""
    if t.kind is TransferKind.PENDING:
        return -t.amount
    if t.kind is TransferKind.POST:
        return (held or 0) - t.amount  # the unused part of the hold comes back
    if t.kind in (TransferKind.VOID, TransferKind.EXPIRE):
        return t.amount
    if member_id is not None and t.debit_account_id == member_id:
        return -t.amount
    if member_id is not None and t.credit_account_id == member_id:
        return t.amount
    return -t.amount if t.reason in ("job", "late_capture") else t.amount


def _via_pool(t: Transfer, pool_id: int | None) -> bool:
    touches_pool = pool_id is not None and pool_id in (t.debit_account_id, t.credit_account_id)
    return touches_pool and t.reason not in ("grant", "revoke")


def _ref_params(ref: AccountRef) -> tuple[str, int, int]:
    return (ref.kind.value, ref.guild_id, ref.user_id)


def _require_positive(amount: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise InvalidMovement(f"Amounts are whole credits above zero (got {amount!r}).")
