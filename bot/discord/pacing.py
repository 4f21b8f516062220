"""Pacing the bot's messages: Discord's rate limits respected before Discord has to enforce them.

Every message the bot posts or edits in a channel (status messages, clips, log posts) goes
through one `Pacer`. Per channel it keeps at most `count` requests live in Discord's window (a
request is live while in flight and for a window after its answer, so any `count + 1` of them
reach Discord at least a window apart, whatever the network delays), and across channels it keeps
a global budget below Discord's 50 requests per second. Status edits are coalesced per job: a
pending edit is replaced by a newer one (the edit reads the job when it is sent, so the latest
state wins) and final states go first. The limits start at Discord's documented values and follow
the `X-RateLimit-*` headers discord.py receives (seen through an aiohttp trace): a channel's
limit and window, an exhausted bucket, a 429. Requests the pacer did not send (interaction
responses excepted, which Discord does not count) still count against the limits.

`Schedule` decides what may be sent and when, from the time it is given (no clock, no I/O);
`Pacer` runs it on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import SimpleNamespace
from typing import Any, Generic, TypeVar

import aiohttp

log = logging.getLogger(__name__)

T = TypeVar("T")
P = TypeVar("P")

# A message post or edit in a channel: Discord's bucket for these is per channel (deleting and
# reading messages have buckets of their own).
POST_ROUTE = re.compile(r"/api/v\d+/channels/(\d+)/messages")
EDIT_ROUTE = re.compile(r"/api/v\d+/channels/(\d+)/messages/\d+")
API_ROUTE = re.compile(r"/api/v\d+/")
# Interaction responses and followups are not bound to the global limit.
EXEMPT_ROUTE = re.compile(r"/api/v\d+/(?:interactions|webhooks)/")
MAX_QUIET_LANES = 256  # past this many channels, forget those with nothing recent


class PacerClosed(RuntimeError):
    """A request was still waiting for its turn when the bot shut down."""


class Priority(IntEnum):
    """What goes first in a channel: new messages (a job's status message comes before its
    clip, which replies to it), then clips and final states, then progress."""

    POST = 0
    FINAL = 1
    PROGRESS = 2


@dataclass(frozen=True)
class Window:
    """At most `count` requests per `period_s`."""

    count: int
    period_s: float


@dataclass(frozen=True)
class PacingLimits:
    """The limits the pacer starts from (a channel's follow its headers once it has some)."""

    # Discord's message create/edit bucket per channel (counted together, to be safe: Discord
    # reports one bucket for both).
    channel: Window = Window(5, 5.0)
    # Discord allows 50 requests per second per bot; the rest of the bot needs some of them.
    global_budget: Window = Window(40, 1.0)
    # Added to every window: rounding of the headers and the gap between Discord's clock and ours.
    margin_s: float = 0.05


@dataclass(frozen=True)
class RateLimitHeaders:
    """The `X-RateLimit-*` headers of one answer, those that were present and made sense."""

    limit: int | None = None
    remaining: int | None = None
    reset_after_s: float | None = None
    retry_after_s: float | None = None
    scope: str | None = None
    is_global: bool = False


def parse_ratelimit_headers(headers: Mapping[str, str]) -> RateLimitHeaders:
    """Read Discord's rate-limit headers; missing or malformed values are left out."""
    lowered = {key.lower(): value for key, value in headers.items()}
    return RateLimitHeaders(
        limit=_number(lowered.get("x-ratelimit-limit"), int, 1, 100_000),
        remaining=_number(lowered.get("x-ratelimit-remaining"), int, 0, 100_000),
        reset_after_s=_number(lowered.get("x-ratelimit-reset-after"), float, 0.0, 86_400.0),
        retry_after_s=_number(lowered.get("retry-after"), float, 0.0, 86_400.0),
        scope=lowered.get("x-ratelimit-scope"),
        is_global=lowered.get("x-ratelimit-global", "").strip().lower() == "true",
    )


def _number(raw: str | None, kind: Callable[[str], T], low: T, high: T) -> T | None:
    if raw is None:
        return None
    try:
        value = kind(raw.strip())
    except (ValueError, OverflowError):
        return None
    return value if low <= value <= high else None  # type: ignore[operator]


class Gauge:
    """The requests live in one rate limit: in flight, or answered less than a window ago.

    A request may start while fewer than `count` are live. Then for any `count + 1` requests,
    the last one started at least a window after an earlier one was answered, so they reach
    Discord at least a window apart, whatever the network delays."""

    def __init__(self, window: Window, margin_s: float) -> None:
        self.count = window.count
        self.period_s = window.period_s
        self.margin_s = margin_s
        self.in_flight = 0
        self.blocked_until = 0.0
        self._answered: deque[float] = deque()  # when each recent request was answered

    @property
    def span_s(self) -> float:
        return self.period_s + self.margin_s

    def free_at(self, now: float) -> float | None:
        """When a request may start (None: only once one in flight is answered)."""
        while self._answered and self._answered[0] + self.span_s <= now:
            self._answered.popleft()
        excess = self.in_flight + len(self._answered) - self.count
        if excess < 0:
            return max(now, self.blocked_until)
        if excess >= len(self._answered):
            return None
        return max(self._answered[excess] + self.span_s, self.blocked_until)

    def quiet(self, now: float) -> bool:
        """Nothing in flight, answered within a window, or blocked: nothing worth keeping."""
        return self.free_at(now) == now and not self._answered and self.in_flight == 0

    def start(self) -> None:
        self.in_flight += 1

    def finish(self, now: float, *, sent: bool = True) -> None:
        """A request was answered at `now` (or, `sent=False`, never went out)."""
        self.in_flight = max(0, self.in_flight - 1)
        if sent:
            self._answered.append(now)

    def block(self, until: float) -> None:
        self.blocked_until = max(self.blocked_until, until)

    def learn(self, headers: RateLimitHeaders, now: float) -> None:
        """Follow Discord's view of the bucket: its limit, its window, an exhausted bucket."""
        limit, remaining, reset_after = headers.limit, headers.remaining, headers.reset_after_s
        if limit is not None:
            self.count = limit
        if limit is not None and remaining == limit - 1 and reset_after:
            self.period_s = reset_after  # the first request of a fresh window: its whole length
        if remaining == 0 and reset_after is not None:
            self.block(now + reset_after + self.margin_s)


@dataclass
class _Pending(Generic[P]):
    key: Hashable
    payload: P
    priority: Priority
    seq: int
    ready_at: float


@dataclass
class _Lane(Generic[P]):
    gauge: Gauge
    pending: dict[Hashable, _Pending[P]] = field(default_factory=dict)
    in_flight: set[Hashable] = field(default_factory=set)

    def best(self, now: float) -> _Pending[P] | None:
        eligible = (
            p for p in self.pending.values() if p.ready_at <= now and p.key not in self.in_flight
        )
        return min(eligible, key=lambda p: (p.priority, p.seq), default=None)

    def earliest_ready(self) -> float | None:
        times = [p.ready_at for p in self.pending.values() if p.key not in self.in_flight]
        return min(times, default=None)


class Schedule(Generic[P]):
    """Which queued request may start, and when, given the time (pure: no clock, no I/O).

    Lanes are channels. A request is offered under a key; offering again under a key that is
    still waiting replaces its payload (latest wins), keeps its place and raises its priority.
    At most one request per key is in flight, so a key's requests reach Discord in order."""

    def __init__(self, limits: PacingLimits) -> None:
        self.limits = limits
        self.global_gauge = Gauge(limits.global_budget, limits.margin_s)
        self._lanes: dict[int, _Lane[P]] = {}
        self._seq = itertools.count()

    def gauge(self, lane_id: int) -> Gauge:
        return self._lane(lane_id).gauge

    def _lane(self, lane_id: int) -> _Lane[P]:
        lane = self._lanes.get(lane_id)
        if lane is None:
            lane = self._lanes[lane_id] = _Lane(Gauge(self.limits.channel, self.limits.margin_s))
        return lane

    def offer(
        self,
        lane_id: int,
        key: Hashable,
        payload: P,
        priority: Priority,
        *,
        ready_at: float = 0.0,
    ) -> None:
        lane = self._lane(lane_id)
        waiting = lane.pending.get(key)
        if waiting is None:
            lane.pending[key] = _Pending(key, payload, priority, next(self._seq), ready_at)
            return
        waiting.payload = payload
        waiting.priority = min(waiting.priority, priority)
        waiting.ready_at = min(waiting.ready_at, ready_at)

    def withdraw(self, lane_id: int, key: Hashable) -> None:
        """Forget a request that has not started."""
        self._lane(lane_id).pending.pop(key, None)

    def due(self, now: float) -> list[tuple[int, Hashable, P]]:
        """The requests that may start now, best first; their room in the limits is taken."""
        started: list[tuple[int, Hashable, P]] = []
        while _ready(self.global_gauge.free_at(now), now):
            choice: tuple[int, _Lane[P], _Pending[P]] | None = None
            for lane_id, lane in self._lanes.items():
                if not lane.pending or not _ready(lane.gauge.free_at(now), now):
                    continue
                best = lane.best(now)
                if best is not None and (
                    choice is None
                    or (best.priority, best.seq) < (choice[2].priority, choice[2].seq)
                ):
                    choice = (lane_id, lane, best)
            if choice is None:
                break
            lane_id, lane, item = choice
            del lane.pending[item.key]
            lane.in_flight.add(item.key)
            lane.gauge.start()
            self.global_gauge.start()
            started.append((lane_id, item.key, item.payload))
        return started

    def finished(self, lane_id: int, key: Hashable, now: float, *, sent: bool) -> None:
        """A started request was answered at `now` (`sent=False`: it sent nothing after all)."""
        lane = self._lane(lane_id)
        lane.in_flight.discard(key)
        lane.gauge.finish(now, sent=sent)
        self.global_gauge.finish(now, sent=sent)
        if len(self._lanes) > MAX_QUIET_LANES:
            self._forget_quiet(now)

    def _forget_quiet(self, now: float) -> None:
        """Drop the lanes with nothing waiting, in flight or in their window (they start afresh,
        at the documented limits, if they are needed again)."""
        for lane_id, lane in list(self._lanes.items()):
            if not lane.pending and not lane.in_flight and lane.gauge.quiet(now):
                del self._lanes[lane_id]

    def next_at(self, now: float) -> float | None:
        """When `due` may next return something (None: not before an offer or an answer)."""
        global_free = self.global_gauge.free_at(now)
        if global_free is None:
            return None
        soonest: float | None = None
        for lane in self._lanes.values():
            free = lane.gauge.free_at(now)
            ready = lane.earliest_ready()
            if free is None or ready is None:
                continue
            at = max(free, ready, global_free)
            soonest = at if soonest is None else min(soonest, at)
        return soonest

    def waiting(self) -> int:
        """Requests offered and not yet started."""
        return sum(len(lane.pending) for lane in self._lanes.values())

    def busy(self, now: float | None = None) -> bool:
        """Whether requests are in flight or waiting (given `now`: waiting and ready by then)."""
        return any(
            lane.in_flight or any(now is None or p.ready_at <= now for p in lane.pending.values())
            for lane in self._lanes.values()
        )

    def drop_waiting(self) -> list[P]:
        """Forget every request that has not started; their payloads."""
        dropped = [p.payload for lane in self._lanes.values() for p in lane.pending.values()]
        for lane in self._lanes.values():
            lane.pending.clear()
        return dropped


def message_channel(method: str, path: str) -> int | None:
    """The channel of a message post or edit (the requests the channel's gauge counts)."""
    route = {"POST": POST_ROUTE, "PATCH": EDIT_ROUTE}.get(method.upper())
    found = None if route is None else route.fullmatch(path)
    return None if found is None else int(found[1])


def _ready(free_at: float | None, now: float) -> bool:
    return free_at is not None and free_at <= now


Work = Callable[[], Awaitable[object]]


@dataclass
class _Sending:
    """What one paced request did: set in the task that runs it, read by the trace."""

    requests: int = 0


_sending: contextvars.ContextVar[_Sending | None] = contextvars.ContextVar(
    "klingbot_pacer_sending", default=None
)


class _Grant:
    """A one-off request waiting for its turn (`Pacer.send`)."""

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future


class Pacer:
    """Runs a `Schedule` on the event loop: sends requests when the limits allow."""

    def __init__(self, limits: PacingLimits | None = None) -> None:
        self.limits = limits or PacingLimits()
        self.schedule: Schedule[Work | _Grant] = Schedule(self.limits)
        self.sent = 0  # requests that went out through the pacer
        self._wake = asyncio.Event()
        self._driver: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._closed = False

    # -- what the bot calls -------------------------------------------------------------------

    def update(
        self,
        channel_id: int,
        key: Hashable,
        work: Work,
        *,
        priority: Priority,
        delay_s: float = 0.0,
    ) -> None:
        """Run `work` (which sends at most one request in the channel) when the limits allow,
        and not before `delay_s`; a newer `work` for the same key replaces a waiting one."""
        if self._closed:
            return
        ready_at = self._now() + delay_s if delay_s > 0 else 0.0
        self.schedule.offer(channel_id, ("update", key), work, priority, ready_at=ready_at)
        self._kick()

    async def send(
        self, channel_id: int, work: Callable[[], Awaitable[T]], *, priority: Priority
    ) -> T:
        """Wait for room in the channel's limits, then run `work` (one request) and return its
        result (its exception is raised here)."""
        if self._closed:
            raise PacerClosed("the bot is shutting down")
        grant = _Grant(asyncio.get_running_loop().create_future())
        key = ("send", id(grant))
        self.schedule.offer(channel_id, key, grant, priority)
        self._kick()
        try:
            await grant.future
        except asyncio.CancelledError:
            if grant.future.done() and not grant.future.cancelled():
                self._finished(channel_id, key, sent=False)  # its turn came too late
            else:
                self.schedule.withdraw(channel_id, key)
            raise
        return await self._run(channel_id, key, work)

    async def wait_idle(self) -> None:
        """Wait until nothing is in flight and nothing waiting is due (edits held back by a
        job's edit interval may still wait)."""
        while self.schedule.busy(self._now()):
            self._idle.clear()
            self._kick()
            await self._idle.wait()

    async def close(self, grace_s: float = 3.0) -> None:
        """Send what is due (for up to `grace_s`), then stop; one-offs still waiting fail with
        PacerClosed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait_idle(), grace_s)
        self._closed = True
        for payload in self.schedule.drop_waiting():
            if isinstance(payload, _Grant) and not payload.future.done():
                payload.future.set_exception(PacerClosed("the bot is shutting down"))
        tasks = [*self._tasks, *([self._driver] if self._driver else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._driver = None

    # -- watching discord.py's requests ------------------------------------------------------

    def trace_config(self) -> aiohttp.TraceConfig:
        """Give this to discord.py (`http_trace=`) so that the pacer sees every request."""
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._on_request_start)
        trace.on_request_end.append(self._on_request_end)
        trace.on_request_exception.append(self._on_request_exception)
        return trace

    async def _on_request_start(
        self, session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        path = params.url.path
        if not API_ROUTE.match(path) or EXEMPT_ROUTE.match(path):
            return
        sending = _sending.get()
        if sending is not None:
            sending.requests += 1
            return
        # Not sent by the pacer: it cannot wait, but it counts.
        channel_id = message_channel(params.method, path)
        context.klingbot_unpaced = channel_id or 0
        self.schedule.global_gauge.start()
        if channel_id:
            self.schedule.gauge(channel_id).start()

    async def _on_request_end(
        self, session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        path = params.url.path
        if API_ROUTE.match(path) and not EXEMPT_ROUTE.match(path):
            self.observe(params.method, path, params.response.status, params.response.headers)
        self._unpaced_done(context)

    async def _on_request_exception(
        self, session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        self._unpaced_done(context)

    def _unpaced_done(self, context: SimpleNamespace) -> None:
        channel_id = getattr(context, "klingbot_unpaced", None)
        if channel_id is None:
            return
        now = self._now()
        self.schedule.global_gauge.finish(now)
        if channel_id:
            self.schedule.gauge(channel_id).finish(now)
        self._kick()

    def observe(self, method: str, path: str, status: int, headers: Mapping[str, str]) -> None:
        """Learn from an answer of Discord's to a request (paced or not)."""
        info = parse_ratelimit_headers(headers)
        now = self._now()
        channel_id = message_channel(method, path)
        if status == 429 and info.retry_after_s is not None:
            log.warning("Discord answered 429 to %s %s (%s)", method, path, info.scope or "?")
            until = now + info.retry_after_s + self.limits.margin_s
            if info.is_global or info.scope == "global":
                self.schedule.global_gauge.block(until)
            elif channel_id:
                self.schedule.gauge(channel_id).block(until)
        elif channel_id:
            self.schedule.gauge(channel_id).learn(info, now)
        self._kick()

    # -- the loop ----------------------------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _kick(self) -> None:
        self._wake.set()
        if self._driver is None and not self._closed:
            self._driver = asyncio.get_running_loop().create_task(self._drive(), name="pacer")
            self._driver.add_done_callback(self._driver_stopped)

    def _driver_stopped(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "the pacer stopped; it starts again with the next request",
                exc_info=task.exception(),
            )
        if self._driver is task:
            self._driver = None

    async def _drive(self) -> None:
        while True:
            self._wake.clear()
            now = self._now()
            for channel_id, key, payload in self.schedule.due(now):
                self._start(channel_id, key, payload)
            if not self.schedule.busy(now):
                self._idle.set()
            next_at = self.schedule.next_at(now)
            timeout = None if next_at is None else max(0.0, next_at - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _start(self, channel_id: int, key: Hashable, payload: Work | _Grant) -> None:
        if isinstance(payload, _Grant):
            if payload.future.cancelled():
                self._finished(channel_id, key, sent=False)
            else:
                payload.future.set_result(None)
            return
        task = asyncio.get_running_loop().create_task(self._run_update(channel_id, key, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_update(self, channel_id: int, key: Hashable, work: Work) -> None:
        try:
            await self._run(channel_id, key, work)
        except Exception:
            log.exception("a paced request in channel %s failed", channel_id)

    async def _run(self, channel_id: int, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        sending = _Sending()
        token = _sending.set(sending)
        try:
            return await work()
        finally:
            _sending.reset(token)
            self.sent += sending.requests
            self._finished(channel_id, key, sent=sending.requests > 0)

    def _finished(self, channel_id: int, key: Hashable, *, sent: bool) -> None:
        self.schedule.finished(channel_id, key, self._now(), sent=sent)
        self._kick()
