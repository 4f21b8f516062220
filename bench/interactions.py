"""Slash-command acknowledgement latency: /video from INTERACTION_CREATE to the callback, at 100
and 500 concurrent invocations.

Set-up: the real KlingBot and discord.py (bench/_ping_bot.py: KlingBot plus the two baseline
commands below) against the loopback Discord double (tests/e2e_support.py: `make_double`), the
real pipeline, database and web server, with EachLabs as the provider. By default the bot runs
in a process of its own, as in production, where Discord's work happens on Discord's machines:
the double and this driver run here, so their CPU stays out of the bot's process and off its
event loop (`--in-process` puts the bot on the double's event loop instead, as the end-to-end
tests do; then the double's work is part of every number). The EachLabs double runs in a
process of its own and keeps every job "processing", so nothing renders, downloads or
delivers; EachLabs' shipped concurrency (10 jobs at the vendor) keeps the rest queued (the queue
grows with each burst). Poll and status-edit intervals are the shipped defaults (5-60 s, 5 s).
One member per /video is added to the guild and funded before the bot starts (each member asks
for one video, so per-member limits never refuse one).

Warm-up (not measured): every member runs /ping once (discord.py meets each member for the first
time), one burst of /ping and of /pingdefer at the largest level (so discord.py's connection pool
to the double holds that many connections, as on a busy bot), and five /video.

Measured, for each of `--levels` in turn (default 100, then 500), `--rounds` times (default 4;
the samples of a level's rounds are pooled): one burst of each command (the order rotates every
round), one invocation per member, dispatched back to back through the double's gateway. A level
is measured on its own, so the bursts at 100 do not also carry the work a burst of 500 left
behind (its status messages trickle out for minutes at Discord's rate limits). For each
invocation: `elapsed_s` of the first callback the double receives (the double's clock, from
dispatching INTERACTION_CREATE to receiving the bot's callback POST): the acknowledgement. /video
defers first and then does the work, so for it also the time to the followup that carries the
receipt, i.e. the answer the member reads (the cog's checks, pricing, the hold and the job row in
one durable write, the followup). After each /video burst the benchmark waits until every new job
has its public status message (posted after the answer) or 2 s; past the first few hundred,
status messages in one channel trickle out at discord.py's rate-limit pace (a few a second), so
the count posted within the 2 s is reported and the trickle goes on under later bursts. The CPU
of the bot's process in each burst is split by thread (the event loop, the rest), and with
`--in-process` the garbage collector's pauses during the bursts are reported. Checked: every
callback was accepted by the double (within Discord's 3 s) and every /video answer is a
"Queued" receipt.

Baselines, measured in the same run at the same concurrency, interleaved with the /video bursts:
two commands added to the same bot (a subclass of KlingBot adds them to the command tree before
the bot syncs its commands): `/ping` answers "pong" at once (ephemeral, like /video's answer),
`/pingdefer` has /video's shape without its work (defer, then "pong" as a followup). They measure
the double's and discord.py's own round trip. The last line checks the target: /video
acknowledged with a p99 under 100 ms at 100 concurrent.

    python -m bench.interactions [--levels 100 500] [--rounds 4] [--in-process]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._ping_bot import bot_settings, running_ping_bot
from bench._support import ROOT, cpu_seconds, percentile, thread_cpu, vendor_process
from bot.playground.double import (
    DiscordDouble,
    DoubleInteraction,
    ResponseRecord,
    patch_discord_py,
)
from storage import Database, Ledger
from tests.e2e_support import CHANNEL, GUILD, make_double

FIRST_MEMBER = 950_000_000_000_000_000
EPHEMERAL = 64
DEFERRED = 5  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
SETTLE_S = 2.0
FUNDS = 200
TARGET_LEVEL = 100
TARGET_P99_MS = 100.0


@dataclass
class Harness:
    """The double and how to read the bot, wherever the bot runs."""

    double: DiscordDouble
    cpu: Callable[[], dict[str, float]]  # CPU seconds so far of the bot's process, by thread
    posted_since: Callable[[int], Awaitable[int]]  # jobs created since ms with a status message
    gc_pauses: list[float] | None  # the bot's collector pauses, when it shares our process


POSTED_SQL = "SELECT COUNT(*) FROM jobs WHERE created_at_ms >= ? AND status_message_id IS NOT NULL"


@asynccontextmanager
async def in_process(double: DiscordDouble, tmp: Path, vendor_url: str) -> AsyncIterator[Harness]:
    """The bot on this process's event loop, beside the double (as in the end-to-end tests)."""
    with patch_discord_py(double):
        async with running_ping_bot(bot_settings(tmp, vendor_url)) as (_bot, runtime):
            await connected(double)

            async def posted_since(since_ms: int) -> int:
                row = await runtime.service.db.fetchone(POSTED_SQL, (since_ms,))
                return int(row[0]) if row is not None else 0

            yield Harness(double, thread_cpu, posted_since, GC.pauses)


