"""Discord's rate limits as the bot keeps them, given the time (pure: no clock, no I/O).

A `Gauge` is one limit (a channel's message bucket, the global budget): it lets a request start
while fewer than `count` are live, a request being live while in flight and for a window after
its answer, so that any `count + 1` requests reach Discord at least a window apart whatever the
network delays; it follows what Discord's `X-RateLimit-*` headers say. A `Schedule` keeps the
requests waiting per channel and says which may start and when. bot/discord/pacing.py runs it.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Generic, TypeVar

T = TypeVar("T")
P = TypeVar("P")

MAX_QUIET_LANES = 256  # past this many channels, forget those with nothing recent


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


def _ready(free_at: float | None, now: float) -> bool:
    return free_at is not None and free_at <= now
