"""Poll pacing: the shipped rate per minute, with bursts of at most ten seconds' worth."""

from __future__ import annotations

import asyncio

import pytest

from bot.services.generation import poll_limiter


@pytest.mark.parametrize(("per_min", "burst"), [(300, 50), (60, 10), (12, 2)])
async def test_a_burst_is_ten_seconds_of_the_rate(per_min: int, burst: int) -> None:
    limiter = poll_limiter(per_min)
    for _ in range(burst):
        await asyncio.wait_for(limiter.acquire(), 0.5)  # within the burst: at once
    assert not limiter.has_capacity()  # the next poll waits its turn
