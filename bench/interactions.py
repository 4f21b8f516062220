"""Slash-command acknowledgement latency: /video from INTERACTION_CREATE to the callback, at 100
and 500 concurrent invocations.

Set-up: the real KlingBot and discord.py against the loopback Discord double
(tests/e2e_support.py: `make_double`, `make_settings`; the bot is started the way `running_bot`
starts it), the real pipeline, database and web server, with EachLabs as the provider. The
EachLabs double runs in a process of its own and keeps every job "processing", so nothing
renders, downloads or delivers; EachLabs' shipped concurrency (10 jobs at the vendor) keeps the
rest queued (the queue grows with each burst). Poll and status-edit intervals are the shipped
defaults (5-60 s, 5 s). One member per /video is added to the guild and funded (each member asks
for one video, so per-member limits never refuse one).

Warm-up (not measured): every member runs /ping once (discord.py meets each member for the first
time), one burst of /ping and of /pingdefer at the largest level (so discord.py's connection pool
to the double holds that many connections, as on a busy bot), and five /video.

Measured, `--rounds` times (default 4; the samples of all rounds are pooled): for each of
`--levels` (default 100, then 500) one burst of each command (the order rotates every round), one
invocation per member, dispatched back to back through the double's gateway. For each
invocation: `elapsed_s` of the first callback the double receives (the double's clock, from
dispatching INTERACTION_CREATE to receiving the bot's callback POST): the acknowledgement. /video
defers first and then does the work, so for it also the time to the followup that carries the
receipt, i.e. the answer the member reads (the cog's checks, pricing, the hold and the job row in
one durable write, the followup). After each /video burst the benchmark waits until every new job
has its public status message (posted after the answer) or 2 s; past the first few hundred,
status messages in one channel trickle out at discord.py's rate-limit pace (a few a second), so
the count posted within the 2 s is reported and the trickle goes on under later bursts. The CPU
of each burst is split by thread (the event loop, aiosqlite's threads, the rest) and the garbage
collector's pauses during the bursts are reported (they grow with the heap, which here includes
the double's records). Checked: every callback was accepted by the double (within Discord's 3 s)
and every /video answer is a "Queued" receipt.

Baselines, measured in the same run at the same concurrency, interleaved with the /video bursts:
two commands added to the same bot (a subclass of KlingBot adds them to the command tree before
the bot syncs its commands): `/ping` answers "pong" at once (ephemeral, like /video's answer),
`/pingdefer` has /video's shape without its work (defer, then "pong" as a followup). They measure
the double's and discord.py's own round trip; the Discord double runs in the bot's process and
event loop (as in the end-to-end tests), so its work is part of every number.

    python -m bench.interactions [--levels 100 500] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
from discord import app_commands
from pydantic import SecretStr

from bench._support import percentile, thread_cpu, vendor_process
from bot.client import FrontConfig, KlingBot
from bot.discord_cli import NotConnectedSink
from bot.runtime import open_runtime
from bot.settings import EachLabsSettings, Settings
from storage import OffsetClock
from tests.discord_double import (
    DiscordDouble,
    DoubleInteraction,
    ResponseRecord,
    patch_discord_py,
)
from tests.e2e_support import CHANNEL, GUILD, TOKEN, Running, make_double, make_settings
from tests.provider_doubles.eachlabs import API_KEY

FIRST_MEMBER = 950_000_000_000_000_000
EPHEMERAL = 64
DEFERRED = 5  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
SETTLE_S = 2.0


class PingBot(KlingBot):
    """KlingBot plus two no-op commands, added before setup_hook syncs the commands: /ping
    answers at once; /pingdefer has /video's shape (defer, then the answer as a followup)."""

    async def setup_hook(self) -> None:
        @app_commands.command(name="ping", description="Answer at once (benchmark baseline)")
        async def ping(interaction: discord.Interaction[Any]) -> None:
            await interaction.response.send_message("pong", ephemeral=True)

        @app_commands.command(name="pingdefer", description="Defer, then answer (baseline)")
        async def pingdefer(interaction: discord.Interaction[Any]) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            await interaction.followup.send("pong", ephemeral=True)

        self.tree.add_command(ping)
        self.tree.add_command(pingdefer)
        await super().setup_hook()


@asynccontextmanager
async def running_ping_bot(double: DiscordDouble, settings: Settings) -> AsyncIterator[Running]:
    """`tests.e2e_support.running_bot`, with PingBot."""
    clock = OffsetClock()
    with patch_discord_py(double):
        async with open_runtime(settings, delivery=NotConnectedSink(), clock=clock) as runtime:
            bot = PingBot(runtime, FrontConfig.from_settings(settings), guild_ready_timeout=0.1)
            task = asyncio.create_task(bot.start(TOKEN))
            try:
                await double.wait_until_connected(timeout=15)
                await double.wait_for(lambda: bool(double.commands(GUILD)), timeout=15)
                yield Running(double, bot, runtime, settings, clock)
            finally:
                await bot.close()
                await asyncio.wait_for(task, 15)


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
    gc_s: list[float]  # garbage-collector pauses during the burst(s)

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
            [x for b in bursts for x in b.gc_s],
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


