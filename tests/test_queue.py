"""Fair queueing: vendor slots, member limits, 429 back-off, failover, restarts."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.errors import PolicyRefusal
from bot.pipeline import ProviderIncident
from bot.pricing import PriceTable
from bot.providers import ProviderHttp, VideoProvider
from bot.providers.eachlabs import EachLabsProvider
from bot.providers.fal import FalProvider
from bot.settings import EachLabsSettings, FalSettings
from storage import AccountRef, JobState, OffsetClock
from tests.pipeline_support import Harness, ProviderFactory, member, pipeline
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble
from tests.provider_doubles.fal import API_KEY as FAL_KEY
from tests.provider_doubles.fal import FalDouble

G = 1


def eachlabs(double: EachLabsDouble, *extra: tuple[str, Any]) -> ProviderFactory:
    def build(http: ProviderHttp) -> dict[str, VideoProvider]:
        providers: dict[str, VideoProvider] = {
            "eachlabs": EachLabsProvider(
                EachLabsSettings(api_key=SecretStr(API_KEY), base_url=double.api_base), http
            )
        }
        for name, fal_double in extra:
            providers[name] = FalProvider(
                FalSettings(
                    api_key=SecretStr(FAL_KEY),
                    base_url=fal_double.base_url,
                    jwks_url=fal_double.jwks_url,
                ),
                http,
            )
        return providers

    return build


def queue_pipeline(
    tmp_path: Path, providers: ProviderFactory, **config: Any
) -> AbstractAsyncContextManager[Harness]:
    """A pipeline for queue tests: EachLabs first, no public URL, quick polls."""
    settings: dict[str, Any] = {"poll_initial_s": 0.05, "poll_max_s": 0.1, **config}
    return pipeline(tmp_path, providers, default_provider="eachlabs", public=False, **settings)


def prompt_member(double: EachLabsDouble, job_id: str) -> int:
    return int(double.jobs[job_id].request["input"]["prompt"].split()[1])


async def fund(p: Harness, users: list[int], amount: int = 1000) -> None:
    for user in users:
        await p.ledger.issue_to_member(G, user, amount, key=f"seed:{user}")


async def wait_all(
    p: Harness, job_ids: list[str], *states: JobState, timeout_s: float = 60
) -> None:
    for job_id in job_ids:
        await p.wait_for_state(job_id, *states, timeout_s=timeout_s)


async def test_hundred_members_three_jobs_each_ten_slots_fair_order(tmp_path: Path) -> None:
    users = list(range(1000, 1100))
    async with EachLabsDouble(max_live=10) as double:
        double.default_script = ["processing", "processing", "succeeded"]
        async with queue_pipeline(
            tmp_path,
            eachlabs(double),
            start=False,
            max_concurrent={"eachlabs": 10},
            creates_per_min={"eachlabs": 100_000},
        ) as p:
            await fund(p, users)
            p.service.open_intake()  # all 300 arrive before the dispatcher looks at the queue
            receipts = await asyncio.gather(
                *(
                    p.service.submit(
                        member(user), {"prompt": f"member {user} clip {n}", "duration_s": 5}
                    )
                    for user in users
                    for n in range(3)
                )
            )
            await p.service.start()
            await wait_all(p, [r.job.id for r in receipts], JobState.DELIVERED, timeout_s=120)
            assert double.peak_live <= 10
            assert double.throttled == 0, "the queue never exceeded the vendor's slots"
            first_hundred = [prompt_member(double, j) for j in double.create_order[:100]]
            assert sorted(first_hundred) == users, "every member's first job went before any second"
            second_hundred = [prompt_member(double, j) for j in double.create_order[100:200]]
            assert sorted(second_hundred) == users
            assert len(p.sink.deliveries) == 300
            assert [len(await p.captures(r.job.id)) for r in receipts] == [1] * 300
            assert (await p.ledger.audit()).ok


async def test_member_limits_live_queued_and_cooldown(tmp_path: Path) -> None:
    async with EachLabsDouble() as double:
        double.default_script = ["processing"]  # jobs stay running
        async with queue_pipeline(
            tmp_path,
            eachlabs(double),
            max_concurrent={"eachlabs": 10},
        ) as p:
            await fund(p, [7, 8, 9])
            jobs = [
                (await p.service.submit(member(7), {"prompt": f"fox {n}", "duration_s": 3})).job
                for n in range(2)
            ]
            # the first two start before the next five are asked for: five may wait
            await p.wait_for_state(jobs[0].id, JobState.RUNNING)
            await p.wait_for_state(jobs[1].id, JobState.RUNNING)
            jobs += [
                (await p.service.submit(member(7), {"prompt": f"fox {n}", "duration_s": 3})).job
                for n in range(2, 7)
            ]
            await p.service.next_dispatch_round()  # free slots remain, but the third job waits
            assert p.service.creates_in_flight() == frozenset()
            states = [(await p.service.jobs.get(j.id)).state for j in jobs]
            assert states[:2] == [JobState.RUNNING, JobState.RUNNING]
            assert states[2:] == [JobState.QUEUED] * 5
            position, eta_ms = await p.service.position_and_eta(jobs[2])
            assert position == 1 and eta_ms is not None
            with pytest.raises(PolicyRefusal) as eighth:
                await p.service.submit(member(7), {"prompt": "fox 8", "duration_s": 3})
            assert eighth.value.rule == "queued_jobs" and "5 videos waiting" in str(eighth.value)
            assert "<t:" in str(eighth.value)
            assert (
                len(double.jobs) == 2
                and (await p.ledger.balance(AccountRef.member(G, 7))).pending == 7 * 24
            )
            # cooldown, and moderators exempt when the guild says so
            await p.service.policy.set(G, actor_id=1, member_cooldown_s=60, moderators_exempt=1)
            await p.service.submit(member(8), {"prompt": "a", "duration_s": 3})
            with pytest.raises(PolicyRefusal) as cooled:
                await p.service.submit(member(8), {"prompt": "b", "duration_s": 3})
            assert cooled.value.rule == "cooldown" and cooled.value.resets_at_ms is not None
            for n in range(4):
                await p.service.submit(
                    member(9, is_moderator=True), {"prompt": f"mod {n}", "duration_s": 3}
                )
            mod_jobs = await p.service.jobs.by_user(G, 9)
            await asyncio.gather(*(p.wait_for_state(j.id, JobState.RUNNING) for j in mod_jobs))


async def test_vendor_429_slows_the_queue_and_no_job_fails(tmp_path: Path) -> None:
    async with EachLabsDouble() as double:
        double.default_script = ["processing", "succeeded"]
        double.next_create(
            "status",
            429,
            {"status": "error", "message": "Rate limit"},
            {"Retry-After": "0.5"},
            times=3,
        )
        async with queue_pipeline(
            tmp_path,
            eachlabs(double),
            max_concurrent={"eachlabs": 10},
            creates_per_min={"eachlabs": 600},
        ) as p:
            await fund(p, list(range(20, 30)))
            receipts = [
                await p.service.submit(member(u), {"prompt": f"m {u}", "duration_s": 3})
                for u in range(20, 30)
            ]
            await wait_all(p, [r.job.id for r in receipts], JobState.DELIVERED)
            rate = p.service.create_rate("eachlabs")
            # each 429 halved the rate (600 -> at most 300, never below three halvings: 75), and
            # the creates that went through after the last one grew it back
            assert rate.throttles == 3 and 75 <= rate.lowest_per_min <= 300
            assert rate.per_min > rate.lowest_per_min
            assert double.creates == 10 + 3
            jobs = [await p.service.jobs.get(r.job.id) for r in receipts]
            assert max(j.submit_attempts for j in jobs) >= 2
            assert all(j.state is JobState.DELIVERED for j in jobs)


async def test_failover_to_the_next_vendor_with_one_incident_message(tmp_path: Path) -> None:
    async with EachLabsDouble() as first, FalDouble() as second:
        first.next_create(
            "status", 402, {"status": "error", "message": "Insufficient balance"}, times=100
        )
        incidents: list[ProviderIncident] = []

        async def record(incident: ProviderIncident) -> None:
            incidents.append(incident)

        async with queue_pipeline(
            tmp_path,
            eachlabs(first, ("fal", second)),
            provider_chain=("eachlabs", "fal"),
            max_concurrent={"eachlabs": 10, "fal": 10},
            pricing=PriceTable(provider_per_second={"fal": 10}),  # fal costs more
            incident_handlers=[record],
        ) as p:
            await fund(p, [5], amount=500)
            receipts = [
                await p.service.submit(member(5), {"prompt": f"fox {n}", "duration_s": 5})
                for n in range(5)
            ]
            await wait_all(p, [r.job.id for r in receipts], JobState.DELIVERED)
            for receipt in receipts:
                job = await p.service.jobs.get(receipt.job.id)
                assert job.provider == "fal" and job.cost == 50 and job.charged == 50
                kinds = [t.kind.value for t in await p.ledger.transfers_for_job(job.id)]
                assert kinds == ["pending", "pending", "post", "post"]  # the hold, its top-up
            assert [(i.provider, i.kind, i.moved_to) for i in incidents] == [
                ("eachlabs", "out_of_funds", "fal")
            ]
            assert (await p.ledger.balance(AccountRef.member(G, 5))).available == 500 - 5 * 50
            assert (await p.ledger.audit()).ok


async def test_restart_with_fifty_queued_jobs_keeps_the_order(tmp_path: Path) -> None:
    users = list(range(300, 310))
    async with EachLabsDouble() as double:
        double.default_script = ["succeeded"]
        async with queue_pipeline(
            tmp_path,
            eachlabs(double),
            start=False,
            max_concurrent={"eachlabs": 1},
        ) as p:
            await fund(p, users)
            p.service.open_intake()  # intake only: nothing is dispatched before the restart
            for n in range(5):
                for user in users:
                    await p.service.submit(
                        member(user), {"prompt": f"member {user} clip {n}", "duration_s": 3}
                    )
            expected = [job_id for job_id, _ in await p.service.jobs.queue_positions("eachlabs")]
            assert len(expected) == 50
        async with queue_pipeline(
            tmp_path,
            eachlabs(double),
            max_concurrent={"eachlabs": 1},
        ) as p:
            await wait_all(p, expected, JobState.DELIVERED, timeout_s=120)
            sent = [double.jobs[j].request["input"]["prompt"] for j in double.create_order]
            wanted = [(await p.service.jobs.get(j)).request["prompt"] for j in expected]
            assert sent == wanted
            assert sorted(job_id for job_id, _ in p.sink.deliveries) == sorted(expected)
            assert [len(await p.captures(j)) for j in expected] == [1] * 50


async def test_jobs_waiting_for_a_create_token_stay_queued_and_the_member_limit_holds(
    tmp_path: Path,
) -> None:
    """A job leaves the queue only with a create token from the vendor's shared budget (taken in
    the same transaction); without one it stays queued, unclaimed. Once tokens are there, the
    member's live limit still holds: their third job waits though the vendor has room."""
    clock = OffsetClock()
    async with EachLabsDouble() as double:
        double.default_script = ["processing"]
        async with queue_pipeline(
            tmp_path,
            eachlabs(double),
            clock=clock,
            max_concurrent={"eachlabs": 10},
            creates_per_min={"eachlabs": 6},  # one token at a time, one every 10 s
            deadline_s=3600,
        ) as p:
            await fund(p, [7])
            first = (await p.service.submit(member(7), {"prompt": "a", "duration_s": 3})).job
            await p.wait_for_state(first.id, JobState.RUNNING)
            second = (await p.service.submit(member(7), {"prompt": "b", "duration_s": 3})).job
            third = (await p.service.submit(member(7), {"prompt": "c", "duration_s": 3})).job
            await p.service.next_dispatch_round()  # no token: nothing leaves the queue
            assert p.service.creates_in_flight() == frozenset()
            assert [(await p.service.jobs.get(j.id)).state for j in (second, third)] == [
                JobState.QUEUED,
                JobState.QUEUED,
            ]
            assert len(double.jobs) == 1
            clock.advance(seconds=60)  # a token again
            await p.service.next_dispatch_round()
            await p.wait_for_state(second.id, JobState.RUNNING)
            clock.advance(seconds=60)  # and another, but the member has two live jobs
            await p.service.next_dispatch_round()
            assert (await p.service.jobs.get(third.id)).state is JobState.QUEUED
            assert len(double.jobs) == 2


