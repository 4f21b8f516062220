"""Clip download: what the download policy and the video check (a PyAV probe of the whole file)
add to saving a finished clip.

Set-up: a 10 s 1280x720 H.264/AAC clip rendered by the local renderer (the size class of a Kling
720p clip), served by an aiohttp server on 127.0.0.1 that stands for a configured provider.

Measured: `bot.providers.download.download` of that clip, `--runs` times: policy check of the
link, streamed to disk in 256 KiB chunks with fsync, then the probe, then the rename.

Baseline, measured in the same run, alternating with the measured runs, over the same session
and server: the same GET streamed to disk in 256 KiB chunks with fsync and renamed (what a
download did before the policy and the probe). Printed: median and p90 time of each, and the
ratio; also the probe alone on the saved file.

    python -m bench.download [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from bot.media import probe, render_preview
from bot.providers.download import CHUNK_BYTES, DownloadPolicy, download


async def plain_download(session: aiohttp.ClientSession, url: str, dest: Path) -> int:
    partial = dest.with_name(f".{dest.name}.part")
    size = 0
    async with session.get(url) as response:
        response.raise_for_status()
        with partial.open("wb") as out:
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                size += len(chunk)
                await asyncio.to_thread(out.write, chunk)
            await asyncio.to_thread(out.flush)
            await asyncio.to_thread(os.fsync, out.fileno())
    os.replace(partial, dest)
    return size


def summary(times_s: list[float]) -> tuple[float, float]:
    ordered = sorted(times_s)
    return statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]


async def run(runs: int, root: Path) -> None:
    clip = root / "clip.mp4"
    started = time.perf_counter()
    info = await asyncio.to_thread(
        render_preview,
        clip,
        prompt="a red fox running through snow",
        duration_s=10,
        width=1280,
        height=720,
        audio=True,
    )
    print(
        f"set-up    {info.size_bytes / 1e6:.1f} MB, {info.duration_s:.1f} s {info.width}x{info.height}"
        f" clip rendered in {time.perf_counter() - started:.1f} s"
    )

    async def serve(_: web.Request) -> web.FileResponse:
        return web.FileResponse(clip)

    app = web.Application()
    app.router.add_get("/files/clip.mp4", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    url = f"{base}/files/clip.mp4"
    policy = DownloadPolicy.trusting([f"{base}/v1"])
    plain: list[float] = []
    checked: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            await plain_download(session, url, root / "warm.mp4")  # connections, page cache
            for n in range(runs):
                started = time.perf_counter()
                await plain_download(session, url, root / f"plain-{n}.mp4")
                plain.append(time.perf_counter() - started)
                started = time.perf_counter()
                await download(
                    session,
                    url,
                    root / f"checked-{n}.mp4",
                    max_bytes=10**9,
                    timeout_s=60,
                    policy=policy,
                )
                checked.append(time.perf_counter() - started)
                (root / f"plain-{n}.mp4").unlink()
    finally:
        await runner.cleanup()
    probes = []
    for _ in range(runs):
        started = time.perf_counter()
        await asyncio.to_thread(probe, root / "checked-0.mp4")
        probes.append(time.perf_counter() - started)
    (plain_med, plain_p90), (checked_med, checked_p90) = summary(plain), summary(checked)
    probe_med, _ = summary(probes)
    print(
        f"baseline  plain streamed download   median {plain_med * 1e3:7.1f} ms  p90 {plain_p90 * 1e3:7.1f} ms"
    )
    print(
        f"download  policy + probe            median {checked_med * 1e3:7.1f} ms  p90 {checked_p90 * 1e3:7.1f} ms"
    )
    print(f"probe     alone on the saved clip   median {probe_med * 1e3:7.1f} ms")
    print(
        f"ratio     download/baseline         median {checked_med / plain_med:.2f}  p90 {checked_p90 / plain_p90:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(opts.runs, Path(tmp)))


if __name__ == "__main__":
    main()
