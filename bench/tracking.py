"""Tracking many live jobs: resident memory and CPU of the bot while it polls 10,000 running jobs.

Set-up: `--jobs` jobs are written through JobStore (created as running, then given their vendor
job id and vendor status; 1,000 jobs per durable write) as EachLabs jobs that were submitted
`--age-s` seconds ago. The EachLabs double runs in a process of its own, holds all of them
and answers every poll "processing" (so nothing finishes and nothing is written back). Time is
not compressed: the pipeline runs with the shipped poll intervals (KLINGBOT_POLL_INITIAL_
INTERVAL_S=5 growing to KLINGBOT_POLL_MAX_INTERVAL_S=60 with a job's age); with the default
age of 15 minutes every job is past the ramp and is due every 60 s, i.e. 10,000 jobs ask for
~167 polls/s.

Measured, in a fresh process that builds the bot's runtime exactly as `klingbot run` does
(bot.runtime.open_runtime: database, HTTP session, EachLabs adapter, Pipeline, web
server; no Discord): it starts the pipeline, which resumes all jobs and polls each once at once
(the start-up burst, reported on its own), waits `--settle` seconds (into the quiet time before
the next round of polls), then measures for a `--window` of seconds (default 60: one full poll
cycle, which also holds one run of the pipeline's once-a-minute sweep) its CPU time (os.times, all threads: the event loop and the SQLite threads),
the vendor polls it made (the pipeline's own metrics), its resident memory every second
(/proc/self/status VmRSS) and its peak (VmHWM, which includes the start-up burst).

Baseline, measured in the same run on an identical copy of the database, in a second process
that runs alongside: the same runtime opened the same way, with the same 10,000 jobs, but the
pipeline not started (an idle event loop, an open database and HTTP session), for the same window.

The vendor's CPU is reported separately (it is not part of the bot). EachLabs' shipped
`polls_per_min` (300) would cap tracking at 5 polls/s, one poll per job every ~33 minutes at
10,000 jobs; the benchmark lifts it (`--polls-per-min`, default 12,000 = 200/s) so the measured
load is the one the poll intervals ask for.

    python -m bench.tracking [--jobs 10000] [--window 60] [--settle 15] [--age-s 900]
                             [--polls-per-min 12000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from bench._support import ROOT, cpu_seconds, preload_id, proc_status_kb, vendor_process
from bot.discord.cli import NotConnectedSink
from bot.request import parse_request
from bot.runtime import open_runtime
from bot.settings import EachLabsSettings, Settings
from storage import Database, JobState, JobStore, NewJob, OffsetClock, Tx
from tests.provider_doubles.eachlabs import API_KEY
from tests.provider_support import free_port

SEED_BATCH = 1000
DEADLINE_S = 3600  # KLINGBOT_JOB_DEADLINE_S default


async def seed(path: Path, jobs: int, age_s: int) -> None:
    """Write `jobs` running EachLabs jobs, submitted `age_s` seconds ago."""
    clock = OffsetClock()
    clock.advance(seconds=-age_s)
    request = parse_request({"prompt": "a red fox running through snow", "duration_s": 5})
    data = request.model_dump(mode="json")
    async with await Database.open(path, clock=clock) as db:
        store = JobStore(db)
        for start in range(0, jobs, SEED_BATCH):

            async def batch(tx: Tx, start: int = start) -> None:
                for n in range(start, min(start + SEED_BATCH, jobs)):
                    now = clock.now_ms()
                    job = await store.create(
                        NewJob(
                            provider="eachlabs",
                            request=data,
                            cost=40,
                            state=JobState.RUNNING,
                            guild_id=1,
                            channel_id=100,
                            user_id=10_000 + n,
                            deadline_at_ms=now + DEADLINE_S * 1000,
                        ),
                        tx=tx,
                    )
                    await store.update(
                        job.id,
                        provider_job_id=preload_id(n),
                        provider_status="processing",
                        submit_attempts=1,
                        submitted_at_ms=now,
                        tx=tx,
                    )

            await db.write(batch)


def settings_for(tmp: Path, db: Path, vendor_api: str, polls_per_min: int) -> Settings:
    port = free_port()
    values: dict[str, Any] = {
        "discord_token": SecretStr("bench"),
        "db_path": db,
        "media_dir": tmp / "media",
        "http_host": "127.0.0.1",
        "http_port": port,
        "public_url": f"http://127.0.0.1:{port}",
        "provider": "eachlabs",
        "eachlabs": EachLabsSettings(
            api_key=SecretStr(API_KEY), base_url=vendor_api, polls_per_min=polls_per_min
        ),
    }
    return Settings(_env_file=None, **values)


async def vendor_stats(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url + "/_bench/stats") as r:
        data: dict[str, Any] = await r.json()
        return data


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One child: open the runtime on `args.db`; start the pipeline unless baseline; measure."""
    tmp = Path(args.db).parent / args.child
    settings = settings_for(tmp, Path(args.db), args.vendor + "/v1", args.polls_per_min)
    result: dict[str, Any] = {}
    async with open_runtime(settings, delivery=NotConnectedSink()) as runtime:
        metrics = runtime.service.metrics.registry

        def polls() -> float:
            labels = {"provider": "eachlabs", "operation": "poll"}
            return metrics.get_sample_value("klingbot_provider_request_seconds_count", labels) or 0

        result["rss_open_kb"] = proc_status_kb("VmRSS")
        if args.child == "pipeline":
            started = time.perf_counter()
            cpu = cpu_seconds()
            await runtime.start()
            while True:  # the start-up burst: every job polled once
                if polls() >= args.jobs or time.perf_counter() - started > 120:
                    break
                await asyncio.sleep(0.05)
            result["burst_s"] = time.perf_counter() - started
            result["burst_cpu_s"] = cpu_seconds() - cpu
            result["burst_polls"] = polls()
            await asyncio.sleep(args.settle)
        else:
            await asyncio.sleep(args.settle)
        vendor_before = await vendor_stats(args.vendor)
        polls_before, cpu_before, began = polls(), cpu_seconds(), time.perf_counter()
        rss: list[int] = []
        while time.perf_counter() - began < args.window:
            rss.append(proc_status_kb("VmRSS"))
            await asyncio.sleep(min(1.0, max(0.0, args.window - (time.perf_counter() - began))))
        elapsed = time.perf_counter() - began
        result.update(
            window_s=elapsed,
            cpu_s=cpu_seconds() - cpu_before,
            polls=polls() - polls_before,
            rss_max_kb=max(rss),
            rss_end_kb=proc_status_kb("VmRSS"),
            hwm_kb=proc_status_kb("VmHWM"),
            errors=sum(
                s.value
                for m in metrics.collect()
                if m.name == "klingbot_provider_errors"
                for s in m.samples
                if s.name.endswith("_total")
            ),
        )
        vendor_after = await vendor_stats(args.vendor)
        result["vendor_cpu_s"] = vendor_after["cpu_s"] - vendor_before["cpu_s"]
        result["vendor_polls"] = vendor_after["polls"] - vendor_before["polls"]
        result["live"] = len(await runtime.service.jobs.live_at_provider("eachlabs"))
    return result


