"""GenerationService: the one orchestrator of a job's life (DESIGN.md sections 5 and 6).

    submit   validate → server rules → price → [hold + job row, one transaction] → queued
    dispatch queued → submitted (marked *before* the create is sent, so a crash can never lead to
             a second create) → provider job id recorded; a definite refusal voids the hold; an
             unknown outcome stays submitted and is settled by a webhook or the deadline
    track    one scheduler polls every live job (interval grows with age, per-provider rate
             limits); webhooks only make a poll happen sooner: the status endpoint is the truth
    complete download (streamed, capped) → capture the hold → deliver; each step is idempotent,
             so a restart at any point finishes the job exactly once
    settle   failure/cancel → void; deadline → expire; a late success after expiry is delivered
             and charged only if the balance covers it

It takes plain ids (guild, channel, user, interaction), never discord.py objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter

from bot.errors import (
    InvalidRequest,
    NotFound,
    NotPermitted,
    PolicyRefusal,
    ServiceUnavailable,
    UserError,
)
from bot.pipeline.delivery import DeliveryError, DeliverySink
from bot.pipeline.events import Notifier
from bot.pipeline.media_store import MediaStore
from bot.pipeline.metrics import Metrics
from bot.pipeline.policy import PolicyGate
from bot.pipeline.rates import CreateRate
from bot.pipeline.scheduler import Scheduler
from bot.pipeline.waiting import wait_event
from bot.pricing import PriceTable
from bot.providers import (
    ErrorKind,
    ProviderError,
    ProviderJob,
    ProviderState,
    ProviderStatus,
    VideoProvider,
    WebhookError,
)
from bot.providers.download import download
from bot.request import VideoRequest, parse_request
from bot.settings import Settings
from storage import (
    AccountRef,
    Database,
    GuildPolicy,
    HoldAlreadyResolved,
    IllegalTransition,
    InsufficientCredits,
    Job,
    JobState,
    JobStore,
    Ledger,
    LedgerError,
    NewJob,
    PolicySnapshot,
    Tx,
)
from storage.ledger import SPEND, TransferKind

log = logging.getLogger(__name__)

S = JobState
LIVE = frozenset({S.SUBMITTED, S.RUNNING})
CANCELLABLE = frozenset({S.AWAITING_APPROVAL, S.QUEUED, S.SUBMITTED, S.RUNNING})
MAX_SUBMIT_ATTEMPTS = 5
FAILOVER_AFTER_TRANSIENT = 3  # failed creates in a row before a job tries the next provider
LATE_POLL_INTERVAL_S = 600.0
SWEEP_INTERVAL_S = 60.0
WEBHOOK_DELIVERY_KEEP_S = 7 * 24 * 3600  # then, if the job is finished, its delivery rows go
DEFAULT_RUN_MS = 240_000  # Kling v3 Pro typically takes 2-5 minutes


@dataclass(frozen=True)
class Requester:
    """Who asks, from where. `charge=False` is for operator jobs (the CLI)."""

    guild_id: int = 0
    channel_id: int = 0
    user_id: int = 0
    role_ids: frozenset[int] = frozenset()
    interaction_id: int | None = None
    upload_limit_bytes: int | None = None
    is_moderator: bool = False
    charge: bool = True


@dataclass(frozen=True)
class Receipt:
    """What a submission produced: the job, its price, who pays, what is left."""

    job: Job
    cost: int
    payer: str
    available_after: int
    replayed: bool = False


@dataclass(frozen=True)
class Quote:
    request: VideoRequest
    provider: str
    cost: int


@dataclass(frozen=True)
class ProviderIncident:
    """A provider refused creates (no funds, bad key, or down); jobs moved to another."""

    provider: str
    kind: str
    detail: str
    moved_to: str
    guild_id: int


@dataclass(frozen=True)
class PipelineConfig:
    deadline_s: int = 3600
    late_grace_s: int = 6 * 3600
    poll_initial_s: float = 5.0
    poll_max_s: float = 60.0
    poll_concurrency: int = 16
    download_max_bytes: int = 500 * 1024 * 1024
    download_timeout_s: float = 600.0
    delivery_max_attempts: int = 5
    default_upload_limit_bytes: int = 10 * 1024 * 1024
    public_url: str | None = None
    max_concurrent: Mapping[str, int] = field(default_factory=dict)
    creates_per_min: Mapping[str, int] = field(default_factory=dict)
    polls_per_min: Mapping[str, int] = field(default_factory=dict)
    provider_chain: tuple[str, ...] = ()
    member_max_live: int = 2
    member_max_queued: int = 5
    member_cooldown_s: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineConfig:
        names = settings.provider_chain
        groups = {name: settings.provider_settings(name) for name in names}
        return cls(
            deadline_s=settings.job_deadline_s,
            late_grace_s=settings.late_result_grace_s,
            poll_initial_s=settings.poll_initial_interval_s,
            poll_max_s=settings.poll_max_interval_s,
            poll_concurrency=settings.poll_concurrency,
            download_max_bytes=settings.download_max_mb * 1024 * 1024,
            download_timeout_s=settings.download_timeout_s,
            delivery_max_attempts=settings.delivery_max_attempts,
            default_upload_limit_bytes=settings.default_upload_limit_mb * 1024 * 1024,
            public_url=settings.public_url,
            max_concurrent={n: g.max_concurrent for n, g in groups.items()},
            creates_per_min={n: g.creates_per_min for n, g in groups.items()},
            polls_per_min={n: g.polls_per_min for n, g in groups.items()},
            provider_chain=tuple(names),
            member_max_live=settings.member_max_live_jobs,
            member_max_queued=settings.member_max_queued_jobs,
            member_cooldown_s=settings.member_cooldown_s,
        )


class GenerationService:
    """Submits, tracks, completes and settles jobs."""

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
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.clock = db.clock
        self.ledger = Ledger(db)
        self.jobs = JobStore(db)
        self.policy = GuildPolicy(db)
        self.gate = PolicyGate(self.policy, self.ledger)
        self.providers = dict(providers)
        self.default_provider = default_provider
        self.pricing = pricing
        self.media = media
        self.delivery = delivery
        self.session = session
        self.config = config or PipelineConfig()
        self.notifier = notifier or Notifier()
        self.metrics = metrics or Metrics()
        self.scheduler = Scheduler(
            self._tick, clock=self.clock, concurrency=self.config.poll_concurrency, name="jobs"
        )
        self._poll_limits = {
            name: AsyncLimiter(self.config.polls_per_min.get(name, 300), 60) for name in providers
        }
        self.rates = {
            name: CreateRate(self.config.creates_per_min.get(name, 60)) for name in providers
        }
        self._incidents: dict[str, set[int]] = {}  # provider -> guilds told about its outage
        self.incident_handlers: list[Callable[[ProviderIncident], Awaitable[None]]] = []
        self._dispatch_wake = asyncio.Event()
        # job id -> (provider, member): picked by the dispatcher, create not finished yet
        self._submitting: dict[str, tuple[str, tuple[int, int]]] = {}
        self._queue_moved: set[str] = set()  # providers a job has left the queue of since
        # the last dispatch round: the jobs behind it see their new place
        self._completing: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self.accepting = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume every unfinished job, then start the loops and accept new work."""
        await self.resume()
        self.scheduler.start()
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._dispatch_loop(), name="dispatcher"),
            loop.create_task(self._sweep_loop(), name="sweeper"),
        ]
        self.accepting = True
        self._dispatch_wake.set()

    async def resume(self) -> int:
        """Schedule every unfinished job that needs the pipeline; return how many."""
        now = self.clock.now_ms()
        count = 0
        for job in await self.jobs.unfinished():
            if job.state in (S.QUEUED, S.AWAITING_APPROVAL):
                continue  # the dispatcher (and approvals) pick these up
            self.scheduler.schedule(job.id, now)
            count += 1
        return count

    async def stop(self, *, grace_s: float = 5.0) -> None:
        """Stop intake, let in-flight work finish for `grace_s`, then cancel the rest."""
        self.accepting = False
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        await self.scheduler.stop()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace_s)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        await self.notifier.drain()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    # -- intake ----------------------------------------------------------------------------------

    def provider_for(self, name: str | None = None) -> tuple[str, VideoProvider]:
        name = name or self.default_provider
        provider = self.providers.get(name)
        if provider is None:
            raise ServiceUnavailable(f"The provider {name!r} is not configured.")
        return name, provider

    async def quote(
        self, data: Mapping[str, Any] | VideoRequest, provider: str | None = None
    ) -> Quote:
        """Validate a request for a provider and price it (nothing is stored or charged)."""
        name, adapter = self.provider_for(provider)
        request = parse_request(data)
        problems = adapter.capabilities.problems(request)
        if problems:
            raise InvalidRequest(problems)
        resolved = adapter.capabilities.resolve(request)
        return Quote(resolved, name, self.pricing.quote(resolved, name))

    async def submit(
        self,
        requester: Requester,
        data: Mapping[str, Any] | VideoRequest,
        *,
        provider: str | None = None,
        parent_job_id: str | None = None,
    ) -> Receipt:
        """Check, price and hold credits for a request, and queue it. Nothing is charged on error."""
        if not self.accepting:
            raise ServiceUnavailable("klingbot is restarting; please try again in a minute.")
        quote = await self.quote(data, provider)
        snapshot = await self.gate.check(
            guild_id=requester.guild_id,
            channel_id=requester.channel_id,
            user_id=requester.user_id,
            request=quote.request,
        )
        now = self.clock.now_ms()
        new = NewJob(
            provider=quote.provider,
            request=quote.request.model_dump(mode="json"),
            cost=quote.cost,
            guild_id=requester.guild_id,
            channel_id=requester.channel_id,
            user_id=requester.user_id,
            interaction_id=requester.interaction_id,
            upload_limit_bytes=requester.upload_limit_bytes
            or self.config.default_upload_limit_bytes,
            parent_job_id=parent_job_id,
            deadline_at_ms=now + self.config.deadline_s * 1000,
            role_ids=tuple(sorted(requester.role_ids)),
            limits_exempt=requester.is_moderator and snapshot.moderators_exempt,
        )

        exempt = requester.is_moderator and snapshot.moderators_exempt

        async def reserve_and_record(tx: Tx) -> Receipt:
            if requester.interaction_id is not None:
                existing = await self.jobs.find_by_interaction(requester.interaction_id, tx=tx)
                if existing is not None:  # the same interaction again (double click, retry)
                    return Receipt(existing, existing.cost, existing.payer, 0, replayed=True)
            if requester.guild_id and not exempt:
                await self._check_member_limits(tx, requester, snapshot, quote.provider, now)
            if not requester.charge:
                job = await self.jobs.create(new, tx=tx)
                return Receipt(job, quote.cost, "none", 0)
            payer = await self.gate.choose_payer(
                tx,
                snapshot=snapshot,
                guild_id=requester.guild_id,
                user_id=requester.user_id,
                role_ids=requester.role_ids,
                cost=quote.cost,
                now_ms=now,
            )
            threshold = snapshot.approval_threshold
            over = threshold is not None and quote.cost > threshold
            if payer.kind == "pool" and over and not requester.is_moderator:
                # nothing is held while a moderator decides; approval reserves then
                waiting = NewJob(**{**new.__dict__, "payer": "pool", "state": S.AWAITING_APPROVAL})
                job = await self.jobs.create(waiting, tx=tx)
                pool_left = await self.ledger.balance(payer.account, tx=tx)
                return Receipt(job, quote.cost, "pool", pool_left.available)
            key = (
                f"hold:{requester.interaction_id}" if requester.interaction_id else f"hold:{new.id}"
            )
            hold = await self.ledger.reserve(
                key=key,
                payer=payer.account,
                amount=quote.cost,
                job_id=new.id,
                user_id=requester.user_id,
                tx=tx,
            )
            job = await self.jobs.create(
                NewJob(**{**new.__dict__, "payer": payer.kind, "hold_id": hold.id}), tx=tx
            )
            after = await self.ledger.balance(payer.account, tx=tx)
            return Receipt(job, quote.cost, payer.kind, after.available)

        receipt = await self.db.write(reserve_and_record)
        if not receipt.replayed:
            self.notifier.publish(receipt.job, "queued")
            self._dispatch_wake.set()
        return receipt

    async def _check_member_limits(
        self, tx: Tx, requester: Requester, snapshot: PolicySnapshot, provider: str, now: int
    ) -> None:
        """Queued jobs and cooldown per member; a refusal names the limit and when it frees up."""
        activity = await self.jobs.member_activity(requester.guild_id, requester.user_id, tx=tx)
        cooldown_s = snapshot.member_cooldown_s
        if cooldown_s is None:
            cooldown_s = self.config.member_cooldown_s
        if cooldown_s and activity.last_request_ms is not None:
            ready_ms = activity.last_request_ms + cooldown_s * 1000
            if now < ready_ms:
                raise PolicyRefusal(
                    "cooldown",
                    f"This server asks members to wait {cooldown_s} s between videos.",
                    resets_at_ms=ready_ms,
                )
        max_queued = snapshot.member_max_queued
        if max_queued is None:
            max_queued = self.config.member_max_queued
        if activity.queued >= max_queued:
            frees_ms = None
            if activity.oldest_live_submitted_ms is not None:
                frees_ms = max(
                    now, activity.oldest_live_submitted_ms + await self.typical_run_ms(provider)
                )
            message = (
                f"You already have {activity.queued} videos waiting, the most this server allows"
                f" ({max_queued}); another can join when one of them starts."
            )
            if frees_ms is not None:
                message += f" That should be <t:{frees_ms // 1000}:R>."
            raise PolicyRefusal("queued_jobs", message)

    async def cancel(self, job_id: str, *, actor_id: int, is_moderator: bool = False) -> Job:
        """Cancel a job for its requester or a moderator; the hold is voided."""
        job = await self.jobs.find(job_id)
        if job is None:
            raise NotFound(f"There is no job {job_id}.")
        if actor_id != job.user_id and not is_moderator:
            raise NotPermitted(
                "Only the member who asked for this video or a moderator can cancel it."
            )
        if job.state not in CANCELLABLE:
            raise UserError(
                f"This job can no longer be cancelled (it is {job.state.value.replace('_', ' ')})."
            )
        provider = self.providers.get(job.provider)
        if job.state in LIVE and job.provider_job_id and provider and provider.capabilities.cancel:
            try:
                await provider.cancel(ProviderJob(job.provider_job_id, job.provider_data))
            except ProviderError as error:
                log.warning("cancel of %s at %s failed: %r", job.id, job.provider, error)
        try:
            job = await self._settle(
                job, S.CANCELLED, CANCELLABLE, void_reason="cancelled", detail=f"by {actor_id}"
            )
        except IllegalTransition:
            job = await self.jobs.get(job_id)
            raise UserError(
                f"This job can no longer be cancelled (it is {job.state.value})."
            ) from None
        self.scheduler.discard(job.id)
        self._dispatch_wake.set()
        return job

    async def position_and_eta(self, job: Job) -> tuple[int | None, int | None]:
        """A queued job's place in line; a running job's expected finish (unix ms)."""
        position = await self.jobs.queue_position(job)
        eta_ms = None
        run_ms = await self.typical_run_ms(job.provider)
        if job.state in LIVE and job.submitted_at_ms:
            eta_ms = job.submitted_at_ms + run_ms
        elif position is not None:
            slots = max(1, self.config.max_concurrent.get(job.provider, 5))
            eta_ms = self.clock.now_ms() + (1 + (position - 1) // slots) * run_ms
        return position, eta_ms

    async def typical_run_ms(self, provider: str) -> int:
        """The median run time of the provider's recent jobs (4 minutes until there are some)."""
        runs = sorted(await self.jobs.recent_run_ms(provider))
        return runs[len(runs) // 2] if runs else DEFAULT_RUN_MS

    # -- approvals -------------------------------------------------------------------------------

    async def approve(self, job_id: str, *, actor_id: int) -> Job:
        """A moderator approves a waiting job: its credits are held now and it is queued."""
        job = await self._awaiting(job_id)
        snapshot = await self.policy.get(job.guild_id)
        now = self.clock.now_ms()

        async def run(tx: Tx) -> Job:
            payer = await self.gate.choose_payer(
                tx,
                snapshot=snapshot,
                guild_id=job.guild_id,
                user_id=job.user_id,
                role_ids=frozenset(job.role_ids),
                cost=job.cost,
                now_ms=now,
            )
            hold = await self.ledger.reserve(
                key=f"hold:approved:{job.id}",
                payer=payer.account,
                amount=job.cost,
                job_id=job.id,
                user_id=job.user_id,
                tx=tx,
            )
            await self.policy.record(
                job.guild_id,
                actor_id=actor_id,
                action="approve",
                target_id=job.user_id,
                detail=f"job {job.id}, {job.cost} credits",
                tx=tx,
            )
            await self.jobs.assign_round(job.id, tx=tx)  # joins the queue now, not when it asked
            return await self.jobs.transition(
                job.id,
                S.QUEUED,
                from_states=frozenset({S.AWAITING_APPROVAL}),
                payer=payer.kind,
                hold_id=hold.id,
                deadline_at_ms=now + self.config.deadline_s * 1000,
                detail=f"approved by {actor_id}",
                tx=tx,
            )

        try:
            approved = await self.db.write(run)
        except IllegalTransition:
            raise UserError("This request was already answered.") from None
        self.notifier.publish(approved, "approved")
        self._dispatch_wake.set()
        return approved

    async def deny(self, job_id: str, *, actor_id: int, reason: str | None = None) -> Job:
        """A moderator declines a waiting job; nothing was held, so nothing is refunded."""
        job = await self._awaiting(job_id)
        why = f"A moderator declined it: {reason}" if reason else "A moderator declined it."

        async def run(tx: Tx) -> Job:
            await self.policy.record(
                job.guild_id,
                actor_id=actor_id,
                action="deny",
                target_id=job.user_id,
                detail=f"job {job.id}",
                reason=reason,
                tx=tx,
            )
            return await self.jobs.transition(
                job.id,
                S.REJECTED,
                from_states=frozenset({S.AWAITING_APPROVAL}),
                error_kind="denied",
                error_message=why,
                finished_at_ms=self.clock.now_ms(),
                detail=f"denied by {actor_id}",
                tx=tx,
            )

        try:
            denied = await self.db.write(run)
        except IllegalTransition:
            raise UserError("This request was already answered.") from None
        self.notifier.publish(denied, "rejected")
        return denied

    async def _awaiting(self, job_id: str) -> Job:
        job = await self.jobs.find(job_id)
        if job is None:
            raise NotFound(f"There is no job {job_id}.")
        if job.state is not S.AWAITING_APPROVAL:
            raise UserError(
                f"This request was already answered (it is {job.state.value.replace('_', ' ')})."
            )
        return job

    async def lapse_approvals(self) -> int:
        """Reject requests that waited longer than their guild's approval timeout."""
        now = self.clock.now_ms()
        lapsed = 0
        for job in await self.jobs.in_states(frozenset({S.AWAITING_APPROVAL})):
            timeout_s = (await self.policy.get(job.guild_id)).approval_timeout_s
            if now - job.created_at_ms < timeout_s * 1000:
                continue
            hours = max(1, round(timeout_s / 3600))
            try:
                job = await self.jobs.transition(
                    job.id,
                    S.REJECTED,
                    from_states=frozenset({S.AWAITING_APPROVAL}),
                    error_kind="lapsed",
                    finished_at_ms=now,
                    error_message=f"No moderator answered within {hours} h; nothing was charged.",
                    detail="approval lapsed",
                )
            except IllegalTransition:
                continue
            lapsed += 1
            self.notifier.publish(job, "rejected")
        return lapsed

    # -- webhooks --------------------------------------------------------------------------------

    async def receive_webhook(
        self, provider_name: str, token: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str]:
        """Verify and record a webhook; return (HTTP status, short reason). Work happens later."""
        provider = self.providers.get(provider_name)
        job = await self.jobs.webhook_target(token) if provider else None
        if provider is None or job is None or job.provider != provider_name:
            self.metrics.webhooks.labels(provider_name[:20], "unknown_job").inc()
            return 404, "unknown job"
        try:
            event = provider.parse_webhook(headers, body)
        except WebhookError as error:
            result = "forged" if error.http_status == 401 else "malformed"
            self.metrics.webhooks.labels(provider_name, result).inc()
            log.warning("webhook for job %s refused (%s): %s", job.job_id, result, error.detail)
            return error.http_status, error.detail
        if (
            event.provider_job_id
            and job.provider_job_id
            and event.provider_job_id != job.provider_job_id
        ):
            self.metrics.webhooks.labels(provider_name, "mismatch").inc()
            return 400, "webhook is for another provider job"
        state = event.status.state.value if event.status else "hint"
        key = event.delivery_id or f"{job.job_id}:{state}"
        if not await self.jobs.record_webhook(provider_name, key, job.job_id):
            self.metrics.webhooks.labels(provider_name, "duplicate").inc()
            return 200, "duplicate"
        self.metrics.webhooks.labels(provider_name, "accepted").inc()
        if event.provider_job_id and not job.provider_job_id:
            self._spawn(
                self._adopt_provider_job(job.job_id, event.provider_job_id), f"adopt-{job.job_id}"
            )
        else:
            self.scheduler.poke(job.job_id)
        return 200, "ok"

    async def _adopt_provider_job(self, job_id: str, provider_job_id: str) -> None:
        """A webhook told us the id of a job whose create got no answer: track it now."""
        await self.jobs.update(job_id, provider_job_id=provider_job_id)
        self.scheduler.poke(job_id)

    # -- dispatch: queued → submitted --------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await wait_event(self._dispatch_wake, 1.0)
            self._dispatch_wake.clear()
            try:
                await self._dispatch_once()
            except Exception:
                log.exception("dispatcher round failed")

    async def _dispatch_once(self) -> None:
        """Fill each provider's free slots from the queue, fairly between members."""
        now = self.clock.now_ms()
        for name in self.providers:
            rate = self.rates[name]
            if rate.paused_for_s > 0:
                continue  # the vendor asked us to wait (429)
            limit = self.config.max_concurrent.get(name, 5)
            live = await self.jobs.count_at_provider(name)
            free = limit - live - sum(1 for p, _ in self._submitting.values() if p == name)
            picked = await self._pick(name, free, now) if free > 0 else 0
            if picked or name in self._queue_moved:
                self._queue_moved.discard(name)
                await self._publish_positions(name)

    async def _pick(self, name: str, free: int, now: int) -> int:
        """Start creates for up to `free` queued jobs of `name`; return how many."""
        # A member's picked jobs count against their limit from the moment they are picked
        # (they are still queued in the database while they wait for a create slot).
        taken = Counter(member for _, member in self._submitting.values())
        picked = 0
        for candidate in await self.jobs.queue_candidates(name, now_ms=now, limit=free * 4 + 50):
            job = candidate.job
            if job.id in self._submitting:
                continue
            member = (job.guild_id, job.user_id)
            max_live = candidate.guild_max_live or self.config.member_max_live
            load = candidate.member_live + taken[member]
            if job.guild_id and not job.limits_exempt and load >= max_live:
                continue  # this member's live jobs are at their limit; others go first
            taken[member] += 1
            picked += 1
            self._submitting[job.id] = (name, member)
            self._spawn(self._submit(job), f"submit-{job.id}")
            if picked == free:
                break
        return picked

    async def _publish_positions(self, provider: str, *, first: int = 25) -> None:
        """The queue moved: let the front of the line see its new place."""
        for job_id, _ in await self.jobs.queue_positions(provider, limit=first):
            job = await self.jobs.find(job_id)
            if job is not None:
                self.notifier.publish(job, "position")

    async def _submit(self, job: Job) -> None:
        try:
            name, provider = self.provider_for(job.provider)
            await self.rates[name].acquire()
            now = self.clock.now_ms()
            if job.deadline_at_ms is not None and now >= job.deadline_at_ms:
                await self._settle(job, S.EXPIRED, frozenset({S.QUEUED}), expire=True)
                return

            async def leave_queue(tx: Tx) -> Job:
                moved = await self.jobs.transition(
                    job.id,
                    S.SUBMITTED,
                    from_states=frozenset({S.QUEUED}),
                    submit_attempts=job.submit_attempts + 1,
                    submitted_at_ms=now,
                    tx=tx,
                )
                await self.jobs.advance_queue_round(moved.fair_round, tx=tx)
                return moved

            try:
                job = await self.db.write(leave_queue)
            except IllegalTransition:
                return  # cancelled (or taken) meanwhile
            self._queue_moved.add(name)
            self.notifier.publish(job, "submitted")
            request = VideoRequest.model_validate(job.request)
            started = time.perf_counter()
            try:
                submission = await provider.submit(request, webhook_url=self._webhook_url(job))
            except ProviderError as error:
                self._observe(name, "submit", started, error)
                await self._submit_failed(job, error)
                return
            self._observe(name, "submit", started)
            self.rates[name].succeeded()
            self._incidents.pop(name, None)  # the provider works again
            job = await self.jobs.update(
                job.id,
                provider_job_id=submission.job.id,
                provider_data=dict(submission.job.data),
                provider_status=submission.status.vendor_status,
                next_poll_at_ms=None,
            )
            await self._apply(job, submission.status)
        finally:
            self._submitting.pop(job.id, None)
            self._dispatch_wake.set()

    async def _submit_failed(self, job: Job, error: ProviderError) -> None:
        now = self.clock.now_ms()
        if error.outcome_unknown:
            # It may exist at the vendor: never create again. A webhook (the URL carries this
            # job's token) or the deadline settles it.
            await self.jobs.update(
                job.id, error_kind=error.kind.value, error_message=error.detail[:500]
            )
            self.scheduler.schedule(job.id, job.deadline_at_ms or now)
            log.warning("create for job %s has an unknown outcome: %s", job.id, error.detail)
            return
        if error.kind is ErrorKind.RATE_LIMITED:
            # slow this provider down; the job keeps its place and is never failed for it
            self.rates[job.provider].throttled(error.retry_after_s)
            await self._requeue(job, error, self.rates[job.provider].paused_for_s)
            return
        vendor_down = error.kind in (ErrorKind.OUT_OF_FUNDS, ErrorKind.AUTH)
        flaky = (
            error.kind is ErrorKind.TRANSIENT and job.submit_attempts >= FAILOVER_AFTER_TRANSIENT
        )
        if (vendor_down or flaky) and await self._failover(job, error):
            return
        if error.retryable and job.submit_attempts < MAX_SUBMIT_ATTEMPTS:
            wait_s = error.retry_after_s or min(300.0, 10.0 * 2 ** (job.submit_attempts - 1))
            await self._requeue(job, error, wait_s)
            return
        await self._fail(job, error)

    async def _requeue(self, job: Job, error: ProviderError, wait_s: float) -> None:
        await self.jobs.transition(
            job.id,
            S.QUEUED,
            from_states=frozenset({S.SUBMITTED}),
            next_poll_at_ms=self.clock.now_ms() + int(wait_s * 1000),
            error_kind=error.kind.value,
            error_message=error.detail[:500],
            detail=f"create refused ({error.kind.value}); trying again in {wait_s:.0f}s",
        )

    async def _failover(self, job: Job, error: ProviderError) -> bool:
        """Move a job whose create failed to the next configured provider that can make it."""
        chain = list(self.config.provider_chain) or [self.default_provider]
        if job.provider not in chain:
            return False
        request = VideoRequest.model_validate(job.request)
        for name in chain[chain.index(job.provider) + 1 :]:
            adapter = self.providers.get(name)
            if adapter is None or adapter.capabilities.problems(request):
                continue
            cost = self.pricing.quote(adapter.capabilities.resolve(request), name)
            try:
                moved = await self.db.write(
                    partial(self._move_job, job=job, provider=name, cost=cost, error=error)
                )
            except LedgerError as refusal:
                log.info("job %s cannot move to %s: %s", job.id, name, refusal)
                continue
            self.notifier.publish(moved, "failover")
            await self._report_incident(job, error, name)
            self._dispatch_wake.set()
            return True
        return False

    async def _move_job(
        self, tx: Tx, job: Job, provider: str, cost: int, error: ProviderError
    ) -> Job:
        """Requeue on another provider at its price: the same hold, topped up if it costs more."""
        held = 0
        if job.hold_id is not None:
            hold, _ = await self.ledger.hold(job.hold_id, tx=tx)
            held = hold.amount
        changes: dict[str, Any] = {}
        if job.hold_id is not None and cost > held and job.topup_hold_id is None:
            payer = self._payer_account(job)
            topup = await self.ledger.reserve(
                key=f"topup:{job.id}:{provider}",
                payer=payer,
                amount=cost - held,
                job_id=job.id,
                user_id=job.user_id,
                reason="failover",
                tx=tx,
            )
            changes["topup_hold_id"] = topup.id
        return await self.jobs.transition(
            job.id,
            S.QUEUED,
            from_states=frozenset({S.SUBMITTED}),
            provider=provider,
            cost=cost,
            submit_attempts=0,
            next_poll_at_ms=None,
            provider_job_id=None,
            error_kind=error.kind.value,
            error_message=error.detail[:500],
            detail=f"moved from {job.provider} to {provider} ({error.kind.value})",
            tx=tx,
            **changes,
        )

    async def _report_incident(self, job: Job, error: ProviderError, moved_to: str) -> None:
        """Tell each affected guild once per provider incident, not once per job."""
        told = self._incidents.setdefault(job.provider, set())
        if job.guild_id in told:
            return
        told.add(job.guild_id)
        incident = ProviderIncident(
            job.provider, error.kind.value, error.detail[:300], moved_to, job.guild_id
        )
        for handler in list(self.incident_handlers):
            try:
                await handler(incident)
            except Exception:
                log.exception("incident handler failed")

    def _payer_account(self, job: Job) -> AccountRef:
        if job.payer == "pool":
            return AccountRef.pool(job.guild_id)
        return AccountRef.member(job.guild_id, job.user_id)

    def _webhook_url(self, job: Job) -> str | None:
        provider = self.providers[job.provider]
        if not self.config.public_url or provider.capabilities.webhooks == "none":
            return None
        return f"{self.config.public_url}/webhooks/{job.provider}/{job.webhook_token}"

    # -- tracking --------------------------------------------------------------------------------

    async def _tick(self, job_id: str) -> None:
        """The scheduler's callback: move one job along according to its state."""
        try:
            await self._advance(job_id)
        except Exception:
            log.exception("job %s: unexpected error; trying again in 30 s", job_id)
            self.scheduler.schedule(job_id, self.clock.now_ms() + 30_000)

    async def _advance(self, job_id: str) -> None:
        job = await self.jobs.find(job_id)
        if job is None:
            return
        if job.state in LIVE:
            await self._poll(job)
        elif job.state in (S.SUCCEEDED, S.DELIVERY_FAILED):
            self._complete(job)
        elif job.state is S.EXPIRED:
            await self._poll_late(job)

    def _interval_s(self, job: Job) -> float:
        """Poll interval: starts at poll_initial_s and grows with the job's age."""
        age_s = max(0.0, (self.clock.now_ms() - (job.submitted_at_ms or job.created_at_ms)) / 1000)
        return min(self.config.poll_max_s, self.config.poll_initial_s * (1 + age_s / 60))

    async def _poll(self, job: Job) -> None:
        now = self.clock.now_ms()
        if job.deadline_at_ms is not None and now >= job.deadline_at_ms:
            await self._expire(job)
            return
        if not job.provider_job_id:
            self.scheduler.schedule(job.id, job.deadline_at_ms or now + 60_000)
            return
        provider = self.providers.get(job.provider)
        if provider is None:
            self.scheduler.schedule(job.id, now + 60_000)
            return
        status = await self._ask(provider, job)
        if status is None:
            return
        await self._apply(job, status)

    async def _ask(self, provider: VideoProvider, job: Job) -> ProviderStatus | None:
        """Poll the provider; on failure reschedule (honouring retry-after) and return None."""
        assert job.provider_job_id is not None
        started = time.perf_counter()
        try:
            async with self._poll_limits[job.provider]:
                status = await provider.poll(ProviderJob(job.provider_job_id, job.provider_data))
        except ProviderError as error:
            self._observe(job.provider, "poll", started, error)
            wait_s = error.retry_after_s or self._interval_s(job)
            self.scheduler.schedule(job.id, self.clock.now_ms() + int(wait_s * 1000))
            log.info("poll of %s failed (%s): %s", job.id, error.kind.value, error.detail)
            return None
        self._observe(job.provider, "poll", started)
        return status

    async def _apply(self, job: Job, status: ProviderStatus) -> None:
        """Record what the provider said and move the job accordingly."""
        if status.state in (ProviderState.QUEUED, ProviderState.RUNNING):
            changes: dict[str, Any] = {}
            if status.progress_pct is not None and status.progress_pct != job.progress_pct:
                changes["progress_pct"] = status.progress_pct
            if status.vendor_status and status.vendor_status != job.provider_status:
                changes["provider_status"] = status.vendor_status
            if status.state is ProviderState.RUNNING and job.state is S.SUBMITTED:
                job = await self.jobs.transition(job.id, S.RUNNING, from_states=LIVE, **changes)
                self.notifier.publish(job, "running")
            elif changes:
                job = await self.jobs.update(job.id, **changes)
                self.notifier.publish(job, "progress")
            self.scheduler.schedule(job.id, self.clock.now_ms() + int(self._interval_s(job) * 1000))
        elif status.state is ProviderState.SUCCEEDED:
            try:
                job = await self.jobs.transition(
                    job.id,
                    S.SUCCEEDED,
                    from_states=LIVE | {S.EXPIRED},
                    video_url=status.video_url,
                    progress_pct=100,
                    provider_status=status.vendor_status,
                    finished_at_ms=self.clock.now_ms(),
                )
            except IllegalTransition:
                return  # someone else recorded the outcome (webhook and poll racing)
            self._dispatch_wake.set()  # a slot at the provider is free again
            if job.submitted_at_ms:
                self.metrics.job_seconds.labels(job.provider).observe(
                    (job.finished_at_ms or 0) / 1000 - job.submitted_at_ms / 1000
                )
            self.notifier.publish(job, "succeeded")
            self._complete(job)
        elif status.state is ProviderState.FAILED:
            error = status.error or ProviderError(
                ErrorKind.UNKNOWN, "the job failed", provider=job.provider
            )
            await self._fail(job, error, vendor_status=status.vendor_status)
        else:
            with contextlib.suppress(IllegalTransition):
                job = await self._settle(
                    job, S.CANCELLED, LIVE, void_reason="cancelled at the provider"
                )

    async def _poll_late(self, job: Job) -> None:
        """An expired job may still finish: look now and then, until the grace period ends."""
        ended_ms = (job.finished_at_ms or job.updated_at_ms) + self.config.late_grace_s * 1000
        if not job.provider_job_id or self.clock.now_ms() > ended_ms:
            return
        provider = self.providers.get(job.provider)
        if provider is None:
            return
        status = await self._ask(provider, job)
        if status is None:
            return
        if status.state is ProviderState.SUCCEEDED:
            log.info("job %s finished after its deadline; delivering it", job.id)
            await self._apply(job, status)
        elif not status.state.is_terminal:
            self.scheduler.schedule(job.id, self.clock.now_ms() + int(LATE_POLL_INTERVAL_S * 1000))

    # -- settling --------------------------------------------------------------------------------

    async def _settle(
        self,
        job: Job,
        to_state: JobState,
        from_states: frozenset[JobState],
        *,
        void_reason: str | None = None,
        expire: bool = False,
        detail: str | None = None,
        **changes: Any,
    ) -> Job:
        """Move a job to a failure-like state and release its hold, in one transaction."""

        async def run(tx: Tx) -> Job:
            moved = await self.jobs.transition(
                job.id,
                to_state,
                from_states=from_states,
                finished_at_ms=self.clock.now_ms(),
                detail=detail,
                tx=tx,
                **changes,
            )
            for hold_id in (moved.hold_id, moved.topup_hold_id):
                if hold_id is None:
                    continue
                with contextlib.suppress(HoldAlreadyResolved):
                    if expire:
                        await self.ledger.expire(hold_id, tx=tx)
                    else:
                        await self.ledger.void(hold_id, reason=void_reason or "void", tx=tx)
            return moved

        settled = await self.db.write(run)
        self.notifier.publish(settled, to_state.value)
        self._dispatch_wake.set()  # a slot (or a member's live allowance) may be free now
        return settled

    async def _fail(
        self, job: Job, error: ProviderError, *, vendor_status: str | None = None
    ) -> None:
        extra: dict[str, Any] = {"provider_status": vendor_status} if vendor_status else {}
        try:
            await self._settle(
                job,
                S.FAILED,
                frozenset({S.QUEUED, S.SUBMITTED, S.RUNNING, S.SUCCEEDED}),
                void_reason=error.kind.value,
                **extra,
                error_kind=error.kind.value,
                error_message=str(error)[:1000],
                detail=error.detail[:500],
            )
        except IllegalTransition:
            return
        self.metrics.provider_errors.labels(job.provider, error.kind.value).inc()
        self.scheduler.discard(job.id)
        log.info("job %s failed: %r", job.id, error)

    async def _expire(self, job: Job) -> None:
        try:
            job = await self._settle(
                job,
                S.EXPIRED,
                LIVE | {S.QUEUED},
                expire=True,
                error_kind="deadline",
                error_message="The video provider did not finish in time; your credits were returned.",
            )
        except IllegalTransition:
            return
        provider = self.providers.get(job.provider)
        if job.provider_job_id and provider is not None and provider.capabilities.cancel:
            with contextlib.suppress(ProviderError):
                await provider.cancel(ProviderJob(job.provider_job_id, job.provider_data))
        if job.provider_job_id and self.config.late_grace_s > 0:
            self.scheduler.schedule(job.id, self.clock.now_ms() + int(LATE_POLL_INTERVAL_S * 1000))

    # -- completion: download → capture → deliver ------------------------------------------------

    def _complete(self, job: Job) -> None:
        """Start completing a job (at most one completion per job at a time)."""
        running = self._completing.get(job.id)
        if running is not None and not running.done():
            return
        task = self._spawn(self._completion(job.id), f"complete-{job.id}")
        self._completing[job.id] = task
        task.add_done_callback(lambda _: self._completing.pop(job.id, None))

    async def _completion(self, job_id: str) -> None:
        try:
            await self._complete_steps(job_id)
        except Exception:
            log.exception("completing job %s failed; retrying in a minute", job_id)
            self.scheduler.schedule(job_id, self.clock.now_ms() + 60_000)

    async def _complete_steps(self, job_id: str) -> None:
        job = await self.jobs.get(job_id)
        if job.state not in (S.SUCCEEDED, S.DELIVERY_FAILED):
            return
        clip = self.media.clip_path(job.id)
        if not await asyncio.to_thread(clip.exists):
            fetched = await self._download(job)
            if fetched is None:
                return
            job = fetched
        job = await self._capture(job)
        await self._deliver(job)

    async def _download(self, job: Job) -> Job | None:
        clip = self.media.clip_path(job.id)
        url = job.video_url
        for attempt in range(2):
            if not url:
                break
            try:
                size = await download(
                    self.session,
                    url,
                    clip,
                    max_bytes=self.config.download_max_bytes,
                    timeout_s=self.config.download_timeout_s,
                    provider=job.provider,
                )
            except ProviderError as error:
                if error.kind is ErrorKind.RESULT_EXPIRED and attempt == 0:
                    url = await self._fresh_url(job)  # some vendors sign a new link per poll
                    if url and url != job.video_url:
                        job = await self.jobs.update(job.id, video_url=url)
                        continue
                if (
                    error.kind is ErrorKind.TRANSIENT
                    and job.delivery_attempts < self.config.delivery_max_attempts
                ):
                    job = await self.jobs.update(
                        job.id, delivery_attempts=job.delivery_attempts + 1
                    )
                    delay_s = 15.0 * 2**job.delivery_attempts
                    self.scheduler.schedule(job.id, self.clock.now_ms() + int(delay_s * 1000))
                    log.warning(
                        "download of %s failed, retrying in %.0fs: %s",
                        job.id,
                        delay_s,
                        error.detail,
                    )
                    return None
                await self._fail(job, error)
                return None
            return await self.jobs.update(job.id, media_path=str(clip), media_size_bytes=size)
        await self._fail(
            job, ProviderError(ErrorKind.RESULT_EXPIRED, "no video link", provider=job.provider)
        )
        return None

    async def _fresh_url(self, job: Job) -> str | None:
        provider = self.providers.get(job.provider)
        if provider is None or not job.provider_job_id:
            return None
        try:
            status = await provider.poll(ProviderJob(job.provider_job_id, job.provider_data))
        except ProviderError:
            return None
        return status.video_url

    async def _capture(self, job: Job) -> Job:
        """Charge for a finished clip once; a late success is charged only if the balance covers it."""
        if job.hold_id is None or job.payer == "none":
            return job
        hold, resolution = await self.ledger.hold(job.hold_id)
        if resolution is None or resolution.kind is TransferKind.POST:

            async def run(tx: Tx) -> Job:
                post = await self.ledger.capture(hold.id, min(job.cost, hold.amount), tx=tx)
                charged = post.amount
                if job.topup_hold_id is not None:  # a failover to a pricier provider
                    topup, _ = await self.ledger.hold(job.topup_hold_id, tx=tx)
                    extra = max(0, min(job.cost - charged, topup.amount))
                    charged += (await self.ledger.capture(topup.id, extra, tx=tx)).amount
                return await self.jobs.update(job.id, charged=charged, tx=tx)

            return await self.db.write(run)
        if job.charged:
            return job
        account = (
            AccountRef.pool(job.guild_id)
            if job.payer == "pool"
            else AccountRef.member(job.guild_id, job.user_id)
        )

        async def late(tx: Tx) -> Job:
            await self.ledger.transfer(
                key=f"late:{job.id}",
                debit=account,
                credit=SPEND,
                amount=job.cost,
                reason="late_capture",
                user_id=job.user_id,
                job_id=job.id,
                tx=tx,
            )
            return await self.jobs.update(job.id, charged=job.cost, tx=tx)

        try:
            charged = await self.db.write(late)
        except InsufficientCredits:
            log.warning("job %s finished late; delivered without charge (balance too low)", job.id)
            return job
        log.info("job %s finished late; charged %d credits", job.id, job.cost)
        return charged

    async def _deliver(self, job: Job) -> None:
        clip = self.media.clip_path(job.id)
        try:
            try:
                delivered = await self.delivery.deliver(job, clip, link=self.media.link(job))
            except DeliveryError:
                raise
            except Exception as unexpected:  # a bug in a sink must not strand the job
                log.exception("delivery of %s failed unexpectedly", job.id)
                raise DeliveryError(f"unexpected delivery error: {unexpected!r}") from unexpected
        except DeliveryError as error:
            attempts = job.delivery_attempts + 1
            changes: dict[str, Any] = {
                "delivery_attempts": attempts,
                "error_message": str(error)[:1000],
            }
            if job.state is S.SUCCEEDED:
                job = await self.jobs.transition(
                    job.id, S.DELIVERY_FAILED, detail=str(error)[:300], **changes
                )
            else:
                job = await self.jobs.update(job.id, **changes)
            self.notifier.publish(job, "delivery_failed")
            if error.retryable and attempts < self.config.delivery_max_attempts:
                delay_s = 30.0 * 2 ** (attempts - 1)
                self.scheduler.schedule(job.id, self.clock.now_ms() + int(delay_s * 1000))
            log.warning("delivery of %s failed (attempt %d): %s", job.id, attempts, error)
            return
        try:
            job = await self.jobs.transition(
                job.id,
                S.DELIVERED,
                from_states=frozenset({S.SUCCEEDED, S.DELIVERY_FAILED}),
                delivered_via=delivered.via,
                result_message_id=delivered.message_id,
                detail=delivered.detail[:300] or delivered.via,
            )
        except IllegalTransition:
            return
        self.metrics.deliveries.labels(delivered.via).inc()
        self.notifier.publish(job, "delivered")

    # -- housekeeping ----------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                await self.sweep()
            except Exception:
                log.exception("sweep failed")

    async def sweep(self) -> None:
        """Expire holds no live job stands behind, expire overdue queued jobs, lapse approvals,
        prune media and old webhook deliveries of finished jobs."""
        now = self.clock.now_ms()
        cutoff = now - (self.config.deadline_s + 600) * 1000
        for hold in await self.ledger.open_holds_before(cutoff):
            job = await self.jobs.find(hold.job_id) if hold.job_id else None
            if job is None or job.is_final or job.state is S.EXPIRED:
                with contextlib.suppress(HoldAlreadyResolved):
                    await self.ledger.expire(hold.id)
                    log.warning("expired orphan hold %d (job %s)", hold.id, hold.job_id)
        for job in await self.jobs.in_states(frozenset({S.QUEUED})):
            if (
                job.deadline_at_ms is not None
                and now >= job.deadline_at_ms
                and job.id not in self._submitting
            ):
                with contextlib.suppress(IllegalTransition):
                    await self._settle(job, S.EXPIRED, frozenset({S.QUEUED}), expire=True)
        await self.lapse_approvals()
        keep = await self.jobs.unfinished_ids()
        removed = await asyncio.to_thread(self.media.prune, keep)
        if removed:
            log.info("media retention removed %d files", len(removed))
        await self.jobs.prune_webhook_deliveries(now - WEBHOOK_DELIVERY_KEEP_S * 1000)

    def _observe(
        self, provider: str, operation: str, started: float, error: ProviderError | None = None
    ) -> None:
        self.metrics.provider_seconds.labels(provider, operation).observe(
            time.perf_counter() - started
        )
        if error is not None:
            self.metrics.provider_errors.labels(provider, error.kind.value).inc()
