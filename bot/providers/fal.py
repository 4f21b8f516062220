"""fal.ai: `fal-ai/kling-video/v3/{standard,pro,4k}/{text,image}-to-video` through fal's queue.

Submit `POST {base}/fal-ai/kling-video/v3/<tier>/text-to-video[?fal_webhook=<url>]` with
`Authorization: Key <key>`; the body is the model input itself (EachLabs' schema: durations are
strings "3".."15", `multi_prompt` [{prompt, duration}], shot_type customize|intelligent,
voice_ids). The resolution picks the endpoint (720p standard, 1080p pro, 4k); there is no field.
The reply carries `request_id` and the `status_url`, `response_url` and `cancel_url` to use. They
are keyed on the app (`…/fal-ai/kling-video/requests/{id}`; the model path answers 405) and are
kept in `ProviderJob.data`.

Poll `GET status_url`: IN_QUEUE (queue_position) / IN_PROGRESS (logs) / COMPLETED (202 while
pending, 200 when done). COMPLETED only says the request finished: the outcome is at `GET
response_url`, `{"video": {"url", "content_type", "file_name", "file_size"}}` or an error reply
carrying the model's status code (`{"detail": [{loc, msg, type}]}`, or `{"detail", "error_type"}`
for infrastructure errors; 422 "flagged by a content checker" / type content_policy_violation is
content policy). Cancel: `PUT cancel_url`.

Webhooks: `{request_id, gateway_request_id, status: "OK"|"ERROR", payload, error?,
payload_error?}`, signed Ed25519 over "{request_id}\\n{user_id}\\n{timestamp}\\n{sha256_hex(body)}"
with fal's public keys (JWKS at `settings.jwks_url`). `parse_webhook` is synchronous, so it
verifies against the keys already in memory only: `prepare_webhooks()` fetches them (call it at
start-up). When a delivery with complete, fresh signature headers matches no cached key (fal
rotated its keys, or the start-up fetch failed), it is refused (401) and a background refresh of
the JWKS starts (at most one per `key_refresh_interval_s`; also when the keys are older than 24 h).
fal retries a webhook 10 times over 2 hours, so a later delivery verifies against the new keys; the
poller covers the gap. An OK webhook without a payload (`payload_error`) is a bare hint.

Uncertain points [?] of shared/reference/providers.md section 6, and what this adapter does:
- Integer durations were reported to 422: durations are sent as strings, as the schema says.
- Out of funds was observed (not documented) as 403 "User is locked. Reason: Exhausted balance.":
  any 401/403/4xx whose message speaks of balance/credit is out_of_funds (402 too).
- `X-Fal-Retryable: false` makes a 5xx `unknown` (retrying the same request won't help);
  `true` makes an otherwise unknown error transient.
- A COMPLETED request whose result is a 5xx with fal's JSON error body failed for good (fal's queue
  already retried it); a 5xx without one (a proxy's page) is a transient poll error.
- Cancelling: a cancelled request is expected to read COMPLETED with an error result mentioning
  the cancellation (→ cancelled); FAILED/CANCELED status words (seen in a third-party schema) are
  accepted too.
- The JWKS address differs between the docs (rest.alpha.fal.ai) and code samples (rest.fal.ai):
  it is a setting (`KLINGBOT_FAL_JWKS_URL`), default the documented one.
- URLs the vendor returns are used only on the base URL's origin (scheme, host and port), so the
  API key is never sent anywhere else; otherwise the app-keyed URL is built from the request id.

Why one module of this length: it is one vendor's whole wire format (queue API, key rotation, Ed25519 webhooks), as for every other adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

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
from bot.providers.errors import ErrorKind, ProviderError, WebhookAuthError, WebhookParseError
from bot.providers.http import HttpReply, ProviderHttp, classify, failure_kind
from bot.providers.images import ImageInput, ImageInputs, pick_image
from bot.providers.signing import FalKeys, check_timestamp, header, verify_fal
from bot.request import VideoRequest
from bot.settings import FalSettings, ProviderSettings

log = logging.getLogger(__name__)

APP = "fal-ai/kling-video"
TIERS: dict[str, str] = {"720p": "standard", "1080p": "pro", "4k": "4k"}
JOB_URLS = ("status_url", "response_url", "cancel_url")
_URL_SUFFIX = {"status_url": "/status", "response_url": "", "cancel_url": "/cancel"}

STATES = {
    "IN_QUEUE": ProviderState.QUEUED,
    "IN_PROGRESS": ProviderState.RUNNING,
    # finished, outcome unknown until the result is fetched (see FalProvider.poll)
    "COMPLETED": ProviderState.RUNNING,
    "FAILED": ProviderState.FAILED,
    "ERROR": ProviderState.FAILED,
    "CANCELED": ProviderState.CANCELLED,
    "CANCELLED": ProviderState.CANCELLED,
}

# fal's machine-readable error types (`detail[].type`, `error_type`, X-Fal-Error-Type)
ERROR_TYPES = {
    "content_policy_violation": ErrorKind.CONTENT_POLICY,
    "request_timeout": ErrorKind.TRANSIENT,
    "startup_timeout": ErrorKind.TRANSIENT,
    "generation_timeout": ErrorKind.TRANSIENT,
    "runner_scheduling_failure": ErrorKind.TRANSIENT,
    "runner_connection_timeout": ErrorKind.TRANSIENT,
    "runner_disconnected": ErrorKind.TRANSIENT,
    "runner_connection_refused": ErrorKind.TRANSIENT,
    "internal_server_error": ErrorKind.TRANSIENT,
    "downstream_service_error": ErrorKind.TRANSIENT,
    "downstream_service_unavailable": ErrorKind.TRANSIENT,
}
_KEEP_KIND = (ErrorKind.AUTH, ErrorKind.OUT_OF_FUNDS, ErrorKind.RATE_LIMITED)
_STATUS_IN_TEXT = re.compile(r"\b([1-5]\d\d)\b")


def build_input(
    request: VideoRequest,
    *,
    audio_default: bool = True,
    start: ImageInput | None = None,
    end: ImageInput | None = None,
) -> dict[str, Any]:
    """The request body: fal's model input, durations as strings.

    Image-to-video adds `start_image_url` (and `end_image_url`): the bot's public URL, else a data
    URI; it has no `aspect_ratio` ("determined by the start image").
    """
    audio = audio_default if request.audio is None else request.audio
    data: dict[str, Any] = {"duration": str(request.duration_s), "generate_audio": audio}
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
    else:
        data["prompt"] = request.prompt
    if request.negative_prompt:
        data["negative_prompt"] = request.negative_prompt
    if request.cfg_scale is not None:
        data["cfg_scale"] = request.cfg_scale
    if request.shot_type is not None:
        data["shot_type"] = request.shot_type
    if request.voice_ids:
        data["voice_ids"] = list(request.voice_ids)
    return data


def error_types(data: Any, headers: Mapping[str, str]) -> list[str]:
    """Every machine-readable error type in a fal error reply."""
    found: list[str] = []
    detail = _json.dig(data, "detail")
    for item in detail if isinstance(detail, list) else []:
        kind = _json.text(_json.dig(item, "type"))
        if kind:
            found.append(kind)
    for value in (_json.text(_json.dig(data, "error_type")), header(headers, "X-Fal-Error-Type")):
        if value and value.strip():
            found.append(value.strip())
    return found


def _type_kind(name: str) -> ErrorKind | None:
    lowered = name.lower()
    if lowered in ERROR_TYPES:
        return ERROR_TYPES[lowered]
    if "content_policy" in lowered:
        return ErrorKind.CONTENT_POLICY
    if "timeout" in lowered or lowered.startswith("runner_"):
        return ErrorKind.TRANSIENT
    return None


class FalProvider(VideoProvider):
    name = "fal"

    def __init__(
        self,
        settings: ProviderSettings,
        http: ProviderHttp,
        *,
        webhook_tolerance_s: float = 300.0,
        now_s: Callable[[], float] = time.time,
        keys: FalKeys | None = None,
        keys_ttl_s: float = 24 * 3600,
        key_refresh_interval_s: float = 60.0,
    ) -> None:
        super().__init__(settings, http, webhook_tolerance_s=webhook_tolerance_s, now_s=now_s)
        self.keys = keys if keys is not None else FalKeys(self._fetch_jwks, ttl_s=keys_ttl_s)
        self.key_refresh_interval_s = key_refresh_interval_s
        # the background JWKS refresh started by a webhook no cached key verified
        self.key_refresh: asyncio.Task[None] | None = None
        self._last_key_refresh = float("-inf")

    @property
    def jwks_url(self) -> str:
        if isinstance(self.settings, FalSettings):
            return self.settings.jwks_url
        return FalSettings().jwks_url

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.api_key}", "Content-Type": "application/json"}

    # -- jobs -------------------------------------------------------------------------------

    async def submit(
        self,
        request: VideoRequest,
        *,
        webhook_url: str | None,
        images: ImageInputs | None = None,
        client_ref: str | None = None,
    ) -> Submission:
        problems = self.capabilities.problems(request)
        if problems:
            raise ProviderError(ErrorKind.INVALID_INPUT, " ".join(problems), provider=self.name)
        start = pick_image(images, request.image, "start", provider=self.name)
        end = pick_image(images, request.end_image, "end", provider=self.name)
        tier = TIERS[request.resolution or self.capabilities.resolutions[0]]
        task = "image-to-video" if start is not None else "text-to-video"
        reply = await self.http.create(
            f"{self.settings.base_url}/{APP}/v3/{tier}/{task}",
            provider=self.name,
            headers=self._headers(),
            json_body=build_input(
                request, audio_default=self.capabilities.audio_default, start=start, end=end
            ),
            params={"fal_webhook": webhook_url} if webhook_url else None,
        )
        if reply.status >= 300:
            raise self._error(reply)
        data = _json.loads_object(reply.body)
        job_id = _json.text(data.get("request_id")) if data is not None else None
        if data is None or not job_id:
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"submit reply has no request_id: {reply.text[:200]!r}",
                provider=self.name,
                status_code=reply.status,
                outcome_unknown=True,
            )
        urls = {}
        for key in JOB_URLS:
            url = _json.text(data.get(key))
            if url and self._on_base_origin(url):
                urls[key] = url
        try:
            status = self.parse_status(data)
        except ProviderError:
            status = ProviderStatus(ProviderState.QUEUED, "IN_QUEUE")
        return Submission(ProviderJob(job_id, urls), status)

    async def poll(self, job: ProviderJob) -> ProviderStatus:
        reply = await self.http.call(
            "GET", self._job_url(job, "status_url"), provider=self.name, headers=self._headers()
        )
        if reply.status >= 300:
            raise self._error(reply)
        status = self.parse_status(reply.json_object())
        if status.vendor_status != "COMPLETED":
            return status
        result = await self.http.call(
            "GET", self._job_url(job, "response_url"), provider=self.name, headers=self._headers()
        )
        return self.parse_result(result.status, result.headers, result.body)

    async def cancel(self, job: ProviderJob) -> bool:
        """PUT cancel_url: True when fal accepted; False when it finished or is unknown."""
        reply = await self.http.call(
            "PUT", self._job_url(job, "cancel_url"), provider=self.name, headers=self._headers()
        )
        if reply.status < 300:
            return True
        if reply.status in (400, 404, 409, 410):  # ALREADY_COMPLETED / NOT_FOUND
            return False
        raise self._error(reply)

    def parse_status(self, data: dict[str, Any]) -> ProviderStatus:
        """Read a queue status reply (COMPLETED reads as running until the result is fetched)."""
        word = (_json.text(data.get("status")) or "").upper()
        state = STATES.get(word)
        if state is None:
            raise ProviderError(
                ErrorKind.UNKNOWN, f"unknown queue status {word!r}", provider=self.name
            )
        if state is ProviderState.QUEUED:
            position = _json.number(data.get("queue_position"))
            queue_position = int(position) if position is not None and 0 <= position < 1e9 else None
            return ProviderStatus(state, word, queue_position=queue_position)
        if state is ProviderState.FAILED:
            message = _json.text(data.get("error")) or "the request failed"
            code = _json.text(data.get("error_type"))
            kind = (_type_kind(code) if code else None) or failure_kind(message, code)
            error = ProviderError(kind, message, provider=self.name, vendor_code=code)
            return ProviderStatus(state, word, error=error)
        return ProviderStatus(state, word)

    def parse_result(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderStatus:
        """Read the result of a COMPLETED request: the video, or why there is none.

        Raises ProviderError when the result could not be read (auth, rate limit, an unreadable
        reply, a proxy's 5xx): the next poll tries again.
        """
        if status < 300:
            data = _json.loads_object(body)
            if data is None:
                raise ProviderError(
                    ErrorKind.UNKNOWN,
                    f"unreadable result (HTTP {status}): {body[:200]!r}",
                    provider=self.name,
                    status_code=status,
                )
            url = _json.find_url(data.get("video")) or _json.find_url(data)
            if url:
                return ProviderStatus(
                    ProviderState.SUCCEEDED, "COMPLETED", progress_pct=100, video_url=url
                )
            error = ProviderError(
                ErrorKind.UNKNOWN,
                f"the request completed without a video: {json.dumps(data)[:200]}",
                provider=self.name,
                status_code=status,
            )
            return ProviderStatus(ProviderState.FAILED, "COMPLETED", error=error)
        text = body.decode("utf-8", errors="replace")
        error = self._classify(status, text, headers)
        if error.kind in (ErrorKind.AUTH, ErrorKind.RATE_LIMITED, ErrorKind.NOT_FOUND):
            raise error
        if status >= 500 and _json.loads_object(body) is None:
            raise error
        lowered = error.detail.lower()
        if "in progress" in lowered or "in queue" in lowered:
            return ProviderStatus(ProviderState.RUNNING, "COMPLETED")
        if "cancel" in lowered:
            return ProviderStatus(ProviderState.CANCELLED, "COMPLETED", error=error)
        return ProviderStatus(ProviderState.FAILED, "COMPLETED", error=error)

    # -- webhooks ---------------------------------------------------------------------------

    async def prepare_webhooks(self) -> None:
        """Fetch fal's JWKS. Raises ProviderError if it cannot be fetched or holds no key."""
        await self.keys.refresh()
        if not self.keys.keys:
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"no Ed25519 key in the JWKS at {self.jwks_url}",
                provider=self.name,
            )

    def parse_webhook(self, headers: Headers, body: bytes) -> WebhookEvent:
        self._verify(headers, body)
        data = _json.loads_object(body)
        if data is None:
            raise WebhookParseError("webhook body is not a JSON object", provider=self.name)
        job_id = _json.text(data.get("request_id")) or (
            header(headers, "X-Fal-Webhook-Request-Id").strip() or None
        )
        word = (_json.text(data.get("status")) or "").upper()
        status: ProviderStatus | None
        if word == "OK":
            url = _json.find_url(data.get("payload"))
            # without a payload (payload_error: too large to send) it is a bare hint
            status = (
                ProviderStatus(ProviderState.SUCCEEDED, word, progress_pct=100, video_url=url)
                if url
                else None
            )
        elif word == "ERROR":
            status = self._webhook_failure(data)
        else:
            raise WebhookParseError(f"unknown webhook status {word!r}", provider=self.name)
        return WebhookEvent(job_id, None, status)

    def _verify(self, headers: Headers, body: bytes) -> None:
        try:
            verify_fal(
                headers,
                body,
                self.keys.keys,
                now_s=self.now_s(),
                tolerance_s=self.webhook_tolerance_s,
                provider=self.name,
            )
        except WebhookAuthError:
            if self._well_formed(headers):
                self._refresh_keys_soon()
            raise
        if self.keys.stale:
            self._refresh_keys_soon()

    def _well_formed(self, headers: Headers) -> bool:
        """Complete, fresh signature headers: worth checking against a newer JWKS."""
        names = ("Request-Id", "User-Id", "Timestamp", "Signature")
        if not all(header(headers, f"X-Fal-Webhook-{name}").strip() for name in names):
            return False
        try:
            check_timestamp(
                header(headers, "X-Fal-Webhook-Timestamp"),
                self.now_s(),
                self.webhook_tolerance_s,
                provider=self.name,
            )
        except WebhookAuthError:
            return False
        return True

    def _refresh_keys_soon(self) -> None:
        """Start a background JWKS refresh, unless one runs or ran too recently."""
        if self.key_refresh is not None and not self.key_refresh.done():
            return
        now = time.monotonic()
        if now - self._last_key_refresh < self.key_refresh_interval_s:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: nothing can fetch; prepare_webhooks() must
            return
        self._last_key_refresh = now
        self.key_refresh = loop.create_task(self._refresh_quietly(), name="fal-jwks-refresh")

    async def _refresh_quietly(self) -> None:
        try:
            await self.keys.refresh()
        except ProviderError as error:
            log.warning("fal: cannot refresh the webhook keys from %s: %r", self.jwks_url, error)
        except Exception:  # a background task must not die unseen
            log.exception("fal: webhook key refresh failed")

    async def _fetch_jwks(self) -> object:
        reply = await self.http.call("GET", self.jwks_url, provider=self.name)  # no API key
        if reply.status >= 300:
            raise self._error(reply)
        return reply.json()

    def _webhook_failure(self, data: dict[str, Any]) -> ProviderStatus:
        message = _json.text(data.get("error")) or "the request failed"
        payload = data.get("payload")
        match = _STATUS_IN_TEXT.search(message)
        if match and int(match.group(1)) >= 400:
            text = json.dumps(payload) if isinstance(payload, dict) and payload else message
            error = self._classify(int(match.group(1)), text, {})
        else:
            code = _json.text(data.get("error_type"))
            kind = (_type_kind(code) if code else None) or failure_kind(message, code)
            error = ProviderError(kind, message, provider=self.name, vendor_code=code)
        if "cancel" in error.detail.lower():
            return ProviderStatus(ProviderState.CANCELLED, "ERROR", error=error)
        return ProviderStatus(ProviderState.FAILED, "ERROR", error=error)

    # -- helpers ----------------------------------------------------------------------------

    def _job_url(self, job: ProviderJob, key: str) -> str:
        url = job.data.get(key)
        if url and self._on_base_origin(url):
            return url
        return f"{self.settings.base_url}/{APP}/requests/{quote(job.id, safe='')}{_URL_SUFFIX[key]}"

    def _on_base_origin(self, url: str) -> bool:
        try:
            given, base = urlsplit(url), urlsplit(self.settings.base_url)
            return given.scheme in ("https", "http") and (
                given.scheme,
                given.hostname,
                given.port,
            ) == (base.scheme, base.hostname, base.port)
        except ValueError:
            return False

    def _error(self, reply: HttpReply) -> ProviderError:
        return self._classify(reply.status, reply.text, reply.headers)

    def _classify(self, status: int, text: str, headers: Mapping[str, str]) -> ProviderError:
        """`classify`, refined by fal's error types and its X-Fal-Retryable header."""
        error = classify(status, text, headers, provider=self.name)
        kind, code = error.kind, error.vendor_code
        types = error_types(_json.loads_object(text.encode()), headers)
        if types:
            code = code or types[0]
            if kind not in _KEEP_KIND:
                kind = next((k for k in map(_type_kind, types) if k is not None), kind)
        retryable = header(headers, "X-Fal-Retryable").strip().lower()
        if retryable == "false" and kind is ErrorKind.TRANSIENT:
            kind = ErrorKind.UNKNOWN
        elif retryable == "true" and kind is ErrorKind.UNKNOWN:
            kind = ErrorKind.TRANSIENT
        return _with(error, kind=kind, vendor_code=code)

    async def close(self) -> None:
        task, self.key_refresh = self.key_refresh, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _with(error: ProviderError, *, kind: ErrorKind, vendor_code: str | None) -> ProviderError:
    """A copy of `error` with another kind and vendor code."""
    return ProviderError(
        kind,
        error.detail,
        provider=error.provider,
        status_code=error.status_code,
        retry_after_s=error.retry_after_s,
        vendor_code=vendor_code,
        outcome_unknown=error.outcome_unknown,
    )