@pytest.mark.parametrize(
    ("rules", "payer", "why"),
    [
        ({"member_cap_per_day": 40, "approval_threshold": 40}, "pool", "must approve"),
        ({"member_cap_per_day": 60}, "pool", "daily pool cap of 60"),
        ({"confirm_threshold": 45}, "member", "confirm videos above 45"),
    ],
)
async def test_failover_to_a_dearer_vendor_obeys_the_payer_rules(
    tmp_path: Path, rules: dict[str, int], payer: str, why: str
) -> None:
    """A move to a provider that costs more needs the same rules as the first hold: past the
    pool's approval threshold, a member's daily cap or the server's confirmation threshold it is
    refused, nothing more is held, the hold is released, and the member reads why."""
    async with EachLabsDouble() as first, FalDouble() as second:
        first.next_create(
            "status", 402, {"status": "error", "message": "Insufficient balance"}, times=100
        )
        async with queue_pipeline(
            tmp_path,
            eachlabs(first, ("fal", second)),
            provider_chain=("eachlabs", "fal"),
            pricing=PriceTable(provider_per_second={"fal": 16}),  # 80 for 5 s; eachlabs 40
        ) as p:
            await p.service.policy.set_values(G, rules, actor_id=1)
            if payer == "pool":
                await p.ledger.fund_pool(G, 1000, key="pool")
            else:
                await fund(p, [5], amount=1000)
            receipt = await p.service.submit(member(5), {"prompt": "fox", "duration_s": 5})
            assert receipt.payer == payer and receipt.cost == 40
            job = await p.wait_for_state(receipt.job.id, JobState.FAILED)
            assert job.provider == "eachlabs" and job.topup_hold_id is None
            assert "could not move to fal" in (job.error_message or "")
            assert why in (job.error_message or "")
            assert second.creates == 0
            kinds = [t.kind.value for t in await p.ledger.transfers_for_job(job.id)]
            assert kinds == ["pending", "void"]
            account = AccountRef.pool(G) if payer == "pool" else AccountRef.member(G, 5)
            assert (await p.ledger.balance(account)).available == 1000
            assert (await p.ledger.audit()).ok
