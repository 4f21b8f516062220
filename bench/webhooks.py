"""Webhook intake: signed EachLabs webhooks accepted per second, and their latency, at 50 connections.

Set-up: a real pipeline (tests/pipeline_support.py: Harness, durable SQLite, the bot's
aiohttp server on 127.0.0.1) with the EachLabs adapter and a webhook secret. 2 x `--jobs` jobs
are submitted through the service (one funded member per job) and created at the EachLabs double, which
runs in a process of its own and keeps every job "processing". Each job is then moved to
`running` with the vendor status its first poll would record (as a job is when its result webhook
arrives); scheduled polls are an hour apart, so none happens during the measurement.

Before measuring, the bot's GC pacer freezes what the set-up left on the heap, as it does every
few minutes in a running bot (bot/gc_pacer.py); otherwise the collector's full scans of it pause
the event loop for 40-60 ms several times a second under this load.

Measured: one signed webhook per job (the double's own body and signature; a distinct delivery
each), POSTed to /webhooks/eachlabs/{job token} by a load generator in another process over
`--concurrency` keep-alive connections. Each goes through the whole intake: job lookup by token
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
and paced): a bare aiohttp handler on the same server set-up (WebServer on 127.0.0.1) that reads
the body and answers 200 with a small JSON body. "server CPU" is the CPU time of the bot's (or
the baseline server's) process during a run, as a share of one core, then split by thread (the
event loop, aiosqlite's threads, the rest); the vendor and the load generator run in other
processes.

    python -m bench.webhooks [--jobs 3000] [--rate 1000] [--concurrency 50]
                             [--polls-per-min 1000000] [--client raw|aiohttp]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from pydantic import SecretStr

from bench._support import (
    LoadResult,
    VendorProcess,
    cpu_seconds,
    cpu_split,
    load_in_process,
    thread_cpu,
    vendor_process,
)
from bot.gc_pacer import GcPacer
from bot.providers import ProviderHttp, VideoProvider
from bot.providers.eachlabs import EachLabsProvider
from bot.settings import EachLabsSettings
from bot.web.app import WebServer
from storage import JobState, Tx
from tests.pipeline_support import Harness, member, pipeline
from tests.provider_doubles.base import FakeJob
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble

TARGET_PER_S = 1000
TARGET_P99_MS = 25.0

SECRET = "whsec-bench"
REQUEST = {"prompt": "a red fox running through snow", "duration_s": 5}
COST = 40  # 5 s x 8 credits
SUBMIT_BATCH = 500
FIRST_MEMBER = 10_000
DRAIN_WAIT_S = 10.0

Request = tuple[str, dict[str, str], bytes]  # path (or URL), headers, body


@dataclass
class Options:
    jobs: int
    rate: float
    concurrency: int
    polls_per_min: int
    client: str


@dataclass
class Phase:
    """A load run and the CPU the server's process used meanwhile."""

    load: LoadResult
    server_cpu_s: float
    wall_s: float
    split: str  # the server process's CPU by thread

    @property
    def server_busy(self) -> float:
        """Share of one core the server process used while the load ran."""
        return self.server_cpu_s / self.wall_s


@dataclass
class PipelineRun:
    saturated: Phase
    paced: Phase
    duplicates: Phase
    drained_s: list[float | None]
    rows: int
    accepted: float
    duplicate: float
    setup_s: float


async def measured(
    targets: Sequence[Request], opts: Options, warmup_url: str, rate: float | None
) -> Phase:
    cpu, threads, wall = cpu_seconds(), thread_cpu(), time.perf_counter()
    load = await load_in_process(targets, opts.concurrency, warmup_url, opts.client, rate)
    wall_s = time.perf_counter() - wall
    return Phase(load, cpu_seconds() - cpu, wall_s, cpu_split(threads, thread_cpu()))


