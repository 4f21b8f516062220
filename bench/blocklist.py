"""Blocklist regexes on adversarial prompts: RE2 (what the bot runs) against the stdlib `re`.

Baseline, measured in the same run: the stdlib `re` running the classic catastrophic pattern
`(a+)+$` on "a" * n + "!" for small n; its time doubles with every character. The blocklist
(`first_blocked`, RE2) runs the same pattern on prompts thousands of times longer; its time grows
with the length. Printed: each engine's time per size, how much it grows from one size to the next,
and the stdlib's time at its largest n against RE2's at 1 000 000 characters.

    python -m bench.blocklist [--re-max-chars 24]
"""

from __future__ import annotations

import argparse
import functools
import re
import time
from collections.abc import Callable

from bot.pipeline.blocklist import first_blocked
from storage import BlockedPattern

PATTERN = r"(a+)+$"


def best_of(runs: int, work: Callable[[], object]) -> float:
    """The fastest of `runs` timings of `work`, in seconds."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--re-max-chars", type=int, default=24, help="largest n for stdlib re")
    args = parser.parse_args()
    stdlib = re.compile(PATTERN)
    entries = [BlockedPattern(PATTERN, True)]
    first_blocked(entries, ["warm up"])  # compile once (cached), as the bot does

    print(f"pattern {PATTERN!r} on 'a' * n + '!' (no match: the worst case for backtracking)")
    base: list[tuple[int, float]] = []
    for n in range(args.re_max_chars - 8, args.re_max_chars + 1, 2):
        base.append((n, best_of(1, functools.partial(stdlib.search, "a" * n + "!"))))
    for (n, seconds), (_, before) in zip(base, [(0, 0.0), *base], strict=False):
        growth = f"x{seconds / before:6.1f} for +2 chars" if before else ""
        print(f"baseline  stdlib re   n={n:>9,}  {seconds * 1000:12.3f} ms  {growth}")
    ours: list[tuple[int, float]] = []
    for n in (1_000, 10_000, 100_000, 1_000_000):
        ours.append((n, best_of(5, functools.partial(first_blocked, entries, ["a" * n + "!"]))))
    for (n, seconds), (_, before) in zip(ours, [(0, 0.0), *ours], strict=False):
        growth = f"x{seconds / before:6.1f} for x10 chars" if before else ""
        print(f"blocklist RE2         n={n:>9,}  {seconds * 1000:12.3f} ms  {growth}")
    (re_n, re_s), (re2_n, re2_s) = base[-1], ours[-1]
    print(
        f"ratio     stdlib re on {re_n} chars / RE2 on {re2_n:,} chars: {re_s / re2_s:.1f}"
        f" (RE2 handles a prompt {re2_n // re_n:,} times longer)"
    )


if __name__ == "__main__":
    main()
