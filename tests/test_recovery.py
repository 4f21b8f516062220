"""Creates whose outcome is unknown are settled at once, not at the deadline (DESIGN.md 6):
after a crash between "submitted" and the vendor's answer, or a connection cut after the request
was sent. `local` is idempotent by the bot's job id, Kling is asked by external_task_id, and a
vendor that can be asked nothing leaves the member told when the credits come back."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from bot.pipeline import JobEvent
from bot.providers import ProviderHttp, VideoProvider
from bot.providers.kling import KlingProvider
from bot.providers.local import LocalProvider
from bot.request import VideoRequest
from bot.settings import KlingSettings, LocalSettings
from storage import Job, JobState
from tests.pipeline_support import Harness, ProviderFactory, member, pipeline
from tests.provider_doubles.eachlabs import EachLabsDouble
from tests.provider_doubles.kling import ACCESS_KEY, SECRET_KEY, KlingDouble
from tests.test_pipeline import eachlabs

REQUEST = {"prompt": "a red fox running through snow", "duration_s": 3}


class Seen:
    """Job events as they are published."""

    def __init__(self) -> None:
        self.events: list[tuple[str, JobEvent]] = []

    async def job_changed(self, job: Job, event: JobEvent) -> None:
        self.events.append((job.id, event))


async def submitted_before_a_crash(p: Harness) -> Job:
    """A job the dispatcher marked submitted before the process died (no vendor job id)."""
    await p.ledger.issue_to_member(1, 7, 200, key="seed")
    p.service.open_intake()
    job = (await p.service.submit(member(), REQUEST)).job
    return await p.service.jobs.transition(
        job.id,
        JobState.SUBMITTED,
        from_states=frozenset({JobState.QUEUED}),
        submit_attempts=1,
        submitted_at_ms=p.clock.now_ms(),
    )


async def assert_settled_once(p: Harness, job: Job) -> None:
    assert [job_id for job_id, _ in p.sink.deliveries] == [job.id]
    assert await p.captures(job.id) == [job.cost]
    assert (await p.ledger.audit()).ok


async def test_local_create_made_before_a_crash_is_adopted_not_made_twice(tmp_path: Path) -> None:
    work = tmp_path / "local"
    made: list[LocalProvider] = []

    def build(http: ProviderHttp) -> dict[str, VideoProvider]:
        made.append(LocalProvider(LocalSettings(render_s=0.2), http, work_dir=work))
        return {"local": made[-1]}

    async with pipeline(tmp_path, build, default_provider="local", start=False) as p:
        job = await submitted_before_a_crash(p)
        request = VideoRequest.model_validate(job.request)
        await made[0].submit(request, webhook_url=None, client_ref=job.id)  # it reached "vendor"
        await p.service.start()
        done = await p.wait_for_state(job.id, JobState.DELIVERED)
        assert done.provider_job_id == f"local-{job.id}"
        assert sorted(path.name for path in work.glob("*.json")) == [f"local-{job.id}.json"]
        await assert_settled_once(p, done)


async def test_local_create_lost_in_a_crash_is_made_once(tmp_path: Path) -> None:
    work = tmp_path / "local"

    def build(http: ProviderHttp) -> dict[str, VideoProvider]:
        return {"local": LocalProvider(LocalSettings(render_s=0.2), http, work_dir=work)}

    async with pipeline(tmp_path, build, default_provider="local", start=False) as p:
        job = await submitted_before_a_crash(p)
        await p.service.start()
        done = await p.wait_for_state(job.id, JobState.DELIVERED)
        assert sorted(path.name for path in work.glob("*.json")) == [f"local-{job.id}.json"]
        await assert_settled_once(p, done)


def kling_factory(double: KlingDouble) -> ProviderFactory:
    def build(http: ProviderHttp) -> dict[str, VideoProvider]:
        settings = KlingSettings(
            access_key=SecretStr(ACCESS_KEY),
            secret_key=SecretStr(SECRET_KEY),
            base_url=double.base_url,
        )
        return {"kling": KlingProvider(settings, http)}

    return build


async def test_kling_create_whose_answer_was_lost_is_found_by_its_external_id(
    tmp_path: Path,
) -> None:
    async with KlingDouble() as double:
        double.next_create("made_then_reset")
        async with pipeline(
            tmp_path,
            kling_factory(double),
            default_provider="kling",
            public=False,
        ) as p:
            await p.ledger.issue_to_member(1, 7, 200, key="seed")
            job = (await p.service.submit(member(), REQUEST)).job
            done = await p.wait_for_state(job.id, JobState.DELIVERED)
            assert double.creates == 1, "the lost create was looked up, not sent again"
            (made,) = double.jobs.values()
            assert made.request["external_task_id"] == job.id
            assert done.provider_job_id == made.id
            await assert_settled_once(p, done)


async def test_kling_create_that_never_arrived_is_sent_again(tmp_path: Path) -> None:
    async with (
        KlingDouble() as double,
        pipeline(
            tmp_path,
            kling_factory(double),
            default_provider="kling",
            public=False,
            start=False,
        ) as p,
    ):
        job = await submitted_before_a_crash(p)
        await p.service.start()
        done = await p.wait_for_state(job.id, JobState.DELIVERED)
        assert double.creates == 1
        await assert_settled_once(p, done)


async def test_a_lost_create_at_a_vendor_that_cannot_be_asked_tells_the_member_once(
    tmp_path: Path,
) -> None:
    """EachLabs takes no id from us and lists nothing: the member is told the outcome is
    unknown and when the credits come back; the vendor's webhook still adopts the job."""
    async with EachLabsDouble() as double:
        double.next_create("made_then_reset")
        async with pipeline(tmp_path, eachlabs(double), default_provider="eachlabs") as p:
            seen = Seen()
            p.service.subscribe(seen)
            await p.ledger.issue_to_member(1, 7, 200, key="seed")
            job = (await p.service.submit(member(), REQUEST)).job
            await p.wait_until(lambda: (job.id, JobEvent.OUTCOME_UNKNOWN) in seen.events)
            told = await p.service.jobs.get(job.id)
            assert told.state is JobState.SUBMITTED and told.provider_job_id is None
            deadline_s = (told.deadline_at_ms or 0) // 1000
            assert f"your {told.cost} credits come back <t:{deadline_s}:R>" in (
                told.error_message or ""
            )
            p.service.poke(job.id)  # looked at again: nothing new to say
            assert p.service.due_at(job.id) == 0
            await p.wait_until(lambda: p.service.due_at(job.id) == told.deadline_at_ms)
            assert seen.events.count((job.id, JobEvent.OUTCOME_UNKNOWN)) == 1
            (made,) = double.jobs.values()
            await double.send_webhook(made)
            done = await p.wait_for_state(job.id, JobState.DELIVERED)
            assert done.provider_job_id == made.id and double.creates == 1
            await assert_settled_once(p, done)
