"""`klingbot generate`: one job through the real pipeline, with a terminal progress bar.

`--image PATH` (and `--end-image PATH`) animates an image: it is checked like an upload to the
bot (bot/media/images.py) before anything runs, and the video takes its aspect ratio. Offline
with the `local` provider; with a vendor and its key it is how an admin tests the key
before going live (operator jobs are not charged to any member). Ctrl-C cancels the job at the
provider where the vendor supports it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from bot.errors import KlingbotError
from bot.media.images import ImageRefused, NormalizedImage, check_image
from bot.pipeline import Actor, FileSink, Requester
from bot.request import IMAGE_MAX_BYTES
from bot.runtime import open_runtime
from bot.settings import Settings
from storage import Job, JobState

DONE = frozenset(
    {
        JobState.DELIVERED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.REJECTED,
        JobState.EXPIRED,
        JobState.DELIVERY_FAILED,
    }
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", help="what the video should show (omit with --shot)")
    parser.add_argument("--duration", type=int, default=5, help="seconds, 3..15 (default 5)")
    parser.add_argument(
        "--aspect", help="16:9, 9:16 or 1:1 (default 16:9; with --image, the image's own)"
    )
    parser.add_argument(
        "--image",
        type=Path,
        metavar="PATH",
        help="animate this image (JPEG, PNG or WebP, at most 10 MB); the prompt is then optional",
    )
    parser.add_argument(
        "--end-image", type=Path, metavar="PATH", help="the last frame (with --image)"
    )
    audio = parser.add_mutually_exclusive_group()
    audio.add_argument(
        "--audio", dest="audio", action="store_true", default=None, help="with audio"
    )
    audio.add_argument("--no-audio", dest="audio", action="store_false", help="without audio")
    parser.add_argument("--resolution", help="720p, 1080p or 4k where the provider offers a choice")
    parser.add_argument("--negative", help="what to avoid (negative prompt)")
    parser.add_argument("--cfg", type=float, help="cfg_scale, 0..1")
    parser.add_argument("--shot-type", choices=["customize", "intelligent"])
    parser.add_argument(
        "--shot",
        action="append",
        default=[],
        metavar="SECONDS:PROMPT",
        help="one shot of a multi-shot video (repeat up to 5 times)",
    )
    parser.add_argument(
        "--voice",
        action="append",
        default=[],
        metavar="VOICE_ID",
        help="a voice id referenced as <<<voice_N>>> in the prompt (up to 2)",
    )
    parser.add_argument("--provider", help="provider to use (default: KLINGBOT_PROVIDER)")
    parser.add_argument(
        "--out", type=Path, help="where to write the MP4 (default klingbot-<job>.mp4)"
    )


def request_from_args(
    args: argparse.Namespace,
    image: NormalizedImage | None = None,
    end_image: NormalizedImage | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"duration_s": args.duration}
    if args.prompt is not None:
        data["prompt"] = args.prompt
    optional = {
        "aspect_ratio": args.aspect,
        "image": image.ref.model_dump() if image is not None else None,
        "end_image": end_image.ref.model_dump() if end_image is not None else None,
        "audio": args.audio,
        "resolution": args.resolution,
        "negative_prompt": args.negative,
        "cfg_scale": args.cfg,
        "shot_type": args.shot_type,
    }
    data.update({k: v for k, v in optional.items() if v is not None})
    if args.voice:
        data["voice_ids"] = list(args.voice)
    if args.shot:
        data["shots"] = [parse_shot(text) for text in args.shot]
    return data


def read_image(path: Path, option: str) -> NormalizedImage:
    """An image file checked like an upload to the bot; a refusal names the rule and figures."""
    try:
        size_bytes = path.stat().st_size
        if size_bytes > IMAGE_MAX_BYTES:  # refused without reading it
            raise ImageRefused(
                "size",
                f"The image {path.name!r} is {size_bytes / 1_048_576:.1f} MB; the limit is"
                f" {IMAGE_MAX_BYTES // 1_048_576} MB.",
            )
        data = path.read_bytes()
    except OSError as error:
        raise KlingbotError(f"{option} {path}: {error.strerror or error}.") from None
    return check_image(data, filename=path.name)


def read_images(args: argparse.Namespace) -> tuple[NormalizedImage | None, NormalizedImage | None]:
    if args.end_image is not None and args.image is None:
        raise KlingbotError("--end-image needs --image (the first frame) too.")
    image = read_image(args.image, "--image") if args.image is not None else None
    end = read_image(args.end_image, "--end-image") if args.end_image is not None else None
    return image, end


def parse_shot(text: str) -> dict[str, Any]:
    seconds, sep, prompt = text.partition(":")
    if not sep or not seconds.strip().isdecimal():
        raise KlingbotError(f"--shot must look like '3:a fox wakes up' (got {text!r}).")
    return {"duration_s": int(seconds), "prompt": prompt.strip()}


class Watcher:
    """Follows one job's changes for the progress bar."""

    def __init__(self) -> None:
        self.job_id: str | None = None
        self.latest: Job | None = None
        self.changed = asyncio.Event()

    async def job_changed(self, job: Job, event: str) -> None:
        if job.id == self.job_id:
            self.latest = job
            self.changed.set()