@asynccontextmanager
async def bot_process(
    double: DiscordDouble,
    tmp: Path,
    vendor_url: str,
    *,
    env: dict[str, str] | None = None,
    stop_timeout_s: float = 30.0,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Harness]]:
    """python -m bench._ping_bot in a process of its own (with `env`), connected to the double;
    its process and a harness that reads its CPU and its posted status messages."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._ping_bot",
        str(tmp),
        vendor_url,
        double.api_base,
        double.gateway_url,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if not line:
            raise RuntimeError("the bot process exited before it started")
        pid = int(json.loads(line)["pid"])
        await connected(double)
        db_uri = f"file:{bot_settings(tmp, vendor_url).db_path}?mode=ro"

        def count(since_ms: int) -> int:
            with contextlib.closing(sqlite3.connect(db_uri, uri=True)) as conn:
                return int(conn.execute(POSTED_SQL, (since_ms,)).fetchone()[0])

        async def posted_since(since_ms: int) -> int:
            return await asyncio.to_thread(count, since_ms)

        yield process, Harness(double, lambda: process_thread_cpu(pid), posted_since, None)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), stop_timeout_s)
            except TimeoutError:
                process.kill()
                await process.wait()


@asynccontextmanager
async def own_process(double: DiscordDouble, tmp: Path, vendor_url: str) -> AsyncIterator[Harness]:
    """The bot in a process of its own (python -m bench._ping_bot), as it runs in production:
    the double's work (Discord's, in reality) stays out of the bot's process."""
    async with bot_process(double, tmp, vendor_url) as (_, harness):
        yield harness


async def connected(double: DiscordDouble) -> None:
    await double.wait_until_connected(timeout=30)
    await double.wait_for(lambda: bool(double.commands(GUILD)), timeout=30)


def process_thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of process `pid`: its main thread (the event loop) and the rest."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals = {"event loop": 0.0, "other threads": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        kind = "event loop" if int(task.name) == pid else "other threads"
        totals[kind] += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return totals


async def fund(db_path: Path, users: list[int]) -> None:
    """Give every member FUNDS credits before the bot starts (same database file)."""
    async with await Database.open(db_path) as db:
        ledger = Ledger(db)
        await asyncio.gather(
            *(ledger.issue_to_member(GUILD, u, FUNDS, key=f"fund:{u}") for u in users)
        )


@dataclass
class Burst:
    name: str
    concurrency: int
    ack_p99s: list[float]  # per burst (pooled: one per round), ms
    ack_s: list[float]  # dispatch to the first callback (a reply, or a defer)
    answer_s: list[float]  # dispatch to the answer the member reads (the callback or followup)
    deferred: int
    rejected: int
    wall_s: float
    threads: dict[str, float]  # CPU seconds by thread kind
    driver_cpu_s: float  # CPU seconds of this process (the double and the driver)
    gc_s: list[float] | None  # collector pauses during the burst(s), if the bot is in-process

    def ack(self, p: float) -> float:
        return percentile(self.ack_s, p) * 1000

    def answer(self, p: float) -> float:
        return percentile(self.answer_s, p) * 1000

    @staticmethod
    def pooled(bursts: list[Burst]) -> Burst:
        first = bursts[0]
        return Burst(
            first.name,
            first.concurrency,
            [x for b in bursts for x in b.ack_p99s],
            [x for b in bursts for x in b.ack_s],
            [x for b in bursts for x in b.answer_s],
            sum(b.deferred for b in bursts),
            sum(b.rejected for b in bursts),
            sum(b.wall_s for b in bursts) / len(bursts),
            {k: sum(b.threads[k] for b in bursts) / len(bursts) for k in first.threads},
            sum(b.driver_cpu_s for b in bursts) / len(bursts),
            None if first.gc_s is None else [x for b in bursts for x in b.gc_s or ()],
        )


