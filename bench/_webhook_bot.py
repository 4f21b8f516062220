"""A bot process that bench/webhooks.py measures: the real pipeline (tests/pipeline_support.py)
with the EachLabs adapter and a webhook secret, its own aiohttp server on 127.0.0.1, on a database
it may share with other such processes (a SQLite file or a PostgreSQL URL).

    python -m bench._webhook_bot CONFIG.json

It prints one JSON line, {"url": ..., "pid": ..., "process_id": ...}, once it serves; then reads
one JSON command a line on stdin and answers each with one JSON line on stdout:

  {"do": "submit", "members": [...]}  fund each member and submit one job each (its dispatcher,
                                      or another process's, creates them at the vendor)
  {"do": "created", "total": n}       wait until n jobs in the database have a vendor job id
  {"do": "running"}                   move every submitted job to running, with the vendor status
                                      its first poll would record
  {"do": "freeze"}                    what the GC pacer does in a running bot (bench/webhooks.py)
  {"do": "cpu"}                       this process's CPU seconds so far, by thread kind
  {"do": "facts"}                     webhook metrics, the vendor job ids this process polled,
                                      and (read from the database) delivery rows and lease owners
  {"do": "stop"}                      stop the pipeline and exit

Each poll of the vendor is counted per vendor job id here (the adapter is wrapped), so the bench
can check that only the process holding a job's lease asked the vendor about it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench._support import thread_cpu
from bot.gc_pacer import GcPacer
from bot.providers import ProviderHttp, ProviderJob, ProviderStatus, VideoProvider
from bot.providers.eachlabs import EachLabsProvider
from bot.settings import EachLabsSettings
from storage import JobState, Tx
from tests.pipeline_support import Harness, member, pipeline
from tests.provider_doubles.eachlabs import API_KEY

REQUEST = {"prompt": "a red fox running through snow", "duration_s": 5}
COST = 40  # 5 s x 8 credits
SUBMIT_BATCH = 500
CREATED = "SELECT COUNT(*) FROM jobs WHERE provider_job_id IS NOT NULL"


class CountingEachLabs(EachLabsProvider):
    """The EachLabs adapter, counting its polls per vendor job id."""

    polled: Counter[str]

    async def poll(self, job: ProviderJob) -> ProviderStatus:
        self.polled[job.id] += 1
        return await super().poll(job)


async def count(p: Harness, sql: str) -> int:
    row = await p.db.fetchone(sql)
    return int(row[0]) if row else 0


async def submit(p: Harness, members: list[int]) -> dict[str, Any]:
    """Submit in batches, each once the one before is created (not thousands of creates at
    the vendor at once: some would time out)."""
    made = await count(p, CREATED)
    for start in range(0, len(members), SUBMIT_BATCH):
        batch = members[start : start + SUBMIT_BATCH]
        await asyncio.gather(
            *(p.ledger.issue_to_member(1, u, COST, key=f"bench:seed:{u}") for u in batch)
        )
        await asyncio.gather(*(p.service.submit(member(user_id=u), REQUEST) for u in batch))
        await created(p, made + start + len(batch))
    return {"submitted": len(members)}


async def created(p: Harness, total: int, timeout_s: float = 180.0) -> dict[str, Any]:
    deadline = time.perf_counter() + timeout_s
    while (done := await count(p, CREATED)) < total:
        if time.perf_counter() > deadline:
            raise AssertionError(f"{done} of {total} jobs created within {timeout_s} s")
        await asyncio.sleep(0.1)
    return {"created": done}


async def running(p: Harness) -> dict[str, Any]:
    # What the first poll of each would record (the vendor says "processing"), written directly
    # so that the poll limit applies to the measured webhooks' polls only.
    submitted = await p.service.jobs.in_states(frozenset({JobState.SUBMITTED}))

    async def to_running(tx: Tx) -> None:
        for job in submitted:
            await p.service.jobs.transition(
                job.id, JobState.RUNNING, provider_status="processing", tx=tx
            )

    await p.db.write(to_running)
    return {"running": await count(p, "SELECT COUNT(*) FROM jobs WHERE state = 'running'")}


async def facts(p: Harness, adapter: CountingEachLabs) -> dict[str, Any]:
    registry = p.service.metrics.registry

    def webhooks(result: str) -> float:
        labels = {"provider": "eachlabs", "result": result}
        return registry.get_sample_value("klingbot_webhooks_total", labels) or 0.0

    rows = await p.db.fetchall("SELECT provider_job_id, lease_owner FROM jobs")
    return {
        "accepted": webhooks("accepted"),
        "duplicate": webhooks("duplicate"),
        "polled": dict(adapter.polled),
        "rows": await count(p, "SELECT COUNT(*) FROM webhook_deliveries"),
        "owners": {r["provider_job_id"]: r["lease_owner"] for r in rows},
        "retries": getattr(p.db, "retries", 0),
    }


async def serve(config: dict[str, Any]) -> None:
    adapters: list[CountingEachLabs] = []

    def providers(http: ProviderHttp) -> dict[str, VideoProvider]:
        settings = EachLabsSettings(
            api_key=SecretStr(API_KEY),
            base_url=config["api_base"],
            webhook_secret=SecretStr(config["secret"]),
        )
        adapter = CountingEachLabs(settings, http)
        adapter.polled = Counter()
        adapters.append(adapter)
        return {"eachlabs": adapter}

    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    async with pipeline(
        Path(config["dir"]),
        providers,
        default_provider="eachlabs",
        database=config["database"],
        deadline_s=3600,
        poll_initial_s=3600,
        poll_max_s=3600,
        max_concurrent={"eachlabs": config["slots"]},
        creates_per_min={"eachlabs": 1_000_000},
        polls_per_min={"eachlabs": config["polls_per_min"]},
        process_id=config["process_id"],
    ) as p:
        answer({"url": p.url, "pid": os.getpid(), "process_id": config["process_id"]})
        while line := await commands.readline():
            command = json.loads(line)
            match command["do"]:
                case "submit":
                    answer(await submit(p, command["members"]))
                case "created":
                    answer(await created(p, command["total"]))
                case "running":
                    answer(await running(p))
                case "freeze":
                    GcPacer().refreeze()
                    answer({})
                case "cpu":
                    answer(thread_cpu())
                case "facts":
                    answer(await facts(p, adapters[0]))
                case "stop":
                    break
                case other:
                    raise ValueError(f"unknown command {other!r}")
    answer({"stopped": True})


def answer(value: dict[str, Any]) -> None:
    print(json.dumps(value), flush=True)


if __name__ == "__main__":
    asyncio.run(serve(json.loads(Path(sys.argv[1]).read_text())))