async def count(p: Harness, sql: str) -> int:
    row = await p.db.fetchone(sql)
    return int(row[0]) if row else 0


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 120.0
) -> None:
    deadline = time.perf_counter() + timeout_s
    while not await check():
        if time.perf_counter() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def create_jobs(p: Harness, vendor: VendorProcess, jobs: int) -> list[Request]:
    """Submit `jobs` jobs, let the dispatcher create them at the vendor, mark them running, and
    build one signed webhook per job, as the vendor would send it."""
    users = [FIRST_MEMBER + n for n in range(jobs)]  # one job per member: no per-member limit
    for start in range(0, jobs, SUBMIT_BATCH):
        batch = users[start : start + SUBMIT_BATCH]
        await asyncio.gather(
            *(p.ledger.issue_to_member(1, u, COST, key=f"bench:seed:{u}") for u in batch)
        )
        await asyncio.gather(*(p.service.submit(member(user_id=u), REQUEST) for u in batch))
        n = len(batch)

        async def created(total: int = start + n) -> bool:
            sql = "SELECT COUNT(*) FROM jobs WHERE provider_job_id IS NOT NULL"
            return await count(p, sql) >= total

        await wait_until(created, f"{start + n} creates")
    # What the first poll of each would record (the vendor says "processing"), written directly
    # so that the poll limit applies to the measured webhooks' polls only.
    submitted = await p.service.jobs.in_states(frozenset({JobState.SUBMITTED}))

    async def to_running(tx: Tx) -> None:
        for job in submitted:
            await p.service.jobs.transition(
                job.id, JobState.RUNNING, provider_status="processing", tx=tx
            )

    await p.db.write(to_running)
    assert await count(p, "SELECT COUNT(*) FROM jobs WHERE state = 'running'") == jobs
    double = EachLabsDouble()  # not started: only renders bodies and signatures
    double.base_url = vendor.url
    now = int(p.clock.now_ms() / 1000)
    requests: list[Request] = []
    for listed in await vendor.get("/_bench/jobs"):
        url = listed["webhook_url"]
        assert url and url.startswith(p.url), listed
        body = double.webhook_body(FakeJob(listed["id"], {}, ["processing"]))
        requests.append((url.removeprefix(p.url), double.sign(SECRET, body, now), body))
    assert len(requests) == jobs, (len(requests), jobs)
    return requests


async def run_pipeline(
    tmp: Path, vendor: VendorProcess, opts: Options
) -> tuple[PipelineRun, list[Request]]:
    def providers(http: ProviderHttp) -> dict[str, VideoProvider]:
        settings = EachLabsSettings(
            api_key=SecretStr(API_KEY),
            base_url=vendor.api_base,
            webhook_secret=SecretStr(SECRET),
        )
        return {"eachlabs": EachLabsProvider(settings, http)}

    async with pipeline(
        tmp,
        providers,
        default_provider="eachlabs",
        deadline_s=3600,
        poll_initial_s=3600,
        poll_max_s=3600,
        max_concurrent={"eachlabs": 2 * opts.jobs},
        creates_per_min={"eachlabs": 1_000_000},
        polls_per_min={"eachlabs": opts.polls_per_min},
    ) as p:
        started = time.perf_counter()
        requests = await create_jobs(p, vendor, 2 * opts.jobs)
        setup_s = time.perf_counter() - started
        # The heap as a bot that has run a while keeps it: its GC pacer (bot/gc_pacer.py,
        # started with the runtime) has frozen what the set-up left (this harness builds the
        # pipeline without the runtime, so it is done here once).
        GcPacer().refreeze()
        targets = [(p.url + path, headers, body) for path, headers, body in requests]
        first, second = targets[: opts.jobs], targets[opts.jobs :]
        warmup = p.url + "/healthz"
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

        saturated = await measured(first, opts, warmup, None)
        await drain(opts.jobs)
        paced = await measured(second, opts, warmup, opts.rate)
        await drain(2 * opts.jobs)
        duplicates = await measured(first, opts, warmup, None)
        rows = await count(p, "SELECT COUNT(*) FROM webhook_deliveries")
        registry = p.service.metrics.registry

        def webhooks(result: str) -> float:
            labels = {"provider": "eachlabs", "result": result}
            return registry.get_sample_value("klingbot_webhooks_total", labels) or 0.0

        run = PipelineRun(
            saturated,
            paced,
            duplicates,
            drained,
            rows,
            webhooks("accepted"),
            webhooks("duplicate"),
            setup_s,
        )
    return run, requests


