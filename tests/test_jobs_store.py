"""Job rows: creation, legal and illegal transitions, lookups, and the event log."""

from __future__ import annotations

import asyncio

import pytest

from storage import Database, IllegalTransition, JobNotFound, JobState, JobStore, NewJob, Tx
from storage.jobs import TRANSITIONS
from tests.backends import RawRefused, both_backends, raw_sql

pytestmark = both_backends

S = JobState


def new_job(**overrides: object) -> NewJob:
    fields: dict[str, object] = {
        "provider": "local",
        "request": {"prompt": "a fox", "duration_s": 5},
        "cost": 40,
        "guild_id": 1,
        "channel_id": 2,
        "user_id": 3,
    }
    fields.update(overrides)
    return NewJob(**fields)  # type: ignore[arg-type]


async def test_create_and_read_back(jobs: JobStore) -> None:
    job = await jobs.create(new_job(interaction_id=99))
    again = await jobs.get(job.id)
    assert again == job
    assert job.state is S.QUEUED and job.request == {"prompt": "a fox", "duration_s": 5}
    assert len(job.webhook_token) >= 32 and job.webhook_token != job.media_token
    target = await jobs.webhook_target(job.webhook_token)
    assert target is not None and (target.job_id, target.provider) == (job.id, "local")
    assert await jobs.webhook_target("no-such-token") is None


async def test_happy_path_and_event_log(jobs: JobStore) -> None:
    job = await jobs.create(new_job())
    await jobs.transition(job.id, S.SUBMITTED, provider_job_id="p-1", submit_attempts=1)
    await jobs.transition(job.id, S.RUNNING, progress_pct=40)
    await jobs.transition(job.id, S.SUCCEEDED, video_url="https://x/v.mp4")
    done = await jobs.transition(job.id, S.DELIVERED, delivered_via="file", detail="posted")
    assert done.is_final and done.provider_job_id == "p-1" and done.progress_pct == 40
    assert await jobs.find_by_provider_job("local", "p-1") == done
    events = await jobs.events(job.id)
    assert [(e.from_state, e.to_state) for e in events] == [
        (None, "queued"),
        ("queued", "submitted"),
        ("submitted", "running"),
        ("running", "succeeded"),
        ("succeeded", "delivered"),
    ]
    assert events[-1].detail == "posted"


@pytest.mark.parametrize(
    ("source", "target"),
    [(a, b) for a in JobState for b in JobState if b not in TRANSITIONS[a] and a != b],
)
async def test_every_illegal_transition_raises(
    db: Database, jobs: JobStore, source: JobState, target: JobState
) -> None:
    job = await jobs.create(new_job(state=source))
    with pytest.raises(IllegalTransition) as info:
        await jobs.transition(job.id, target)
    assert (info.value.from_state, info.value.to_state) == (source.value, target.value)
    assert (await jobs.get(job.id)).state is source


async def test_database_refuses_illegal_transition_from_raw_sql(
    db: Database, jobs: JobStore
) -> None:
    job = await jobs.create(new_job())
    with pytest.raises(RawRefused, match="illegal job transition"):
        await raw_sql(db, "UPDATE jobs SET state = 'delivered' WHERE id = ?", (job.id,))


async def test_racing_transitions_only_one_wins(jobs: JobStore) -> None:
    job = await jobs.create(new_job(state=S.RUNNING))
    results = await asyncio.gather(
        *(jobs.transition(job.id, S.SUCCEEDED) for _ in range(5)),
        *(jobs.transition(job.id, S.CANCELLED) for _ in range(5)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, IllegalTransition) for r in results if isinstance(r, BaseException))


async def test_from_states_narrows_sources(jobs: JobStore) -> None:
    job = await jobs.create(new_job(state=S.RUNNING))
    with pytest.raises(IllegalTransition):
        await jobs.transition(job.id, S.FAILED, from_states=frozenset({S.SUBMITTED}))


async def test_lookups(jobs: JobStore) -> None:
    a = await jobs.create(new_job(provider="eachlabs", state=S.SUBMITTED))
    b = await jobs.create(new_job(provider="fal", state=S.RUNNING))
    c = await jobs.create(new_job(provider="fal", state=S.DELIVERED))
    d = await jobs.create(new_job(user_id=77, state=S.SUCCEEDED))
    assert {j.id for j in await jobs.live_at_provider()} == {a.id, b.id}
    assert [j.id for j in await jobs.live_at_provider("fal")] == [b.id]
    assert {j.id for j in await jobs.unfinished()} == {a.id, b.id, d.id}
    assert c.id not in {j.id for j in await jobs.by_user(1, 77)}
    assert [j.id for j in await jobs.by_user(1, 77)] == [d.id]
    counts = await jobs.count_by_state()
    assert counts[S.SUBMITTED] == 1 and counts[S.DELIVERED] == 1 and counts[S.QUEUED] == 0


