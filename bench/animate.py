"""Does checking uploaded images slow the bot down for everyone else?

/animate reads each image from Discord and checks it (decode, convert, hash: bot/media/images.py)
in a worker thread, so that the event loop stays free for other members' commands. This measures
the acknowledgement latency of a burst of /video while several /animate are checking large
images, against the same burst with nothing else going on, in the same run.

Set-up (in one process, as the end-to-end tests run): the real KlingBot and discord.py against
the loopback Discord double, the real pipeline, database and web server, with the EachLabs double
as the provider (its jobs stay "processing", so nothing renders or downloads). The image is a
photo-like 4000×3000 WebP (`bench.images.photo`), which the check decodes and re-encodes as JPEG.

Each round, alternating: the baseline burst (`--videos` /video, one per member, dispatched back to
back) alone; then `--animations` /animate of the image, and, once every image has been downloaded
by the bot (its check is starting), the same burst of /video. Reported for each: the /video
acknowledgements (the double's clock from INTERACTION_CREATE to the bot's callback), p50, p99 and
max over all rounds, and the ratio of the p99 to the baseline's; for /animate, the time from the
command to its "Queued" receipt (download, check, storage, hold). The double's own work shares
the event loop (it is in the same process), in the baseline and the measurement alike.

    python -m bench.animate [--rounds 3] [--videos 20] [--animations 4]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench._support import percentile
from bench.images import encoded, photo
from bot.playground.double import DiscordDouble, DoubleInteraction
from bot.settings import EachLabsSettings
from tests.e2e_support import CHANNEL, GUILD, Running, make_double, make_settings, running_bot
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble

FIRST_MEMBER = 960_000_000_000_000_000
NITRO = 2


async def acks(inters: list[DoubleInteraction]) -> list[float]:
    records = await asyncio.gather(*(i.wait_ack(timeout=30) for i in inters))
    return [r.elapsed_s for r in records]


async def receipts(inters: list[DoubleInteraction]) -> list[float]:
    records = await asyncio.gather(*(i.wait_for_followup(timeout=60) for i in inters))
    for record in records:
        text = str((record.data or {}).get("content"))
        assert "Queued as job" in text, text
    return [r.elapsed_s for r in records]


async def video_burst(run: Running, members: list[int]) -> list[DoubleInteraction]:
    return [
        await run.double.invoke(
            "video",
            {"prompt": f"a fox, member {m}", "duration": 5},
            user_id=m,
            guild_id=GUILD,
            channel_id=CHANNEL,
        )
        for m in members
    ]


async def measure(args: argparse.Namespace, image: bytes, folder: Path) -> None:
    double: DiscordDouble = await make_double()
    members = [FIRST_MEMBER + n for n in range(args.videos + args.animations)]
    for member in members:
        double.add_member(GUILD, member, f"m{member}", premium_type=NITRO)
    videos, animators = members[: args.videos], members[args.videos :]
    try:
        async with EachLabsDouble() as vendor:
            vendor.default_script = ["created", "processing"]
            settings = make_settings(
                folder,
                provider="eachlabs",
                eachlabs=EachLabsSettings(
                    api_key=SecretStr(API_KEY), base_url=vendor.api_base, max_concurrent=10
                ),
                member_max_queued_jobs=1000,
            )
            async with running_bot(double, settings) as run:
                for member in members:
                    await run.fund(member, 100_000)
                await receipts(await video_burst(run, videos[:5]))  # warm-up
                baseline: list[float] = []
                loaded: list[float] = []
                animate_s: list[float] = []
                for round_ in range(args.rounds):
                    burst = await video_burst(run, videos)
                    baseline += await acks(burst)
                    await receipts(burst)
                    names = [f"r{round_}-{n}.webp" for n in range(args.animations)]
                    animations = [
                        await double.invoke(
                            "animate",
                            {"image": (name, image), "prompt": "the light changes"},
                            user_id=member,
                            guild_id=GUILD,
                            channel_id=CHANNEL,
                        )
                        for name, member in zip(names, animators, strict=True)
                    ]
                    await double.wait_for(partial(downloaded, double, names), timeout=30)
                    burst = await video_burst(run, videos)
                    loaded += await acks(burst)
                    await receipts(burst)
                    animate_s += await receipts(animations)
                await announced(run, members)
    finally:
        await double.stop()
    report("/video alone", baseline, baseline)
    report(f"/video + {args.animations} checks", loaded, baseline)
    print(
        f"/animate receipt  p50 {percentile(animate_s, 50) * 1000:7.0f} ms"
        f"   max {max(animate_s) * 1000:7.0f} ms   (download, check, store, hold)"
    )


async def announced(run: Running, members: list[int]) -> None:
    """Wait until every job has its public status message (posted after the receipt), so that
    none is still being posted when the bot shuts down."""
    for _ in range(600):
        jobs = [j for m in members for j in await run.service.jobs.by_user(GUILD, m, limit=100)]
        if all(j.status_message_id for j in jobs):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("status messages were not all posted within 30 s")


def downloaded(double: DiscordDouble, names: list[str]) -> bool:
    found = [a for a in double.world.attachments.values() if a.filename in names]
    return len(found) == len(names) and all(a.downloads for a in found)


def report(name: str, samples: list[float], baseline: list[float]) -> None:
    p99, base = percentile(samples, 99), percentile(baseline, 99)
    print(
        f"{name:<22} acks n={len(samples):<4} p50 {percentile(samples, 50) * 1000:6.1f} ms"
        f"   p99 {p99 * 1000:6.1f} ms   max {max(samples) * 1000:6.1f} ms"
        f"   p99 ratio {p99 / base:5.2f}"
    )


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--animations", type=int, default=4)
    args = parser.parse_args(argv)
    image = encoded(photo(4000, 3000), "WEBP", quality=90)
    print(f"image: 4000×3000 WebP, {len(image) / 1e6:.1f} MB")
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(measure(args, image, Path(folder)))


if __name__ == "__main__":
    main()
