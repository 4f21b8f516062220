"""The job pipeline end to end with fal (signed webhooks), Segmind (poll only) and local.

test_pipeline.py has the EachLabs versions. Each job is submitted through the real service, tracked
by its scheduler and delivered through the recording sink; the fal and Segmind adapters talk to
their loopback doubles, the local provider renders a real MP4. In the webhook tests the poll
interval is 30 s, so only the webhook can make the status check that completes the job.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from bot.media import render_preview
from bot.providers import ProviderHttp, VideoProvider
from bot.providers import local as local_module
from bot.providers.fal import FalProvider
from bot.providers.local import LocalProvider
from bot.providers.segmind import MODEL, SegmindProvider
from bot.settings import FalSettings, LocalSettings, SegmindSettings
from storage import AccountRef, Job, JobState, OffsetClock, Transfer
from tests.pipeline_support import Harness, ProviderFactory, member, pipeline
from tests.provider_doubles.base import VendorDouble, now_s
from tests.provider_doubles.fal import API_KEY as FAL_KEY
from tests.provider_doubles.fal import FalDouble, FalJob
from tests.provider_doubles.segmind import API_KEY as SEGMIND_KEY
from tests.provider_doubles.segmind import SegmindDouble
from tests.provider_support import free_port
from tests.waits import until_counted, until_stored

REQUEST = {"prompt": "a red fox running through snow", "duration_s": 5}
COST = 40  # 5 s x 8 credits (fal and Segmind resolve to 1080p, multiplier 1)
LOCAL_REQUEST = {"prompt": "a red fox running through snow", "duration_s": 3}
LOCAL_COST = 24  # 3 s x 8 credits (local resolves to 720p with audio)
FUNDS = 200
# the regular status check is 30 s away: only a webhook makes one happen sooner
SLOW_POLLS: dict[str, Any] = {"poll_initial_s": 30, "poll_max_s": 30}


# -- shared helpers ------------------------------------------------------------------------------


async def fund(p: Harness, amount: int = FUNDS) -> None:
    await p.ledger.issue_to_member(1, 7, amount, key=f"seed:7:{amount}")


async def balance(p: Harness) -> tuple[int, int]:
    found = await p.ledger.balance(AccountRef.member(1, 7))
    return found.available, found.pending


async def tracked(p: Harness, job_id: str, timeout_s: float = 5.0) -> Job:
    """Wait until the vendor's job id is recorded (the create's answer was handled)."""

    async def recorded() -> Job | None:
        job = await p.service.jobs.get(job_id)
        return job if job.provider_job_id else None

    return await until_stored(p.db, recorded, timeout_s=timeout_s, what="a provider job id")


async def until_checked(p: Harness, check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until `check()` holds, looking again after each job check the pipeline finishes."""
    await until_counted(p.service.checks_done, check, timeout_s=timeout_s, what="the condition")


def sample(p: Harness, name: str, **labels: str) -> float:
    value = p.service.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def status_checks(p: Harness, provider: str) -> float:
    """How many status checks (polls) the service made at `provider`."""
    return sample(p, "klingbot_provider_request_seconds_count", provider=provider, operation="poll")


def webhooks(p: Harness, provider: str, result: str) -> float:
    return sample(p, "klingbot_webhooks_total", provider=provider, result=result)


def transfer_kinds(transfers: list[Transfer]) -> list[str]:
    return [t.kind.value for t in transfers]


def delivered_bytes(p: Harness, job: Job) -> bytes:
    return (p.sink.out_dir / f"{job.id}.mp4").read_bytes()


async def assert_delivered_once(p: Harness, job: Job, cost: int, size: int) -> None:
    assert job.state is JobState.DELIVERED and job.delivered_via == "file"
    assert await p.captures(job.id) == [cost]
    assert job.charged == cost
    assert p.sink.deliveries == [(job.id, size)]
    assert await balance(p) == (FUNDS - cost, 0)
    assert transfer_kinds(await p.ledger.transfers_for_job(job.id)) == ["pending", "post"]
    report = await p.ledger.audit()
    assert report.ok, report


async def created(p: Harness, job_id: str, double: VendorDouble) -> str:
    """The vendor's id of the job, once the answer to its create is recorded."""
    job = await tracked(p, job_id)
    assert job.provider_job_id in double.jobs
    return job.provider_job_id or ""


