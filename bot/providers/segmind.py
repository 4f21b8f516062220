"""Segmind: `kling-3-pro-text2video` through the AI gateway, async v2 with a synchronous v1 fallback.

Image-to-video is `kling-3-pro-image2video` on the same two APIs (the v2 fallback is per model).

Auth is the `x-api-key` header (the gateway refuses the key as a bearer token). v2 (the default):
`POST {base}/v2/kling-3-pro-text2video` → `{request_id, status: "QUEUED", poll_url, status_url,
response_url}`; `GET /v2/requests/{id}/status` says QUEUED|PROCESSING|COMPLETED|FAILED, then
`GET /v2/requests/{id}` has the video (`output`/`video`) and `metrics.cost`. A failed job answers
HTTP 422 `{"status": "FAILED", "error"}` and is not billed; request records expire after about an
hour (then 404: NOT_FOUND). v1: `POST {base}/v1/kling-3-pro-text2video` blocks until the video is
made and returns it. Durations are strings, errors are `{"error": msg}` (405 is an HTML page), 406
means insufficient credits unless the message says content type or spend limit, 429 carries
`x-rate-limit-reset-at-utc` and no Retry-After. No webhooks for model inference, no cancel.
See shared/reference/providers.md section 5.

v1 is used when `api_mode="v1"`, or with `api_mode="auto"` once v2 answers 404/405 for the model
(a definite "not created", so the one v1 create that follows cannot double-bill). A v1 job is
finished when `submit` returns: the clip is saved under `work_dir` and the submission is already
SUCCEEDED with a `file://` URL; `poll` of a v1 job returns the same status without a request. The v1
call streams the reply to disk (clips exceed the shared client's 4 MB reply cap) over its own
fresh-connection session with a long timeout (`v1_timeout_s`), retrying only when no connection was
made. Any failure after a 200 started arriving is an unknown outcome (Segmind bills every 200), and
so is a gateway's 502/504 (the shared create rule in bot/providers/http.py, applied to v1 too).

Where the docs are uncertain [?]:
- Multi-shot: sent as `multi_prompt` [{prompt, duration: str}] without `prompt` (the page marks
  `prompt` required, but every field and default matches fal's schema, where the two are mutually
  exclusive) and with `shot_type: "customize"` (the only value Segmind offers; fal wants a shot
  type with multi_prompt).
- The v1 reply is read in every documented form: video bytes (any non-JSON, non-text content
  type), or JSON holding a URL (`output`, `video`, `url`, …) or base64 video (bare or `data:` URI;
  accepted only when it decodes to an MP4/WebM container).
- The status reply of a finished job is read for a URL first; the result endpoint is fetched only
  when it has none. FAILED may come as HTTP 200 or 422 from either endpoint.
- `poll_url`/`status_url`/`response_url` are used only when they are on the configured base URL's
  origin (the API key is sent to them); otherwise the documented paths are used.
- `x-rate-limit-reset-at-utc` is read as unix seconds or milliseconds, ISO 8601 or an HTTP date.
- 401/403 are always AUTH (Segmind's 403 says "Insufficient permissions"; credit is 406).
- 406: "content type" → UNKNOWN (our bug), "spend limit" → AUTH (the admin must raise the team
  cap), credits/balance → OUT_OF_FUNDS, another message → INVALID_INPUT (a value rejected before
  the run), no message → OUT_OF_FUNDS (the seed's meaning). Create 404/405/410 → UNKNOWN (no such
  model / retired: not a job the vendor lost).

Why one module of this length: one vendor with two APIs (async v2 and synchronous v1 with its fallback), both needed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from bot.providers import _json
from bot.providers.base import (
    Headers,
    ProviderJob,
    ProviderState,
    ProviderStatus,
    Submission,
    VideoProvider,
    WebhookEvent,
)
from bot.providers.errors import ErrorKind, ProviderError, WebhookParseError
from bot.providers.http import (
    AMBIGUOUS_GATEWAY_STATUSES,
    MAX_REPLY_BYTES,
    HttpReply,
    ProviderHttp,
    classify,
    error_message,
)
from bot.providers.http import failure_kind as _failure_kind
from bot.providers.images import ImageInput, ImageInputs, pick_image
from bot.request import VideoRequest
from bot.settings import ProviderSettings, SegmindSettings

MODEL = "kling-3-pro-text2video"
IMAGE_MODEL = "kling-3-pro-image2video"
CHUNK_BYTES = 256 * 1024

STATES = {
    "queued": ProviderState.QUEUED,
    "pending": ProviderState.QUEUED,
    "processing": ProviderState.RUNNING,
    "in_progress": ProviderState.RUNNING,
    "running": ProviderState.RUNNING,
    "completed": ProviderState.SUCCEEDED,
    "succeeded": ProviderState.SUCCEEDED,
    "success": ProviderState.SUCCEEDED,
    "failed": ProviderState.FAILED,
    "error": ProviderState.FAILED,
    "cancelled": ProviderState.CANCELLED,
    "canceled": ProviderState.CANCELLED,
}

_CONTENT_TYPE = re.compile(r"content.?type|media.?type|not acceptable", re.IGNORECASE)
_SPEND_LIMIT = re.compile(r"spend(ing)?.{0,3}(limit|cap)|team.{0,30}(limit|cap)", re.IGNORECASE)
_NO_CREDIT = re.compile(r"insufficient|credit|balance|top.?up|recharge", re.IGNORECASE)
_TAGS = re.compile(r"<[^>]*>")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_BASE64_KEYS = ("video", "output", "data", "base64", "image", "result")


def build_body(
    request: VideoRequest, *, start: ImageInput | None = None, end: ImageInput | None = None
) -> dict[str, Any]:
    """The request body (v1 and v2 share it), in Segmind's field names and types.

    Image-to-video: `start_image_url`/`end_image_url` (the bot's public URL, else a data URI [?])
    without `aspect_ratio` (listed on the page, but the model, fal's, takes the image's).
    """
    data: dict[str, Any] = {
        "duration": str(request.duration_s),
        "generate_audio": bool(request.audio),
    }
    if start is None:
        data["aspect_ratio"] = request.aspect_ratio
    else:
        data["start_image_url"] = start.url or start.data_uri()
        if end is not None:
            data["end_image_url"] = end.url or end.data_uri()
    if request.shots:
        data["multi_prompt"] = [
            {"prompt": shot.prompt, "duration": str(shot.duration_s)} for shot in request.shots
        ]
        data["shot_type"] = request.shot_type or "customize"
    else:
        data["prompt"] = request.prompt
        if request.shot_type is not None:
            data["shot_type"] = request.shot_type
    if request.negative_prompt:
        data["negative_prompt"] = request.negative_prompt
    if request.cfg_scale is not None:
        data["cfg_scale"] = request.cfg_scale
    if request.voice_ids:
        data["voice_ids"] = list(request.voice_ids)
    return data


def reset_in_s(headers: Headers, now_s: float) -> float | None:
    """Seconds until `x-rate-limit-reset-at-utc` (or Retry-After, should Segmind add it)."""
    lower = {k.lower(): v for k, v in headers.items()}
    retry = (lower.get("retry-after") or "").strip()
    if retry:
        with contextlib.suppress(ValueError):
            return max(0.0, float(retry))
    value = (lower.get("x-rate-limit-reset-at-utc") or "").strip()
    if not value:
        return None
    at: float | None = None
    number = _json.number(value)
    if number is not None:
        # unix milliseconds, unix seconds, or (small) seconds from now
        at = number / 1000 if number > 1e11 else number if number > 1e9 else now_s + number
    else:
        with contextlib.suppress(ValueError, OverflowError):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            # "…-at-utc": a time without an offset is UTC
            at = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
        if at is None:
            with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
                at = email.utils.parsedate_to_datetime(value).timestamp()
    if at is None or at != at:  # unreadable or NaN
        return None
    return min(max(0.0, at - now_s), 24 * 3600.0)


async def read_all(content: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole body (StreamReader.read(n) returns only what has arrived); None past `limit`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in content.iter_chunked(CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _finished(word: str) -> bool:
    return STATES.get(word.lower()) is ProviderState.SUCCEEDED


def _same_origin(url: str | None, base: str) -> bool:
    if not url:
        return False
    try:
        one, two = urlsplit(url), urlsplit(base)
        return (one.scheme, one.netloc) == (two.scheme, two.netloc) and one.scheme in (
            "http",
            "https",
        )
    except ValueError:
        return False


def _decode_base64(value: str) -> bytes | None:
    """Video bytes from a base64 string or `data:` URI; None when it is not one."""
    text = value.strip()
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if ";base64" not in head:
            return None
    if len(text) < 16:
        return None
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if looks_like_video(decoded) else None


def looks_like_video(data: bytes) -> bool:
    """MP4/MOV (`ftyp` box) or WebM/Matroska (EBML magic): tells base64 video from other text."""
    return data[4:8] == b"ftyp" or data.startswith(b"\x1a\x45\xdf\xa3")


def read_v1_json(data: Any) -> tuple[str | None, bytes | None]:
    """A v1 JSON reply: (video URL, None) or (None, video bytes). Raises ProviderError."""
    if isinstance(data, dict):
        url = None
        for key in ("output", "video", "url", "video_url", "outputs", "videos", "result"):
            url = url or _json.find_url(data.get(key))
        if url:
            return url, None
        for key in _BASE64_KEYS:
            value = data.get(key)
            if isinstance(value, list) and value:
                value = value[0]
            if isinstance(value, str):
                decoded = _decode_base64(value)
                if decoded:
                    return None, decoded
    elif isinstance(data, str):
        url = _json.find_url(data)
        if url:
            return url, None
        decoded = _decode_base64(data)
        if decoded:
            return None, decoded
    raise ProviderError(
        ErrorKind.UNKNOWN,
        "the v1 reply holds no video URL or base64 video",
        provider="segmind",
        outcome_unknown=True,
    )


class SegmindProvider(VideoProvider):
    name = "segmind"

    def __init__(
        self,
        settings: ProviderSettings,
        http: ProviderHttp,
        *,
        work_dir: Path | None = None,
        v1_timeout_s: float = 1200.0,
        v1_max_bytes: int = 1024 * 1024 * 1024,
        v1_keep_s: float = 24 * 3600.0,
        webhook_tolerance_s: float = 300.0,
        now_s: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings, http, webhook_tolerance_s=webhook_tolerance_s, now_s=now_s)
        self.api_mode: Literal["auto", "v2", "v1"] = (
            settings.api_mode if isinstance(settings, SegmindSettings) else "auto"
        )
        self._work_dir = work_dir
        self.v1_timeout_s = v1_timeout_s
        self.v1_max_bytes = v1_max_bytes
        self.v1_keep_s = v1_keep_s
        self._v2_missing: set[str] = set()  # auto mode: models v2 said 404/405 for once
        self._v1_session: aiohttp.ClientSession | None = None

    @property
    def work_dir(self) -> Path:
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="klingbot-segmind-"))
        return self._work_dir

    @property
    def files_dir(self) -> Path | None:
        return self._work_dir  # v1 clips are saved here (made on first use when not given)

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key, "Content-Type": "application/json"}

    def _url(self, version: str, path: str) -> str:
        return f"{self.settings.base_url}/{version}/{path}"

    async def close(self) -> None:
        if self._v1_session is not None:
            await self._v1_session.close()
            self._v1_session = None

    # -- submit ---------------------------------------------------------------------------------

    async def submit(
        self,
        request: VideoRequest,
        *,
        webhook_url: str | None,
        images: ImageInputs | None = None,
        client_ref: str | None = None,
    ) -> Submission:
        """Create the job (Segmind has no webhooks for models: `webhook_url` is not sent)."""
        problems = self.capabilities.problems(request)
        if problems:  # nothing Segmind can express: refuse before anything is billed
            raise ProviderError(ErrorKind.INVALID_INPUT, " ".join(problems), provider=self.name)
        start = pick_image(images, request.image, "start", provider=self.name)
        end = pick_image(images, request.end_image, "end", provider=self.name)
        body = build_body(request, start=start, end=end)
        model = MODEL if start is None else IMAGE_MODEL
        if self.api_mode == "v1" or (self.api_mode == "auto" and model in self._v2_missing):
            return await self._submit_v1(body, model)
        reply = await self.http.create(
            self._url("v2", model), provider=self.name, headers=self._headers(), json_body=body
        )
        if reply.status in (404, 405) and self.api_mode == "auto":
            self._v2_missing.add(model)  # refused outright: nothing was created or billed
            return await self._submit_v1(body, model)
        if reply.status >= 300:
            raise self._error(reply, creating=True)
        data = _json.loads_object(reply.body)
        job_id = _json.text(data.get("request_id")) if data is not None else None
        if data is None or not job_id:
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"create reply has no request_id: {reply.text[:200]!r}",
                provider=self.name,
                status_code=reply.status,
                outcome_unknown=True,
            )
        links = {"api": "v2"}
        base = self.settings.base_url
        status_url = _json.text(data.get("status_url")) or _json.text(data.get("poll_url"))
        response_url = _json.text(data.get("response_url"))
        if status_url and _same_origin(status_url, base):
            links["status_url"] = status_url
        if response_url and _same_origin(response_url, base):
            links["response_url"] = response_url
        word = _json.text(data.get("status")) or "QUEUED"
        return Submission(ProviderJob(job_id, links), ProviderStatus(ProviderState.QUEUED, word))

    async def _submit_v1(self, body: dict[str, Any], model: str = MODEL) -> Submission:
        url = self._url("v1", model)
        session = self._session()
        attempt = 0
        while True:
            attempt += 1
            try:
                async with session.post(
                    url,
                    json=body,
                    headers=self._headers(),
                    timeout=aiohttp.ClientTimeout(total=self.v1_timeout_s),
                    allow_redirects=False,
                ) as response:
                    if response.status >= 300:
                        error_body = await read_all(response.content, MAX_REPLY_BYTES)
                        reply = HttpReply(
                            response.status, dict(response.headers), error_body or b"", self.name
                        )
                        if reply.status in AMBIGUOUS_GATEWAY_STATUSES:
                            # the gateway stopped waiting; the generation may go on (shared rule)
                            raise ProviderError(
                                ErrorKind.TRANSIENT,
                                f"HTTP {reply.status} from a gateway on the v1 create:"
                                f" {self._message(reply)}",
                                provider=self.name,
                                status_code=reply.status,
                                outcome_unknown=True,
                            )
                        raise self._error(reply, creating=True)
                    return await self._v1_result(response)
            except aiohttp.ClientConnectorError as error:  # nothing was sent
                if attempt > self.http.connect_retries:
                    raise ProviderError(
                        ErrorKind.TRANSIENT, f"cannot connect: {error}", provider=self.name
                    ) from error
                await asyncio.sleep(self.http.retry_delay_s * attempt)
            except (aiohttp.ClientError, TimeoutError) as error:  # it may have been received
                raise ProviderError(
                    ErrorKind.TRANSIENT,
                    f"no complete answer to the v1 request: {error!r}",
                    provider=self.name,
                    outcome_unknown=True,
                ) from error

    def _session(self) -> aiohttp.ClientSession:
        if self._v1_session is None or self._v1_session.closed:
            self._v1_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=64)
            )
        return self._v1_session

    async def _v1_result(self, response: aiohttp.ClientResponse) -> Submission:
        """Turn a v1 200 (billed) into a finished submission."""
        request_id = response.headers.get("x-request-id", "")
        job_id = "v1-" + (request_id if _SAFE_ID.match(request_id) else secrets.token_hex(12))
        kind = response.content_type.lower()
        if kind == "application/json" or kind.endswith("+json"):
            raw = await read_all(response.content, self.v1_max_bytes * 4 // 3 + 4096)
            if raw is None:
                raise self._lost(f"the v1 reply is larger than {self.v1_max_bytes} bytes")
            try:
                data: Any = json.loads(raw)
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise self._lost(f"unreadable v1 reply: {raw[:200]!r}") from None
            url, video = read_v1_json(data)
            if url is None and video is not None:
                url = (await asyncio.to_thread(self._write_clip, job_id, video)).as_uri()
        elif kind.startswith("text/"):
            text = ((await read_all(response.content, MAX_REPLY_BYTES)) or b"").decode(
                "utf-8", "replace"
            )
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"v1 answered 200 with {kind}: {_TAGS.sub(' ', text)[:200]!r}",
                provider=self.name,
                status_code=response.status,
                outcome_unknown=True,
            )
        else:
            url = (await self._stream_clip(job_id, response)).as_uri()
        assert url is not None
        status = ProviderStatus(
            ProviderState.SUCCEEDED, "COMPLETED", progress_pct=100, video_url=url
        )
        return Submission(ProviderJob(job_id, {"api": "v1", "video_url": url}), status)

    def _clip_path(self, job_id: str) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._prune()
        return self.work_dir.resolve() / f"segmind-{job_id}.mp4"

    def _prune(self) -> None:
        """Forget v1 clips older than `v1_keep_s` (the pipeline copies them at once)."""
        cutoff = self.now_s() - self.v1_keep_s
        for path in self.work_dir.glob("segmind-v1-*.mp4"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    def _write_clip(self, job_id: str, video: bytes) -> Path:
        partial: Path | None = None
        try:
            path = self._clip_path(job_id)
            partial = path.with_name(f".{path.name}.part")
            with partial.open("wb") as out:
                out.write(video)
            os.replace(partial, path)
        except OSError as error:
            raise self._lost(f"cannot save the v1 clip: {error}") from error
        finally:
            if partial is not None:
                with contextlib.suppress(FileNotFoundError):
                    partial.unlink()
        return path

    async def _stream_clip(self, job_id: str, response: aiohttp.ClientResponse) -> Path:
        partial: Path | None = None
        size = 0
        try:
            path = await asyncio.to_thread(self._clip_path, job_id)
            partial = path.with_name(f".{path.name}.part")
            with partial.open("wb") as out:
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    size += len(chunk)
                    if size > self.v1_max_bytes:
                        raise self._lost(f"the v1 clip is larger than {self.v1_max_bytes} bytes")
                    await asyncio.to_thread(out.write, chunk)
            if size == 0:
                raise self._lost("the v1 reply was empty")
            if response.content_length is not None and size != response.content_length:
                raise self._lost(f"v1 reply ended after {size} of {response.content_length} bytes")
            os.replace(partial, path)
        except OSError as error:
            raise self._lost(f"cannot save the v1 clip: {error}") from error
        finally:
            if partial is not None:
                with contextlib.suppress(FileNotFoundError):
                    partial.unlink()
        return path

    def _lost(self, detail: str) -> ProviderError:
        """A v1 job that ran (and was billed) but whose video we could not keep."""
        return ProviderError(ErrorKind.UNKNOWN, detail, provider=self.name, outcome_unknown=True)

    # -- poll -----------------------------------------------------------------------------------

    async def poll(self, job: ProviderJob) -> ProviderStatus:
        if job.data.get("api") == "v1":
            url = job.data.get("video_url") or ""
            if not url:
                raise ProviderError(
                    ErrorKind.NOT_FOUND, "a v1 job without its video", provider=self.name
                )
            return ProviderStatus(
                ProviderState.SUCCEEDED, "COMPLETED", progress_pct=100, video_url=url
            )
        status = await self._read(self._link(job, "status_url", f"requests/{job.id}/status"))
        if status.state is ProviderState.RUNNING and _finished(status.vendor_status):
            # the light status reply has no output: the result endpoint has the video
            status = await self._read(self._link(job, "response_url", f"requests/{job.id}"))
        return status

    def _link(self, job: ProviderJob, key: str, path: str) -> str:
        """The URL Segmind gave us at submit, if it is on our base URL; else the documented one."""
        url = job.data.get(key)
        if url and _same_origin(url, self.settings.base_url):
            return url
        return self._url("v2", path)

    async def _read(self, url: str) -> ProviderStatus:
        reply = await self.http.call("GET", url, provider=self.name, headers=self._headers())
        if reply.status == 422:  # the job ran and failed; Segmind does not bill it
            data = _json.loads_object(reply.body) or {"error": self._message(reply)}
            word = _json.text(data.get("status")) or "FAILED"
            return ProviderStatus(ProviderState.FAILED, word, error=self._failure(data))
        if reply.status >= 300:
            raise self._error(reply)
        return self.parse_status(reply.json_object())

    def parse_status(self, data: dict[str, Any]) -> ProviderStatus:
        """Read a status or result object; COMPLETED without a video is still RUNNING."""
        word, state = self._state(data)
        if state is ProviderState.SUCCEEDED:
            url = self._video_url(data)
            if not url:
                return ProviderStatus(ProviderState.RUNNING, word)
            return ProviderStatus(state, word, progress_pct=100, video_url=url)
        if state is ProviderState.FAILED:
            return ProviderStatus(state, word, error=self._failure(data))
        return ProviderStatus(state, word)

    def _state(self, data: dict[str, Any]) -> tuple[str, ProviderState]:
        word = _json.text(data.get("status")) or ""
        if not word and "status" not in data and self._video_url(data):
            word = "COMPLETED"  # a result body that only carries the output
        state = STATES.get(word.lower())
        if state is None:
            raise ProviderError(
                ErrorKind.UNKNOWN, f"unknown request status {word!r}", provider=self.name
            )
        return word, state

    @staticmethod
    def _video_url(data: dict[str, Any]) -> str | None:
        return _json.find_url(data.get("output")) or _json.find_url(data.get("video"))

    def _failure(self, data: dict[str, Any]) -> ProviderError:
        error = data.get("error")
        message = (
            _json.text(error)
            or _json.text(_json.dig(error, "message"))
            or _json.text(data.get("message"))
            or _json.text(data.get("detail"))
            or "the job failed"
        )
        return ProviderError(_failure_kind(message), message, provider=self.name)

    # -- webhooks and errors --------------------------------------------------------------------

    def parse_webhook(self, headers: Headers, body: bytes) -> WebhookEvent:
        raise WebhookParseError("Segmind does not send webhooks", provider=self.name)

    def _error(self, reply: HttpReply, *, creating: bool = False) -> ProviderError:
        message = self._message(reply)
        status = reply.status
        kind: ErrorKind | None = None
        retry: float | None = None
        if status == 429:
            kind, retry = ErrorKind.RATE_LIMITED, reset_in_s(reply.headers, self.now_s())
        elif status == 406:
            kind = self._kind_406(message)
        elif status in (401, 403):
            # Segmind reports missing credit as 406; its 403 text "Insufficient permissions"
            # must not read as out of funds
            kind = ErrorKind.AUTH
        elif creating and status in (404, 405, 410):
            kind = ErrorKind.UNKNOWN  # no such model (or retired): not a job Segmind lost
        if kind is None:
            return classify(status, reply.text, reply.headers, provider=self.name)
        return ProviderError(
            kind,
            f"HTTP {status}: {message}" if message else f"HTTP {status}",
            provider=self.name,
            status_code=status,
            retry_after_s=retry,
        )

    @staticmethod
    def _kind_406(message: str) -> ErrorKind:
        if _CONTENT_TYPE.search(message):
            return ErrorKind.UNKNOWN
        if _SPEND_LIMIT.search(message):
            return ErrorKind.AUTH
        if _NO_CREDIT.search(message) or not message:
            return ErrorKind.OUT_OF_FUNDS
        found = _failure_kind(message)
        return found if found is ErrorKind.CONTENT_POLICY else ErrorKind.INVALID_INPUT

    @staticmethod
    def _message(reply: HttpReply) -> str:
        data = _json.loads_object(reply.body)
        if data is not None:
            described = _json.text(data.get("error_description"))
            return described or error_message(data)[0]
        return " ".join(_TAGS.sub(" ", reply.text).split())[:300]
