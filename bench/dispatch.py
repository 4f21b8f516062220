"""Dispatch throughput of one pipeline process: N queued jobs (three per member) through a
vendor double with 10 slots, each job two polls long, until every clip is delivered.

    python -m bench.dispatch [--jobs 300]

Prints jobs per second and the vendor's peak of live jobs. Compare two trees by running it with
each tree on PYTHONPATH in the same session (the README's numbers come from such a run).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

from bot.providers import ProviderHttp, VideoProvider
from bot.providers.eachlabs import EachLabsProvider
from bot.settings import EachLabsSettings
from storage import JobState
from tests.pipeline_support import member, pipeline
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble


async def run(n_jobs: int) -> tuple[float, int]:
    async with EachLabsDouble(max_live=10) as double:
        double.default_script = ["processing", "succeeded"]

        def providers(http: ProviderHttp) -> dict[str, VideoProvider]:
            settings = EachLabsSettings(api_key=SecretStr(API_KEY), base_url=double.api_base)
            return {"eachlabs": EachLabsProvider(settings, http)}

        with tempfile.TemporaryDirectory() as tmp:
            async with pipeline(
                Path(tmp),
                providers,
                default_provider="eachlabs",
                public=False,
                start=False,
                max_concurrent={"eachlabs": 10},
                poll_initial_s=0.02,
                poll_max_s=0.05,
                deadline_s=3600,
            ) as p:
                users = range(1000, 1000 + n_jobs // 3)
                for user in users:
                    await p.ledger.issue_to_member(1, user, 10_000, key=f"seed:{user}")
                p.service.open_intake()
                ids = [
                    (
                        await p.service.submit(member(u), {"prompt": f"m {u} {k}", "duration_s": 5})
                    ).job.id
                    for k in range(3)
                    for u in users
                ]
                started = time.perf_counter()
                await p.service.start()
                for job_id in ids:
                    await p.wait_for_state(job_id, JobState.DELIVERED, timeout_s=600)
                return len(ids) / (time.perf_counter() - started), double.peak_live


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    args = parser.parse_args()
    rate, peak = asyncio.run(run(args.jobs))
    print(f"dispatch: {args.jobs} jobs, {rate:.1f} jobs/s delivered, vendor peak {peak} live")


if __name__ == "__main__":
    main()