async def burst(run: Running, name: str, users: list[int], options: dict[str, Any]) -> Burst:
    """Dispatch one `name` invocation per user back to back; wait for every answer."""
    threads, wall, gc_mark = thread_cpu(), time.perf_counter(), len(GC.pauses)
    inters: list[DoubleInteraction] = await asyncio.gather(
        *(
            run.double.invoke(name, options, user_id=user, guild_id=GUILD, channel_id=CHANNEL)
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
    after = thread_cpu()
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
        GC.since(gc_mark),
    )


async def settle(run: Running, since_ms: int, jobs: int, wait_s: float = SETTLE_S) -> int:
    """Wait until the `jobs` jobs created since `since_ms` have their status message, or
    `wait_s`; return how many have."""
    started = time.perf_counter()
    sql = "SELECT COUNT(*) FROM jobs WHERE created_at_ms >= ? AND status_message_id IS NOT NULL"
    while True:
        row = await run.service.db.fetchone(sql, (since_ms,))
        posted = int(row[0]) if row is not None else 0
        if posted >= jobs or time.perf_counter() - started > wait_s:
            return posted
        await asyncio.sleep(0.05)


COMMANDS = ("ping", "pingdefer", "video")


async def run(
    levels: list[int], rounds: int, freeze: bool = False
) -> tuple[dict[tuple[str, int], Burst], dict[int, int]]:
    """The pooled bursts by (command, level), and per level the fewest status messages posted
    within SETTLE_S of a /video burst's last answer."""
    warm_up = 5
    users = [FIRST_MEMBER + n for n in range(warm_up + rounds * sum(levels))]
    bursts: dict[tuple[str, int], list[Burst]] = {(c, n): [] for c in COMMANDS for n in levels}
    settled: dict[int, int] = dict.fromkeys(levels, 1_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        async with vendor_process() as vendor:
            double = await make_double()
            try:
                for user in users:
                    double.add_member(GUILD, user, f"member{user % 10_000}")
                settings = make_settings(
                    Path(tmp),
                    provider="eachlabs",
                    eachlabs=EachLabsSettings(api_key=SecretStr(API_KEY), base_url=vendor.api_base),
                    poll_initial_interval_s=5.0,
                    poll_max_interval_s=60.0,
                    status_edit_interval_s=5.0,
                )
                async with running_ping_bot(double, settings) as bot:
                    await asyncio.gather(*(bot.fund(user, 200) for user in users))
                    for start in range(0, len(users), 100):
                        await burst(bot, "ping", users[start : start + 100], {})
                    await burst(bot, "ping", users[: max(levels)], {})
                    await burst(bot, "pingdefer", users[: max(levels)], {})
                    since = bot.clock.now_ms()
                    await burst(bot, "video", users[:warm_up], {"prompt": "warm-up"})
                    await settle(bot, since, warm_up, wait_s=30)
                    if freeze:  # the collector stops scanning what exists now
                        gc.collect()
                        gc.freeze()
                    jobs = warm_up
                    for round_ in range(rounds):
                        for level in levels:
                            chosen = users[jobs : jobs + level]  # one /video per member
                            jobs += level
                            turn = round_ % len(COMMANDS)  # rotate the order of the commands
                            for command in COMMANDS[turn:] + COMMANDS[:turn]:
                                since = bot.clock.now_ms()
                                options = {"prompt": "a red fox"} if command == "video" else {}
                                result = await burst(bot, command, chosen, options)
                                bursts[command, level].append(result)
                                if command == "video":
                                    posted = await settle(bot, since, level)
                                    settled[level] = min(settled[level], posted)
                                else:
                                    await asyncio.sleep(0.5)
            finally:
                await double.stop()
    return {key: Burst.pooled(found) for key, found in bursts.items()}, settled


def line(label: str, b: Burst) -> str:
    answer = (
        f"; answer p50 {b.answer(50):6.1f} p99 {b.answer(99):6.1f} ms"
        if b.deferred
        else " (the ack is the answer)"
    )
    cpu = sum(b.threads.values())
    split = ", ".join(f"{k} {v:.2f} s" for k, v in b.threads.items())
    return (
        f"{label:<20} n={b.concurrency:3d}  ack p50 {b.ack(50):6.1f} ms  p99 {b.ack(99):6.1f} ms"
        f"  max {b.ack(100):6.1f} ms{answer}"
        f"\n{'':<20} {len(b.ack_s)} samples, {b.rejected} rejected; ack p99 per burst"
        f" {min(b.ack_p99s):.0f}-{max(b.ack_p99s):.0f} ms; per burst {b.wall_s:4.2f} s,"
        f" CPU {cpu:4.2f} s ({split}); GC pauses: longest {1000 * max(b.gc_s, default=0):.0f} ms,"
        f" {1000 * sum(b.gc_s) / len(b.ack_p99s):.0f} ms per burst"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after the warm-up (what the bot could do after start-up)",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results, settled = asyncio.run(run(args.levels, args.rounds, args.gc_freeze))
    print(f"machine   1-min load average before: {load_before:.2f}")
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


if __name__ == "__main__":
    main()
