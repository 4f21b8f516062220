"""Webhook intake: signed EachLabs webhooks accepted per second, and their latency, at 50 connections,
on SQLite (one process) and on PostgreSQL (one process, and two processes sharing the database).

Set-up, for each of the three set-ups below: real pipelines, each in a bot process of its own
(bench/_webhook_bot.py: tests/pipeline_support.py's pipeline, the bot's aiohttp server on
127.0.0.1) with the EachLabs adapter and a webhook secret, on one database. 2 x `--jobs` jobs are
submitted through the service (one funded member per job; with two processes each submits half)
and created at the EachLabs double, which runs in a process of its own (a fresh one per set-up)
and keeps every job "processing". Each job is then moved to
`running` with the vendor status its first poll would record (as a job is when its result webhook
arrives); scheduled polls are an hour apart, so none happens during the measurement.

Before measuring, the bot's GC pacer freezes what the set-up left on the heap, as it does every
few minutes in a running bot (bot/gc_pacer.py); otherwise the collector's full scans of it pause
the event loop for 40-60 ms several times a second under this load.

The set-ups, measured one after the other in the same run:

  SQLite, 1 process        durable SQLite file (as the bot ships)
  PostgreSQL, 1 process    a database the bench creates (and drops) on the server at
                           `--database-url` (default the local one); `--no-postgres` skips both
                           PostgreSQL set-ups
  PostgreSQL, 2 processes  two bot processes on one such database, each with its own web server
                           and process id. The jobs' leases are split between them as their
                           dispatchers claimed the jobs; the load generator sends each webhook to
                           one of the two servers at random (seeded), so about half reach the
                           process that does not hold the job, which records the delivery and
                           asks the holder (a lease poke and a NOTIFY) to do the status check.

Measured: one signed webhook per job (the double's own body and signature; a distinct delivery
each), POSTed to /webhooks/eachlabs/{job token} by a load generator in another process over
`--concurrency` keep-alive connections (spread evenly over the servers). Each goes through the whole intake: job lookup by token
(from memory, as in the bot: a job's target is remembered when it is created, changed or resumed),
HMAC and timestamp check, JSON parse, a de-duplication row written in a durable (fsync) group
commit, then 200. Three runs:

  saturated  the first `--jobs` webhooks, closed loop (each connection sends its next webhook as
             soon as it has an answer): the most the bot accepts per second, and its latency then
  paced      the other `--jobs` webhooks offered at `--rate` per second (open loop; latency
             counts from when each was due, so falling behind shows as queueing)
  duplicates the first `--jobs` webhooks again, closed loop: each answered 200 "duplicate"
             (verified, then found among the deliveries the bot knows are stored: no write)

The target is read at the paced run: 1,000 webhooks a second offered over 50 connections. The
saturated run shows the headroom; its latency is set by the closed loop itself (with 50 requests
always in flight, the mean latency is 50 / throughput, e.g. 20 ms at 2,500/s).

Included, because it is part of the real load: each accepted webhook pokes the scheduler, which
polls the vendor in the background on the same event loop, as fast as the provider's poll limit
allows. By default that limit is the shipped one (`polls_per_min`, 300 a minute), so most of
those polls are deferred; `--polls-per-min 1000000` lifts it, so every poke polls at once and
the webhook intake shares the event loop with one vendor poll per webhook. Between runs the
benchmark waits (up to 10 s) until the vendor has seen one poll per accepted webhook. Checked: every answer is 200, one delivery row per
distinct webhook is stored, and the metrics count each accepted and duplicate delivery.

Baseline, measured in the same run by the same load generator with the same requests (saturated
and paced): a bare aiohttp handler on the same server set-up (WebServer on 127.0.0.1, in the
bench's own process) that reads the body and answers 200 with a small JSON body. Each set-up is
printed with its ratios to the baseline and to SQLite. "server CPU" is the CPU time of each bot
process (or the baseline server's) during a run, as a share of one core, then split by thread (the
event loop, aiosqlite's threads, the rest); the vendor and the load generator run in other
processes. On a small machine they all share the same cores (and PostgreSQL's backends too).

    python -m bench.webhooks [--jobs 3000] [--rate 1000] [--concurrency 50]
                             [--polls-per-min 1000000] [--client raw|aiohttp]
                             [--no-postgres] [--database-url URL] [--seed 12]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from bench._support import (
    DEFAULT_SERVER_URL,
    ROOT,
    LoadResult,
    VendorProcess,
    cpu_split,
    drop_database,
    load_in_process,
    scratch_database,
    thread_cpu,
    vendor_process,
)
from bot.settings import EachLabsSettings
from bot.web.app import WebServer
from tests.provider_doubles.base import FakeJob
from tests.provider_doubles.eachlabs import EachLabsDouble

TARGET_PER_S = 1000
TARGET_P99_MS = 25.0

SECRET = "whsec-bench"
FIRST_MEMBER = 10_000
DRAIN_WAIT_S = 10.0
ANSWER_LIMIT_BYTES = 64 * 1024 * 1024  # a bot process's longest answer line (its facts)

Request = tuple[str, dict[str, str], bytes]  # URL, headers, body


@dataclass(frozen=True)
class Webhook:
    """One signed webhook, as the vendor would send it for one job."""

    vendor_id: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Setup:
    name: str
    backend: str  # "sqlite" or "postgresql"
    processes: int


SETUPS = (
    Setup("SQLite, 1 process", "sqlite", 1),
    Setup("PostgreSQL, 1 process", "postgresql", 1),
    Setup("PostgreSQL, 2 processes", "postgresql", 2),
)


@dataclass
class Options:
    jobs: int
    rate: float
    concurrency: int
    polls_per_min: int
    client: str
    postgres: bool
    server_url: str
    seed: int


@dataclass
class Phase:
    """A load run and the CPU each server process used meanwhile."""

    load: LoadResult
    wall_s: float
    cpu_s: list[float]  # per server process
    splits: list[str]  # per server process, by thread

    def busy(self) -> str:
        """Share of one core each server process used while the load ran."""
        return " + ".join(f"{cpu / self.wall_s:.0%}" for cpu in self.cpu_s)


@dataclass
class SetupRun:
    setup: Setup
    saturated: Phase
    paced: Phase
    duplicates: Phase
    drained_s: list[float | None]
    rows: int
    accepted: float
    duplicate: float
    setup_s: float
    held: list[int]  # jobs whose lease each process holds
    forwarded: int  # distinct webhooks sent to a process that does not hold the job
    polled: int  # jobs polled (once each, by their lease holder)
    retries: int  # PostgreSQL writes re-run after a serialization failure, during the runs


class BotProcess:
    """A running `bench._webhook_bot`, driven one command at a time."""

    def __init__(self, process: asyncio.subprocess.Process, hello: dict[str, Any]) -> None:
        self.process = process
        self.url: str = hello["url"]
        self.process_id: str = hello["process_id"]

    async def ask(self, command: str, **args: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"do": command, **args}).encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"bot process {self.process_id} exited (on {command!r})")
        return json.loads(line)


@asynccontextmanager
async def bot_process(
    directory: Path, database: str, vendor: VendorProcess, process_id: str, opts: Options
) -> AsyncIterator[BotProcess]:
    """Start a bot process; stop it (by its pid) on exit."""
    directory.mkdir(parents=True)
    config = {
        "dir": str(directory),
        "database": database,
        "api_base": vendor.api_base,
        "secret": SECRET,
        "process_id": process_id,
        "slots": 2 * opts.jobs,
        "polls_per_min": opts.polls_per_min,
    }
    (directory / "config.json").write_text(json.dumps(config))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._webhook_bot",
        str(directory / "config.json"),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=ANSWER_LIMIT_BYTES,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 120)
        if not line:
            raise RuntimeError(f"bot process {process_id} exited before it served")
        bot = BotProcess(process, json.loads(line))
        yield bot
        await bot.ask("stop")
        await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@asynccontextmanager
async def database_for(setup: Setup, directory: Path, opts: Options) -> AsyncIterator[str]:
    """A SQLite path under `directory`, or a PostgreSQL database made for this set-up."""
    if setup.backend == "sqlite":
        yield str(directory / "klingbot.db")
        return
    url = await scratch_database(opts.server_url)
    try:
        yield url
    finally:
        await drop_database(opts.server_url, url)


async def measured(
    bots: Sequence[BotProcess], targets: Sequence[Request], opts: Options, rate: float | None
) -> Phase:
    before = [await bot.ask("cpu") for bot in bots]
    wall = time.perf_counter()
    warmups = [bot.url + "/healthz" for bot in bots]
    load = await load_in_process(targets, opts.concurrency, warmups, opts.client, rate)
    wall_s = time.perf_counter() - wall
    after = [await bot.ask("cpu") for bot in bots]
    cpu = [sum(a.values()) - sum(b.values()) for b, a in zip(before, after, strict=True)]
    return Phase(load, wall_s, cpu, [cpu_split(b, a) for b, a in zip(before, after, strict=True)])


async def running_jobs(
    bots: Sequence[BotProcess], vendor: VendorProcess, jobs: int
) -> list[Webhook]:
    """Mark the `jobs` jobs created at the vendor running, and build one signed webhook per job,
    as the vendor would send it."""
    running = (await bots[0].ask("running"))["running"]
    assert running == jobs, (running, jobs)
    double = EachLabsDouble()  # not started: only renders bodies and signatures
    double.base_url = vendor.url
    now = int(time.time())
    webhooks: list[Webhook] = []
    for listed in await vendor.get("/_bench/jobs"):
        url = listed["webhook_url"]
        origin = next((bot.url for bot in bots if url and url.startswith(bot.url)), None)
        assert origin is not None, listed
        body = double.webhook_body(FakeJob(listed["id"], {}, ["processing"]))
        path = url.removeprefix(origin)
        webhooks.append(Webhook(listed["id"], path, double.sign(SECRET, body, now), body))
    assert len(webhooks) == jobs, (len(webhooks), jobs)
    return webhooks


def aimed(webhooks: Sequence[Webhook], urls: Sequence[str], rng: random.Random) -> list[Request]:
    """Each webhook sent to one of the servers at `urls`, picked at random."""
    return [(rng.choice(urls) + w.path, w.headers, w.body) for w in webhooks]


async def run_setup(setup: Setup, tmp: Path, opts: Options) -> tuple[SetupRun, list[Webhook]]:
    """Start the set-up's processes one after the other, each submitting its share of the jobs
    once the jobs before are created (so each process's dispatcher claims its own: the leases
    split evenly), then measure."""
    directory = tmp / setup.name.replace(",", "").replace(" ", "-").lower()
    directory.mkdir()
    jobs = 2 * opts.jobs
    users = [FIRST_MEMBER + n for n in range(jobs)]  # one job per member: no per-member limit
    share = -(-jobs // setup.processes)
    async with (
        vendor_process() as vendor,
        database_for(setup, directory, opts) as database,
        contextlib.AsyncExitStack() as stack,
    ):
        bots: list[BotProcess] = []
        started = time.perf_counter()
        for k in range(setup.processes):  # the first one migrates the database
            where = directory / f"bot{k}"
            bot = await stack.enter_async_context(
                bot_process(where, database, vendor, f"bot{k}", opts)
            )
            bots.append(bot)
            await bot.ask("submit", members=users[k * share : (k + 1) * share])
            await bot.ask("created", total=min(jobs, (k + 1) * share))
        webhooks = await running_jobs(bots, vendor, jobs)
        return await measure_setup(
            setup, bots, vendor, webhooks, time.perf_counter() - started, opts
        )


async def measure_setup(
    setup: Setup,
    bots: list[BotProcess],
    vendor: VendorProcess,
    webhooks: list[Webhook],
    setup_s: float,
    opts: Options,
) -> tuple[SetupRun, list[Webhook]]:
    # The heap as a bot that has run a while keeps it: its GC pacer (bot/gc_pacer.py, started
    # with the runtime) has frozen what the set-up left.
    for bot in bots:
        await bot.ask("freeze")
    rng = random.Random(opts.seed)
    urls = [bot.url for bot in bots]
    first, second = webhooks[: opts.jobs], webhooks[opts.jobs :]
    first_targets, second_targets = aimed(first, urls, rng), aimed(second, urls, rng)
    retries_before = sum([(await bot.ask("facts"))["retries"] for bot in bots])
    polls_before = (await vendor.get("/_bench/stats"))["polls"]
    drained: list[float | None] = []

    async def drain(expected: int) -> None:
        """Wait until the vendor has had `expected` polls since the start (or give up)."""
        began = time.perf_counter()
        while time.perf_counter() - began < DRAIN_WAIT_S:
            if (await vendor.get("/_bench/stats"))["polls"] - polls_before >= expected:
                drained.append(time.perf_counter() - began)
                return
            await asyncio.sleep(0.05)
        drained.append(None)

    saturated = await measured(bots, first_targets, opts, None)
    await drain(opts.jobs)
    paced = await measured(bots, second_targets, opts, opts.rate)
    await drain(2 * opts.jobs)
    duplicates = await measured(bots, aimed(first, urls, rng), opts, None)
    facts = [await bot.ask("facts") for bot in bots]
    owners: dict[str, str] = facts[0]["owners"]

    # the owner does the status check: each poll came from the lease holder, none twice
    polls: Counter[str] = Counter()
    for bot, fact in zip(bots, facts, strict=True):
        strays = [v for v in fact["polled"] if owners.get(v) != bot.process_id]
        assert not strays, f"{bot.process_id} polled {len(strays)} jobs it does not hold"
        polls.update(fact["polled"])
    twice = [v for v, n in polls.items() if n > 1]
    assert not twice, f"{len(twice)} jobs polled more than once, e.g. {twice[:3]}"
    assert set(polls) <= {w.vendor_id for w in webhooks}, "a job polled that got no webhook"
    if all(d is not None for d in drained):
        assert len(polls) == len(webhooks), f"{len(polls)} of {len(webhooks)} jobs polled"
    sent_to = [t[0] for t in (*first_targets, *second_targets)]
    forwarded = sum(
        1
        for w, url in zip(webhooks, sent_to, strict=True)
        if owners[w.vendor_id] != next(b.process_id for b in bots if url.startswith(b.url))
    )
    run = SetupRun(
        setup,
        saturated,
        paced,
        duplicates,
        drained,
        facts[0]["rows"],
        sum(f["accepted"] for f in facts),
        sum(f["duplicate"] for f in facts),
        setup_s,
        [sum(1 for o in owners.values() if o == bot.process_id) for bot in bots],
        forwarded,
        len(polls),
        sum(f["retries"] for f in facts) - retries_before,
    )
    return run, webhooks


async def run_baseline(webhooks: Sequence[Webhook], opts: Options) -> tuple[Phase, Phase]:
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True, "reason": "ok"})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post("/webhooks/{provider}/{token}", hook)
    app.router.add_get("/healthz", healthz)
    server = WebServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        targets = [(server.url + w.path, w.headers, w.body) for w in webhooks]
        warmup = [server.url + "/healthz"]

        async def here(requests: Sequence[Request], rate: float | None) -> Phase:
            threads, wall = thread_cpu(), time.perf_counter()
            load = await load_in_process(requests, opts.concurrency, warmup, opts.client, rate)
            wall_s, after = time.perf_counter() - wall, thread_cpu()
            cpu = sum(after.values()) - sum(threads.values())
            return Phase(load, wall_s, [cpu], [cpu_split(threads, after)])

        saturated = await here(targets[: opts.jobs], None)
        paced = await here(targets[opts.jobs :], opts.rate)
        return saturated, paced
    finally:
        await server.stop()


async def run(opts: Options) -> tuple[list[SetupRun], Phase, Phase]:
    setups = [s for s in SETUPS if opts.postgres or s.backend == "sqlite"]
    runs: list[SetupRun] = []
    with tempfile.TemporaryDirectory() as tmp:
        for setup in setups:
            result, webhooks = await run_setup(setup, Path(tmp), opts)
            check(result, opts)
            runs.append(result)
            if setup is SETUPS[0]:
                baseline_webhooks = webhooks
        saturated, paced = await run_baseline(baseline_webhooks, opts)
    return runs, saturated, paced


def check(result: SetupRun, opts: Options) -> None:
    for phase in (result.saturated, result.paced, result.duplicates):
        assert phase.load.statuses == {200: opts.jobs}, (result.setup.name, phase.load.statuses)
    distinct = 2 * opts.jobs
    assert result.rows == distinct, f"{result.rows} delivery rows for {distinct} webhooks"
    assert (result.accepted, result.duplicate) == (distinct, opts.jobs), (
        result.setup.name,
        result.accepted,
        result.duplicate,
    )


def line(label: str, phase: Phase) -> str:
    r = phase.load
    return (
        f"{label:<30} {r.count:5d} in {r.elapsed_s:5.2f} s {r.per_s:6.0f}/s"
        f"  p50 {r.pct(50):6.2f} ms  p99 {r.pct(99):6.2f} ms  max {max(r.latencies_ms):6.1f} ms"
        f"\n{'':<30} server CPU {phase.busy()} of a core ({'; '.join(phase.splits)})"
    )


def ratio(label: str, run: Phase, base: Phase) -> str:
    r, b = run.load, base.load
    return (
        f"ratio     {label:<28} throughput {r.per_s / b.per_s:5.2f}"
        f"  p50 {r.pct(50) / b.pct(50):5.2f}  p99 {r.pct(99) / b.pct(99):5.2f}"
    )


def report(
    result: SetupRun, sqlite: SetupRun, base_saturated: Phase, base_paced: Phase, opts: Options
) -> None:
    c, setup = opts.concurrency, result.setup
    print(f"\n== {setup.name}")
    held = " + ".join(str(n) for n in result.held)
    print(
        f"set-up    {2 * opts.jobs} jobs submitted, created and running in {result.setup_s:.1f} s;"
        f" leases held {held}"
    )
    print(line(f"webhooks  saturated, {c} conns", result.saturated))
    print(line(f"webhooks  paced {opts.rate:.0f}/s", result.paced))
    print(line(f"webhooks  duplicates, {c} conns", result.duplicates))
    print(
        f"checked   all {3 * opts.jobs} answers 200; {result.rows} delivery rows;"
        f" metrics accepted={result.accepted:.0f} duplicate={result.duplicate:.0f};"
        f" {result.polled} jobs polled, each once, by its lease holder"
    )
    if setup.processes > 1:
        print(
            f"forwarded {result.forwarded} of {2 * opts.jobs} distinct webhooks reached the process"
            " that does not hold the job (recorded there, the holder asked to poll)"
        )
    if setup.backend == "postgresql":
        print(
            f"retries   {result.retries} writes re-run after a serialization failure"
            " during the runs"
        )
    waits = ", ".join(
        f"{s:.2f} s" if s is not None else f"not within {DRAIN_WAIT_S:.0f} s"
        for s in result.drained_s
    )
    print(
        f"background one vendor poll per accepted webhook (limit {opts.polls_per_min}/min per"
        f" process); all done after the saturated, paced run + {waits}"
    )
    print(ratio("saturated/baseline", result.saturated, base_saturated))
    print(ratio("paced/baseline", result.paced, base_paced))
    print(ratio("duplicates/baseline", result.duplicates, base_saturated))
    if result is not sqlite:
        print(ratio("saturated/SQLite", result.saturated, sqlite.saturated))
        print(ratio("paced/SQLite", result.paced, sqlite.paced))
        print(ratio("duplicates/SQLite", result.duplicates, sqlite.duplicates))
    paced = result.paced.load
    met = paced.per_s >= 0.99 * TARGET_PER_S and paced.pct(99) < TARGET_P99_MS
    print(
        f"target    >= {TARGET_PER_S}/s with p99 < {TARGET_P99_MS:.0f} ms at {c} connections"
        f" (paced run at {opts.rate:.0f}/s): {'met' if met else 'NOT met'}"
    )


def summary(runs: Sequence[SetupRun], base_saturated: Phase, base_paced: Phase) -> None:
    print("\n== summary (webhooks/s, p50 and p99 in ms)")
    print(f"{'':<26} {'saturated':>22}   {'paced':>22}   {'duplicates':>22}")

    def cells(phase: Phase | None) -> str:
        if phase is None:
            return f"{'':>22}"
        r = phase.load
        return f"{r.per_s:6.0f}/s {r.pct(50):6.2f} {r.pct(99):6.2f}"

    print(f"{'baseline (bare aiohttp)':<26} {cells(base_saturated)}   {cells(base_paced)}")
    for r in runs:
        print(f"{r.setup.name:<26} {cells(r.saturated)}   {cells(r.paced)}   {cells(r.duplicates)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000, help="webhooks per run")
    parser.add_argument("--rate", type=float, default=1000.0, help="offered rate of the paced run")
    parser.add_argument("--concurrency", type=int, default=50, help="keep-alive connections")
    parser.add_argument(
        "--polls-per-min",
        type=int,
        default=EachLabsSettings().polls_per_min,
        help="EachLabs poll limit during the runs (default: the shipped default)",
    )
    parser.add_argument(
        "--client",
        choices=["raw", "aiohttp"],
        default="raw",
        help="load generator: a minimal HTTP/1.1 client (default) or aiohttp's ClientSession",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_SERVER_URL,
        help="a PostgreSQL server where the bench may create and drop databases",
    )
    parser.add_argument("--seed", type=int, default=12, help="which server gets which webhook")
    args = parser.parse_args()
    opts = Options(
        args.jobs,
        args.rate,
        args.concurrency,
        args.polls_per_min,
        args.client,
        not args.no_postgres,
        args.database_url,
        args.seed,
    )
    runs, base_saturated, base_paced = asyncio.run(run(opts))
    c = opts.concurrency
    print(line(f"baseline  saturated, {c} conns", base_saturated))
    print(line(f"baseline  paced {opts.rate:.0f}/s", base_paced))
    for result in runs:
        report(result, runs[0], base_saturated, base_paced, opts)
    summary(runs, base_saturated, base_paced)


if __name__ == "__main__":
    main()