# -- fal: signed Ed25519 webhooks ----------------------------------------------------------------


@pytest.fixture
async def fal_double() -> AsyncIterator[FalDouble]:
    async with FalDouble() as d:
        yield d


def fal(double: FalDouble) -> ProviderFactory:
    def build(http: ProviderHttp) -> dict[str, VideoProvider]:
        settings = FalSettings(
            api_key=SecretStr(FAL_KEY),
            base_url=double.base_url,
            jwks_url=double.jwks_url,
            max_concurrent=10,
        )
        return {"fal": FalProvider(settings, http)}

    return build


async def fal_job(p: Harness, double: FalDouble, job_id: str) -> FalJob:
    job = await tracked(p, job_id)
    vendor_job = double.jobs[job.provider_job_id or ""]
    assert isinstance(vendor_job, FalJob)
    return vendor_job


async def post(p: Harness, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with p.session.post(url, data=body, headers=headers) as response:
        return response.status, await response.json()


async def test_fal_signed_webhook_delivers_with_one_capture(
    tmp_path: Path, fal_double: FalDouble
) -> None:
    async with pipeline(tmp_path, fal(fal_double), default_provider="fal", **SLOW_POLLS) as p:
        assert fal_double.jwks_fetches == 1, "the keys were fetched at start-up"
        await fund(p)
        receipt = await p.service.submit(member(), REQUEST)
        assert (receipt.cost, receipt.payer, receipt.available_after) == (COST, "member", 160)
        vendor_job = await fal_job(p, fal_double, receipt.job.id)
        assert vendor_job.webhook_url == f"{p.url}/webhooks/fal/{receipt.job.webhook_token}"
        assert vendor_job.tier == "pro"
        assert (vendor_job.polls, status_checks(p, "fal")) == (0, 0)
        vendor_job.script = ["succeeded"]
        assert await fal_double.send_webhook(vendor_job) == 200
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED, timeout_s=10)
        # the webhook made exactly one status check (the regular one is 30 s away)
        assert (vendor_job.polls, status_checks(p, "fal")) == (1, 1)
        assert webhooks(p, "fal", "accepted") == 1
        assert job.video_url == fal_double.file_url(vendor_job.id)
        await assert_delivered_once(p, job, COST, len(fal_double.video_bytes))
        assert delivered_bytes(p, job) == fal_double.video_bytes
        events = [e.to_state for e in await p.service.jobs.events(job.id)]
        assert events == ["queued", "submitted", "succeeded", "delivered"]


async def test_fal_forged_webhook_is_refused_and_duplicates_are_no_ops(
    tmp_path: Path, fal_double: FalDouble
) -> None:
    async with pipeline(tmp_path, fal(fal_double), default_provider="fal", **SLOW_POLLS) as p:
        await fund(p)
        receipt = await p.service.submit(member(), REQUEST)
        vendor_job = await fal_job(p, fal_double, receipt.job.id)
        vendor_job.script = ["succeeded"]
        url = f"{p.url}/webhooks/fal/{receipt.job.webhook_token}"
        body = fal_double.webhook_body(vendor_job)

        # a well-formed, fresh delivery signed with a key fal never published
        forged = fal_double.sign(body, vendor_job.id, now_s(), key=Ed25519PrivateKey.generate())
        status, reply = await post(p, url, body, forged)
        assert status == 401 and reply["ok"] is False
        await p.service.settle_due()  # whatever the webhook could have asked for has run
        job = await p.service.jobs.get(receipt.job.id)
        assert job.state is JobState.SUBMITTED, "a forged webhook moves nothing"
        assert (vendor_job.polls, status_checks(p, "fal")) == (0, 0)
        assert await p.captures(job.id) == [] and p.sink.deliveries == []
        assert await balance(p) == (160, COST)
        assert webhooks(p, "fal", "forged") == 1 and webhooks(p, "fal", "accepted") == 0

        # the genuine delivery twice at once (fal retries), and once more after delivery
        genuine = fal_double.sign(body, vendor_job.id, now_s())
        replies = await asyncio.gather(*(post(p, url, body, genuine) for _ in range(2)))
        assert sorted(r["reason"] for _, r in replies) == ["duplicate", "ok"]
        assert [s for s, _ in replies] == [200, 200]
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED, timeout_s=10)
        assert await post(p, url, body, fal_double.sign(body, vendor_job.id, now_s())) == (
            200,
            {"ok": True, "reason": "duplicate"},
        )
        await p.service.settle_due()
        assert (vendor_job.polls, status_checks(p, "fal")) == (1, 1)
        assert webhooks(p, "fal", "accepted") == 1 and webhooks(p, "fal", "duplicate") == 2
        await assert_delivered_once(
            p, await p.service.jobs.get(job.id), COST, len(fal_double.video_bytes)
        )
        assert delivered_bytes(p, job) == fal_double.video_bytes


