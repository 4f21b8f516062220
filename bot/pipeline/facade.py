"""Pipeline: the one object the Discord front end, the web app, the CLI and the tests call.

It builds the stages once, wires them (each gets its collaborators in its constructor), starts
and stops them, restarts a stage loop that died, and passes calls through. It holds no job logic.

    Intake ──queued──> Dispatcher ──create──> Tracker ──succeeded──> Completion ──> DeliverySink
      │ (Approvals)        │ Failover            │  ^ WebhookInbox (hints)    │
      └─────────── Settlement (the only code that resolves holds) <──────────┘   Sweeper
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

import aiohttp

from bot.errors import ServiceUnavailable
from bot.pipeline.approvals import Approvals
from bot.pipeline.completion import Completion
from bot.pipeline.config import PipelineConfig
from bot.pipeline.creates import Creates
from bot.pipeline.delivery import DeliverySink
from bot.pipeline.dispatcher import Dispatcher
from bot.pipeline.events import EventBus, JobObserver
from bot.pipeline.failover import Failover, IncidentHandler
from bot.pipeline.intake import Intake
from bot.pipeline.leases import LeaseKeeper
from bot.pipeline.media_store import MediaStore
from bot.pipeline.metrics import Metrics
from bot.pipeline.models import Actor, Quote, Receipt, Requester
from bot.pipeline.policy import PolicyGate
from bot.pipeline.rates import CreateRate
from bot.pipeline.recovery import Recoveries
from bot.pipeline.scheduler import Scheduler
from bot.pipeline.settlement import Settlement
from bot.pipeline.sweeper import Sweeper
from bot.pipeline.tasks import BackgroundTasks
from bot.pipeline.tracker import Tracker
from bot.pipeline.vendors import Vendors
from bot.pipeline.waiting import Tally
from bot.pipeline.webhooks import WebhookInbox
from bot.pricing import PriceTable
from bot.providers import VideoProvider
from bot.request import VideoRequest
from storage import Database, GuildPolicy, Job, JobStore, Leases, Ledger, WorkedJobs

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0


class Pipeline:
    """Submits, tracks, completes and settles jobs (DESIGN.md sections 5 and 6)."""

    def __init__(
        self,
        *,
        db: Database,
        providers: Mapping[str, VideoProvider],
        default_provider: str,
        pricing: PriceTable,
        media: MediaStore,
        delivery: DeliverySink,
        session: aiohttp.ClientSession,
        config: PipelineConfig | None = None,
        metrics: Metrics | None = None,
        observers: Iterable[JobObserver] = (),
        incident_handlers: Iterable[IncidentHandler] = (),
    ) -> None:
        self.db = db
        self.clock = db.clock
        self.jobs = JobStore(db)
        self.ledger = Ledger(db)
        self.policy = GuildPolicy(db)
        self.media = media
        self.config = config or PipelineConfig()
        self.metrics = metrics or Metrics()
        self.events = EventBus(observers)
        self._tasks = BackgroundTasks()
        self._scheduler = Scheduler(
            clock=self.clock, concurrency=self.config.poll_concurrency, name="jobs"
        )
        self.leases = LeaseKeeper(
            leases=Leases(db, WorkedJobs(late_grace_ms=self.config.late_grace_s * 1000)),
            clock=self.clock,
            process_id=self.config.process_id,
            lease_s=self.config.lease_s,
            scheduler=self._scheduler,
            events=self.events,
        )
        vendors = Vendors(providers, default_provider)
        gate = PolicyGate(self.policy, self.ledger)
        self._settlement = Settlement(
            db=db,
            ledger=self.ledger,
            scheduler=self._scheduler,
            metrics=self.metrics,
            jobs=self.jobs,
            events=self.events,
        )
        completion = Completion(
            clock=self.clock,
            vendors=vendors,
            media=media,
            delivery=delivery,
            session=session,
            config=self.config,
            scheduler=self._scheduler,
            settlement=self._settlement,
            metrics=self.metrics,
            tasks=self._tasks,
            jobs=self.jobs,
            events=self.events,
            leases=self.leases,
        )
        creates = Creates(media=media, config=self.config)
        recoveries = Recoveries(
            jobs=self.jobs,
            clock=self.clock,
            vendors=vendors,
            creates=creates,
            scheduler=self._scheduler,
            events=self.events,
        )
        self._tracker = Tracker(
            clock=self.clock,
            vendors=vendors,
            config=self.config,
            scheduler=self._scheduler,
            settlement=self._settlement,
            completion=completion,
            recoveries=recoveries,
            metrics=self.metrics,
            jobs=self.jobs,
            events=self.events,
            leases=self.leases,
        )
        failover = Failover(
            db=db,
            ledger=self.ledger,
            policy=self.policy,
            vendors=vendors,
            pricing=pricing,
            config=self.config,
            incident_handlers=incident_handlers,
            jobs=self.jobs,
            events=self.events,
        )
        self._dispatcher = Dispatcher(
            db=db,
            clock=self.clock,
            vendors=vendors,
            creates=creates,
            config=self.config,
            scheduler=self._scheduler,
            tracker=self._tracker,
            failover=failover,
            settlement=self._settlement,
            metrics=self.metrics,
            tasks=self._tasks,
            jobs=self.jobs,
            events=self.events,
            leases=self.leases,
        )
        self._intake = Intake(
            db=db,
            ledger=self.ledger,
            gate=gate,
            clock=self.clock,
            vendors=vendors,
            pricing=pricing,
            config=self.config,
            scheduler=self._scheduler,
            settlement=self._settlement,
            jobs=self.jobs,
            events=self.events,
        )
        self._approvals = Approvals(
            db=db,
            ledger=self.ledger,
            policy=self.policy,
            gate=gate,
            clock=self.clock,
            config=self.config,
            jobs=self.jobs,
            events=self.events,
        )
        self._webhooks = WebhookInbox(
            jobs=self.jobs,
            vendors=vendors,
            leases=self.leases,
            metrics=self.metrics,
            tasks=self._tasks,
        )
        self._sweeper = Sweeper(
            jobs=self.jobs,
            ledger=self.ledger,
            clock=self.clock,
            media=media,
            config=self.config,
            settlement=self._settlement,
            approvals=self._approvals,
            dispatcher=self._dispatcher,
        )
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._accepting = False
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """Whether new requests are taken (false before start and from the start of shutdown)."""
        return self._accepting

    def open_intake(self) -> None:
        """Take requests without running anything else (restart tests; see also `start`)."""
        self._accepting = True

    def close_intake(self) -> None:
        """Refuse new requests from now on (the first step of shutdown)."""
        self._accepting = False

    async def start(self) -> None:
        """Resume every unfinished job no other live process works on (bot.pipeline.leases),
        then start the loops and accept new work."""
        await self.jobs.unfinished()  # remembers their webhook targets on the way
        await self.leases.resume()  # schedules the jobs no live process holds
        self._scheduler.start(self._tracker.tick)
        self._stopping = False
        self._supervise("dispatcher", self._dispatcher.run)
        self._supervise("sweeper", self._sweeper.run)
        self._supervise("leases", self.leases.run)
        self._accepting = True
        self._dispatcher.wake()

    def _supervise(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a stage loop; if it ever ends other than by shutdown, log it and start it again."""
        task = asyncio.get_running_loop().create_task(loop(), name=name)
        self._loops[name] = task

        def ended(done: asyncio.Task[None]) -> None:
            if self._stopping or done.cancelled():
                return
            log.error("stage loop %s ended; restarting it", name, exc_info=done.exception())
            asyncio.get_running_loop().call_later(RESTART_DELAY_S, restart)

        def restart() -> None:
            if not self._stopping:
                self._supervise(name, loop)

        task.add_done_callback(ended)

    async def stop(self, *, grace_s: float = 5.0) -> None:
        """Stop intake, let in-flight work finish for `grace_s`, then cancel the rest."""
        self._accepting = False
        self._stopping = True
        loops = list(self._loops.values())
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        self._loops = {}
        await self._scheduler.stop()
        await self._tasks.close(grace_s=grace_s)
        await self.events.drain()

    # -- intake and approvals --------------------------------------------------------------------

    async def quote(
        self, data: Mapping[str, Any] | VideoRequest, provider: str | None = None
    ) -> Quote:
        """Validate a request for a provider and price it (nothing is stored or charged)."""
        return await self._intake.quote(data, provider)

    async def submit(
        self,
        requester: Requester,
        data: Mapping[str, Any] | VideoRequest,
        *,
        provider: str | None = None,
        parent_job_id: str | None = None,
    ) -> Receipt:
        """Check, price and hold credits for a request, and queue it. Nothing is charged on error."""
        if not self._accepting:
            raise ServiceUnavailable("klingbot is restarting; please try again in a minute.")
        return await self._intake.submit(
            requester, data, provider=provider, parent_job_id=parent_job_id
        )

    async def job_for(self, job_id: str, actor: Actor) -> Job:
        """The job `actor` names, if it is in the actor's server (or the actor owns the bot);
        NotFound otherwise, the same answer whether it does not exist or is another server's."""
        return await self._intake.job_for(job_id, actor)

    async def cancel(self, job_id: str, actor: Actor) -> Job:
        """Cancel a job for its requester or a moderator of its server; the hold is voided."""
        return await self._intake.cancel(job_id, actor)

    async def position_and_eta(self, job: Job) -> tuple[int | None, int | None]:
        """A queued job's place in line; a running job's expected finish (unix ms)."""
        return await self._intake.position_and_eta(job)

    async def typical_run_ms(self, provider: str) -> int:
        return await self._intake.typical_run_ms(provider)

    async def approve(self, job_id: str, actor: Actor) -> Job:
        """A moderator of the job's server approves it: credits are held and it is queued."""
        return await self._approvals.approve(job_id, actor)

    async def deny(self, job_id: str, actor: Actor, *, reason: str | None = None) -> Job:
        """A moderator of the job's server declines it; nothing was held."""
        return await self._approvals.deny(job_id, actor, reason=reason)

    async def lapse_approvals(self) -> int:
        return await self._approvals.lapse()

    # -- provider side ---------------------------------------------------------------------------

    async def receive_webhook(
        self, provider_name: str, token: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str]:
        """Verify and record a webhook; return (HTTP status, short reason). Work happens later."""
        return await self._webhooks.receive(provider_name, token, headers, body)

    def poke(self, job_id: str) -> None:
        """Look at a job now (as a webhook would make it), instead of at its next due time."""
        self._scheduler.poke(job_id)

    def due_at(self, job_id: str) -> int | None:
        """When the tracker next looks at a job (unix ms; 0: as soon as it can), if scheduled."""
        return self._scheduler.due_at(job_id)

    def create_rate(self, provider: str) -> CreateRate:
        """The provider's create rate as the dispatcher runs it (read it; do not drive it)."""
        return self._dispatcher.rate(provider)

    def creates_in_flight(self) -> frozenset[str]:
        """Jobs picked by the dispatcher whose create has not finished."""
        return self._dispatcher.in_flight()

    @property
    def checks_done(self) -> Tally:
        """Job checks (a status poll, a completion step) finished so far; wait on it to see
        the next one end (tests, tools)."""
        return self._scheduler.done

    async def settle_due(self) -> None:
        """Wait until every job check due now (a webhook's poke included) has run to its end."""
        await self._scheduler.settle_due()

    async def next_dispatch_round(self) -> None:
        """Wait for a whole dispatch round that starts after this call: whatever the queue
        allows by now has been picked."""
        await self._dispatcher.next_round()

    def subscribe(self, observer: JobObserver) -> None:
        """Watch job events (a front end that comes and goes, like the CLI's progress bar)."""
        self.events.subscribe(observer)

    async def retire_media(self, job_id: str) -> Job:
        """The clip's message was deleted: its /media link answers 404 from now on and the kept
        clip (and any re-encoded copy) is deleted. Idempotent."""
        job = await self.jobs.retire_media(job_id)
        await asyncio.to_thread(self.media.remove, job_id)
        return job

    async def sweep(self) -> None:
        """Expire orphan holds and overdue queued jobs, lapse approvals, prune (once a minute)."""
        await self._sweeper.sweep()
