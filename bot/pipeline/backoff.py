"""How long to wait before trying again: exponential backoff with full jitter.

Every retry the pipeline schedules draws its delay here, uniformly from zero up to the exponential
ceiling, so jobs that failed together (a vendor outage, Discord down) come back spread out instead
of all at once ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015).
"""

from __future__ import annotations

import random

RANDOM = random.Random()  # the pipeline's source; a test may swap in a seeded one
_MAX_DOUBLINGS = 1000  # 2.0**1000 is still a float; beyond, the cap decides anyway


def full_jitter_s(
    attempt: int, *, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    """A delay drawn uniformly from [0, min(cap_s, base_s * 2**attempt)]; `attempt` counts from 0
    (the first retry)."""
    if not (attempt >= 0 and base_s >= 0 and cap_s >= 0):  # NaN is refused too
        raise ValueError("attempt, base_s and cap_s must not be negative")
    ceiling_s = min(cap_s, base_s * 2.0 ** min(attempt, _MAX_DOUBLINGS))
    return (rng or RANDOM).uniform(0.0, ceiling_s)
