"""The pacer (bot/discord/pacing.py, bot/discord/rate_limits.py): the schedule driven by an injected clock (properties: never
more requests per window than the limit, per channel and globally, at whatever moment between
start and answer Discord counts them; the latest state of every job is sent; final states go
ahead of progress), the headers it learns from, and the pacer itself on the event loop against a
real aiohttp server on 127.0.0.1 that answers with Discord's rate-limit headers."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.discord.pacing import Pacer
from bot.discord.rate_limits import (
    Gauge,
    PacingLimits,
    Priority,
    RateLimitHeaders,
    Schedule,
    Window,
    parse_ratelimit_headers,
)

LIMITS = PacingLimits(channel=Window(5, 5.0), global_budget=Window(8, 1.0), margin_s=0.05)


# -- the schedule, simulated --------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    at: float
    lane: int
    key: int
    priority: Priority
    delay_s: float


@dataclass
class Sent:
    lane: int
    key: Hashable
    priority: Priority
    start: float
    end: float
    arrival: float  # when Discord counted it: any moment between start and answer
    shown: int  # the version of the key's state the request carried


@dataclass
class Waiting:
    """The test's own account of a key's waiting request: offers merge into it."""

    priority: Priority
    ready_at: float


@dataclass
class Simulation:
    """Offers arrive at their times, requests take the given latencies; the schedule is asked
    what to start at every moment something happens."""

    limits: PacingLimits
    latencies: list[float]
    fractions: list[float]
    schedule: Schedule[int] = field(init=False)
    now: float = 0.0
    version: dict[tuple[int, Hashable], int] = field(default_factory=dict)
    waiting: dict[tuple[int, Hashable], Waiting] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    flying: list[Sent] = field(default_factory=list)
    overtaken: list[tuple[Sent, tuple[int, Hashable]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.schedule = Schedule(self.limits)
        self._latency = itertools.cycle(self.latencies)
        self._fraction = itertools.cycle(self.fractions)

    def run(self, offers: list[Offer]) -> None:
        pending = sorted(offers, key=lambda o: o.at)
        for _ in range(100_000):
            for lane, key, _payload in self.schedule.due(self.now):
                self._start(lane, key)
            times = [o.at for o in pending[:1]] + [r.end for r in self.flying]
            wake = self.schedule.next_at(self.now)
            if wake is not None:
                assert wake > self.now, "the schedule asked to be woken now but sent nothing"
                times.append(wake)
            if not times:
                return
            self.now = min(times)
            for record in [r for r in self.flying if r.end <= self.now]:
                self.flying.remove(record)
                self.schedule.finished(record.lane, record.key, self.now, sent=True)
            while pending and pending[0].at <= self.now:
                self._offer(pending.pop(0))
        raise AssertionError("the simulation did not settle")

    def _offer(self, offer: Offer) -> None:
        full_key = (offer.lane, offer.key)
        self.version[full_key] = self.version.get(full_key, 0) + 1
        ready_at = self.now + offer.delay_s if offer.delay_s else 0.0
        self.schedule.offer(offer.lane, offer.key, offer.key, offer.priority, ready_at=ready_at)
        merged = self.waiting.get(full_key)
        if merged is None:
            self.waiting[full_key] = Waiting(offer.priority, ready_at)
        else:
            merged.priority = min(merged.priority, offer.priority)
            merged.ready_at = min(merged.ready_at, ready_at)

    def _start(self, lane: int, key: Hashable) -> None:
        full_key = (lane, key)
        waited = self.waiting.pop(full_key)
        assert waited.ready_at <= self.now
        latency = next(self._latency)
        record = Sent(
            lane,
            key,
            waited.priority,
            self.now,
            self.now + latency,
            self.now + latency * next(self._fraction),
            self.version[full_key],  # the work reads the job when it runs
        )
        for other, better in self.waiting.items():
            if (
                other[0] == lane
                and better.priority < record.priority
                and better.ready_at <= self.now
                and not any((f.lane, f.key) == other for f in self.flying)
            ):
                self.overtaken.append((record, other))
        self.sent.append(record)
        self.flying.append(record)


def assert_within(window: Window, arrivals: list[float]) -> None:
    """No `count + 1` arrivals within one window: no window of Discord's (which opens with a
    request and lasts `period_s`) can hold more than `count`."""
    arrivals = sorted(arrivals)
    for first, last in zip(arrivals, arrivals[window.count :], strict=False):
        assert last - first >= window.period_s, (window, arrivals)


offers_strategy = st.lists(
    st.builds(
        Offer,
        at=st.floats(0, 30, allow_nan=False),
        lane=st.integers(0, 2),
        key=st.integers(0, 6),
        priority=st.sampled_from(Priority),
        delay_s=st.sampled_from([0.0, 0.0, 0.5, 3.0]),
    ),
    max_size=80,
)
latencies_strategy = st.lists(st.floats(0.0, 2.0, allow_nan=False), min_size=1, max_size=10)
fractions_strategy = st.lists(st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0, 1), min_size=1)


@settings(max_examples=300, deadline=None)
@given(offers_strategy, latencies_strategy, fractions_strategy)
def test_schedule_keeps_every_limit_and_sends_the_latest_state_final_first(
    offers: list[Offer], latencies: list[float], fractions: list[float]
) -> None:
    sim = Simulation(LIMITS, latencies, fractions)
    sim.run(offers)
    # Never more than the limit per window, in a channel or in all, whenever Discord counts.
    for lane in {o.lane for o in offers}:
        assert_within(LIMITS.channel, [s.arrival for s in sim.sent if s.lane == lane])
        assert_within(LIMITS.channel, [s.start for s in sim.sent if s.lane == lane])
    assert_within(LIMITS.global_budget, [s.arrival for s in sim.sent])
    # The latest state of every job is sent.
    for full_key, version in sim.version.items():
        last = max((s for s in sim.sent if (s.lane, s.key) == full_key), key=lambda s: s.start)
        assert last.shown == version
    # A job has at most one request in flight, so its requests reach Discord in order.
    for full_key in sim.version:
        mine = sorted((s for s in sim.sent if (s.lane, s.key) == full_key), key=lambda s: s.start)
        assert all(a.end <= b.start for a, b in itertools.pairwise(mine))
    # Nothing goes out while a more urgent request of its channel is ready to go.
    assert sim.overtaken == []
    assert sim.schedule.waiting() == 0 and not sim.schedule.busy()


def test_fifty_edits_in_one_channel_go_five_per_window_and_coalesce() -> None:
    schedule: Schedule[str] = Schedule(LIMITS)
    for job in range(50):
        schedule.offer(1, job, f"v1 of {job}", Priority.PROGRESS)
    schedule.offer(1, 7, "v2 of 7", Priority.FINAL)  # replaces the waiting v1, goes first
    first = schedule.due(0.0)
    assert [payload for _, _, payload in first] == [
        "v2 of 7",
        "v1 of 0",
        "v1 of 1",
        "v1 of 2",
        "v1 of 3",
    ]
    assert schedule.due(0.0) == [] and schedule.next_at(0.0) is None  # all five in flight
    for _, key, _ in first:
        schedule.finished(1, key, 0.2, sent=True)
    assert schedule.next_at(0.2) == pytest.approx(0.2 + 5.0 + 0.05)
    assert schedule.due(5.2) == []
    assert len(schedule.due(5.25)) == 5
    assert schedule.waiting() == 50 - 5 - 5


def test_a_request_that_sent_nothing_frees_its_room() -> None:
    schedule: Schedule[str] = Schedule(LIMITS)
    for job in range(6):
        schedule.offer(1, job, "edit", Priority.PROGRESS)
    started = schedule.due(0.0)
    assert len(started) == 5
    schedule.finished(1, started[0][1], 0.1, sent=False)  # no status message yet: no request
    assert [key for _, key, _ in schedule.due(0.1)] == [5]


# -- what the gauge learns -----------------------------------------------------------------------


def test_gauge_follows_the_headers_of_a_channel_bucket() -> None:
    gauge = Gauge(Window(5, 5.0), margin_s=0.05)
    gauge.learn(RateLimitHeaders(limit=3, remaining=2, reset_after_s=0.5), now=10.0)
    assert (gauge.count, gauge.period_s) == (3, 0.5)  # a fresh window reports its length
    gauge.learn(RateLimitHeaders(limit=3, remaining=1, reset_after_s=0.2), now=10.3)
    assert gauge.period_s == 0.5  # a window already running says nothing about its length
    gauge.learn(RateLimitHeaders(limit=3, remaining=0, reset_after_s=0.2), now=10.3)
    assert gauge.free_at(10.3) == pytest.approx(10.55)  # exhausted: wait for the reset
    assert gauge.free_at(10.6) == 10.6


def test_gauge_counts_requests_in_flight_and_answered_within_the_window() -> None:
    gauge = Gauge(Window(2, 1.0), margin_s=0.0)
    gauge.start()
    gauge.start()
    assert gauge.free_at(0.0) is None  # both in flight: only an answer can free room
    gauge.finish(0.4)
    assert gauge.free_at(0.5) == pytest.approx(1.4)
    gauge.finish(0.6, sent=False)
    assert gauge.free_at(0.6) == 0.6


# -- the headers, parsed -------------------------------------------------------------------------


def test_discord_headers_are_read() -> None:
    parsed = parse_ratelimit_headers(
        {
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": "4.321",
            "Retry-After": "5",
            "X-RateLimit-Scope": "user",
            "X-RateLimit-Global": "true",
        }
    )
    assert parsed == RateLimitHeaders(5, 0, 4.321, 5.0, "user", True)
    assert parse_ratelimit_headers({"x-ratelimit-limit": "-1", "retry-after": "nan"}) == (
        RateLimitHeaders()
    )


header_names = st.sampled_from(
    [
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset-After",
        "Retry-After",
        "X-RateLimit-Scope",
        "X-RateLimit-Global",
        "x-ratelimit-limit",
    ]
)
header_values = st.text(max_size=20) | st.integers().map(str) | st.floats().map(str)


@given(st.dictionaries(header_names | st.text(max_size=10), header_values, max_size=8))
def test_any_headers_parse_to_sane_values_or_none(headers: dict[str, str]) -> None:
    parsed = parse_ratelimit_headers(headers)
    assert parsed.limit is None or 1 <= parsed.limit <= 100_000
    assert parsed.remaining is None or 0 <= parsed.remaining <= 100_000
    for seconds in (parsed.reset_after_s, parsed.retry_after_s):
        assert seconds is None or 0.0 <= seconds <= 86_400.0


# -- the pacer on the event loop, against a loopback server --------------------------------------


@dataclass
class Bucket:
    """A loopback server that counts requests and answers with a channel bucket's headers."""

    limit: int = 2
    period_s: float = 0.3
    arrivals: list[float] = field(default_factory=list)
    base: str = ""


