"""SeenDeliveries: bounded; JobStore answers a stored delivery's retry without writing."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import Database, DatabaseUnavailable, JobStore
from storage.seen_deliveries import SeenDeliveries
from tests.backends import both_backends
from tests.test_jobs_store import new_job


@given(st.lists(st.tuples(st.sampled_from("ab"), st.text(max_size=3)), max_size=60))
def test_keeps_the_newest_keys_up_to_capacity(keys: list[tuple[str, str]]) -> None:
    seen = SeenDeliveries(capacity=5)
    kept: list[tuple[str, str]] = []  # the model: a key already kept stays where it is
    for key in keys:
        seen.add(key)
        if key not in kept:
            kept = [*kept, key][-5:]
        assert key in seen
        assert len(seen) == len(kept)
    assert all(key in seen for key in kept)
    assert not any(key in seen for key in set(keys) - set(kept))


async def test_a_retry_of_a_stored_delivery_costs_no_write(db: Database) -> None:
    jobs = JobStore(db)
    job = await jobs.create(new_job(provider="eachlabs"))
    assert await jobs.record_webhook("eachlabs", "evt-1", job.id) is True
    await db.write_statement("PRAGMA query_only = 1")  # from here on every write fails
    assert await jobs.record_webhook("eachlabs", "evt-1", job.id) is False
    for _ in range(2):  # new, so it must be written; a failed write is not remembered
        with pytest.raises(DatabaseUnavailable):
            await jobs.record_webhook("eachlabs", "evt-2", job.id)


async def test_a_delivery_stored_by_another_process_is_a_duplicate(db: Database) -> None:
    job = await JobStore(db).create(new_job(provider="fal"))
    assert await JobStore(db).record_webhook("fal", "req-9", job.id) is True
    other = JobStore(db)  # nothing remembered: the database answers
    assert await other.record_webhook("fal", "req-9", job.id) is False
    assert await other.record_webhook("eachlabs", "req-9", job.id) is True  # per provider


@both_backends
async def test_deliveries_received_at_once_share_a_statement_and_each_is_new_once(
    db: Database,
) -> None:
    """Twenty deliveries at once, each sent twice (a vendor retry racing its original), plus one
    known before: one statement for most of them, and exactly one "new" per delivery (whichever
    of a pair was stored first)."""
    jobs = JobStore(db)
    job = await jobs.create(new_job(provider="eachlabs"))
    assert await jobs.record_webhook("eachlabs", "known", job.id) is True
    keys = [f"evt-{n}" for n in range(20)] * 2 + ["known"]
    fresh = JobStore(db)  # remembers nothing: every answer comes from the database
    answers = await asyncio.gather(*(fresh.record_webhook("eachlabs", k, job.id) for k in keys))
    new = [k for k, answer in zip(keys, answers, strict=True) if answer]
    assert sorted(new) == sorted(f"evt-{n}" for n in range(20))
    # PostgreSQL: the first alone at once, the rest together; SQLite: each alone, one commit.
    assert fresh.delivery_statements == (2 if db.dialect == "postgresql" else len(keys))
    rows = await db.fetchall("SELECT delivery_key FROM webhook_deliveries")
    assert sorted(r["delivery_key"] for r in rows) == sorted([*new, "known"])
