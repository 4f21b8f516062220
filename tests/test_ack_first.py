"""AckFirst: work after a defer waits for acknowledgements in flight, but never forever."""

from __future__ import annotations

import asyncio

import pytest

from bot.discord.ack_first import AckFirst


async def test_work_waits_until_every_acknowledgement_is_sent() -> None:
    gate = AckFirst(max_wait_s=5.0)
    order: list[str] = []
    release = asyncio.Event()

    async def slow_ack() -> None:
        async with gate.acknowledging():
            await release.wait()
            order.append("ack")

    async def work() -> None:
        await gate.wait_turn()
        order.append("work")

    ack_task = asyncio.create_task(slow_ack())
    await asyncio.sleep(0)
    assert gate.in_flight == 1
    work_task = asyncio.create_task(work())
    for _ in range(100):  # let the work run up to its turn (loop steps, not time)
        if gate.waiting:
            break
        await asyncio.sleep(0)
    assert gate.waiting == 1 and order == []  # held back while the acknowledgement is in flight
    release.set()
    await asyncio.gather(ack_task, work_task)
    assert order == ["ack", "work"] and gate.in_flight == 0


async def test_idle_gate_lets_work_through_at_once() -> None:
    gate = AckFirst(max_wait_s=5.0)
    await asyncio.wait_for(gate.wait_turn(), 0.1)


async def test_a_stuck_acknowledgement_delays_work_only_max_wait() -> None:
    gate = AckFirst(max_wait_s=0.05)
    never = asyncio.Event()

    async def stuck() -> None:
        async with gate.acknowledging():
            await never.wait()

    task = asyncio.create_task(stuck())
    await asyncio.sleep(0)
    await asyncio.wait_for(gate.wait_turn(), 1.0)  # returns after about max_wait_s
    assert gate.in_flight == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert gate.in_flight == 0  # a cancelled acknowledgement is no longer counted


async def test_failed_acknowledgement_is_not_counted_afterwards() -> None:
    gate = AckFirst()

    async def failing() -> None:
        async with gate.acknowledging():
            raise RuntimeError("Discord refused")

    with pytest.raises(RuntimeError):
        await failing()
    assert gate.in_flight == 0
    await asyncio.wait_for(gate.wait_turn(), 0.1)
