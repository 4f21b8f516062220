"""The credit ledger: movements, holds, idempotency, refusals enforced by the database."""

from __future__ import annotations

import asyncio

import pytest

from storage import (
    AccountRef,
    Database,
    HoldAlreadyResolved,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidMovement,
    Ledger,
    ManualClock,
    PostgresDatabase,
    TransferKind,
)
from tests.backends import RawRefused, both_backends, drop_trigger, raw_sql

pytestmark = both_backends

G, ALICE, BOB = 10, 1, 2
alice = AccountRef.member(G, ALICE)
pool = AccountRef.pool(G)


async def test_fund_grant_revoke_move_credits(ledger: Ledger) -> None:
    await ledger.fund_pool(G, 500, key="fund:1", actor_id=99)
    await ledger.grant(G, ALICE, 120, key="grant:1", actor_id=7)
    await ledger.revoke(G, ALICE, 20, key="revoke:1", actor_id=7)
    assert (await ledger.balance(pool)).available == 400
    assert (await ledger.balance(alice)).available == 100
    assert (await ledger.audit()).ok


async def test_hold_capture_partial_releases_rest(ledger: Ledger) -> None:
    await ledger.issue_to_member(G, ALICE, 100, key="i")
    hold = await ledger.reserve(key="hold:1", payer=alice, amount=80, job_id="j1")
    assert await ledger.balance(alice) == type(await ledger.balance(alice))(100, 80)
    post = await ledger.capture(hold.id, 50)
    assert post.kind is TransferKind.POST and post.amount == 50
    balance = await ledger.balance(alice)
    assert (balance.posted, balance.pending, balance.available) == (50, 0, 50)
    report = await ledger.audit()
    assert report.ok and report.spent == 50 and report.open_holds == 0


@pytest.mark.parametrize("resolve", ["void", "expire"])
async def test_void_and_expire_restore_balance(ledger: Ledger, resolve: str) -> None:
    await ledger.issue_to_member(G, ALICE, 100, key="i")
    hold = await ledger.reserve(key="hold:1", payer=alice, amount=100)
    assert (await ledger.balance(alice)).available == 0
    await (ledger.void(hold.id) if resolve == "void" else ledger.expire(hold.id))
    assert (await ledger.balance(alice)).available == 100
    with pytest.raises(HoldAlreadyResolved) as info:
        await ledger.capture(hold.id)
    assert info.value.resolution == resolve


async def test_capture_more_than_held_is_refused(ledger: Ledger) -> None:
    await ledger.issue_to_member(G, ALICE, 100, key="i")
    hold = await ledger.reserve(key="hold:1", payer=alice, amount=40)
    with pytest.raises(InvalidMovement, match="exceeds"):
        await ledger.capture(hold.id, 41)
    assert (await ledger.balance(alice)).pending == 40


async def test_unknown_hold(ledger: Ledger) -> None:
    with pytest.raises(HoldNotFound):
        await ledger.capture(12345)


async def test_same_key_same_fields_returns_original(ledger: Ledger) -> None:
    await ledger.issue_to_member(G, ALICE, 100, key="i")
    first = await ledger.reserve(key="hold:abc", payer=alice, amount=30, job_id="j")
    again = await ledger.reserve(key="hold:abc", payer=alice, amount=30, job_id="j")
    assert again == first
    post = await ledger.capture(first.id)
    assert await ledger.capture(first.id) == post
    assert (await ledger.balance(alice)).available == 70


async def test_same_key_different_fields_is_an_error(ledger: Ledger) -> None:
    await ledger.issue_to_member(G, ALICE, 100, key="i")
    hold = await ledger.reserve(key="hold:abc", payer=alice, amount=30, job_id="j")
    with pytest.raises(IdempotencyConflict):
        await ledger.reserve(key="hold:abc", payer=alice, amount=31, job_id="j")
    with pytest.raises(IdempotencyConflict):
        await ledger.grant(G, BOB, 30, key="hold:abc")
    await ledger.capture(hold.id, 10)
    with pytest.raises(IdempotencyConflict):
        await ledger.capture(hold.id, 11)
    assert (await ledger.balance(alice)).available == 90


async def test_insufficient_credits_names_what_is_available(ledger: Ledger) -> None:
    await ledger.issue_to_member(G, ALICE, 25, key="i")
    with pytest.raises(InsufficientCredits) as info:
        await ledger.reserve(key="h", payer=alice, amount=40)
    assert (info.value.requested, info.value.available) == (40, 25)
    assert "40" in str(info.value) and "25" in str(info.value)
    with pytest.raises(InsufficientCredits):  # an account that never existed holds nothing
        await ledger.reserve(key="h2", payer=AccountRef.member(G, 404), amount=1)


@pytest.mark.parametrize("amount", [0, -5])
async def test_amounts_must_be_positive(ledger: Ledger, amount: int) -> None:
    with pytest.raises(InvalidMovement):
        await ledger.fund_pool(G, amount, key="f")


