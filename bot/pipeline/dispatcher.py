"""Dispatcher: queued -> submitted, fairly, under limits that hold across processes.

Each round, for each provider, one write transaction claims jobs from the queue (`_claim`): it
locks the provider's create budget (storage.VendorRates; FOR UPDATE on PostgreSQL), counts the
jobs live at the provider in the database, takes up to that many free slots' worth of tokens
from the budget, and moves jobs out of the queue in fair order (members take turns: storage's
fair rounds), skipping members at their live-job limit, each with this process's lease. So a
vendor's slots and create rate are shared by every process on the database, not per process.
A job is marked submitted *before* its create is sent, so a crash can never lead to a second
create; a definite refusal requeues it (later), moves it (Failover) or fails it (Settlement); an
unknown outcome stays submitted and is settled by a webhook or the deadline (or by another
process, after this one died, through its lease). A 429 halves the shared rate. A round runs
when woken by an event that may have freed a slot or a place in line (SLOT_EVENTS), when the
next create token is due, and at least once a second.
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
from bot.pipeline.leases import LeaseKeeper
from bot.pipeline.metrics import Metrics
from bot.pipeline.rates import CreateRate
from bot.pipeline.scheduler import Scheduler
from bot.pipeline.settlement import Settlement
from bot.pipeline.tasks import BackgroundTasks
from bot.pipeline.tracker import Tracker
from bot.pipeline.vendors import Vendors
from bot.pipeline.waiting import Tally, wait_event
from bot.providers import ErrorKind, ProviderError
from storage import Clock, Database, Job, JobState, JobStore, Tx, VendorRates

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
        leases: LeaseKeeper,
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
        self._leases = leases
        self._rate_rows = VendorRates(db)
        self._rates = {
            name: CreateRate(
                config.creates_per_min.get(name, DEFAULT_CREATES_PER_MIN), clock=self._clock
            )
            for name in vendors
        }
        self._wake = asyncio.Event()
        self._next_round_s = 1.0  # until the next round at the latest (a create token is due)
        self._in_flight: set[str] = set()  # claimed (submitted) jobs whose create is being sent
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
            await wait_event(self._wake, self._next_round_s)
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
        self._next_round_s = 1.0
        for name in self._vendors:
            picked, overdue, wait_s = await self._claim_for(name)
            if wait_s > 0:
                self._next_round_s = min(self._next_round_s, max(0.01, wait_s))
            for job in overdue:
                await self._settlement.expire_queued(job)
            for job in picked:
                self._in_flight.add(job.id)
                self._events.publish(job, JobEvent.SUBMITTED)
                self._tasks.spawn(self._create(job), f"submit-{job.id}")
            if picked or overdue or name in self._queue_moved:
                self._queue_moved.discard(name)
                await self._publish_positions(name)

    async def _claim_for(self, name: str) -> tuple[list[Job], list[Job], float]:
        """Claim queued jobs of `name` for free slots under its create budget: (claimed jobs,
        overdue queued jobs seen, seconds until the next create token if it ran out)."""
        now = self._clock.now_ms()
        slots = self._config.slots(name)
        rate = self._rates[name]
        if rate.paused_until_ms > now:
            return [], [], 0.0  # the vendor asked us to wait (429), as last seen here
        # cheap reads first: most rounds find nothing to do and need no write transaction
        if await self._jobs.count_at_provider(name) >= slots:
            return [], [], 0.0
        if not await self._jobs.queue_candidates(name, now_ms=now, limit=1):
            return [], [], 0.0

        async def claim(tx: Tx) -> tuple[list[Job], list[Job], float]:
            state = await self._rate_rows.lock(name, rate.initial(now), tx=tx)
            free = slots - await self._jobs.count_at_provider(name, tx=tx)
            if free <= 0:
                return [], [], 0.0
            allowed, wait_s = rate.available(state, now, free)
            if allowed == 0:
                rate.seen(state)
                return [], [], wait_s
            picked: list[Job] = []
            overdue: list[Job] = []
            taken: Counter[Member] = Counter()  # this round's picks, per member
            candidates = await self._jobs.queue_candidates(
                name, now_ms=now, limit=allowed * 4 + 50, tx=tx
            )
            for candidate in candidates:
                job = candidate.job
                if job.deadline_at_ms is not None and now >= job.deadline_at_ms:
                    overdue.append(job)
                    continue
                member = (job.guild_id, job.user_id)
                max_live = candidate.guild_max_live or self._config.member_max_live
                if (
                    job.guild_id
                    and not job.limits_exempt
                    and candidate.member_live + taken[member] >= max_live
                ):
                    continue  # this member's live jobs are at their limit; others go first
                taken[member] += 1
                picked.append(await self._leave_queue(job, now, tx))
                if len(picked) == allowed:
                    break
            await self._rate_rows.save(name, rate.take(state, now, len(picked)), tx=tx)
            return picked, overdue, wait_s if len(picked) == allowed else 0.0

        return await self._db.write(claim)

    async def _leave_queue(self, job: Job, now: int, tx: Tx) -> Job:
        """Mark a claimed job submitted, leased to this process (its create goes next)."""
        moved = await self._jobs.transition(
            job.id,
            S.SUBMITTED,
            from_states=frozenset({S.QUEUED}),
            submit_attempts=job.submit_attempts + 1,
            submitted_at_ms=now,
            lease_owner=self._leases.owner,
            lease_until_ms=self._leases.until_ms(),
            tx=tx,
        )
        await self._jobs.advance_queue_round(moved.fair_round, tx=tx)
        tx.after_commit(lambda: self._leases.claimed(moved.id))
        return moved

    async def _publish_positions(self, provider: str, *, first: int = 25) -> None:
        """The queue moved: let the front of the line see its new place."""
        for job_id, _ in await self._jobs.queue_positions(provider, limit=first):
            job = await self._jobs.find(job_id)
            if job is not None:
                self._events.publish(job, JobEvent.POSITION)

    async def _create(self, job: Job) -> None:
        """Send the create of a claimed (submitted, leased) job."""
        try:
            name, provider = self._vendors.require(job.provider)
            self._queue_moved.add(name)
            started = time.perf_counter()
            try:
                submission = await self._creates.send(provider, job)
            except ProviderError as error:
                self._metrics.observe_call(name, "submit", started, error)
                await self._create_failed(job, error)
                return
            self._metrics.observe_call(name, "submit", started)
            await self._rate_succeeded(name)
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
            self._in_flight.discard(job.id)
            self.wake()

    async def _rate_succeeded(self, name: str) -> None:
        """A create went through: the shared rate grows back if a 429 lowered it."""
        rate = self._rates[name]
        if rate.per_min >= rate.configured_per_min:
            return  # as last seen here: nothing to grow (a claim refreshes the view)

        async def grow(tx: Tx) -> None:
            now = self._clock.now_ms()
            grown = rate.succeeded(await self._rate_rows.lock(name, rate.initial(now), tx=tx), now)
            if grown is not None:
                await self._rate_rows.save(name, grown, tx=tx)

        await self._db.write(grow)

    async def _throttled(self, name: str, retry_after_s: float | None) -> None:
        """The vendor answered 429: halve the shared rate and pause it."""
        rate = self._rates[name]

        async def halve(tx: Tx) -> None:
            now = self._clock.now_ms()
            state = await self._rate_rows.lock(name, rate.initial(now), tx=tx)
            await self._rate_rows.save(name, rate.throttled(state, now, retry_after_s), tx=tx)

        await self._db.write(halve)

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
            await self._throttled(job.provider, error.retry_after_s)
            await self._requeue(job, error, self._rates[job.provider].paused_for_s)
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
