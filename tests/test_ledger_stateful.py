"""Property test: random sequences of ledger movements keep every invariant.

A plain-Python model predicts each balance and which movements must be refused; after every step
the database must agree with the model and `audit()` must be clean.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from storage import (
    AccountKind,
    AccountRef,
    Database,
    HoldAlreadyResolved,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidMovement,
    Ledger,
    Transfer,
)
from tests.backends import create_database, drop_database

T = TypeVar("T")
ACCOUNTS = [
    AccountRef.member(1, 1),
    AccountRef.member(1, 2),
    AccountRef.member(2, 1),
    AccountRef.pool(1),
    AccountRef.pool(2),
]


@dataclass
class ModelHold:
    account: AccountRef
    amount: int
    resolution: str | None = None
    transfer: Transfer | None = None


@dataclass
class Replay:
    same: Callable[[], Awaitable[Transfer]]
    different: Callable[[], Awaitable[Transfer]]
    original: Transfer


class LedgerMachine(RuleBasedStateMachine):
    backend = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp())
        self.url: str | None = None
        if self.backend == "sqlite":
            self.db = self.run(Database.open(self.dir / "l.db", durable=False))
        else:  # a fresh database per example, cloned from the migrated template
            self.url = self.run(create_database())
            self.db = self.run(Database.open(self.url))
        self.ledger = Ledger(self.db)
        self.posted: dict[AccountRef, int] = dict.fromkeys(ACCOUNTS, 0)
        self.pending: dict[AccountRef, int] = dict.fromkeys(ACCOUNTS, 0)
        self.holds: dict[int, ModelHold] = {}
        self.replays: list[Replay] = []
        self.counter = 0

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.db.close())
        if self.url is not None:
            self.run(drop_database(self.url))
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def key(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}:{self.counter}"

    def available(self, account: AccountRef) -> int:
        return self.posted[account] - self.pending[account]

    def remember(self, original: Transfer, same: Any, different: Any) -> None:
        self.replays.append(Replay(same, different, original))

    @rule(account=st.sampled_from(ACCOUNTS), amount=st.integers(1, 300))
    def issue(self, account: AccountRef, amount: int) -> None:
        key = self.key("issue")
        if account.kind is AccountKind.POOL:

            def call(n: int = amount) -> Awaitable[Transfer]:
                return self.ledger.fund_pool(account.guild_id, n, key=key)
        else:

            def call(n: int = amount) -> Awaitable[Transfer]:
                return self.ledger.issue_to_member(account.guild_id, account.user_id, n, key=key)

        transfer = self.run(call())
        self.posted[account] += amount
        self.remember(transfer, call, lambda: call(amount + 1))

    @rule(
        guild=st.sampled_from([1, 2]),
        user=st.sampled_from([1, 2]),
        amount=st.integers(1, 200),
        to_member=st.booleans(),
    )
    def move(self, guild: int, user: int, amount: int, to_member: bool) -> None:
        member, pool = AccountRef.member(guild, user), AccountRef.pool(guild)
        if member not in self.posted:
            return
        source, target = (pool, member) if to_member else (member, pool)
        key = self.key("move")
        method = self.ledger.grant if to_member else self.ledger.revoke

        def call(n: int = amount) -> Awaitable[Transfer]:
            return method(guild, user, n, key=key)

        if amount > self.available(source):
            try:
                self.run(call())
            except InsufficientCredits:
                return
            raise AssertionError("an overdrawing transfer was accepted")
        transfer = self.run(call())
        self.posted[source] -= amount
        self.posted[target] += amount
        self.remember(transfer, call, lambda: call(amount + 1))

    @rule(account=st.sampled_from(ACCOUNTS), amount=st.integers(1, 200))
    def reserve(self, account: AccountRef, amount: int) -> None:
        key = self.key("hold")

        def call(n: int = amount) -> Awaitable[Transfer]:
            return self.ledger.reserve(key=key, payer=account, amount=n, job_id=key)

        if amount > self.available(account):
            try:
                self.run(call())
            except InsufficientCredits:
                return
            raise AssertionError("an overdrawing hold was accepted")
        hold = self.run(call())
        self.pending[account] += amount
        self.holds[hold.id] = ModelHold(account, amount)
        self.remember(hold, call, lambda: call(amount + 1))

    @precondition(lambda self: bool(self.holds))
    @rule(
        data=st.data(),
        how=st.sampled_from(["capture_full", "capture_part", "void", "expire"]),
    )
    def resolve(self, data: st.DataObject, how: str) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.holds)))
        model = self.holds[hold_id]
        amount: int | None = None
        if how == "capture_part":
            amount = data.draw(st.integers(0, model.amount + 3))
        calls: dict[str, Callable[[], Awaitable[Transfer]]] = {
            "capture_full": lambda: self.ledger.capture(hold_id),
            "capture_part": lambda: self.ledger.capture(hold_id, amount, key=f"part:{hold_id}"),
            "void": lambda: self.ledger.void(hold_id),
            "expire": lambda: self.ledger.expire(hold_id),
        }
        call = calls[how]
        if model.resolution is not None:
            try:
                again = self.run(call())
            except (HoldAlreadyResolved, IdempotencyConflict):
                return
            # Only an exact repeat of the resolving call may succeed, and it returns the original.
            assert model.transfer is not None and again == model.transfer, "resolved twice"
            return
        if amount is not None and amount > model.amount:
            try:
                self.run(call())
            except InvalidMovement:
                return
            raise AssertionError("a capture above the held amount was accepted")
        transfer = self.run(call())
        self.pending[model.account] -= model.amount
        if how.startswith("capture"):
            self.posted[model.account] -= model.amount if amount is None else amount
        model.resolution = how
        model.transfer = transfer
        self.remember(transfer, call, call)

    @precondition(lambda self: bool(self.replays))
    @rule(data=st.data(), same=st.booleans())
    def replay_key(self, data: st.DataObject, same: bool) -> None:
        replay = data.draw(st.sampled_from(self.replays))
        if same:
            assert self.run(replay.same()) == replay.original
            return
        if replay.different is replay.same:  # resolutions: repeating is the only "other" call
            assert self.run(replay.same()) == replay.original
            return
        try:
            self.run(replay.different())
        except IdempotencyConflict:
            return
        raise AssertionError("a reused key with different fields was accepted")

    @invariant()
    def balances_match_the_model(self) -> None:
        for account in ACCOUNTS:
            balance = self.run(self.ledger.balance(account))
            assert (balance.posted, balance.pending) == (
                self.posted[account],
                self.pending[account],
            )
            assert balance.available >= 0

    @invariant()
    def audit_is_clean(self) -> None:
        report = self.run(self.ledger.audit())
        assert report.ok, report.render()
        assert report.open_holds == sum(1 for h in self.holds.values() if h.resolution is None)


LedgerMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestLedgerMachine = LedgerMachine.TestCase


class PostgresLedgerMachine(LedgerMachine):
    """The same machine on PostgreSQL."""

    backend = "postgresql"


PostgresLedgerMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None
)
TestPostgresLedgerMachine = PostgresLedgerMachine.TestCase