# -- Segmind: no webhooks, the v2 async API polled -----------------------------------------------


@pytest.fixture
async def segmind_double() -> AsyncIterator[SegmindDouble]:
    async with SegmindDouble() as d:
        yield d


def segmind(double: SegmindDouble, work_dir: Path) -> ProviderFactory:
    def build(http: ProviderHttp) -> dict[str, VideoProvider]:
        settings = SegmindSettings(
            api_key=SecretStr(SEGMIND_KEY), base_url=double.base_url, api_mode="v2"
        )
        return {"segmind": SegmindProvider(settings, http, work_dir=work_dir)}

    return build


def segmind_gets(double: SegmindDouble) -> list[str]:
    return [r.path for r in double.requests if r.method == "GET"]


async def test_segmind_poll_only_path_delivers_with_one_capture(
    tmp_path: Path, segmind_double: SegmindDouble
) -> None:
    factory = segmind(segmind_double, tmp_path / "segmind")
    async with pipeline(tmp_path, factory, default_provider="segmind") as p:  # with a public URL
        await fund(p)
        receipt = await p.service.submit(member(), REQUEST)
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED)
        [create] = segmind_double.creates_of(f"/v2/{MODEL}")
        assert create.query == {}, "no webhook is offered to Segmind"
        assert create.json == {
            "prompt": "a red fox running through snow",
            "duration": "5",
            "aspect_ratio": "16:9",
            "generate_audio": True,
        }
        vendor_id = job.provider_job_id
        assert vendor_id == "sg-req-000001" and segmind_double.creates == 1
        status, result = f"/v2/requests/{vendor_id}/status", f"/v2/requests/{vendor_id}"
        assert segmind_gets(segmind_double) == [
            status,  # QUEUED
            status,  # PROCESSING
            status,  # COMPLETED, without the video
            result,  # the video
            f"/files/{vendor_id}.mp4",
        ]
        assert webhooks(p, "segmind", "accepted") == 0
        events = [e.to_state for e in await p.service.jobs.events(job.id)]
        assert events == ["queued", "submitted", "running", "succeeded", "delivered"]
        await assert_delivered_once(p, job, COST, len(segmind_double.video_bytes))
        assert delivered_bytes(p, job) == segmind_double.video_bytes


async def test_segmind_failed_job_voids_the_hold(
    tmp_path: Path, segmind_double: SegmindDouble
) -> None:
    factory = segmind(segmind_double, tmp_path / "segmind")
    async with pipeline(tmp_path, factory, default_provider="segmind") as p:
        await fund(p)
        segmind_double.default_script = ["queued", "running", "failed"]
        receipt = await p.service.submit(member(), REQUEST)
        vendor_id = await created(p, receipt.job.id, segmind_double)
        segmind_double.jobs[vendor_id].error = "the model crashed"
        job = await p.wait_for_state(receipt.job.id, JobState.FAILED)
        assert job.error_kind == "unknown"
        assert job.error_message == "The video provider failed in an unexpected way."
        failed = [e for e in await p.service.jobs.events(job.id) if e.to_state == "failed"]
        assert [e.detail for e in failed] == ["the model crashed"]
        assert await balance(p) == (FUNDS, 0)
        assert await p.captures(job.id) == [] and p.sink.deliveries == []
        assert transfer_kinds(await p.ledger.transfers_for_job(job.id)) == ["pending", "void"]
        assert (await p.ledger.audit()).ok


