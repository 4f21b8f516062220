"""Retry delays: exponential backoff with full jitter, and jobs refused together retried apart."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.pipeline import backoff
from bot.pipeline.backoff import full_jitter_s
from bot.providers import ProviderHttp, VideoProvider
from bot.providers.eachlabs import EachLabsProvider
from bot.settings import EachLabsSettings
from storage import Job, JobState, ManualClock
from tests.pipeline_support import Harness, member, pipeline
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble

sizes = st.floats(0.0, 1e6, allow_nan=False)


@given(attempt=st.integers(0, 5000), base_s=sizes, cap_s=sizes, seed=st.integers(0, 2**32))
def test_a_delay_is_between_zero_and_the_capped_exponential(
    attempt: int, base_s: float, cap_s: float, seed: int
) -> None:
    delay_s = full_jitter_s(attempt, base_s=base_s, cap_s=cap_s, rng=random.Random(seed))
    ceiling_s = min(Fraction(cap_s), Fraction(base_s) * 2**attempt)  # exact, however large
    assert 0 <= delay_s <= ceiling_s


@given(seed=st.integers(0, 2**32), attempts=st.lists(st.integers(0, 20), max_size=20))
def test_the_same_random_source_gives_the_same_delays(seed: int, attempts: list[int]) -> None:
    def delays() -> list[float]:
        rng = random.Random(seed)
        return [full_jitter_s(a, base_s=10.0, cap_s=300.0, rng=rng) for a in attempts]

    assert delays() == delays()


def test_a_thousand_jobs_retrying_together_spread_over_the_whole_window() -> None:
    rng = random.Random(7)
    delays_s = [full_jitter_s(3, base_s=10.0, cap_s=300.0, rng=rng) for _ in range(1000)]
    per_second = Counter(int(d) for d in delays_s)
    assert set(per_second) == set(range(80))  # every second of [0, 80) s has some
    assert max(per_second.values()) < 30  # and none has many (12.5 on average)


@pytest.mark.parametrize(
    ("attempt", "base_s", "cap_s"), [(-1, 1.0, 1.0), (0, -1.0, 1.0), (0, 1.0, float("nan"))]
)
def test_negative_or_nan_inputs_are_refused(attempt: int, base_s: float, cap_s: float) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        full_jitter_s(attempt, base_s=base_s, cap_s=cap_s)


async def requeued_after_one_refusal(p: Harness, job_ids: list[str]) -> list[Job]:
    """The jobs once each has had its create refused and waits in the queue for its retry."""
    for _ in range(500):
        jobs = [await p.service.jobs.get(job_id) for job_id in job_ids]
        if all(j.state is JobState.QUEUED and j.submit_attempts == 1 for j in jobs):
            return jobs
        await asyncio.sleep(0.02)
    raise AssertionError("the creates were not all refused and requeued")


@pytest.mark.parametrize("retry_after_s", [None, 5])
async def test_creates_refused_together_are_retried_at_spread_out_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, retry_after_s: int | None
) -> None:
    """Ten creates fail at once (HTTP 503). Each job is requeued for after the vendor's
    retry-after (if it sent one) plus its own draw from [0, 10 s]; before, all ten came back
    together exactly 10 s (or retry-after) later. The clock stands still, so none is retried
    while we look."""
    monkeypatch.setattr(backoff, "RANDOM", random.Random(20260101))
    clock = ManualClock()
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s else {}
    async with EachLabsDouble() as double:
        double.next_create("status", 503, {"message": "overloaded"}, headers, times=10)

        def build(http: ProviderHttp) -> dict[str, VideoProvider]:
            settings = EachLabsSettings(api_key=SecretStr(API_KEY), base_url=double.api_base)
            return {"eachlabs": EachLabsProvider(settings, http)}

        async with pipeline(
            tmp_path,
            build,
            default_provider="eachlabs",
            public=False,
            clock=clock,
            max_concurrent={"eachlabs": 10},
        ) as p:
            ids = []
            for user in range(10):
                await p.ledger.issue_to_member(1, user, 100, key=f"seed:{user}")
                receipt = await p.service.submit(member(user), {"prompt": "fox", "duration_s": 3})
                ids.append(receipt.job.id)
            jobs = await requeued_after_one_refusal(p, ids)
    floor_ms = (retry_after_s or 0) * 1000
    delays_ms = [(j.next_poll_at_ms or 0) - clock.now_ms() for j in jobs]
    assert all(floor_ms <= d <= floor_ms + 10_000 for d in delays_ms)
    assert len(set(delays_ms)) == 10  # no two together
    assert all(j.error_kind == "transient" for j in jobs) and double.creates == 10
