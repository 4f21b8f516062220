"""Holds and resolutions made at the same time share one statement and one commit on PostgreSQL
(storage/batching.py; SQLite's writer shares the commit by itself); each caller still gets its own
outcome, and a movement the database refuses refuses only itself. On both backends."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import (
    AccountRef,
    HoldAlreadyResolved,
    IdempotencyConflict,
    InsufficientCredits,
    Ledger,
    Transfer,
    TransferKind,
)
from tests.backends import both_backends

pytestmark = both_backends

G = 10
alice, bob = AccountRef.member(G, 1), AccountRef.member(G, 2)


async def test_holds_made_at_once_share_statements(ledger: Ledger, backend: str) -> None:
    await ledger.issue_to_member(G, 1, 980, key="i")
    holds = await asyncio.gather(
        *(ledger.reserve(key=f"h:{n}", payer=alice, amount=5 + n) for n in range(40))
    )
    assert [(h.key, h.amount, h.kind) for h in holds] == [
        (f"h:{n}", 5 + n, TransferKind.PENDING) for n in range(40)
    ]
    assert len({h.id for h in holds}) == 40
    # PostgreSQL: the first goes alone at once (one statement in flight), the other 39 wait and
    # go together. SQLite: each alone, and its writer shares one commit between them.
    assert ledger.movement_statements == (2 if backend == "postgresql" else 40)
    balance = await ledger.balance(alice)
    assert (balance.pending, balance.available) == (sum(5 + n for n in range(40)), 0)
    assert (await ledger.audit()).ok


async def test_an_overdraw_in_a_shared_statement_refuses_only_itself(ledger: Ledger) -> None:
    await ledger.issue_to_member(G, 1, 100, key="ia")
    await ledger.issue_to_member(G, 2, 100, key="ib")
    results = await asyncio.gather(
        ledger.reserve(key="a1", payer=alice, amount=60),
        ledger.reserve(key="b1", payer=bob, amount=60),
        ledger.reserve(key="a2", payer=alice, amount=60),  # shares a statement with b1, b2
        ledger.reserve(key="b2", payer=bob, amount=30),
        return_exceptions=True,
    )
    assert isinstance(results[2], InsufficientCredits)
    assert "60" in str(results[2]) and "40" in str(results[2])
    assert [r.key for r in results if isinstance(r, Transfer)] == ["a1", "b1", "b2"]
    assert (await ledger.balance(alice)).available == 40
    assert (await ledger.balance(bob)).available == 10
    assert (await ledger.audit()).ok


async def test_one_key_twice_at_once_is_a_replay_or_a_conflict(
    ledger: Ledger, backend: str
) -> None:
    await ledger.issue_to_member(G, 1, 100, key="i")
    results = await asyncio.gather(
        ledger.reserve(key="first", payer=alice, amount=1),  # alone; the rest go together
        ledger.reserve(key="same", payer=alice, amount=10),
        ledger.reserve(key="same", payer=alice, amount=10),
        ledger.reserve(key="other", payer=alice, amount=5),
        ledger.reserve(key="other", payer=alice, amount=7),
        return_exceptions=True,
    )
    assert isinstance(results[0], Transfer)
    same_a, same_b, other_a, other_b = results[1:]
    assert isinstance(same_a, Transfer) and isinstance(same_b, Transfer)
    assert same_a.id == same_b.id
    assert isinstance(other_a, Transfer) and other_a.amount == 5
    assert isinstance(other_b, IdempotencyConflict)
    assert (await ledger.balance(alice)).pending == 16
    assert ledger.movement_statements == (2 if backend == "postgresql" else 5)
    assert (await ledger.audit()).ok


async def test_resolutions_at_once_resolve_each_hold_once(ledger: Ledger) -> None:
    await ledger.issue_to_member(G, 1, 100, key="i")
    h1, h2, h3 = [
        await ledger.reserve(key=f"h{n}", payer=alice, amount=20, job_id=f"j{n}") for n in (1, 2, 3)
    ]
    results = await asyncio.gather(
        ledger.capture(h1.id, 15),
        ledger.void(h1.id),
        ledger.capture(h2.id),
        ledger.void(h3.id),  # no amount: the shared statement's amounts may all be NULL
        ledger.void(h3.id),  # the same key again: a replay
        ledger.capture(999_999),
        return_exceptions=True,
    )
    won, lost = (results[0], results[1])
    assert isinstance(won, Transfer) != isinstance(lost, Transfer)
    assert isinstance(won if isinstance(lost, Transfer) else lost, HoldAlreadyResolved)
    assert isinstance(results[2], Transfer) and results[2].amount == 20
    assert isinstance(results[3], Transfer) and isinstance(results[4], Transfer)
    assert results[3].id == results[4].id and results[3].amount == 20
    assert type(results[5]).__name__ == "HoldNotFound"
    captured = 20 + (15 if isinstance(won, Transfer) else 0)
    balance = await ledger.balance(alice)
    assert (balance.posted, balance.pending) == (100 - captured, 0)
    assert (await ledger.audit()).ok


_members = itertools.count(100)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    funds=st.integers(min_value=0, max_value=60),
    requests=st.lists(
        st.tuples(st.sampled_from("abcdef"), st.integers(min_value=1, max_value=25)),
        min_size=1,
        max_size=24,
    ),
)
async def test_concurrent_holds_keep_every_promise(
    ledger: Ledger, funds: int, requests: list[tuple[str, int]]
) -> None:
    """Random holds at once on one member (keys repeat, with the same or other amounts): every
    caller gets its own key's hold, a replay or a conflict, or a refusal it deserved."""
    user = next(_members)
    member = AccountRef.member(G, user)
    if funds:
        await ledger.issue_to_member(G, user, funds, key=f"fund:{user}")
    results = await asyncio.gather(
        *(ledger.reserve(key=f"{user}:{k}", payer=member, amount=a) for k, a in requests),
        return_exceptions=True,
    )
    by_key: dict[str, Transfer] = {}
    for (k, amount), result in zip(requests, results, strict=True):
        if isinstance(result, Transfer):
            assert (result.key, result.amount) == (f"{user}:{k}", amount)
            assert by_key.setdefault(k, result).id == result.id  # one hold per key
        else:
            assert isinstance(result, (InsufficientCredits, IdempotencyConflict)), result
    balance = await ledger.balance(member)
    assert balance.pending == sum(h.amount for h in by_key.values())
    assert balance.available == funds - balance.pending >= 0
    for (k, amount), result in zip(requests, results, strict=True):
        if isinstance(result, IdempotencyConflict):
            assert k in by_key and by_key[k].amount != amount
        if isinstance(result, InsufficientCredits):
            # Refused only if it did not fit in what was left when it ran; what is left now is
            # no more than that.
            assert amount > balance.available
    assert (await ledger.audit()).ok