async def test_segmind_poll_404_then_success_is_delivered(
    tmp_path: Path, segmind_double: SegmindDouble
) -> None:
    factory = segmind(segmind_double, tmp_path / "segmind")
    async with pipeline(tmp_path, factory, default_provider="segmind") as p:
        await fund(p)
        segmind_double.next_poll(404, {"error": "Request sg-req-000001 not found"})
        segmind_double.next_poll(404, {"error": "Request sg-req-000001 not found"})
        receipt = await p.service.submit(member(), REQUEST)
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED)
        assert (
            sample(p, "klingbot_provider_errors_total", provider="segmind", kind="not_found") == 2
        )
        assert segmind_double.jobs["sg-req-000001"].polls == 3, "the 404s advanced nothing"
        await assert_delivered_once(p, job, COST, len(segmind_double.video_bytes))
        assert delivered_bytes(p, job) == segmind_double.video_bytes


async def test_segmind_expired_record_polls_until_the_deadline_then_expires(
    tmp_path: Path, segmind_double: SegmindDouble
) -> None:
    clock = OffsetClock()
    factory = segmind(segmind_double, tmp_path / "segmind")
    async with pipeline(
        tmp_path,
        factory,
        default_provider="segmind",
        clock=clock,
        deadline_s=600,
        late_grace_s=0,
    ) as p:
        await fund(p)
        segmind_double.default_script = ["queued", "running"]
        receipt = await p.service.submit(member(), REQUEST)
        await p.wait_for_state(receipt.job.id, JobState.RUNNING)
        vendor_id = await created(p, receipt.job.id, segmind_double)
        segmind_double.expired_requests.add(vendor_id)  # Segmind forgot the request: 404s

        def not_found() -> float:
            return sample(p, "klingbot_provider_errors_total", provider="segmind", kind="not_found")

        await until_checked(p, lambda: not_found() >= 3)
        job = await p.service.jobs.get(receipt.job.id)
        assert job.state is JobState.RUNNING, "a 404 does not end the job before its deadline"
        assert await balance(p) == (160, COST)
        clock.advance(seconds=601)
        job = await p.wait_for_state(receipt.job.id, JobState.EXPIRED)
        assert job.error_kind == "deadline"
        assert await balance(p) == (FUNDS, 0)
        assert transfer_kinds(await p.ledger.transfers_for_job(job.id)) == ["pending", "expire"]
        assert await p.captures(job.id) == [] and p.sink.deliveries == []
        assert (await p.ledger.audit()).ok
        polls = segmind_double.jobs[vendor_id].polls
        clock.advance(seconds=60)  # past any poll the job could still have due...
        await p.service.settle_due()  # ...and every check due by now has run
        assert segmind_double.jobs[vendor_id].polls == polls, "no more polls after expiry"


# -- local: renders a real MP4, posts its own webhook ---------------------------------------------


def local(work_dir: Path, render_s: float) -> tuple[ProviderFactory, list[LocalProvider]]:
    made: list[LocalProvider] = []

    def build(http: ProviderHttp) -> dict[str, VideoProvider]:
        provider = LocalProvider(LocalSettings(render_s=render_s), http, work_dir=work_dir)
        made.append(provider)
        return {"local": provider}

    return build, made


def assert_playable(path: Path, duration_s: int) -> None:
    """Decode every frame: a real H.264/AAC MP4 of the asked length at 720p 16:9."""
    with av.open(str(path)) as container:
        [video] = container.streams.video
        [audio] = container.streams.audio
        assert (video.codec_context.name, audio.codec_context.name) == ("h264", "aac")
        frames = [frame for frame in container.decode(video=0)]
    assert len(frames) == duration_s * 24
    assert {(f.width, f.height) for f in frames} == {(1280, 720)}


async def test_local_webhook_delivers_with_one_capture(tmp_path: Path) -> None:
    factory, _ = local(tmp_path / "local", render_s=1.0)
    async with pipeline(tmp_path, factory, default_provider="local", **SLOW_POLLS) as p:
        await fund(p)
        receipt = await p.service.submit(member(), LOCAL_REQUEST)
        assert receipt.cost == LOCAL_COST
        await tracked(p, receipt.job.id)
        assert status_checks(p, "local") == 0
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED, timeout_s=15)
        # one callback, and the one status check it prompted (the regular poll is 30 s away)
        assert (webhooks(p, "local", "accepted"), status_checks(p, "local")) == (1, 1)
        size = (p.sink.out_dir / f"{job.id}.mp4").stat().st_size
        await assert_delivered_once(p, job, LOCAL_COST, size)
        assert size == job.media_size_bytes and size > 10_000
        assert_playable(p.sink.out_dir / f"{job.id}.mp4", 3)