async def spawn(child: str, db: Path, vendor: str, args: argparse.Namespace) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.tracking",
        "--child",
        child,
        "--db",
        str(db),
        "--vendor",
        vendor,
        "--jobs",
        str(args.jobs),
        "--window",
        str(args.window),
        "--polls-per-min",
        str(args.polls_per_min),
        "--settle",
        str(args.settle),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the {child} process failed (exit {process.returncode})")
    data: dict[str, Any] = json.loads(out.splitlines()[-1])
    return data


async def run(args: argparse.Namespace) -> tuple[float, dict[str, Any], dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        first = Path(tmp) / "pipeline" / "bot.db"
        second = Path(tmp) / "baseline" / "bot.db"
        started = time.perf_counter()
        await seed(first, args.jobs, args.age_s)
        second.parent.mkdir(parents=True)
        shutil.copyfile(first, second)
        seed_s = time.perf_counter() - started
        async with vendor_process(preload=args.jobs) as vendor:
            pipeline, baseline = await asyncio.gather(
                spawn("pipeline", first, vendor.url, args),
                spawn("baseline", second, vendor.url, args),
            )
    return seed_s, pipeline, baseline


def mb(kb: float) -> str:
    return f"{kb / 1024:6.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured")
    parser.add_argument(
        "--settle", type=float, default=15.0, help="seconds between start-up and the window"
    )
    parser.add_argument("--age-s", type=int, default=900, help="how long ago the jobs started")
    parser.add_argument("--polls-per-min", type=int, default=12_000, help="EachLabs poll limit")
    parser.add_argument("--child", choices=["pipeline", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--vendor", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args))))
        return

    load_before = os.getloadavg()[0]
    seed_s, p, b = asyncio.run(run(args))
    assert p["live"] == args.jobs and b["live"] == args.jobs, (p["live"], b["live"])
    assert p["errors"] == 0, f"{p['errors']} poll errors"

    per_min = 60 / p["window_s"]
    p_cpu_min, b_cpu_min = p["cpu_s"] * per_min, b["cpu_s"] * 60 / b["window_s"]
    interval = 60.0  # every job is past the ramp at the default age
    print(
        f"set-up    {args.jobs} running jobs written in {seed_s:.1f} s;"
        f" 1-min load average before: {load_before:.2f}"
    )
    print(
        f"start-up  resume + first poll of all {args.jobs} jobs:"
        f" {p['burst_s']:.1f} s, {p['burst_cpu_s']:.1f} CPU s"
        f" ({p['burst_polls'] / p['burst_s']:.0f} polls/s)"
    )
    print(
        f"baseline  not started, {b['window_s']:.0f} s: RSS {mb(b['rss_max_kb'])} (max),"
        f" peak {mb(b['hwm_kb'])}, CPU {b_cpu_min:6.2f} s/min"
    )
    print(
        f"tracking  {args.jobs} jobs, {p['window_s']:.0f} s: RSS {mb(p['rss_max_kb'])} (max),"
        f" peak {mb(p['hwm_kb'])}, CPU {p_cpu_min:6.2f} s/min,"
        f" {p['polls'] / p['window_s']:.0f} polls/s"
        f" (asked for: {args.jobs / interval:.0f}/s)"
    )
    print(
        f"          per poll {1000 * (p['cpu_s'] - b['cpu_s']) / max(p['polls'], 1):.2f} ms CPU"
        f" above the baseline; vendor (other process) {p['vendor_cpu_s'] * per_min:.1f} CPU s/min"
        f" for {p['vendor_polls']} polls"
    )
    cpu_ratio = f"{p_cpu_min / b_cpu_min:.0f}" if b_cpu_min > 0 else "n/a (baseline used none)"
    print(
        f"ratio     tracking/baseline: RSS {p['rss_max_kb'] / b['rss_max_kb']:.2f}"
        f" (+{mb(p['rss_max_kb'] - b['rss_max_kb']).strip()}),"
        f" peak {p['hwm_kb'] / b['hwm_kb']:.2f} (+{mb(p['hwm_kb'] - b['hwm_kb']).strip()}),"
        f" CPU {cpu_ratio} (+{p_cpu_min - b_cpu_min:.2f} s/min)"
    )


if __name__ == "__main__":
    main()
