"""A token bucket whose rate can change, and a limiter that callers wait on in turn.

    TokenBucket   one level, refilled at `rate_per_s` up to `burst_s` seconds' worth (at least
                  one token); pure: the caller passes the time, so tests step it
    RateLimiter   waits on a TokenBucket, first come first served, on a clock tests can drive

Changing the rate keeps the level (what accrued so far, at the old rate, capped at the new
capacity), so neither a slower nor a faster rate grants a fresh burst. A pause grants nothing and
accrues nothing until it ends, and keeps at most one token for then.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from bot.pipeline.waiting import wait_event

DEFAULT_BURST_S = 10.0  # a full bucket holds ten seconds' worth of the current rate
MIN_WAIT_S = 1e-6  # a computed wait is never shorter (so a stepped clock always moves)
_SLACK = 1e-9  # floating-point slack when a level is compared with one token


class TokenBucket:
    def __init__(self, rate_per_s: float, *, burst_s: float, now_s: float) -> None:
        if rate_per_s <= 0 or burst_s <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self._rate_per_s = rate_per_s
        self._burst_s = burst_s
        self._level = self.capacity
        self._updated_s = now_s
        self._resume_s = now_s  # nothing accrues or is granted before this

    @classmethod
    def restore(
        cls, rate_per_s: float, *, burst_s: float, level: float, updated_s: float, resume_s: float
    ) -> TokenBucket:
        """A bucket in the state `snapshot` returned (kept elsewhere, e.g. in the database)."""
        bucket = cls(rate_per_s, burst_s=burst_s, now_s=updated_s)
        bucket._level = max(0.0, min(level, bucket.capacity))
        bucket._resume_s = resume_s
        return bucket

    def snapshot(self) -> tuple[float, float, float]:
        """(level, updated_s, resume_s): what `restore` takes, with the rate, to go on."""
        return self._level, self._updated_s, self._resume_s

    @property
    def rate_per_s(self) -> float:
        return self._rate_per_s

    @property
    def capacity(self) -> float:
        """The most tokens the bucket holds: `burst_s` seconds' worth, at least one."""
        return max(1.0, self._rate_per_s * self._burst_s)

    def level(self, now_s: float) -> float:
        """Tokens in the bucket at `now_s`."""
        self._refill(now_s)
        return self._level

    def take(self, now_s: float) -> float:
        """Take a token and return 0.0; or take nothing and return how long until one is there."""
        self._refill(now_s)
        if now_s >= self._resume_s and self._level >= 1.0 - _SLACK:
            self._level -= 1.0
            return 0.0
        paused_s = max(0.0, self._resume_s - now_s)
        return max(MIN_WAIT_S, paused_s + max(0.0, 1.0 - self._level) / self._rate_per_s)

    def set_rate(self, rate_per_s: float, now_s: float) -> None:
        """Refill at the old rate up to `now_s`, then go on at the new one (adds no tokens)."""
        if rate_per_s <= 0:
            raise ValueError("a token bucket needs a positive rate")
        self._refill(now_s)
        self._rate_per_s = rate_per_s
        self._level = min(self._level, self.capacity)

    def pause(self, until_s: float, now_s: float) -> None:
        """Grant nothing and accrue nothing before `until_s`; keep at most one token for then."""
        self._refill(now_s)
        self._resume_s = max(self._resume_s, until_s)
        self._level = min(self._level, 1.0)

    def _refill(self, now_s: float) -> None:
        accrue_from_s = max(self._updated_s, self._resume_s)
        if now_s > accrue_from_s:
            self._level = min(
                self.capacity, self._level + (now_s - accrue_from_s) * self._rate_per_s
            )
        self._updated_s = max(self._updated_s, now_s)


class LimiterClock(Protocol):
    """The time a limiter runs on (seconds), and how it waits."""

    def now_s(self) -> float: ...

    async def wait(self, event: asyncio.Event, timeout_s: float) -> None:
        """Return when `event` is set or `timeout_s` has passed."""
        ...


class MonotonicClock:
    """The process's monotonic clock and the event loop's timers."""

    def now_s(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, timeout_s: float) -> None:
        await wait_event(event, timeout_s)


class RateLimiter:
    """`acquire()` takes a token, waiting for one if need be; waiters are served in order."""

    def __init__(
        self,
        per_min: float,
        *,
        burst_s: float = DEFAULT_BURST_S,
        clock: LimiterClock | None = None,
    ) -> None:
        self._clock = clock or MonotonicClock()
        self._per_min = per_min
        self._bucket = TokenBucket(per_min / 60, burst_s=burst_s, now_s=self._clock.now_s())
        self._turn = asyncio.Lock()  # FIFO: the first waiter waits on the bucket, the rest on it
        self._changed = asyncio.Event()  # the rate or pause changed: the first waiter looks again
        self.granted = 0

    @property
    def per_min(self) -> float:
        return self._per_min

    async def acquire(self) -> None:
        async with self._turn:
            while (wait_s := self._bucket.take(self._clock.now_s())) > 0:
                self._changed.clear()
                await self._clock.wait(self._changed, wait_s)
            self.granted += 1

    def set_per_min(self, per_min: float) -> None:
        """Change the rate from now on (no tokens added)."""
        self._bucket.set_rate(per_min / 60, self._clock.now_s())
        self._per_min = per_min
        self._changed.set()

    def pause(self, until_s: float) -> None:
        """Let nothing through before `until_s` (on this limiter's clock)."""
        self._bucket.pause(until_s, self._clock.now_s())
        self._changed.set()