class GcPauses:
    """Garbage-collector pauses of this process (the bot, discord.py and the Discord double)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._started)

    def since(self, mark: int) -> list[float]:
        return self.pauses[mark:]


GC = GcPauses()


def answered(inter: DoubleInteraction) -> ResponseRecord | None:
    """The answer the member reads: the first callback, or after a defer the first followup."""
    callback = next((r for r in inter.responses if r.kind == "callback"), None)
    if callback is None or not callback.ok or callback.callback_type != DEFERRED:
        return callback
    return next((r for r in inter.responses if r.kind == "followup" and r.ok), None)


async def burst(h: Harness, name: str, users: list[int], options: dict[str, Any]) -> Burst:
    """Dispatch one `name` invocation per user back to back; wait for every answer."""
    threads, wall, gc_mark = h.cpu(), time.perf_counter(), len(h.gc_pauses or ())
    driver_cpu = cpu_seconds()
    inters: list[DoubleInteraction] = await asyncio.gather(
        *(
            h.double.invoke(name, options, user_id=user, guild_id=GUILD, channel_id=CHANNEL)
            for user in users
        )
    )
    # One waiter that looks every 50 ms at the interactions still unanswered: elapsed_s is
    # taken by the double when it receives each answer, not when we look. (A waiter per
    # interaction would wake on every change of the double's state: hundreds of waiters times
    # thousands of changes, on the bot's event loop.)
    deadline = time.perf_counter() + 60
    pending = list(inters)
    while pending:
        pending = [inter for inter in pending if answered(inter) is None]
        if time.perf_counter() > deadline:
            raise AssertionError(f"{len(pending)} of {len(inters)} {name} not answered")
        await asyncio.sleep(0.05)
    done = [answered(inter) for inter in inters]
    acks = [next(r for r in inter.responses if r.kind == "callback") for inter in inters]
    answers = [r for r in done if r is not None]
    wall_s = time.perf_counter() - wall
    after = h.cpu()
    expected = "Queued as job" if name == "video" else "pong"
    for reply in answers:
        if not reply.ok:
            continue  # rejected (too late): counted below
        data = reply.data or {}
        text = str(data.get("content") or "")
        assert expected in text and data.get("flags") == EPHEMERAL, (name, reply)
    ack_s = [ack.elapsed_s for ack in acks]
    return Burst(
        name,
        len(users),
        [percentile(ack_s, 99) * 1000],
        ack_s,
        [reply.elapsed_s for reply in answers],
        sum(ack.callback_type == DEFERRED for ack in acks),
        sum(not ack.ok for ack in acks),
        wall_s,
        {k: after[k] - threads.get(k, 0.0) for k in after},
        cpu_seconds() - driver_cpu,
        None if h.gc_pauses is None else h.gc_pauses[gc_mark:],
    )


async def settle(h: Harness, since_ms: int, jobs: int, wait_s: float = SETTLE_S) -> int:
    """Wait until the `jobs` jobs created since `since_ms` have their status message, or
    `wait_s`; return how many have."""
    started = time.perf_counter()
    while True:
        posted = await h.posted_since(since_ms)
        if posted >= jobs or time.perf_counter() - started > wait_s:
            return posted
        await asyncio.sleep(0.05)


COMMANDS = ("ping", "pingdefer", "video")


async def run(
    levels: list[int], rounds: int, separate: bool
) -> tuple[dict[tuple[str, int], Burst], dict[int, int]]:
    """The pooled bursts by (command, level), and per level the fewest status messages posted
    within SETTLE_S of a /video burst's last answer."""
    warm_up = 5
    users = [FIRST_MEMBER + n for n in range(warm_up + rounds * sum(levels))]
    bursts: dict[tuple[str, int], list[Burst]] = {(c, n): [] for c in COMMANDS for n in levels}
    settled: dict[int, int] = dict.fromkeys(levels, 1_000_000)
    start_bot = own_process if separate else in_process
    with tempfile.TemporaryDirectory() as tmp:
        async with vendor_process() as vendor:
            await fund(bot_settings(Path(tmp), vendor.api_base).db_path, users)
            double = await make_double()
            try:
                for user in users:
                    double.add_member(GUILD, user, f"member{user % 10_000}")
                async with start_bot(double, Path(tmp), vendor.api_base) as h:
                    for start in range(0, len(users), 100):
                        await burst(h, "ping", users[start : start + 100], {})
                    await burst(h, "ping", users[: max(levels)], {})
                    await burst(h, "pingdefer", users[: max(levels)], {})
                    since = now_ms()
                    await burst(h, "video", users[:warm_up], {"prompt": "warm-up"})
                    await settle(h, since, warm_up, wait_s=30)
                    jobs = warm_up
                    for level in levels:  # each level on its own: all its rounds, then the next
                        for round_ in range(rounds):
                            chosen = users[jobs : jobs + level]  # one /video per member
                            jobs += level
                            turn = round_ % len(COMMANDS)  # rotate the order of the commands
                            for command in COMMANDS[turn:] + COMMANDS[:turn]:
                                since = now_ms()
                                options = {"prompt": "a red fox"} if command == "video" else {}
                                result = await burst(h, command, chosen, options)
                                bursts[command, level].append(result)
                                if command == "video":
                                    posted = await settle(h, since, level)
                                    settled[level] = min(settled[level], posted)
                                else:
                                    await asyncio.sleep(0.5)
            finally:
                await double.stop()
    return {key: Burst.pooled(found) for key, found in bursts.items()}, settled


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def line(label: str, b: Burst) -> str:
    answer = (
        f"; answer p50 {b.answer(50):6.1f} p99 {b.answer(99):6.1f} ms"
        if b.deferred
        else " (the ack is the answer)"
    )
    cpu = sum(b.threads.values())
    gc_text = (
        ""
        if b.gc_s is None
        else f"; GC pauses: longest {1000 * max(b.gc_s, default=0):.0f} ms,"
        f" {1000 * sum(b.gc_s) / len(b.ack_p99s):.0f} ms per burst"
    )
    split = ", ".join(f"{k} {v:.2f} s" for k, v in b.threads.items())
    return (
        f"{label:<20} n={b.concurrency:3d}  ack p50 {b.ack(50):6.1f} ms  p99 {b.ack(99):6.1f} ms"
        f"  max {b.ack(100):6.1f} ms{answer}"
        f"\n{'':<20} {len(b.ack_s)} samples, {b.rejected} rejected; ack p99 per burst"
        f" {min(b.ack_p99s):.0f}-{max(b.ack_p99s):.0f} ms; per burst {b.wall_s:4.2f} s,"
        f" bot CPU {cpu:4.2f} s ({split}){gc_text}"
        f"{'' if b.gc_s is not None else f'; double CPU {b.driver_cpu_s:4.2f} s'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the bot on the benchmark's event loop, beside the Discord double",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results, settled = asyncio.run(run(args.levels, args.rounds, not args.in_process))
    where = "its own process" if not args.in_process else "the double's process and event loop"
    print(f"machine   1-min load average before: {load_before:.2f}; the bot ran in {where}")
    for level in args.levels:
        ping, shaped, video = (results[c, level] for c in COMMANDS)
        print(line("baseline  /ping", ping))
        print(line("baseline  /pingdefer", shaped))
        print(line("bot       /video", video))
        print(
            f"ratio     /video vs /ping at {level}: ack p50 {video.ack(50) / ping.ack(50):.2f},"
            f" p99 {video.ack(99) / ping.ack(99):.2f}"
        )
        print(
            f"ratio     /video vs /pingdefer at {level}: ack p50"
            f" {video.ack(50) / shaped.ack(50):.2f}, p99 {video.ack(99) / shaped.ack(99):.2f};"
            f" answer p50 {video.answer(50) / shaped.answer(50):.2f},"
            f" p99 {video.answer(99) / shaped.answer(99):.2f}"
        )
        print(
            f"          status messages: at least {settled[level]} of {level} posted within"
            f" {SETTLE_S:.0f} s of a /video burst's last answer"
        )
        if level == TARGET_LEVEL:
            met = video.ack(99) < TARGET_P99_MS and video.rejected == 0
            print(
                f"target    /video ack p99 < {TARGET_P99_MS:.0f} ms at {TARGET_LEVEL} concurrent:"
                f" {'met' if met else 'NOT met'} ({video.ack(99):.1f} ms)"
            )


if __name__ == "__main__":
    main()
