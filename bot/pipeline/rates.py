"""A provider's create budget that backs off when the vendor says 429 and recovers after.

Starts at the configured creates per minute. A 429 halves the rate and pauses creates for the
vendor's retry-after; every successful create then adds back a tenth of the configured rate
(additive increase, multiplicative decrease), so the queue slows down instead of failing jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiolimiter import AsyncLimiter

DEFAULT_PAUSE_S = 10.0


class CreateRate:
    def __init__(self, per_min: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.configured_per_min = float(per_min)
        self.per_min = float(per_min)
        self._clock = clock
        self._limiter = AsyncLimiter(self.per_min, 60)
        self.paused_until = 0.0
        self.throttles = 0
        self.lowest_per_min = self.per_min

    @property
    def paused_for_s(self) -> float:
        return max(0.0, self.paused_until - self._clock())

    async def acquire(self) -> None:
        await self._limiter.acquire()

    def throttled(self, retry_after_s: float | None) -> None:
        """The vendor answered 429: halve the rate and wait as long as it asked."""
        self.throttles += 1
        self._set(max(1.0, self.per_min / 2))
        self.lowest_per_min = min(self.lowest_per_min, self.per_min)
        self.paused_until = max(
            self.paused_until, self._clock() + (retry_after_s or DEFAULT_PAUSE_S)
        )

    def succeeded(self) -> None:
        """A create went through: grow back towards the configured rate."""
        if self.per_min < self.configured_per_min:
            step = max(1.0, self.configured_per_min / 10)
            self._set(min(self.configured_per_min, self.per_min + step))

    def _set(self, per_min: float) -> None:
        if per_min != self.per_min:
            self.per_min = per_min
            self._limiter = AsyncLimiter(per_min, 60)
