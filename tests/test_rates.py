"""Rate limits: the token bucket (one level, a rate that can change without granting tokens), the
limiter that serves waiters in turn, and the create rate's AIMD that must not let bursts through."""

from __future__ import annotations

import asyncio
import copy
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.pipeline.rates import CreateRate
from bot.pipeline.token_bucket import DEFAULT_BURST_S, MIN_WAIT_S, RateLimiter, TokenBucket
from storage import ManualClock


@dataclass
class DrivenClock:
    """A limiter clock the test drives. `jump`: a wait moves time straight to its timeout (as if
    the caller slept exactly that long) unless its event is already set. Otherwise time stands
    still and a wait ends only when its event is set. Every wait's timeout is recorded."""

    jump: bool = True
    t: float = 1000.0
    timeouts: list[float] = field(default_factory=list)
    waiting: asyncio.Event = field(default_factory=asyncio.Event)

    def now_s(self) -> float:
        return self.t

    async def wait(self, event: asyncio.Event, timeout_s: float) -> None:
        self.timeouts.append(timeout_s)
        if self.jump:
            if not event.is_set():
                self.t += timeout_s
            await asyncio.sleep(0)  # let others run, as a real wait would
            return
        self.waiting.set()
        await event.wait()


# -- the bucket --------------------------------------------------------------------------------

step = st.one_of(
    st.tuples(st.just("advance"), st.floats(0.0, 30.0)),
    st.tuples(st.just("take"), st.integers(1, 20)),
    st.tuples(st.just("rate"), st.floats(0.01, 50.0)),
    st.tuples(st.just("pause"), st.floats(0.0, 20.0)),
)


@settings(max_examples=300)
@given(
    rate_per_s=st.floats(0.01, 50.0),
    burst_s=st.floats(0.05, 20.0),
    steps=st.lists(step, max_size=60),
)
def test_the_bucket_never_grants_more_than_burst_plus_rate_times_time(
    rate_per_s: float, burst_s: float, steps: list[tuple[str, float]]
) -> None:
    now = 0.0
    bucket = TokenBucket(rate_per_s, burst_s=burst_s, now_s=now)
    granted: list[float] = []  # the time of every token granted
    rates: list[tuple[float, float]] = [(now, rate_per_s)]  # (from time, rate) as it changed
    max_capacity = bucket.capacity
    for kind, value in steps:
        if kind == "advance":
            now += value
        elif kind == "take":
            for _ in range(int(value)):
                if bucket.take(now) == 0.0:
                    granted.append(now)
        elif kind == "rate":
            before = bucket.level(now)
            bucket.set_rate(value, now)
            assert bucket.level(now) <= before + 1e-9  # a new rate adds no tokens
            rates.append((now, value))
            max_capacity = max(max_capacity, bucket.capacity)
        else:
            before = bucket.level(now)
            bucket.pause(now + value, now)
            assert bucket.level(now) <= min(before, 1.0) + 1e-9

    def accrued(start: float, end: float) -> float:
        """The most the bucket could accrue in [start, end] at the rates it had."""
        total = 0.0
        for (since, rate), (until, _) in zip(rates, [*rates[1:], (math.inf, 0.0)], strict=True):
            overlap = min(end, until) - max(start, since)
            total += max(0.0, overlap) * rate
        return total

    for i, start in enumerate(granted):
        for j in range(i, len(granted)):
            end = granted[j]
            assert j - i + 1 <= max_capacity + accrued(start, end) + 1e-6


@settings(max_examples=300)
@given(
    rate_per_s=st.floats(0.01, 50.0),
    burst_s=st.floats(0.05, 20.0),
    drained=st.integers(0, 30),
    pause_s=st.floats(0.0, 20.0),
)
def test_the_wait_the_bucket_names_is_enough(
    rate_per_s: float, burst_s: float, drained: int, pause_s: float
) -> None:
    bucket = TokenBucket(rate_per_s, burst_s=burst_s, now_s=0.0)
    for _ in range(drained):
        bucket.take(0.0)
    if pause_s:
        bucket.pause(pause_s, 0.0)
    wait_s = bucket.take(0.0)
    if wait_s > 0:
        if wait_s > 2 * MIN_WAIT_S:  # not a moment too long: a little sooner is too soon
            assert copy.deepcopy(bucket).take(wait_s * 0.999) > 0
        assert bucket.take(wait_s) == 0.0  # and long enough


def test_a_rate_change_keeps_the_level() -> None:
    bucket = TokenBucket(1.0, burst_s=10, now_s=0.0)
    assert [bucket.take(0.0) for _ in range(10)] == [0.0] * 10 and bucket.take(0.0) == 1.0
    bucket.set_rate(100.0, 0.0)  # aiolimiter: a new limiter, a full bucket of 100
    assert bucket.level(0.0) < 1e-9 and bucket.take(0.0) == pytest.approx(0.01)
    bucket.set_rate(0.5, 0.5)  # 0.5 s at 100/s accrued 50 tokens; capacity is now 5
    assert bucket.level(0.5) == 5.0


# -- the limiter -------------------------------------------------------------------------------


async def test_waiters_are_served_in_the_order_they_came() -> None:
    clock = DrivenClock()
    limiter = RateLimiter(60, burst_s=1, clock=clock)  # one token a second, one at a time
    order: list[int] = []

    async def take(n: int) -> None:
        await limiter.acquire()
        order.append(n)

    await asyncio.gather(*(take(n) for n in range(20)))
    assert order == list(range(20)) and limiter.granted == 20
    assert clock.t == pytest.approx(1000 + 19)  # one token then one per second


