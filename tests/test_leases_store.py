"""Job leases in storage (storage.leases), on both backends with a manual clock: a renewal never
revives a lapsed lease (whoever takes the job next gets it) nor shortens a fence's; a taker's
lease runs from when it writes; a fence holds only for the live owner of a job in the expected
state and extends the lease; outcomes recorded `held_by` a process that lost the lease are
refused."""

from __future__ import annotations

import pytest

from storage import (
    Database,
    IllegalTransition,
    Job,
    JobState,
    JobStore,
    LeaseLost,
    Leases,
    ManualClock,
    NewJob,
    WorkedJobs,
)
from tests.backends import both_backends

pytestmark = both_backends

S = JobState
LEASE_MS = 30_000
COMPLETABLE = (S.SUCCEEDED, S.DELIVERY_FAILED)


@pytest.fixture
def leases(db: Database) -> Leases:
    return Leases(db, WorkedJobs(late_grace_ms=3_600_000))


async def succeeded(jobs: JobStore, clock: ManualClock, owner: str = "A") -> Job:
    """A finished job, about to be delivered, leased to `owner` for LEASE_MS from now."""
    job = await jobs.create(NewJob(provider="local", request={"prompt": "fox"}, cost=10))
    await jobs.transition(
        job.id,
        S.SUBMITTED,
        lease_owner=owner,
        lease_until_ms=clock.now_ms() + LEASE_MS,
        provider_job_id=f"p-{job.id}",
    )
    return await jobs.transition(job.id, S.SUCCEEDED, video_url="https://x/v.mp4")


async def test_a_renewal_never_revives_a_lapsed_lease(
    jobs: JobStore, leases: Leases, clock: ManualClock
) -> None:
    lapsing = await succeeded(jobs, clock)
    clock.advance(seconds=20)
    live = await succeeded(jobs, clock)
    clock.advance(seconds=15)  # `lapsing` lapsed 5 s ago: A stalled
    renewed, _ = await leases.heartbeat("A", LEASE_MS)
    assert renewed == 1
    assert (await jobs.get(lapsing.id)).lease_until_ms == clock.now_ms() - 5_000, "not revived"
    assert (await jobs.get(live.id)).lease_until_ms == clock.now_ms() + LEASE_MS
    assert await leases.take(lapsing.id, "B", LEASE_MS) == "B", "a lapsed lease is anyone's"
    assert (await jobs.get(lapsing.id)).lease_until_ms == clock.now_ms() + LEASE_MS
    clock.advance(ms=LEASE_MS + 1)
    assert sorted(await leases.take_over("C", LEASE_MS)) == sorted([lapsing.id, live.id])
    assert (await jobs.get(live.id)).lease_until_ms == clock.now_ms() + LEASE_MS


async def test_a_fence_holds_for_the_live_owner_and_extends_its_lease(
    jobs: JobStore, leases: Leases, clock: ManualClock
) -> None:
    job = await succeeded(jobs, clock)
    assert await leases.fence(job.id, "A", 150_000, COMPLETABLE)
    assert (await jobs.get(job.id)).lease_until_ms == clock.now_ms() + 150_000
    clock.advance(seconds=100)  # longer than the lease, within the fence's
    assert await leases.take_over("B", LEASE_MS) == [], "nobody takes a job being posted"
    renewed, _ = await leases.heartbeat("A", LEASE_MS)
    assert renewed == 1
    assert (await jobs.get(job.id)).lease_until_ms == clock.now_ms() + 50_000, "not shortened"
    assert await leases.fence(job.id, "A", 1_000, COMPLETABLE), "a short fence keeps the long"
    assert (await jobs.get(job.id)).lease_until_ms == clock.now_ms() + 50_000


async def test_a_fence_fails_for_another_owner_a_lapsed_lease_or_a_delivered_job(
    jobs: JobStore, leases: Leases, clock: ManualClock
) -> None:
    job = await succeeded(jobs, clock)
    assert not await leases.fence(job.id, "B", 150_000, COMPLETABLE), "not B's lease"
    clock.advance(ms=LEASE_MS + 1)
    assert not await leases.fence(job.id, "A", 150_000, COMPLETABLE), "A's lease lapsed"
    assert await leases.take_over("B", LEASE_MS) == [job.id]
    assert not await leases.fence(job.id, "A", 150_000, COMPLETABLE), "B took it over"
    assert await leases.fence(job.id, "B", 150_000, COMPLETABLE)
    await jobs.transition(job.id, S.DELIVERED, held_by="B")
    assert not await leases.fence(job.id, "B", 150_000, COMPLETABLE), "delivered already"


async def test_an_outcome_is_recorded_only_by_the_lease_holder(
    jobs: JobStore, leases: Leases, clock: ManualClock
) -> None:
    job = await succeeded(jobs, clock)
    clock.advance(ms=LEASE_MS + 1)
    assert await leases.take_over("B", LEASE_MS) == [job.id]
    with pytest.raises(LeaseLost):
        await jobs.transition(job.id, S.DELIVERED, held_by="A")
    with pytest.raises(LeaseLost):
        await jobs.update(job.id, charged=10, held_by="A")
    assert (await jobs.get(job.id)).state is S.SUCCEEDED
    done = await jobs.transition(job.id, S.DELIVERED, held_by="B")
    assert done.state is S.DELIVERED
    with pytest.raises(IllegalTransition):  # the holder, but the outcome is recorded already
        await jobs.transition(job.id, S.DELIVERED, held_by="B")


async def test_take_or_ask_takes_a_free_job_and_asks_a_live_owner(
    jobs: JobStore, leases: Leases, clock: ManualClock
) -> None:
    held = await succeeded(jobs, clock, owner="A")
    assert await leases.take_or_ask(held.id, "B", LEASE_MS) == "A"
    after = await jobs.get(held.id)
    assert (after.lease_owner, after.lease_until_ms) == ("A", held.lease_until_ms), "unchanged"
    assert await leases.collect_pokes("B") == []
    assert await leases.collect_pokes("A") == [held.id]
    assert await leases.collect_pokes("A") == [], "a request is collected once"
    assert await leases.take_or_ask(held.id, "A", LEASE_MS) == "A", "its own: taken, no request"
    assert await leases.collect_pokes("A") == []
    clock.advance(ms=LEASE_MS + 1)  # A stalled: its lease lapsed
    assert await leases.take_or_ask(held.id, "B", LEASE_MS) == "B"
    after = await jobs.get(held.id)
    assert (after.lease_owner, after.lease_until_ms) == ("B", clock.now_ms() + LEASE_MS)
    assert await leases.collect_pokes("A") == [] and await leases.collect_pokes("B") == []
    queued = await jobs.create(NewJob(provider="local", request={"prompt": "owl"}, cost=10))
    assert await leases.take_or_ask(queued.id, "B", LEASE_MS) is None, "not a worked job"
    assert (await jobs.get(queued.id)).lease_owner is None