@asynccontextmanager
async def slow_proxy(
    session: aiohttp.ClientSession, target: str, delay_s: float
) -> AsyncIterator[str]:
    """A reverse proxy in front of the bot's webhook route whose answers take `delay_s` to get
    back to the caller (as through a real proxy or tunnel)."""

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with session.post(target + request.path, data=body, headers=headers) as reply:
            status, answer = reply.status, await reply.read()
        await asyncio.sleep(delay_s)
        return web.Response(status=status, body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_post("/webhooks/{provider}/{token}", forward)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_local_webhook_completes_the_job_behind_a_slow_proxy(tmp_path: Path) -> None:
    """The webhook is sent once the render is over, so the status check it prompts sees the
    result even when the webhook's own answer is slow (reverse proxy, tunnel)."""
    factory, _ = local(tmp_path / "local", render_s=1.0)
    port = free_port()
    async with (
        aiohttp.ClientSession() as session,
        slow_proxy(session, f"http://127.0.0.1:{port}", delay_s=0.3) as proxy,
        pipeline(
            tmp_path, factory, default_provider="local", port=port, public_url=proxy, **SLOW_POLLS
        ) as p,
    ):
        await fund(p)
        receipt = await p.service.submit(member(), LOCAL_REQUEST)
        await tracked(p, receipt.job.id)
        await until_checked(p, lambda: status_checks(p, "local") == 1, timeout_s=10)
        assert webhooks(p, "local", "accepted") == 1
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED, timeout_s=3)
        assert status_checks(p, "local") == 1
        await assert_delivered_once(p, job, LOCAL_COST, job.media_size_bytes or 0)


async def test_local_restart_mid_render_completes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot stops while the local provider renders; a new service (and a new LocalProvider)
    over the same database and folders finds the job, renders it again and delivers it once."""
    work_dir = tmp_path / "local"
    rendering, release = threading.Event(), threading.Event()

    def dies_mid_render(*args: Any, **kwargs: Any) -> Any:
        # An in-process render thread cannot be killed: this one stands for a render whose
        # process died, leaving the job's spec and no clip.
        rendering.set()
        release.wait(10)
        raise RuntimeError("the process died mid-render")

    monkeypatch.setattr(local_module, "render_preview", dies_mid_render)
    first_factory, first = local(work_dir, render_s=0.5)
    async with pipeline(tmp_path, first_factory, default_provider="local") as p:
        await fund(p)
        receipt = await p.service.submit(member(), LOCAL_REQUEST)
        job = await tracked(p, receipt.job.id)
        await asyncio.to_thread(rendering.wait, 5)
        assert rendering.is_set()
        job = await p.service.jobs.get(job.id)
        assert job.state in (JobState.SUBMITTED, JobState.RUNNING)
        assert await balance(p) == (FUNDS - LOCAL_COST, LOCAL_COST)
        # leaving the block stops the web server, the service and the provider mid-render
    monkeypatch.setattr(local_module, "render_preview", render_preview)
    release.set()
    vendor_id = job.provider_job_id or ""
    assert sorted(f.name for f in work_dir.iterdir()) == [f"{vendor_id}.json"]

    second_factory, second = local(work_dir, render_s=0.5)
    async with pipeline(tmp_path, second_factory, default_provider="local") as p:
        assert second[0] is not first[0]
        done = await p.wait_for_state(job.id, JobState.DELIVERED, timeout_s=15)
        assert second[0].render_task(vendor_id) is not None, "the new provider rendered it again"
        assert done.provider_job_id == vendor_id and done.submit_attempts == 1
        size = (p.sink.out_dir / f"{job.id}.mp4").stat().st_size
        await assert_delivered_once(p, done, LOCAL_COST, size)
        assert_playable(p.sink.out_dir / f"{job.id}.mp4", 3)
        events = [e.to_state for e in await p.service.jobs.events(job.id)]
        assert events == ["queued", "submitted", "running", "succeeded", "delivered"]