def describe(job: Job) -> str:
    words = {
        JobState.QUEUED: "queued",
        JobState.SUBMITTED: "submitted to the provider",
        JobState.RUNNING: "generating",
        JobState.SUCCEEDED: "downloading",
        JobState.DELIVERED: "done",
    }
    text = words.get(job.state, job.state.value.replace("_", " "))
    if job.provider_status and job.state in (JobState.SUBMITTED, JobState.RUNNING):
        text += f" ({job.provider_status})"
    return text


async def run_generate(args: argparse.Namespace, settings: Settings) -> int:
    console = Console(stderr=True)
    image, end_image = await asyncio.to_thread(read_images, args)
    data = request_from_args(args, image, end_image)
    out: Path = args.out or Path(f"klingbot-{time.strftime('%Y%m%d-%H%M%S')}.mp4")
    sink = FileSink(out)
    # one person is watching a progress bar: look more often than a busy bot would
    fast = min(settings.poll_initial_interval_s, 1.0)
    settings = settings.model_copy(update={"poll_initial_interval_s": fast})
    async with open_runtime(
        settings, delivery=sink, with_web=settings.public_url is not None
    ) as rt:
        service = rt.service
        quote = await service.quote(data, args.provider)
        for checked in (image, end_image):
            if checked is not None:
                await asyncio.to_thread(service.media.store_image, checked)
        await rt.start()
        watcher = Watcher()
        service.subscribe(watcher)
        receipt = await service.submit(
            Requester(charge=False), quote.request, provider=quote.provider
        )
        job = receipt.job
        watcher.job_id, watcher.latest = job.id, job
        shape: str = quote.request.aspect_ratio
        if image is not None:
            shape = f"from a {image.width_px}×{image.height_px} image"
        console.print(
            f"Job [bold]{job.id}[/] on [bold]{quote.provider}[/]: {quote.request.duration_s} s,"
            f" {shape}, {quote.request.resolution},"
            f" audio {'on' if quote.request.audio else 'off'};"
            f" price {quote.cost} credits (operator test: not charged)"
        )
        cancel = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, cancel.set)
        try:
            job = await follow(service, watcher, job, cancel, console)
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
    return report(job, out, console)


async def follow(
    service: Any, watcher: Watcher, job: Job, cancel: asyncio.Event, console: Console
) -> Job:
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(describe(job), total=100)
        cancelling = False
        while job.state not in DONE:
            waiter = asyncio.ensure_future(watcher.changed.wait())
            stop = asyncio.ensure_future(cancel.wait())
            await asyncio.wait({waiter, stop}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stop.cancel()
            watcher.changed.clear()
            if cancel.is_set() and not cancelling:
                cancelling = True
                progress.update(bar, description="cancelling…")
                try:
                    job = await service.cancel(job.id, Actor(0, is_owner=True))
                except KlingbotError as error:
                    console.print(f"[yellow]Cannot cancel: {error}[/]")
            job = watcher.latest or job
            fresh = await service.jobs.get(job.id)
            job = fresh
            progress.update(bar, description=describe(job), completed=job.progress_pct or 0)
    return job


def report(job: Job, out: Path, console: Console) -> int:
    if job.state is JobState.DELIVERED:
        console.print(f"[green]Saved[/] {out} ({job.media_size_bytes or 0:,} bytes).")
        print(out)
        return 0
    if job.state is JobState.CANCELLED:
        console.print("[yellow]Cancelled.[/]")
        return 130
    reason = job.error_message or job.state.value
    console.print(f"[red]Job {job.id} ended {job.state.value}:[/] {reason}")
    return 1