async def test_a_cancelled_waiter_does_not_hold_up_the_next() -> None:
    clock = DrivenClock(jump=False)
    limiter = RateLimiter(60, burst_s=1, clock=clock)
    await limiter.acquire()  # the one token
    first = asyncio.create_task(limiter.acquire())
    await clock.waiting.wait()
    second = asyncio.create_task(limiter.acquire())
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    clock.t += 1.0
    limiter.set_per_min(60)  # wakes the waiter (now the second) to look again
    await second
    assert limiter.granted == 2


async def test_a_rate_change_wakes_the_waiter_to_look_again() -> None:
    clock = DrivenClock(jump=False)
    limiter = RateLimiter(1, burst_s=1, clock=clock)  # one a minute
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await clock.waiting.wait()
    assert clock.timeouts == [pytest.approx(60.0)]
    clock.waiting.clear()
    limiter.set_per_min(6000)  # 100 a second
    await clock.waiting.wait()
    assert clock.timeouts[1] == pytest.approx(0.01)  # it looked again: time stood still,
    assert not waiter.done()  # and a faster rate adds no token
    clock.t += 0.01
    limiter.set_per_min(6000)
    await waiter
    assert limiter.granted == 2


# -- the create rate (AIMD) --------------------------------------------------------------------


class SharedBucket:
    """The stored bucket (what vendor_rates keeps) and the create rate that draws from it."""

    def __init__(self, per_min: int) -> None:
        self.clock = ManualClock()
        self.rate = CreateRate(per_min, clock=self.clock)
        self.state = self.rate.initial(self.clock.now_ms())

    def try_create(self) -> bool:
        """One create, if the budget allows it now."""
        now = self.clock.now_ms()
        allowed, _ = self.rate.available(self.state, now, 1)
        self.state = self.rate.take(self.state, now, allowed)
        return allowed == 1

    def let_through_in_a_second(self, tries: int) -> int:
        """Ask for a create every 10 ms for a second, at most `tries`; count those let through."""
        granted = 0
        for _ in range(100):
            if granted < tries and self.try_create():
                granted += 1
            self.clock.advance(ms=10)
        return granted

    def throttled(self, retry_after_s: float | None) -> None:
        self.state = self.rate.throttled(self.state, self.clock.now_ms(), retry_after_s)

    def succeeded(self) -> None:
        self.state = self.rate.succeeded(self.state, self.clock.now_ms()) or self.state


def test_a_429_and_each_recovery_step_let_no_burst_through() -> None:
    """aiolimiter's limiter was rebuilt on every change, each with a full bucket: 30 creates went
    in the second after a 429, then 36, 42, 48, 54, 60 after the recovery steps. The bucket is
    stored between calls (as in the database), so a store and load must not refill it either."""
    bucket = SharedBucket(60)  # one a second, ten at once
    assert bucket.let_through_in_a_second(20) == 10  # the configured burst, once
    bucket.throttled(retry_after_s=2.0)
    rate = bucket.rate
    assert rate.per_min == 30 and rate.paused_for_s == 2.0
    assert bucket.let_through_in_a_second(3) == 0  # paused
    assert bucket.let_through_in_a_second(3) <= 1  # then one every 2 s
    while rate.per_min < 60:
        bucket.succeeded()
        per_s = rate.per_min / 60
        assert bucket.let_through_in_a_second(5) <= 1 + per_s
    assert rate.per_min == 60 and rate.throttles == 1 and rate.lowest_per_min == 30


def test_aimd_halves_on_429_and_grows_back_by_tenths() -> None:
    bucket = SharedBucket(100)
    rate = bucket.rate
    bucket.throttled(None)
    assert rate.per_min == 50 and rate.paused_for_s == 10.0  # no retry-after: ten seconds
    bucket.throttled(3.0)
    assert rate.per_min == 25 and rate.paused_for_s == 10.0  # a shorter ask never shortens it
    for expected in (35, 45, 55, 65, 75, 85, 95, 100, 100):
        bucket.succeeded()
        assert rate.per_min == expected
    for _ in range(20):
        bucket.throttled(1.0)
    assert rate.per_min == 1 and rate.lowest_per_min == 1 and rate.throttles == 22


@settings(max_examples=200)
@given(
    per_min=st.integers(1, 6000),
    steps=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 50)), max_size=40),
)
def test_the_stored_budget_never_grants_more_than_burst_plus_rate_times_time(
    per_min: int, steps: list[tuple[int, int]]
) -> None:
    """However the creates are asked for (several at once, as a dispatch round claims them), a
    budget stored and loaded between each claim grants at most its burst plus the rate."""
    bucket = SharedBucket(per_min)
    start = bucket.clock.now_ms()
    granted = 0
    for advance_ms, wanted in steps:
        bucket.clock.advance(ms=advance_ms)
        now = bucket.clock.now_ms()
        allowed, wait_s = bucket.rate.available(bucket.state, now, wanted)
        assert 0 <= allowed <= wanted and wait_s >= 0
        bucket.state = bucket.rate.take(bucket.state, now, allowed)
        granted += allowed
    elapsed_s = (bucket.clock.now_ms() - start) / 1000
    burst = max(1.0, per_min / 60 * DEFAULT_BURST_S)
    assert granted <= burst + per_min / 60 * elapsed_s + 1e-6