async def run_baseline(requests: Sequence[Request], opts: Options) -> tuple[Phase, Phase]:
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
        targets = [(server.url + path, headers, body) for path, headers, body in requests]
        warmup = server.url + "/healthz"
        saturated = await measured(targets[: opts.jobs], opts, warmup, None)
        paced = await measured(targets[opts.jobs :], opts, warmup, opts.rate)
        return saturated, paced
    finally:
        await server.stop()


async def run(opts: Options) -> tuple[PipelineRun, Phase, Phase]:
    with tempfile.TemporaryDirectory() as tmp:
        async with vendor_process() as vendor:
            result, requests = await run_pipeline(Path(tmp), vendor, opts)
        saturated, paced = await run_baseline(requests, opts)
    return result, saturated, paced


def line(label: str, phase: Phase) -> str:
    r = phase.load
    return (
        f"{label:<30} {r.count:5d} in {r.elapsed_s:5.2f} s {r.per_s:6.0f}/s"
        f"  p50 {r.pct(50):6.2f} ms  p99 {r.pct(99):6.2f} ms  max {max(r.latencies_ms):6.1f} ms"
        f"\n{'':<30} server CPU {phase.server_busy:4.0%} of a core ({phase.split})"
    )


def ratio(label: str, run: Phase, base: Phase) -> str:
    r, b = run.load, base.load
    return (
        f"ratio     {label:<21} throughput {r.per_s / b.per_s:5.2f}"
        f"  p50 {r.pct(50) / b.pct(50):5.2f}  p99 {r.pct(99) / b.pct(99):5.2f}"
    )


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
    args = parser.parse_args()
    opts = Options(args.jobs, args.rate, args.concurrency, args.polls_per_min, args.client)
    result, base_saturated, base_paced = asyncio.run(run(opts))

    phases = (result.saturated, result.paced, result.duplicates, base_saturated, base_paced)
    for phase in phases:
        assert phase.load.statuses == {200: opts.jobs}, phase.load.statuses
    distinct = 2 * opts.jobs
    assert result.rows == distinct, f"{result.rows} delivery rows for {distinct} webhooks"
    assert (result.accepted, result.duplicate) == (distinct, opts.jobs), (
        result.accepted,
        result.duplicate,
    )

    c = opts.concurrency
    print(f"set-up    {distinct} jobs submitted, created and running in {result.setup_s:.1f} s")
    print(line(f"baseline  saturated, {c} conns", base_saturated))
    print(line(f"webhooks  saturated, {c} conns", result.saturated))
    print(line(f"baseline  paced {opts.rate:.0f}/s", base_paced))
    print(line(f"webhooks  paced {opts.rate:.0f}/s", result.paced))
    print(line(f"webhooks  duplicates, {c} conns", result.duplicates))
    print(
        f"checked   all {5 * opts.jobs} answers 200; {result.rows} delivery rows;"
        f" metrics accepted={result.accepted:.0f} duplicate={result.duplicate:.0f}"
    )
    waits = ", ".join(
        f"{s:.2f} s" if s is not None else f"not within {DRAIN_WAIT_S:.0f} s"
        for s in result.drained_s
    )
    print(
        f"background one vendor poll per accepted webhook (limit {opts.polls_per_min}/min);"
        f" all done after the saturated, paced run + {waits}"
    )
    print(ratio("saturated/baseline", result.saturated, base_saturated))
    print(ratio("paced/baseline", result.paced, base_paced))
    print(ratio("duplicates/baseline", result.duplicates, base_saturated))
    paced = result.paced.load
    met = paced.per_s >= 0.99 * TARGET_PER_S and paced.pct(99) < TARGET_P99_MS
    print(
        f"target    >= {TARGET_PER_S}/s with p99 < {TARGET_P99_MS:.0f} ms at {c} connections"
        f" (paced run at {opts.rate:.0f}/s): {'met' if met else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
