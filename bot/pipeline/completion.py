"""Completion: a succeeded job's clip is downloaded, charged for and delivered, exactly once.

    succeeded ─ download (streamed, capped; a fresh link asked for once if it expired)
              ─ capture (Settlement)
              ─ deliver (the sink: Discord, a file) ─> delivered | delivery_failed (retried)

Each step is idempotent and looks at what is already done (the clip on disk, the hold's
resolution, the job's state), so a restart at any point finishes the job exactly once. At most one
completion per job runs at a time in a process, and only in the process holding the job's lease:
the charge and every outcome recorded (delivered, delivery failed, failed) are conditional on it
in their own transaction, and the post, the one step that cannot be undone, runs inside a fence
(bot.pipeline.leases): the database confirms that this process holds a live lease on the still
undelivered job and extends it past the upload timeout, which bounds the post. A process that
lost the lease (it stalled and another took the job over) leaves the job quietly to the new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import aiohttp

from bot.pipeline.backoff import full_jitter_s
from bot.pipeline.config import PipelineConfig
from bot.pipeline.delivery import DeliveryError, DeliverySink
from bot.pipeline.events import EventBus, JobEvent
from bot.pipeline.leases import LeaseKeeper
from bot.pipeline.media_store import MediaStore
from bot.pipeline.metrics import Metrics
from bot.pipeline.scheduler import Scheduler
from bot.pipeline.settlement import Settlement
from bot.pipeline.tasks import BackgroundTasks
from bot.pipeline.vendors import Vendors
from bot.providers import ErrorKind, ProviderError, ProviderJob
from bot.providers.download import download
from storage import Clock, IllegalTransition, Job, JobState, JobStore, LeaseLost

log = logging.getLogger(__name__)

S = JobState
COMPLETABLE = frozenset({S.SUCCEEDED, S.DELIVERY_FAILED})


class Completion:
    def __init__(
        self,
        *,
        jobs: JobStore,
        clock: Clock,
        vendors: Vendors,
        media: MediaStore,
        delivery: DeliverySink,
        session: aiohttp.ClientSession,
        config: PipelineConfig,
        scheduler: Scheduler,
        settlement: Settlement,
        events: EventBus,
        metrics: Metrics,
        tasks: BackgroundTasks,
        leases: LeaseKeeper,
    ) -> None:
        self._leases = leases
        self._jobs = jobs
        self._clock = clock
        self._vendors = vendors
        self._media = media
        self._delivery = delivery
        self._session = session
        self._config = config
        self._scheduler = scheduler
        self._settlement = settlement
        self._events = events
        self._metrics = metrics
        self._tasks = tasks
        self._running: dict[str, asyncio.Task[None]] = {}

    def complete(self, job: Job) -> None:
        """Start completing a job (at most one completion per job at a time)."""
        running = self._running.get(job.id)
        if running is not None and not running.done():
            return
        task = self._tasks.spawn(self._completion(job.id), f"complete-{job.id}")
        self._running[job.id] = task
        task.add_done_callback(lambda _: self._running.pop(job.id, None))

    async def _completion(self, job_id: str) -> None:
        try:
            await self._steps(job_id)
        except Exception:
            delay_s = full_jitter_s(0, base_s=60.0, cap_s=60.0)
            log.exception("completing job %s failed; retrying in %.0fs", job_id, delay_s)
            self._scheduler.schedule(job_id, self._clock.now_ms() + int(delay_s * 1000))

    async def _steps(self, job_id: str) -> None:
        job = await self._jobs.get(job_id)
        if job.state not in COMPLETABLE:
            return
        try:
            clip = self._media.clip_path(job.id)
            if not await asyncio.to_thread(clip.exists):
                fetched = await self._download(job)
                if fetched is None:
                    return
                job = fetched
            job = await self._settlement.capture(job, held_by=self._leases.owner)
            await self._deliver(job)
        except LeaseLost:  # another process took the job over (this one stalled): it finishes
            log.info("job %s is another process's now; leaving it to that one", job_id)

    @contextlib.asynccontextmanager
    async def _fence(self, job: Job) -> AsyncIterator[None]:
        """Around one post of the clip (the sink enters it): only while this process holds a
        live lease on the undelivered job, extended past the upload timeout that bounds it."""
        timeout_s = self._config.upload_timeout_s
        if not await self._leases.fence(job.id, timeout_s, COMPLETABLE):
            raise LeaseLost(job.id)
        try:
            async with asyncio.timeout(timeout_s):
                yield
        except TimeoutError as error:
            raise DeliveryError(f"the post took longer than {timeout_s:.0f} s") from error

    async def _download(self, job: Job) -> Job | None:
        clip = self._media.clip_path(job.id)
        url = job.video_url
        for attempt in range(2):
            if not url:
                break
            try:
                size = await download(
                    self._session,
                    url,
                    clip,
                    max_bytes=self._config.download_max_bytes,
                    timeout_s=self._config.download_timeout_s,
                    policy=self._vendors.download_policy(job.provider),
                    provider=job.provider,
                )
            except ProviderError as error:
                if error.kind is ErrorKind.RESULT_EXPIRED and attempt == 0:
                    url = await self._fresh_url(job)  # some vendors sign a new link per poll
                    if url and url != job.video_url:
                        job = await self._jobs.update(job.id, video_url=url)
                        continue
                if (
                    error.kind is ErrorKind.TRANSIENT
                    and job.delivery_attempts < self._config.delivery_max_attempts
                ):
                    job = await self._jobs.update(
                        job.id, delivery_attempts=job.delivery_attempts + 1
                    )
                    delay_s = full_jitter_s(job.delivery_attempts, base_s=15.0, cap_s=600.0)
                    self._scheduler.schedule(job.id, self._clock.now_ms() + int(delay_s * 1000))
                    log.warning(
                        "download of %s failed, retrying in %.0fs: %s",
                        job.id,
                        delay_s,
                        error.detail,
                    )
                    return None
                await self._settlement.fail(job, error, held_by=self._leases.owner)
                return None
            return await self._jobs.update(job.id, media_path=str(clip), media_size_bytes=size)
        await self._settlement.fail(
            job,
            ProviderError(ErrorKind.RESULT_EXPIRED, "no video link", provider=job.provider),
            held_by=self._leases.owner,
        )
        return None

    async def _fresh_url(self, job: Job) -> str | None:
        provider = self._vendors.get(job.provider)
        if provider is None or not job.provider_job_id:
            return None
        try:
            status = await provider.poll(ProviderJob(job.provider_job_id, job.provider_data))
        except ProviderError:
            return None
        return status.video_url

    async def _deliver(self, job: Job) -> None:
        clip = self._media.clip_path(job.id)
        try:
            try:
                delivered = await self._delivery.deliver(
                    job, clip, link=self._media.link(job), fence=partial(self._fence, job)
                )
            except (DeliveryError, LeaseLost):
                raise
            except Exception as unexpected:  # a bug in a sink must not strand the job
                log.exception("delivery of %s failed unexpectedly", job.id)
                raise DeliveryError(f"unexpected delivery error: {unexpected!r}") from unexpected
        except DeliveryError as error:
            await self._delivery_failed(job, error)
            return
        try:
            job = await self._jobs.transition(
                job.id,
                S.DELIVERED,
                from_states=COMPLETABLE,
                delivered_via=delivered.via,
                result_message_id=delivered.message_id,
                detail=delivered.detail[:300] or delivered.via,
                held_by=self._leases.owner,
            )
        except IllegalTransition:
            return
        except LeaseLost:  # the post outlived the fence's lease (a stall of minutes)
            log.warning("job %s was posted, but another process had taken it over", job.id)
            return
        self._metrics.deliveries.labels(delivered.via).inc()
        self._events.publish(job, JobEvent.DELIVERED)

    async def _delivery_failed(self, job: Job, error: DeliveryError) -> None:
        attempts = job.delivery_attempts + 1
        changes: dict[str, Any] = {
            "delivery_attempts": attempts,
            "error_message": str(error)[:1000],
        }
        owner = self._leases.owner
        if job.state is S.SUCCEEDED:
            job = await self._jobs.transition(
                job.id, S.DELIVERY_FAILED, detail=str(error)[:300], held_by=owner, **changes
            )
        else:
            job = await self._jobs.update(job.id, held_by=owner, **changes)
        self._events.publish(job, JobEvent.DELIVERY_FAILED)
        if error.retryable and attempts < self._config.delivery_max_attempts:
            delay_s = full_jitter_s(attempts - 1, base_s=30.0, cap_s=600.0)
            self._scheduler.schedule(job.id, self._clock.now_ms() + int(delay_s * 1000))
        log.warning("delivery of %s failed (attempt %d): %s", job.id, attempts, error)
