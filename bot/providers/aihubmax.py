"""AIHubMax: `kling-v3-text-to-video` through the unified task API (EvoLink's twin).

Create `POST {base}/v1/videos/generations` with `Authorization: Bearer`, body `{"model":
"kling-v3-text-to-video", "prompt", "resolution", "duration" (int, 5 or 10), "aspect_ratio",
"generate_audio", "negative_prompt"?, "voice_ids"?, "multi_prompt"?, "callback_url"?}`; the reply
is a task object with `id` "task-unified-…". Poll `GET {base}/v1/tasks/{id}`: status
pending|processing|completed|failed, `progress` 0-100, the video in `results[]` (strings or `{url}`
objects) or `result_data[].video_url`, failures in `error{code, message, type}` with EvoLink's
codes. HTTP errors are `{"error": {code, message, type, param?, fallback_suggestion?}}`: 402
insufficient_quota, 429 rate_limit_error ("retry after 60 seconds"). Video links last 24 hours.
See shared/reference/providers.md sections 0 and 2.

Choices where the documentation is uncertain ([?] in the reference):
- `completed` with no result URL (documented race: the URL is attached after the status flips) is
  not terminal: the job stays RUNNING.
- `multi_prompt` items: the shape is not documented. Sent as `{prompt, duration}` with integer
  durations, matching the integer top-level `duration` (EvoLink's own Kling v3 uses
  `model_params.multi_prompt[{index, prompt, duration: str}]`, a different request schema).
  AIHubMax's schema marks `prompt` required for this model (unlike its Kling O3 page, which says
  "prompt or multi_prompt"), so a multi-shot request also sends the shots' prompts joined by
  newlines as `prompt`.
- `callback_url`: documented for EvoLink and for other AIHubMax models, not on this model's page.
  It is sent when the bot has a webhook URL; if the create is refused (400/422) with an error that
  names the callback, the create is sent once more without it (a 4xx refusal created nothing),
  and the job is followed by polling only.
- Callbacks are unsigned (the per-job token in the URL authenticates them); the body is the task
  object, id in `id` (or `task_id`).
- Task error codes follow EvoLink's error-code page: `quota_exceeded` is "request rate/quota
  exceeded, lower the frequency" there, so it is RATE_LIMITED, not OUT_OF_FUNDS;
  `insufficient_quota` is OUT_OF_FUNDS; `request_cancelled` makes the job CANCELLED;
  `resource_exhausted` ("upstream resources temporarily exhausted"), `service_*`, `upstream_error`,
  `generation_timeout` and EvoLink's `channel_*` codes are TRANSIENT.
- No cancel endpoint is documented (only `task_info.can_cancel`): `cancel` returns False.
- A `Retry-After` header wins; otherwise "retry after N seconds" anywhere in a 429 body is used.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any
from urllib.parse import quote

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
from bot.providers.http import HttpReply, classify, failure_kind
from bot.providers.images import ImageInputs
from bot.request import VideoRequest

log = logging.getLogger(__name__)

MODEL = "kling-v3-text-to-video"

STATES = {
    "pending": ProviderState.QUEUED,
    "queued": ProviderState.QUEUED,
    "submitted": ProviderState.QUEUED,
    "processing": ProviderState.RUNNING,
    "running": ProviderState.RUNNING,
    "in_progress": ProviderState.RUNNING,
    "completed": ProviderState.SUCCEEDED,
    "succeeded": ProviderState.SUCCEEDED,
    "success": ProviderState.SUCCEEDED,
    "failed": ProviderState.FAILED,
    "error": ProviderState.FAILED,
    "cancelled": ProviderState.CANCELLED,
    "canceled": ProviderState.CANCELLED,
}

# EvoLink task error codes (docs.evolink.ai .../task-management/error-codes).
TASK_ERRORS = {
    "content_policy_violation": ErrorKind.CONTENT_POLICY,
    "invalid_parameters": ErrorKind.INVALID_INPUT,
    "image_processing_error": ErrorKind.INVALID_INPUT,
    "image_dimension_mismatch": ErrorKind.INVALID_INPUT,
    "insufficient_quota": ErrorKind.OUT_OF_FUNDS,
    "insufficient_quota_error": ErrorKind.OUT_OF_FUNDS,
    "quota_exceeded": ErrorKind.RATE_LIMITED,
    "rate_limited": ErrorKind.RATE_LIMITED,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "service_error": ErrorKind.TRANSIENT,
    "service_unavailable": ErrorKind.TRANSIENT,
    "upstream_error": ErrorKind.TRANSIENT,
    "generation_timeout": ErrorKind.TRANSIENT,
    "resource_exhausted": ErrorKind.TRANSIENT,
    "resource_not_found": ErrorKind.NOT_FOUND,
    "unknown_error": ErrorKind.UNKNOWN,
}
CANCELLED_CODES = frozenset({"request_cancelled", "cancelled", "canceled"})

# HTTP error codes/types that say more than the status and message words do.
HTTP_ERRORS = {
    "insufficient_quota": ErrorKind.OUT_OF_FUNDS,
    "insufficient_quota_error": ErrorKind.OUT_OF_FUNDS,
    "content_policy_violation": ErrorKind.CONTENT_POLICY,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "rate_limited": ErrorKind.RATE_LIMITED,
}

_RETRY_AFTER_WORDS = re.compile(
    r"retry\s+after\s+(\d+(?:\.\d+)?)\s*(?:s\b|sec|second)", re.IGNORECASE
)


def build_body(request: VideoRequest, *, resolution: str, max_prompt_chars: int) -> dict[str, Any]:
    """The create body, in AIHubMax's field names and types."""
    data: dict[str, Any] = {
        "model": MODEL,
        "resolution": resolution,
        "duration": request.duration_s,
        "aspect_ratio": request.aspect_ratio,
        "generate_audio": bool(request.audio),
    }
    if request.shots:
        data["prompt"] = "\n".join(shot.prompt for shot in request.shots)[:max_prompt_chars]
        data["multi_prompt"] = [
            {"prompt": shot.prompt, "duration": shot.duration_s} for shot in request.shots
        ]
    else:
        data["prompt"] = request.prompt
    if request.negative_prompt:
        data["negative_prompt"] = request.negative_prompt
    if request.voice_ids:
        data["voice_ids"] = list(request.voice_ids)
    return data


