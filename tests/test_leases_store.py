"""Job leases in storage (storage.leases), on both backends with a manual clock: a renewal never
revives a lapsed lease (whoever takes the job next gets it); a taker's lease runs from when it
writes."""

from __future__ import annotations

import pytest

from storage import Database, Job, JobState, JobStore, Leases, ManualClock, NewJob, WorkedJobs
from tests.backends import both_backends

pytestmark = both_backends

S = JobState
LEASE_MS = 30_000


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
