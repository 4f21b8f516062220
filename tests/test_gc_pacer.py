"""GcPacer: survivors are frozen out of the collector's scans, and frozen garbage is freed at
the next refreeze."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from bot.gc_pacer import GcPacer

# A full collection also finalizes garbage that earlier tests left in this process (discord.py
# event coroutines never awaited when a test bot closed, say); their warnings are not this test's.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # leave the test process as it was


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_refreeze_freezes_the_survivors() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    pause_s = GcPacer().refreeze()
    assert gc.get_freeze_count() > 0 and pause_s >= 0


def test_a_cycle_that_dies_after_a_freeze_is_freed_by_the_next_refreeze() -> None:
    pacer = GcPacer()
    holder = [Node(), Node()]
    holder[0].other, holder[1].other = holder[1], holder[0]
    ref = weakref.ref(holder[0])
    pacer.refreeze()  # the live cycle is frozen
    holder.clear()  # now it is garbage, but frozen: a plain collection does not see it
    gc.collect()
    assert ref() is not None
    pacer.refreeze()
    assert ref() is None


def test_unfrozen_cycles_are_collected_as_usual() -> None:
    GcPacer().refreeze()
    ref = cycle()  # made after the freeze
    gc.collect()
    assert ref() is None


async def test_start_and_stop() -> None:
    pacer = GcPacer(every_s=3600)
    pacer.start()
    await pacer.stop()
    await pacer.stop()  # stopping twice is harmless
