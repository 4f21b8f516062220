"""A provider's create budget that backs off when the vendor says 429 and recovers after.

Starts at the configured creates per minute. A 429 halves the rate and pauses creates for the
vendor's retry-after; every successful create then adds back a tenth of the configured rate
(additive increase, multiplicative decrease), so the queue slows down instead of failing jobs.
It is one token bucket for the provider's whole life: a change of rate or a pause never refills
it, so neither a 429 nor a step of recovery lets a burst through.
"""

from __future__ import annotations

from bot.pipeline.token_bucket import DEFAULT_BURST_S, LimiterClock, MonotonicClock, RateLimiter

DEFAULT_PAUSE_S = 10.0


class CreateRate:
    def __init__(self, per_min: int, *, clock: LimiterClock | None = None) -> None:
        self._clock = clock or MonotonicClock()
        self.configured_per_min = float(per_min)
        self._limiter = RateLimiter(per_min, burst_s=DEFAULT_BURST_S, clock=self._clock)
        self.paused_until = 0.0  # on the clock's time (seconds)
        self.throttles = 0
        self.lowest_per_min = self.configured_per_min

    @property
    def per_min(self) -> float:
        return self._limiter.per_min

    @property
    def paused_for_s(self) -> float:
        return max(0.0, self.paused_until - self._clock.now_s())

    @property
    def granted(self) -> int:
        """Creates let through so far."""
        return self._limiter.granted

    async def acquire(self) -> None:
        """Wait for this provider's next create slot (in turn; none during a pause)."""
        await self._limiter.acquire()

    def throttled(self, retry_after_s: float | None) -> None:
        """The vendor answered 429: halve the rate and wait as long as it asked."""
        self.throttles += 1
        self._limiter.set_per_min(max(1.0, self.per_min / 2))
        self.lowest_per_min = min(self.lowest_per_min, self.per_min)
        self.paused_until = max(
            self.paused_until, self._clock.now_s() + (retry_after_s or DEFAULT_PAUSE_S)
        )
        self._limiter.pause(self.paused_until)

    def succeeded(self) -> None:
        """A create went through: grow back towards the configured rate."""
        if self.per_min < self.configured_per_min:
            step = max(1.0, self.configured_per_min / 10)
            self._limiter.set_per_min(min(self.configured_per_min, self.per_min + step))
