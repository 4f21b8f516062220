"""Dispatcher: queued -> submitted, fairly.

Each round fills every provider's free slots (its concurrency minus jobs live there minus creates in
flight) from the queue in fair order (members take turns: storage's fair rounds), skipping members
at their live-job limit, under the provider's create rate (which backs off on 429). A job is marked
submitted *before* its create is sent, so a crash can never lead to a second create; a definite
refusal requeues it (later), moves it (Failover) or fails it (Settlement); an unknown outcome
stays submitted and is settled by a webhook or the deadline. A round runs when woken by an event
that may have freed a slot or a place in line (SLOT_EVENTS), and at least once a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from bot.pipeline.backoff import full_jitter_s
from bot.pipeline.config import (
    DEFAULT_CREATES_PER_MIN,
    FAILOVER_AFTER_TRANSIENT,
    MAX_SUBMIT_ATTEMPTS,
    PipelineConfig,
)
from bot.pipeline.creates import Creates
from bot.pipeline.events import SLOT_EVENTS, EventBus, JobEvent
from bot.pipeline.failover import Failover
from bot.pipeline.metrics import Metrics
from bot.pipeline.rates import CreateRate
from bot.pipeline.scheduler import Scheduler
from bot.pipeline.settlement import Settlement
from bot.pipeline.tasks import BackgroundTasks
from bot.pipeline.tracker import Tracker
from bot.pipeline.vendors import Vendors
from bot.pipeline.waiting import Tally, wait_event
from bot.providers import ErrorKind, ProviderError
from storage import Clock, Database, IllegalTransition, Job, JobState, JobStore, Tx

log = logging.getLogger(__name__)

S = JobState
RECOVER_AFTER_MS = 2_000  # after a create's answer was lost, look for what it made
Member = tuple[int, int]  # (guild id, user id)


class Dispatcher:
    def __init__(
        self,
        *,
        db: Database,
        jobs: JobStore,
        clock: Clock,
        vendors: Vendors,
        creates: Creates,
        config: PipelineConfig,
        scheduler: Scheduler,
        tracker: Tracker,
        failover: Failover,
        settlement: Settlement,
        events: EventBus,
        metrics: Metrics,
        tasks: BackgroundTasks,
    ) -> None:
        self._db = db
        self._jobs = jobs
        self._clock = clock
        self._vendors = vendors
        self._creates = creates
        self._config = config
        self._scheduler = scheduler
        self._tracker = tracker
        self._failover = failover
        self._settlement = settlement
        self._events = events
        self._metrics = metrics
        self._tasks = tasks
        self._rates = {
            name: CreateRate(config.creates_per_min.get(name, DEFAULT_CREATES_PER_MIN))
            for name in vendors
        }
        self._wake = asyncio.Event()
        # job id -> (provider, member): picked, create not finished yet
        self._in_flight: dict[str, tuple[str, Member]] = {}
        # providers a job has left the queue of since the last round: the jobs behind it see
        # their new place
        self._queue_moved: set[str] = set()
        events.listen(SLOT_EVENTS, lambda _job, _event: self.wake())
        self.rounds = Tally()  # dispatch rounds finished
        self._in_round = False

    def wake(self) -> None:
        """Run a dispatch round soon."""
        self._wake.set()

    def rate(self, provider: str) -> CreateRate:
        """The provider's create rate (read-only use: its current rate and throttle count)."""
        return self._rates[provider]

    def in_flight(self) -> frozenset[str]:
        """Jobs picked whose create has not finished (still queued in the database meanwhile)."""
        return frozenset(self._in_flight)

    async def next_round(self) -> None:
        """Wait for a whole dispatch round that starts after this call (tests, tools)."""
        wanted = self.rounds.count + (2 if self._in_round else 1)
        self.wake()
        while self.rounds.count < wanted:
            await self.rounds.past(self.rounds.count)

    async def run(self) -> None:
        """The dispatcher loop (a task of the facade)."""
        while True:
            await wait_event(self._wake, 1.0)
            self._wake.clear()
            self._in_round = True
            try:
                await self.dispatch_once()
            except Exception:
                log.exception("dispatcher round failed")
            finally:
                self._in_round = False
                self.rounds.add()

    async def dispatch_once(self) -> None:
        """Fill each provider's free slots from the queue, fairly between members."""
        now = self._clock.now_ms()
        for name in self._vendors:
            if self._rates[name].paused_for_s > 0:
                continue  # the vendor asked us to wait (429)
            live = await self._jobs.count_at_provider(name)
            in_flight = sum(1 for p, _ in self._in_flight.values() if p == name)
            free = self._config.slots(name) - live - in_flight
            picked = await self._pick(name, free, now) if free > 0 else 0
            if picked or name in self._queue_moved:
                self._queue_moved.discard(name)
                await self._publish_positions(name)

    async def _pick(self, name: str, free: int, now: int) -> int:
        """Start creates for up to `free` queued jobs of `name`; return how many."""
        # A member's picked jobs count against their limit from the moment they are picked
        # (they are still queued in the database while they wait for a create slot).
        taken = Counter(member for _, member in self._in_flight.values())
        picked = 0
        for candidate in await self._jobs.queue_candidates(name, now_ms=now, limit=free * 4 + 50):
            job = candidate.job
            if job.id in self._in_flight:
                continue
            member = (job.guild_id, job.user_id)
            max_live = candidate.guild_max_live or self._config.member_max_live
            load = candidate.member_live + taken[member]
            if job.guild_id and not job.limits_exempt and load >= max_live:
                continue  # this member's live jobs are at their limit; others go first
            taken[member] += 1
            picked += 1
            self._in_flight[job.id] = (name, member)
            self._tasks.spawn(self._create(job), f"submit-{job.id}")
            if picked == free:
                break
        return picked

    async def _publish_positions(self, provider: str, *, first: int = 25) -> None:
        """The queue moved: let the front of the line see its new place."""
        for job_id, _ in await self._jobs.queue_positions(provider, limit=first):
            job = await self._jobs.find(job_id)
            if job is not None:
                self._events.publish(job, JobEvent.POSITION)

    async def _create(self, job: Job) -> None:
        try:
            name, provider = self._vendors.require(job.provider)
            await self._rates[name].acquire()
            now = self._clock.now_ms()
            if job.deadline_at_ms is not None and now >= job.deadline_at_ms:
                await self._settlement.expire_queued(job)
                return

            async def leave_queue(tx: Tx) -> Job:
                moved = await self._jobs.transition(
                    job.id,
                    S.SUBMITTED,
                    from_states=frozenset({S.QUEUED}),
                    submit_attempts=job.submit_attempts + 1,
                    submitted_at_ms=now,
                    tx=tx,
                )
                await self._jobs.advance_queue_round(moved.fair_round, tx=tx)
                return moved

            try:
                job = await self._db.write(leave_queue)
            except IllegalTransition:
                return  # cancelled (or taken) meanwhile
            self._queue_moved.add(name)
            self._events.publish(job, JobEvent.SUBMITTED)
            started = time.perf_counter()
            try:
                submission = await self._creates.send(provider, job)
            except ProviderError as error:
                self._metrics.observe_call(name, "submit", started, error)
                await self._create_failed(job, error)
                return
            self._metrics.observe_call(name, "submit", started)
            self._rates[name].succeeded()
            self._failover.recovered(name)
            job = await self._jobs.update(
                job.id,
                provider_job_id=submission.job.id,
                provider_data=dict(submission.job.data),
                provider_status=submission.status.vendor_status,
                next_poll_at_ms=None,
            )
            await self._tracker.apply(job, submission.status)
        finally:
            self._in_flight.pop(job.id, None)
            self.wake()

    async def _create_failed(self, job: Job, error: ProviderError) -> None:
        now = self._clock.now_ms()
        if error.outcome_unknown:
            # It may exist at the vendor: never create again blindly. Recovery (through the
            # tracker) looks for it in a moment; a webhook may adopt it sooner.
            await self._jobs.update(
                job.id, error_kind=error.kind.value, error_message=error.detail[:500]
            )
            self._scheduler.schedule(job.id, now + RECOVER_AFTER_MS)
            log.warning("create for job %s has an unknown outcome: %s", job.id, error.detail)
            return
        if error.kind is ErrorKind.RATE_LIMITED:
            # slow this provider down; the job keeps its place and is never failed for it
            rate = self._rates[job.provider]
            rate.throttled(error.retry_after_s)
            await self._requeue(job, error, rate.paused_for_s)
            return
        vendor_down = error.kind in (ErrorKind.OUT_OF_FUNDS, ErrorKind.AUTH)
        flaky = (
            error.kind is ErrorKind.TRANSIENT and job.submit_attempts >= FAILOVER_AFTER_TRANSIENT
        )
        refusal = None
        if vendor_down or flaky:
            moved = await self._failover.move(job, error)
            if moved.moved:
                return
            refusal = moved.refusal
        if error.retryable and job.submit_attempts < MAX_SUBMIT_ATTEMPTS:
            # the vendor's retry-after (if any) is a floor; the jitter spreads the jobs out
            jitter_s = full_jitter_s(job.submit_attempts - 1, base_s=10.0, cap_s=300.0)
            wait_s = (error.retry_after_s or 0.0) + jitter_s
            await self._requeue(job, error, wait_s)
            return
        await self._settlement.fail(job, error, note=refusal)

    async def _requeue(self, job: Job, error: ProviderError, wait_s: float) -> None:
        await self._jobs.transition(
            job.id,
            S.QUEUED,
            from_states=frozenset({S.SUBMITTED}),
            next_poll_at_ms=self._clock.now_ms() + int(wait_s * 1000),
            error_kind=error.kind.value,
            error_message=error.detail[:500],
            detail=f"create refused ({error.kind.value}); trying again in {wait_s:.0f}s",
        )
