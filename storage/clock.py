"""Time sources. Every stored time is unix milliseconds; tests inject a ManualClock."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Something that tells the current time in unix milliseconds."""

    def now_ms(self) -> int: ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when told to (tests, simulations)."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00:00Z
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, *, seconds: float = 0.0, ms: int = 0) -> None:
        self._now_ms += ms + round(seconds * 1000)


class OffsetClock:
    """The wall clock shifted by an adjustable offset (simulated time over real timers)."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def advance(self, *, seconds: float = 0.0, ms: int = 0) -> None:
        self.offset_ms += ms + round(seconds * 1000)
