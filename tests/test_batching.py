"""Batcher: a lone request goes at once; requests that find every slot busy go together, in
arrival order; each caller gets its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from storage.batching import Batcher


class Gate:
    """A batch function that records each batch and holds it until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def run(self, requests: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(requests))
        self.started.set()
        await self.release.wait()
        return [ValueError(f"odd {r}") if r % 2 else r * 10 for r in requests]

    async def run_released(self, requests: Sequence[int]) -> list[int | BaseException]:
        self.release.set()
        return await self.run(requests)


async def _started(tasks: list[asyncio.Task[int]]) -> None:
    """Let every task reach its submit (each runs to its first await)."""
    while not all(t.done() or t.get_coro().cr_await is not None for t in tasks):  # type: ignore[union-attr]
        await asyncio.sleep(0)


async def test_a_lone_request_runs_at_once_alone_in_the_callers_task() -> None:
    tasks: list[asyncio.Task[object] | None] = []

    async def run(requests: Sequence[int]) -> list[int | BaseException]:
        tasks.append(asyncio.current_task())
        return [r * 10 for r in requests]

    batcher: Batcher[int, int] = Batcher(run, slots=1)
    assert await batcher.submit(4) == 40
    assert tasks == [asyncio.current_task()]
    with pytest.raises(ValueError, match="odd 3"):
        await Batcher(Gate().run_released, slots=1).submit(3)


async def test_requests_that_find_the_slots_busy_go_together_in_order() -> None:
    gate = Gate()
    batcher: Batcher[int, int] = Batcher(gate.run, slots=1, max_batch=3)
    first = asyncio.create_task(batcher.submit(0))
    await gate.started.wait()
    rest = [asyncio.create_task(batcher.submit(n)) for n in (2, 4, 6, 8)]
    await _started(rest)
    assert gate.batches == [[0]]  # the others wait for the slot
    gate.release.set()
    assert await first == 0
    assert [await t for t in rest] == [20, 40, 60, 80]
    assert gate.batches == [[0], [2, 4, 6], [8]]
    assert batcher.batches == 3


async def test_each_caller_gets_its_own_outcome() -> None:
    gate = Gate()
    batcher: Batcher[int, int] = Batcher(gate.run, slots=1)
    blocker = asyncio.create_task(batcher.submit(0))
    await gate.started.wait()
    tasks = [asyncio.create_task(batcher.submit(n)) for n in (1, 2, 3)]
    await _started(tasks)
    gate.release.set()
    await blocker
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[1] == 20
    assert [str(r) for r in (results[0], results[2])] == ["odd 1", "odd 3"]
    assert gate.batches == [[0], [1, 2, 3]]


async def test_a_failed_batch_fails_each_of_its_callers() -> None:
    async def broken(requests: Sequence[int]) -> list[int | BaseException]:
        raise OSError("disk full")

    batcher: Batcher[int, int] = Batcher(broken, slots=1)
    results = await asyncio.gather(*(batcher.submit(n) for n in range(3)), return_exceptions=True)
    assert [type(r) for r in results] == [OSError] * 3


async def test_a_batch_with_the_wrong_number_of_outcomes_is_an_error() -> None:
    async def short(requests: Sequence[int]) -> list[int | BaseException]:
        return []

    batcher: Batcher[int, int] = Batcher(short)
    with pytest.raises(RuntimeError, match="gave 0 outcomes"):
        await batcher.submit(1)


async def test_a_cancelled_waiting_caller_is_left_out_of_the_next_batch() -> None:
    gate = Gate()
    batcher: Batcher[int, int] = Batcher(gate.run, slots=1)
    blocker = asyncio.create_task(batcher.submit(0))
    await gate.started.wait()
    leaving = asyncio.create_task(batcher.submit(2))
    staying = asyncio.create_task(batcher.submit(4))
    await _started([leaving, staying])
    leaving.cancel()
    gate.release.set()
    await blocker
    assert await staying == 40
    assert gate.batches == [[0], [4]]


def test_a_batcher_needs_a_slot_and_room() -> None:
    async def run(requests: Sequence[int]) -> list[int | BaseException]:
        return list(requests)

    with pytest.raises(ValueError, match="at least one"):
        Batcher(run, slots=0)
    with pytest.raises(ValueError, match="at least one"):
        Batcher(run, max_batch=0)
