"""A provider's create budget, shared by every process: a token bucket kept in the database
(storage.VendorRate), with this module's arithmetic, that backs off when the vendor says 429.

It starts at the configured creates per minute. A 429 halves the rate and pauses creates for the
vendor's retry-after; every successful create then adds back a tenth of the configured rate
(additive increase, multiplicative decrease), so the queue slows down instead of failing jobs.
It is one bucket for the provider's whole life: a change of rate or a pause never refills it, so
neither a 429 nor a step of recovery lets a burst through. The dispatcher reads and writes the
stored bucket in the transaction that takes jobs out of the queue, so the budget holds across
all the processes that share the database; a `CreateRate` object is this process's view of it
(the rate and pause it last saw, the 429s it met).
"""

from __future__ import annotations

from bot.pipeline.token_bucket import DEFAULT_BURST_S, TokenBucket
from storage import Clock, VendorRate

DEFAULT_PAUSE_S = 10.0


class CreateRate:
    def __init__(self, per_min: int, *, clock: Clock, burst_s: float = DEFAULT_BURST_S) -> None:
        self._clock = clock
        self._burst_s = burst_s
        self.configured_per_min = float(per_min)
        self.per_min = self.configured_per_min  # as last seen in the shared bucket
        self.paused_until_ms = 0  # likewise
        self.throttles = 0  # 429s this process met
        self.lowest_per_min = self.configured_per_min
        self.granted = 0  # creates this process let through

    @property
    def paused_for_s(self) -> float:
        return max(0.0, (self.paused_until_ms - self._clock.now_ms()) / 1000)

    def initial(self, now_ms: int) -> VendorRate:
        """A full bucket at the configured rate (a provider's first use)."""
        bucket = TokenBucket(
            self.configured_per_min / 60, burst_s=self._burst_s, now_s=now_ms / 1000
        )
        return self._state(bucket, self.configured_per_min)

    def available(self, state: VendorRate, now_ms: int, wanted: int) -> tuple[int, float]:
        """How many of `wanted` creates may go now, and how long after those until the next."""
        bucket = self._bucket(state)
        granted = 0
        wait_s = 0.0
        while granted < wanted:
            wait_s = bucket.take(now_ms / 1000)
            if wait_s > 0:
                break
            granted += 1
        if granted == wanted:
            wait_s = bucket.take(now_ms / 1000)
        return granted, wait_s

    def take(self, state: VendorRate, now_ms: int, count: int) -> VendorRate:
        """`state` after `count` creates went (at most what `available` allowed)."""
        bucket = self._bucket(state)
        for _ in range(count):
            bucket.take(now_ms / 1000)
        self.granted += count
        bucket.level(now_ms / 1000)
        return self._state(bucket, state.per_min)

    def throttled(self, state: VendorRate, now_ms: int, retry_after_s: float | None) -> VendorRate:
        """The vendor answered 429: halve the rate and wait as long as it asked."""
        self.throttles += 1
        bucket = self._bucket(state)
        per_min = max(1.0, state.per_min / 2)
        bucket.set_rate(per_min / 60, now_ms / 1000)
        wait_ms = int((retry_after_s or DEFAULT_PAUSE_S) * 1000)
        bucket.pause(max(state.resume_ms, now_ms + wait_ms) / 1000, now_ms / 1000)
        return self._state(bucket, per_min)

    def succeeded(self, state: VendorRate, now_ms: int) -> VendorRate | None:
        """A create went through: grow back towards the configured rate (None: it is there)."""
        self.seen(state)
        if state.per_min >= self.configured_per_min:
            return None
        step = max(1.0, self.configured_per_min / 10)
        bucket = self._bucket(state)
        per_min = min(self.configured_per_min, state.per_min + step)
        bucket.set_rate(per_min / 60, now_ms / 1000)
        return self._state(bucket, per_min)

    def seen(self, state: VendorRate) -> None:
        """Take the stored bucket's rate and pause as this process's view."""
        self.per_min = state.per_min
        self.paused_until_ms = state.resume_ms
        self.lowest_per_min = min(self.lowest_per_min, state.per_min)

    def _bucket(self, state: VendorRate) -> TokenBucket:
        return TokenBucket.restore(
            state.per_min / 60,
            burst_s=self._burst_s,
            level=state.level,
            updated_s=state.updated_ms / 1000,
            resume_s=state.resume_ms / 1000,
        )

    def _state(self, bucket: TokenBucket, per_min: float) -> VendorRate:
        level, updated_s, resume_s = bucket.snapshot()
        state = VendorRate(per_min, level, round(updated_s * 1000), round(resume_s * 1000))
        self.seen(state)
        return state