async def test_unknown_job_and_unknown_field(jobs: JobStore) -> None:
    with pytest.raises(JobNotFound):
        await jobs.transition("nope", S.SUBMITTED)
    with pytest.raises(JobNotFound):
        await jobs.update("nope", progress_pct=3)
    job = await jobs.create(new_job())
    with pytest.raises(ValueError, match="not settable"):
        await jobs.update(job.id, state="delivered")


async def test_webhook_target_follows_provider_changes(jobs: JobStore, db: Database) -> None:
    """The remembered webhook target follows every committed write that changes it."""
    job = await jobs.create(new_job(provider="eachlabs"))
    token = job.webhook_token
    first = await jobs.webhook_target(token)
    assert first is not None and first.provider_job_id is None
    await jobs.update(job.id, provider_job_id="e-1")  # adopted from a webhook
    target = await jobs.webhook_target(token)
    assert target is not None and target.provider_job_id == "e-1"
    await jobs.transition(job.id, S.SUBMITTED, provider_job_id="e-1")
    # failover inside a caller's transaction: the old answer stays until the commit
    seen_inside: list[str | None] = []

    async def move(tx: Tx) -> None:
        await jobs.transition(job.id, S.QUEUED, provider="fal", provider_job_id=None, tx=tx)
        remembered = await jobs.webhook_target(token)
        seen_inside.append(remembered.provider if remembered else None)

    await db.write(move)
    assert seen_inside == ["eachlabs"]  # not committed yet: the cached answer is still right
    moved = await jobs.webhook_target(token)
    assert moved is not None and (moved.provider, moved.provider_job_id) == ("fal", None)


async def test_webhook_target_read_during_a_change_is_not_remembered(jobs: JobStore) -> None:
    job = await jobs.create(new_job(provider="eachlabs"))
    token = job.webhook_token
    # The write commits while the lookup is in flight: the lookup may return either answer,
    # but what it read must not stay remembered past the write.
    lookup = asyncio.create_task(jobs.webhook_target(token))
    await jobs.update(job.id, provider_job_id="e-2")
    await lookup
    target = await jobs.webhook_target(token)
    assert target is not None and target.provider_job_id == "e-2"


async def test_webhook_targets_are_known_without_a_read(jobs: JobStore, db: Database) -> None:
    """Creating a job and recording its provider job id remember the target: a webhook's lookup
    then answers from memory (shown by changing the row behind the store's back)."""
    job = await jobs.create(new_job(provider="eachlabs"))
    await jobs.transition(job.id, S.SUBMITTED, provider_job_id="e-7")
    await db.write_statement("UPDATE jobs SET provider_job_id = 'changed' WHERE id = ?", (job.id,))
    target = await jobs.webhook_target(job.webhook_token)
    assert target is not None and (target.job_id, target.provider_job_id) == (job.id, "e-7")


async def test_a_rolled_back_change_leaves_the_target_alone(jobs: JobStore, db: Database) -> None:
    job = await jobs.create(new_job(provider="eachlabs"))
    await jobs.transition(job.id, S.SUBMITTED, provider_job_id="e-8")

    async def failover_then_fail(tx: Tx) -> None:
        await jobs.transition(job.id, S.QUEUED, provider="fal", provider_job_id=None, tx=tx)
        raise RuntimeError("something later in the same write failed")

    with pytest.raises(RuntimeError):
        await db.write(failover_then_fail)
    target = await jobs.webhook_target(job.webhook_token)
    assert target is not None and (target.provider, target.provider_job_id) == ("eachlabs", "e-8")
    assert (await jobs.get(job.id)).provider == "eachlabs"


async def test_resuming_remembers_the_targets_of_unfinished_jobs(db: Database) -> None:
    first = JobStore(db)
    live = await first.create(new_job(provider="eachlabs"))
    await first.transition(live.id, S.SUBMITTED, provider_job_id="e-9")
    restarted = JobStore(db)  # a new process: nothing remembered
    assert [j.id for j in await restarted.unfinished()] == [live.id]
    await db.write_statement("UPDATE jobs SET provider_job_id = 'changed' WHERE id = ?", (live.id,))
    target = await restarted.webhook_target(live.webhook_token)
    assert target is not None and target.provider_job_id == "e-9"