async def test_thousand_concurrent_reserves_exactly_hundred_succeed(
    db: Database, ledger: Ledger
) -> None:
    await ledger.issue_to_member(G, ALICE, 1000, key="i")
    results = await asyncio.gather(
        *(ledger.reserve(key=f"hold:{n}", payer=alice, amount=10) for n in range(1000)),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(results) - len(failures) == 100
    assert len(failures) == 900
    assert all(isinstance(f, InsufficientCredits) for f in failures)
    balance = await ledger.balance(alice)
    assert (balance.available, balance.pending) == (0, 1000)
    assert (await ledger.audit()).ok
    if isinstance(db, PostgresDatabase):  # the race ran over several server connections
        assert len(db.writer_pids) > 1


async def test_concurrent_resolutions_of_one_hold_resolve_once(ledger: Ledger) -> None:
    await ledger.issue_to_member(G, ALICE, 100, key="i")
    hold = await ledger.reserve(key="h", payer=alice, amount=60)
    attempts = [ledger.capture(hold.id) for _ in range(5)]
    attempts += [ledger.void(hold.id) for _ in range(5)]
    attempts += [ledger.expire(hold.id) for _ in range(5)]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    resolutions = {r.id for r in results if not isinstance(r, BaseException)}
    assert len(resolutions) == 1
    assert all(isinstance(r, HoldAlreadyResolved) for r in results if isinstance(r, BaseException))
    assert (await ledger.audit()).ok


async def test_pool_draws_count_holds_and_captures_not_voids(
    ledger: Ledger, clock: ManualClock
) -> None:
    await ledger.fund_pool(G, 1000, key="f")
    start = clock.now_ms()
    h1 = await ledger.reserve(key="a", payer=pool, amount=40, user_id=ALICE)
    h2 = await ledger.reserve(key="b", payer=pool, amount=40, user_id=ALICE)
    h3 = await ledger.reserve(key="c", payer=pool, amount=40, user_id=ALICE)
    await ledger.reserve(key="d", payer=pool, amount=40, user_id=BOB)
    await ledger.capture(h1.id, 25)
    await ledger.void(h2.id)
    assert await ledger.drawn_from_pool(G, ALICE, start) == 25 + 40
    assert await ledger.drawn_from_pool(G, ALICE, clock.now_ms() + 1) == 0
    await ledger.expire(h3.id)
    assert await ledger.drawn_from_pool(G, ALICE, start) == 25


async def test_history_shows_effect_on_available(ledger: Ledger) -> None:
    await ledger.fund_pool(G, 1000, key="f")
    await ledger.grant(G, ALICE, 100, key="g", actor_id=5)
    hold = await ledger.reserve(key="h", payer=alice, amount=40, job_id="j1")
    await ledger.capture(hold.id, 30)
    pool_hold = await ledger.reserve(key="p", payer=pool, amount=16, user_id=ALICE)
    await ledger.void(pool_hold.id)
    history = await ledger.history(G, ALICE, limit=10)
    effects = [(e.transfer.kind.value, e.delta, e.paid_by_pool) for e in history]
    assert effects == [
        ("void", 16, True),
        ("pending", -16, True),
        ("post", 10, False),
        ("pending", -40, False),
        ("single", 100, False),
    ]
    older = await ledger.history(G, ALICE, before_id=history[1].transfer.id, limit=2)
    assert [e.transfer.id for e in older] == [h.transfer.id for h in history[2:4]]


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE transfers SET amount = 1",
        "DELETE FROM transfers",
        "UPDATE accounts SET credits_posted = credits_posted + 1000000",
        "UPDATE accounts SET debits_posted = debits_posted + 1 WHERE kind = 'member'",
        "DELETE FROM accounts",
        # overdraw: a hold larger than the member's balance
        "INSERT INTO transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount,"
        " reason, created_at_ms) SELECT 'x', 'pending', m.id, s.id, 1000, 'job', 0"
        " FROM accounts m, accounts s WHERE m.kind = 'member' AND s.kind = 'spend'",
        # a second resolution of an already captured hold
        "INSERT INTO transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount,"
        " pending_id, reason, created_at_ms) SELECT 'y', 'void', debit_account_id,"
        " credit_account_id, amount, id, 'void', 0 FROM transfers WHERE kind = 'pending'",
    ],
)
async def test_raw_sql_cannot_tamper_or_overdraw(db: Database, ledger: Ledger, sql: str) -> None:
    await ledger.issue_to_member(G, ALICE, 100, key="i")
    hold = await ledger.reserve(key="h", payer=alice, amount=10)
    await ledger.capture(hold.id)
    before = await ledger.audit()
    with pytest.raises(RawRefused):
        await raw_sql(db, sql)
    after = await ledger.audit()
    assert after.ok and (after.transfers, after.spent) == (before.transfers, before.spent)
    assert (await ledger.balance(alice)).available == 90


async def test_audit_detects_tampered_totals(db: Database, ledger: Ledger) -> None:
    await ledger.issue_to_member(G, ALICE, 100, key="i")
    await drop_trigger(db, "accounts_totals_guard", "accounts")  # an attacker with the file could
    await raw_sql(db, "UPDATE accounts SET credits_posted = 5000 WHERE kind = 'member'")
    report = await ledger.audit()
    assert not report.ok
    assert any("differ from its entries" in v for v in report.violations)
    assert any("conservation" in v for v in report.violations)
