"""`local`: an offline provider that really renders a preview MP4 (not AI).

It behaves like a vendor: `submit` returns a job id at once, the render runs in the background
(at least `KLINGBOT_LOCAL_RENDER_S` seconds, so the pipeline's queue and polling are exercised),
`poll` reports progress, `cancel` stops it, and when a webhook URL is given it POSTs the finished
job there. Jobs are files in its work directory (`<id>.json` spec, `<id>.mp4` result,
`<id>.cancelled`), so a restarted bot finds them again; a job whose render was interrupted by a
restart is rendered again on the next poll. The clip shows the prompt, an animation and the label
"LOCAL PREVIEW · not AI-generated"; it has an AAC track when audio is on. Image-to-video renders
the image itself, panning, at the image's aspect ratio (fading into the end image when there is
one); the images are kept beside the spec (`<id>.start.png|jpg`, `<id>.end.…`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.media import RenderStopped, image_frame_size, render_image_preview, render_preview
from bot.providers import _json
from bot.providers.base import (
    Headers,
    ProviderJob,
    ProviderState,
    ProviderStatus,
    Recovery,
    Submission,
    VideoProvider,
    WebhookEvent,
)
from bot.providers.errors import ErrorKind, ProviderError, WebhookParseError
from bot.providers.http import ProviderHttp
from bot.providers.images import ImageInputs, pick_image
from bot.request import VideoRequest
from bot.settings import LocalSettings

log = logging.getLogger(__name__)

LABEL = "LOCAL PREVIEW · not AI-generated"
SAFE_REF = re.compile(r"[0-9A-Za-z_-]{1,64}")
FRAME_SIZES = {
    ("720p", "16:9"): (1280, 720),
    ("720p", "9:16"): (720, 1280),
    ("720p", "1:1"): (720, 720),
    ("1080p", "16:9"): (1920, 1080),
    ("1080p", "9:16"): (1080, 1920),
    ("1080p", "1:1"): (1080, 1080),
}


SHORT_SIDES_PX = {"720p": 720, "1080p": 1080}


def frame_size(resolution: str | None, aspect_ratio: str) -> tuple[int, int]:
    return FRAME_SIZES[(resolution or "720p", aspect_ratio)]


def request_frame_size(request: VideoRequest) -> tuple[int, int]:
    """The clip's size: the image's own aspect ratio with an image, else the chosen one."""
    if request.image is not None:
        short = SHORT_SIDES_PX.get(request.resolution or "720p", 720)
        return image_frame_size(request.image.width_px, request.image.height_px, short)
    return frame_size(request.resolution, request.aspect_ratio)


class LocalProvider(VideoProvider):
    name = "local"
    recovery = Recovery.RESUBMIT  # a create with the bot's job id finds the same render

    def __init__(
        self,
        settings: LocalSettings,
        http: ProviderHttp,
        *,
        work_dir: Path,
        webhook_tolerance_s: float = 300.0,
        now_s: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings, http, webhook_tolerance_s=webhook_tolerance_s, now_s=now_s)
        self.render_s = settings.render_s
        self.create_s = settings.create_s
        self.work_dir = work_dir.resolve()
        self._renders: dict[str, asyncio.Task[None]] = {}
        self._webhooks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        self._closing = threading.Event()  # stops renders running in threads

    @property
    def files_dir(self) -> Path:
        return self.work_dir

    def render_task(self, job_id: str) -> asyncio.Task[None] | None:
        """The render running (or run) in this process for a job, if any."""
        return self._renders.get(job_id)

    def _path(self, job_id: str, suffix: str) -> Path:
        return self.work_dir / f"{job_id}{suffix}"

    async def submit(
        self,
        request: VideoRequest,
        *,
        webhook_url: str | None,
        images: ImageInputs | None = None,
        client_ref: str | None = None,
    ) -> Submission:
        if request.image is not None:
            problems = self.capabilities.problems(request)
            if problems:
                raise ProviderError(ErrorKind.INVALID_INPUT, " ".join(problems), provider=self.name)
        if client_ref and not SAFE_REF.fullmatch(client_ref):
            client_ref = None  # only ids that are safe as file names
        job_id = f"local-{client_ref}" if client_ref else f"local-{secrets.token_hex(8)}"
        spec_path = self._path(job_id, ".json")
        if client_ref is not None and await asyncio.to_thread(spec_path.exists):
            # the same create again (its answer was lost): the job it made, not a second one
            return Submission(ProviderJob(job_id), await self.poll(ProviderJob(job_id)))
        start = pick_image(images, request.image, "start", provider=self.name)
        end = pick_image(images, request.end_image, "end", provider=self.name)
        for which, image, ref in (("start", start, request.image), ("end", end, request.end_image)):
            if image is not None and ref is not None:
                path = self._path(job_id, f".{which}.{ref.extension}")
                await asyncio.to_thread(self._write_file, path, image.data)
        spec = {
            "request": request.model_dump(mode="json"),
            "webhook_url": webhook_url,
            "created_s": self.now_s(),
        }
        await asyncio.to_thread(self._write_spec, job_id, spec)
        self._start(job_id, spec)
        if self.create_s:  # the job exists now; its answer takes a while, as at a busy vendor
            await asyncio.sleep(self.create_s)
        return Submission(ProviderJob(job_id), ProviderStatus(ProviderState.QUEUED, "queued"))

    def _write_file(self, path: Path, data: bytes) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        partial.write_bytes(data)
        partial.replace(path)

    def _write_spec(self, job_id: str, spec: dict[str, Any]) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        partial = self._path(job_id, ".json.part")
        partial.write_text(json.dumps(spec))
        partial.replace(self._path(job_id, ".json"))

    def _start(self, job_id: str, spec: dict[str, Any]) -> None:
        task = self._renders.get(job_id)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(
                self._render(job_id, spec), name=f"local-render-{job_id}"
            )
            self._renders[job_id] = task
            url = spec.get("webhook_url")
            if url:
                task.add_done_callback(lambda done: self._after_render(done, job_id, str(url)))

    def _after_render(self, task: asyncio.Task[None], job_id: str, url: str) -> None:
        """Call back only once the render task is over, so a poll then sees the result."""
        if task.cancelled():
            return
        sender = asyncio.get_running_loop().create_task(self._send_webhook(job_id, url))
        self._webhooks.add(sender)
        sender.add_done_callback(self._webhooks.discard)

    async def _render(self, job_id: str, spec: dict[str, Any]) -> None:
        request = VideoRequest.model_validate(spec["request"])
        width, height = request_frame_size(request)
        started = self.now_s()
        try:
            async with self._slots:
                if request.image is not None:
                    end = request.end_image
                    await asyncio.to_thread(
                        render_image_preview,
                        self._path(job_id, ".mp4"),
                        image=self._path(job_id, f".start.{request.image.extension}"),
                        end_image=self._path(job_id, f".end.{end.extension}") if end else None,
                        duration_s=request.duration_s,
                        width=width,
                        height=height,
                        audio=bool(request.audio),
                        label=LABEL,
                        stop=self._closing,
                    )
                else:
                    await asyncio.to_thread(
                        render_preview,
                        self._path(job_id, ".mp4"),
                        prompt=request.summary if request.shots else (request.prompt or ""),
                        duration_s=request.duration_s,
                        width=width,
                        height=height,
                        audio=bool(request.audio),
                        label=LABEL,
                        stop=self._closing,
                    )
            remaining = self.render_s - (self.now_s() - started)
            if remaining > 0:
                await asyncio.sleep(remaining)
        except asyncio.CancelledError:
            raise
        except RenderStopped:  # closing: like a cancel, and rendered again after a restart
            raise asyncio.CancelledError from None
        except Exception as error:
            log.exception("local render %s failed", job_id)
            await asyncio.to_thread(self._path(job_id, ".failed").write_text, str(error))

    async def _send_webhook(self, job_id: str, url: str) -> None:
        status = await self.poll(ProviderJob(job_id))
        body = {"id": job_id, "status": status.state.value, "output": status.video_url}
        try:
            await self.http.call("POST", url, provider=self.name, json_body=body)
        except ProviderError as error:  # the poller will find the result anyway
            log.info("local webhook for %s not delivered: %s", job_id, error.detail)

    async def poll(self, job: ProviderJob) -> ProviderStatus:
        status, interrupted = await asyncio.to_thread(self._status, job.id)
        if interrupted is not None:  # its render was lost with a restart: render it again
            self._start(job.id, interrupted)
        return status

    def _status(self, job_id: str) -> tuple[ProviderStatus, dict[str, Any] | None]:
        if self._path(job_id, ".cancelled").exists():
            return ProviderStatus(ProviderState.CANCELLED, "cancelled"), None
        failed = self._path(job_id, ".failed")
        if failed.exists():
            error = ProviderError(ErrorKind.UNKNOWN, failed.read_text(), provider=self.name)
            return ProviderStatus(ProviderState.FAILED, "failed", error=error), None
        spec_path = self._path(job_id, ".json")
        if not spec_path.exists():
            raise ProviderError(ErrorKind.NOT_FOUND, f"no local job {job_id}", provider=self.name)
        spec = json.loads(spec_path.read_text())
        task = self._renders.get(job_id)
        running = task is not None and not task.done()
        clip = self._path(job_id, ".mp4")
        if clip.exists() and not running:
            done = ProviderStatus(
                ProviderState.SUCCEEDED, "succeeded", progress_pct=100, video_url=clip.as_uri()
            )
            return done, None
        elapsed = self.now_s() - float(spec.get("created_s", self.now_s()))
        progress = min(99, int(100 * elapsed / max(self.render_s, 1.0)))
        status = ProviderStatus(ProviderState.RUNNING, "running", progress_pct=progress)
        return status, None if running else spec

    async def cancel(self, job: ProviderJob) -> bool:
        task = self._renders.pop(job.id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not self._path(job.id, ".json").exists():
            return False
        await asyncio.to_thread(self._path(job.id, ".cancelled").write_text, "cancelled")
        return True

    def parse_webhook(self, headers: Headers, body: bytes) -> WebhookEvent:
        """The local provider's own callback (authenticated by the URL token only)."""
        data = _json.loads_object(body)
        job_id = _json.text(data.get("id")) if data else None
        word = _json.text(data.get("status")) if data else None
        if not job_id or word not in {s.value for s in ProviderState}:
            raise WebhookParseError("not a local provider callback", provider=self.name)
        url = _json.text(data.get("output")) if data else None
        state = ProviderState(word)
        if state is ProviderState.SUCCEEDED and not url:
            return WebhookEvent(job_id, None, None)
        return WebhookEvent(job_id, None, ProviderStatus(state, word, video_url=url))

    async def close(self) -> None:
        """Stop renders (their threads too: a process can exit at once) and webhook sends."""
        self._closing.set()
        for task in [*self._renders.values(), *self._webhooks]:
            task.cancel()
        for task in [*self._renders.values(), *self._webhooks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._renders.clear()
