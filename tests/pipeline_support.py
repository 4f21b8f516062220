"""A real pipeline for tests: SQLite file, aiohttp web server on 127.0.0.1, real adapters
pointed at loopback doubles, and a delivery sink that records what it delivered."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bot.pipeline import (
    Delivered,
    DeliveryError,
    DeliverySink,
    Fence,
    MediaStore,
    Metrics,
    Pipeline,
    PipelineConfig,
    ProviderIncident,
    Requester,
)
from bot.pricing import PriceTable
from bot.providers import ProviderHttp, VideoProvider
from bot.web.app import WebServer, build_app
from storage import Clock, Database, Job, JobState, Ledger, OffsetClock
from tests.backends import database_for, default_backend
from tests.provider_support import free_port
from tests.waits import until_stored

ProviderFactory = Callable[[ProviderHttp], dict[str, VideoProvider]]


@dataclass
class RecordingSink:
    """Copies delivered clips into `out_dir` and remembers each delivery."""

    out_dir: Path
    deliveries: list[tuple[str, int]] = field(default_factory=list)
    fail_next: int = 0

    async def deliver(self, job: Job, clip: Path, *, link: str | None, fence: Fence) -> Delivered:
        async with fence():
            if self.fail_next > 0:
                self.fail_next -= 1
                raise DeliveryError("the channel refused the upload")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            target = self.out_dir / f"{job.id}.mp4"
            await asyncio.to_thread(shutil.copyfile, clip, target)
            self.deliveries.append((job.id, target.stat().st_size))
        return Delivered("file", detail=str(target))


@dataclass
class Harness:
    service: Pipeline
    db: Database
    ledger: Ledger
    web: WebServer
    sink: RecordingSink
    clock: Clock
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.web.url

    async def wait_for_state(self, job_id: str, *states: JobState, timeout_s: float = 20.0) -> Job:
        """The job once it is in one of `states` (looked at again after every commit)."""

        async def arrived() -> Job | None:
            job = await self.service.jobs.get(job_id)
            return job if job.state in states else None

        last = await self.service.jobs.get(job_id)
        return await until_stored(
            self.db,
            arrived,
            timeout_s=timeout_s,
            what=f"job {job_id} ({last.state.value} when the wait began) reached {states}",
        )

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
        """Wait until `condition()` holds (checked every 20 ms)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{condition} did not hold within {timeout_s} s")
            await asyncio.sleep(0.02)

    async def captures(self, job_id: str) -> list[int]:
        return [
            t.amount for t in await self.ledger.transfers_for_job(job_id) if t.kind.value == "post"
        ]


def member(
    user_id: int = 7, guild_id: int = 1, interaction_id: int | None = None, **kw: Any
) -> Requester:
    return Requester(
        guild_id=guild_id, channel_id=100, user_id=user_id, interaction_id=interaction_id, **kw
    )


@asynccontextmanager
async def pipeline(
    tmp_path: Path,
    providers: ProviderFactory,
    *,
    default_provider: str,
    clock: Clock | None = None,
    public: bool = True,
    start: bool = True,
    sink: DeliverySink | None = None,
    pricing: PriceTable | None = None,
    incident_handlers: Iterable[Callable[[ProviderIncident], Awaitable[None]]] = (),
    port: int | None = None,
    public_url: str | None = None,
    database: str | None = None,
    **config: Any,
) -> AsyncIterator[Harness]:
    """A pipeline on a fresh database; `public` gives it a public URL (webhooks and media links)
    at its own web server (or `public_url`, a proxy in front of `port`); `start=False` leaves it stopped (call `start` or `open_intake`);
    `database` (a SQLite path or PostgreSQL URL) shares one database with other processes."""
    clock = clock or OffsetClock()
    target = database or str(tmp_path / "pipeline.db")
    if (
        database is None and default_backend() == "postgresql"
    ):  # one database per tmp_path, so a restart finds it
        target = await database_for(tmp_path)
    db = await Database.open(target, clock=clock)
    session = aiohttp.ClientSession()
    http = ProviderHttp(session, timeout_s=5.0, retry_delay_s=0.05)
    adapters = providers(http)
    for adapter in adapters.values():
        await adapter.prepare_webhooks()
    settings = {
        "poll_initial_s": 0.05,
        "poll_max_s": 0.2,
        "deadline_s": 60,
        "polls_per_min": dict.fromkeys(adapters, 100_000),  # tests move many jobs quickly
        "creates_per_min": dict.fromkeys(adapters, 100_000),
        **config,
    }
    recording = RecordingSink(tmp_path / "delivered")
    port = port or free_port()
    if public:
        public_url = public_url or f"http://127.0.0.1:{port}"
    service = Pipeline(
        db=db,
        providers=adapters,
        default_provider=default_provider,
        pricing=pricing or PriceTable(),
        media=MediaStore(tmp_path / "media", public_url, 86400, 10**10, clock),
        delivery=sink or recording,
        session=session,
        config=PipelineConfig(public_url=public_url, **settings),
        metrics=Metrics(),
        incident_handlers=incident_handlers,
    )
    web = WebServer(build_app(service, max_body_bytes=64 * 1024), "127.0.0.1", port)
    await web.start()
    if start:
        await service.start()
    try:
        yield Harness(service, db, Ledger(db), web, recording, clock, session)
    finally:
        await web.stop()
        await service.stop(grace_s=1.0)
        for adapter in adapters.values():
            await adapter.close()
        await http.close()
        await session.close()
        await db.close()