class AIHubMaxProvider(VideoProvider):
    name = "aihubmax"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}

    async def submit(
        self,
        request: VideoRequest,
        *,
        webhook_url: str | None,
        images: ImageInputs | None = None,
        client_ref: str | None = None,
    ) -> Submission:
        """Text-to-video only: an image request is refused here (no documented v3 I2V)."""
        problems = self.capabilities.problems(request)
        if problems:
            raise ProviderError(ErrorKind.INVALID_INPUT, " ".join(problems), provider=self.name)
        body = build_body(
            request,
            resolution=request.resolution or self.capabilities.resolutions[0],
            max_prompt_chars=self.capabilities.prompt_max_chars,
        )
        url = f"{self.settings.base_url}/v1/videos/generations"
        if webhook_url:
            reply = await self._create(url, {**body, "callback_url": webhook_url})
            if reply.status in (400, 422) and _names_callback(reply):
                # Refused, so nothing was created: follow the job by polling instead.
                log.warning(
                    "aihubmax refused callback_url (HTTP %s: %s); creating without it",
                    reply.status,
                    reply.text[:200],
                )
                reply = await self._create(url, body)
        else:
            reply = await self._create(url, body)
        if reply.status >= 300:
            raise self._error(reply)
        data = _json.loads_object(reply.body) or {}
        job_id = _json.text(data.get("id")) or _json.text(data.get("task_id"))
        if not job_id:
            # The vendor accepted the request (2xx), so a billable task may exist without its id.
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"create reply has no task id: {reply.text[:200]!r}",
                provider=self.name,
                status_code=reply.status,
                outcome_unknown=True,
            )
        job_data: dict[str, str] = {}
        reserved = _json.number(_json.dig(data, "usage", "credits_reserved"))
        if reserved is not None and math.isfinite(reserved):
            job_data["credits_reserved"] = _amount(reserved)
        try:
            status = self.parse_status(data)
        except ProviderError:
            status = ProviderStatus(ProviderState.QUEUED, "pending")
        return Submission(ProviderJob(job_id, job_data), status)

    async def _create(self, url: str, body: dict[str, Any]) -> HttpReply:
        return await self.http.create(
            url, provider=self.name, headers=self._headers(), json_body=body
        )

    async def poll(self, job: ProviderJob) -> ProviderStatus:
        reply = await self.http.call(
            "GET",
            f"{self.settings.base_url}/v1/tasks/{quote(job.id, safe='')}",
            provider=self.name,
            headers=self._headers(),
        )
        if reply.status >= 300:
            raise self._error(reply)
        return self.parse_status(reply.json_object())

    def parse_status(self, data: dict[str, Any]) -> ProviderStatus:
        """Read a task object (create reply, poll reply or callback body)."""
        word = (_json.text(data.get("status")) or "").lower()
        state = STATES.get(word)
        if state is None:
            raise ProviderError(
                ErrorKind.UNKNOWN, f"unknown task status {word!r}", provider=self.name
            )
        progress = _progress(data.get("progress"))
        eta = _seconds(_json.dig(data, "task_info", "estimated_time"))
        if state is ProviderState.SUCCEEDED:
            url = _json.find_url(data.get("results")) or _json.find_url(data.get("result_data"))
            if not url:
                # documented race: "completed" before the result is attached; keep polling
                return ProviderStatus(ProviderState.RUNNING, word, progress_pct=progress, eta_s=eta)
            return ProviderStatus(state, word, progress_pct=100, video_url=url)
        if state is ProviderState.FAILED:
            error = self._failure(data)
            if error.vendor_code in CANCELLED_CODES:
                return ProviderStatus(ProviderState.CANCELLED, word, error=error)
            return ProviderStatus(state, word, error=error)
        if state is ProviderState.CANCELLED:
            return ProviderStatus(state, word)
        return ProviderStatus(state, word, progress_pct=progress, eta_s=eta)

    def _failure(self, data: dict[str, Any]) -> ProviderError:
        error = data.get("error")
        code = _json.text(_json.dig(error, "code")) or _json.text(_json.dig(error, "type"))
        message = (
            _json.text(_json.dig(error, "message"))
            or _json.text(error)
            or _json.text(data.get("message"))
            or "the task failed"
        )
        lowered = (code or "").lower()
        kind = TASK_ERRORS.get(lowered)
        if kind is None and lowered.startswith("channel_"):
            kind = ErrorKind.TRANSIENT  # EvoLink's own upstream accounts: service unavailable
        if kind is None:
            kind = failure_kind(message, code)
        return ProviderError(kind, message, provider=self.name, vendor_code=lowered or None)

    def parse_webhook(self, headers: Headers, body: bytes) -> WebhookEvent:
        # Unsigned: the per-job token in the callback URL is what authenticates the delivery.
        data = _json.loads_object(body)
        if data is None:
            raise WebhookParseError("callback body is not a JSON object", provider=self.name)
        if "status" not in data:
            inner = data.get("data")
            if isinstance(inner, dict) and "status" in inner:
                data = inner
        job_id = _json.text(data.get("id")) or _json.text(data.get("task_id"))
        if not job_id:
            raise WebhookParseError("callback body has no task id", provider=self.name)
        try:
            status = self.parse_status(data)
        except ProviderError as error:
            raise WebhookParseError(error.detail, provider=self.name) from None
        return WebhookEvent(job_id, None, status)

    def _error(self, reply: HttpReply) -> ProviderError:
        error = classify(reply.status, reply.text, reply.headers, provider=self.name)
        data = _json.loads_object(reply.body)
        codes = [
            (_json.text(_json.dig(data, "error", key)) or "").lower() for key in ("code", "type")
        ]
        known = next((code for code in codes if code in HTTP_ERRORS), None)
        kind = HTTP_ERRORS[known] if known else error.kind
        retry = error.retry_after_s
        if kind is ErrorKind.RATE_LIMITED and retry is None:
            match = _RETRY_AFTER_WORDS.search(reply.text)
            retry = float(match.group(1)) if match else None
        return ProviderError(
            kind,
            error.detail,
            provider=self.name,
            status_code=reply.status,
            retry_after_s=retry,
            vendor_code=next((c for c in codes if c and not c.isdigit()), error.vendor_code),
        )


def _names_callback(reply: HttpReply) -> bool:
    """Whether a refused create blames the callback URL (then it is resent without it)."""
    data = _json.loads_object(reply.body)
    param = (_json.text(_json.dig(data, "error", "param")) or "").lower()
    return "callback" in param or "callback" in reply.text.lower()


def _amount(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def _progress(value: Any) -> int | None:
    found = _json.number(value)
    if found is None or not math.isfinite(found):
        return None
    return _json.percent(found)


def _seconds(value: Any) -> float | None:
    found = _json.number(value)
    if found is None or not math.isfinite(found) or found < 0:
        return None
    return found