@pytest.fixture
async def bucket() -> AsyncIterator[Bucket]:
    state = Bucket()
    loop = asyncio.get_running_loop()
    window_start = [-1e9]
    used = [0]

    async def handle(request: web.Request) -> web.Response:
        now = loop.time()
        state.arrivals.append(now)
        if now >= window_start[0] + state.period_s:
            window_start[0], used[0] = now, 0
        used[0] += 1
        reset_after = window_start[0] + state.period_s - now
        status = 200 if used[0] <= state.limit else 429
        return web.json_response(
            {"n": len(state.arrivals)},
            status=status,
            headers={
                "X-RateLimit-Limit": str(state.limit),
                "X-RateLimit-Remaining": str(max(0, state.limit - used[0])),
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            },
        )

    app = web.Application()
    app.router.add_route("*", "/api/v10/channels/{cid}/messages", handle)
    app.router.add_route("*", "/api/v10/channels/{cid}/messages/{mid}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.base = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v10"
    yield state
    await runner.cleanup()


async def test_pacer_learns_the_bucket_and_keeps_under_it(bucket: Bucket) -> None:
    pacer = Pacer(PacingLimits(channel=Window(5, 5.0), margin_s=0.02))
    statuses: list[int] = []
    async with aiohttp.ClientSession(trace_configs=[pacer.trace_config()]) as http:

        async def post() -> int:
            async with http.post(f"{bucket.base}/channels/7/messages") as response:
                statuses.append(response.status)
                return response.status

        # The first answer teaches the pacer the real limit (2) and window (0.3 s).
        assert await pacer.send(7, post, priority=Priority.POST) == 200
        gauge = pacer.schedule.gauge(7)
        assert gauge.count == 2
        assert gauge.period_s == pytest.approx(0.3, abs=0.01)
        results = await asyncio.gather(
            *(pacer.send(7, post, priority=Priority.POST) for _ in range(7))
        )
    await pacer.close()
    assert results == [200] * 7 and statuses == [200] * 8
    assert_within(Window(2, 0.3), bucket.arrivals)
    assert pacer.sent == 8


async def test_requests_the_pacer_did_not_send_still_count(bucket: Bucket) -> None:
    pacer = Pacer(PacingLimits(channel=Window(2, 0.3), margin_s=0.02))
    async with aiohttp.ClientSession(trace_configs=[pacer.trace_config()]) as http:
        async with http.patch(f"{bucket.base}/channels/7/messages/1"):
            pass  # sent past the pacer (by a cog, say): it cannot wait, but it counts

        async def post() -> int:
            async with http.post(f"{bucket.base}/channels/7/messages") as response:
                return response.status

        assert (
            await asyncio.gather(*(pacer.send(7, post, priority=Priority.POST) for _ in range(3)))
            == [200] * 3
        )
    await pacer.close()
    assert_within(Window(2, 0.3), bucket.arrivals)


async def test_updates_coalesce_and_the_latest_runs(bucket: Bucket) -> None:
    pacer = Pacer(PacingLimits(channel=Window(1, 0.2), margin_s=0.0))
    ran: list[str] = []
    first_started, done = asyncio.Event(), asyncio.Event()
    async with aiohttp.ClientSession(trace_configs=[pacer.trace_config()]) as http:

        def edit(version: str) -> Callable[[], Awaitable[None]]:
            async def work() -> None:
                first_started.set()
                async with http.patch(f"{bucket.base}/channels/7/messages/1"):
                    ran.append(version)
                if version == "final":
                    done.set()

            return work

        pacer.update(7, "job", edit("queued"), priority=Priority.PROGRESS)
        await first_started.wait()
        for n in range(10):  # while the first is in flight or in its window: only the last stays
            pacer.update(7, "job", edit(f"running {n}"), priority=Priority.PROGRESS)
        pacer.update(7, "job", edit("final"), priority=Priority.FINAL)
        await done.wait()
    await pacer.close()
    assert ran == ["queued", "final"]


async def test_a_cancelled_send_gives_its_turn_away(bucket: Bucket) -> None:
    pacer = Pacer(PacingLimits(channel=Window(1, 0.3), margin_s=0.0))
    async with aiohttp.ClientSession(trace_configs=[pacer.trace_config()]) as http:

        async def post() -> int:
            async with http.post(f"{bucket.base}/channels/7/messages") as response:
                return response.status

        assert await pacer.send(7, post, priority=Priority.POST) == 200
        waiting = asyncio.create_task(pacer.send(7, post, priority=Priority.POST))
        await asyncio.sleep(0)  # let it queue
        assert pacer.schedule.waiting() == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert pacer.schedule.waiting() == 0
        assert await pacer.send(7, post, priority=Priority.POST) == 200
    await pacer.close()
    assert len(bucket.arrivals) == 2


async def test_send_raises_what_the_work_raised() -> None:
    pacer = Pacer()

    async def boom() -> None:
        raise LookupError("gone")

    with pytest.raises(LookupError, match="gone"):
        await pacer.send(7, boom, priority=Priority.FINAL)
    assert not pacer.schedule.busy()  # it sent nothing, so it holds no room either
    await pacer.close()
