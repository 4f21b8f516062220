"""PixelDojo: `kling-video-v3-pro-text` through the model-run API.

Create `POST {base}/models/kling-video-v3-pro-text/run` with `Authorization: Bearer`, body = the
model's fields at the top level; the reply (202) is `{jobId, status: "pending", statusUrl,
creditCost, creditsRemaining, expiresAt}`. Poll `GET {base}/jobs/{jobId}` (the `statusUrl` of the
create reply is kept in `ProviderJob.data["status_url"]` and used when it points at the configured
API host). The finished job carries the video at `output.video` on a temporary host. Durations are
integers. HTTP errors: 401 key, 402 credits, 422 validation, 429 with Retry-After.
See shared/reference/providers.md section 1.

Choices where the documentation is silent ([?] in the reference):
- Status words: only `pending` and `completed` are documented. `processing` and `failed` are assumed;
  `queued`, `running`, `succeeded`, `error`, `cancelled` (and a few spellings) are accepted too, and
  `expired` reads as a failed job whose result is gone.
- Failure details: not documented. `error` may be a string or `{code, message}`; `errorMessage`,
  `message`, `reason` and `errorCode`/`code` are read as well, and classified by their words.
- `completed` without a video URL is not terminal: the job stays RUNNING until the URL appears.
- Multi-shot: `multi_prompt` items are sent as `{prompt, duration}` with integer durations, like the
  top-level `duration` (fal's schema, which PixelDojo wraps, uses strings). `prompt` is documented as
  required, so a multi-shot request also sends the shots' prompts joined by newlines as `prompt`.
- Webhooks: `webhook_url` goes in the run input (seen in PixelDojo's SDK). Neither a signature nor the
  payload is documented; deliveries are authenticated by the per-job token in the URL, and the body
  is read as the job object (the poll reply shape, id in `jobId` or `id`), also when wrapped in
  `data` or `job`.
- No cancel endpoint is documented: `cancel` returns False.
- `statusUrl` is only followed when its scheme, host and port match `base_url`, so the API key is
  never sent to another host.
"""

from __future__ import annotations

import math
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
from bot.providers.errors import ErrorKind, ProviderError, WebhookParseError
from bot.providers.http import HttpReply, classify, failure_kind
from bot.providers.images import ImageInputs
from bot.request import VideoRequest

MODEL = "kling-video-v3-pro-text"

STATES = {
    "pending": ProviderState.QUEUED,
    "queued": ProviderState.QUEUED,
    "created": ProviderState.QUEUED,
    "starting": ProviderState.QUEUED,
    "processing": ProviderState.RUNNING,
    "running": ProviderState.RUNNING,
    "in_progress": ProviderState.RUNNING,
    "completed": ProviderState.SUCCEEDED,
    "succeeded": ProviderState.SUCCEEDED,
    "success": ProviderState.SUCCEEDED,
    "failed": ProviderState.FAILED,
    "error": ProviderState.FAILED,
    "expired": ProviderState.FAILED,
    "cancelled": ProviderState.CANCELLED,
    "canceled": ProviderState.CANCELLED,
}


def build_body(request: VideoRequest, max_prompt_chars: int) -> dict[str, Any]:
    """The run input, in PixelDojo's field names and types."""
    data: dict[str, Any] = {
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
    if request.cfg_scale is not None:
        data["cfg_scale"] = request.cfg_scale
    if request.shot_type is not None:
        data["shot_type"] = request.shot_type
    if request.voice_ids:
        data["voice_ids"] = list(request.voice_ids)
    return data


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port


class PixelDojoProvider(VideoProvider):
    name = "pixeldojo"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}

    def _same_host(self, url: str) -> bool:
        origin = _origin(url)
        return origin is not None and origin == _origin(self.settings.base_url)

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
        body = build_body(request, self.capabilities.prompt_max_chars)
        if webhook_url:
            body["webhook_url"] = webhook_url
        reply = await self.http.create(
            f"{self.settings.base_url}/models/{MODEL}/run",
            provider=self.name,
            headers=self._headers(),
            json_body=body,
        )
        if reply.status >= 300:
            raise self._error(reply)
        data = _json.loads_object(reply.body) or {}
        job_id = _json.text(data.get("jobId")) or _json.text(data.get("id"))
        if not job_id:
            # The vendor accepted the request (2xx), so a billable job may exist without its id.
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"create reply has no jobId: {reply.text[:200]!r}",
                provider=self.name,
                status_code=reply.status,
                outcome_unknown=True,
            )
        job_data: dict[str, str] = {}
        status_url = _json.text(data.get("statusUrl"))
        if status_url and self._same_host(status_url):
            job_data["status_url"] = status_url
        cost = _json.number(data.get("creditCost"))
        if cost is not None and math.isfinite(cost):
            job_data["credit_cost"] = _amount(cost)
        try:
            status = self.parse_status(data)
        except ProviderError:
            status = ProviderStatus(ProviderState.QUEUED, "pending")
        return Submission(ProviderJob(job_id, job_data), status)

    def status_url(self, job: ProviderJob) -> str:
        """Where to poll `job`: the vendor's statusUrl when it is on the API host."""
        stored = job.data.get("status_url", "")
        if stored and self._same_host(stored):
            return stored
        return f"{self.settings.base_url}/jobs/{quote(job.id, safe='')}"

    async def poll(self, job: ProviderJob) -> ProviderStatus:
        reply = await self.http.call(
            "GET", self.status_url(job), provider=self.name, headers=self._headers()
        )
        if reply.status >= 300:
            raise self._error(reply)
        return self.parse_status(reply.json_object())

    def parse_status(self, data: dict[str, Any]) -> ProviderStatus:
        """Read a job object (poll reply, create reply or webhook body)."""
        word = (_json.text(data.get("status")) or "").lower()
        state = STATES.get(word)
        if state is None:
            raise ProviderError(
                ErrorKind.UNKNOWN, f"unknown job status {word!r}", provider=self.name
            )
        progress = _progress(data.get("progress"))
        if state is ProviderState.SUCCEEDED:
            output = data.get("output")
            url = _json.find_url(_json.dig(output, "video")) or _json.find_url(output)
            if not url:
                # documented as output.video; without it the job is not usable yet
                return ProviderStatus(ProviderState.RUNNING, word, progress_pct=progress)
            return ProviderStatus(state, word, progress_pct=100, video_url=url)
        if state is ProviderState.FAILED:
            return ProviderStatus(state, word, error=self._failure(data, word))
        if state is ProviderState.CANCELLED:
            return ProviderStatus(state, word)
        return ProviderStatus(state, word, progress_pct=progress)

    def _failure(self, data: dict[str, Any], word: str) -> ProviderError:
        error = data.get("error")
        code = (
            _json.text(_json.dig(error, "code"))
            or _json.text(data.get("errorCode"))
            or _json.text(data.get("error_code"))
            or _json.text(data.get("code"))
        )
        message = (
            _json.text(error)
            or _json.text(_json.dig(error, "message"))
            or _json.text(data.get("errorMessage"))
            or _json.text(data.get("message"))
            or _json.text(data.get("reason"))
            or "the job failed"
        )
        kind = ErrorKind.RESULT_EXPIRED if word == "expired" else failure_kind(message, code)
        return ProviderError(kind, message, provider=self.name, vendor_code=code)

    def parse_webhook(self, headers: Headers, body: bytes) -> WebhookEvent:
        # Unsigned: the per-job token in the webhook URL is what authenticates the delivery.
        data = _json.loads_object(body)
        if data is None:
            raise WebhookParseError("webhook body is not a JSON object", provider=self.name)
        if "status" not in data:
            for key in ("data", "job"):
                inner = data.get(key)
                if isinstance(inner, dict) and "status" in inner:
                    data = inner
                    break
        job_id = _json.text(data.get("jobId")) or _json.text(data.get("id"))
        if not job_id:
            raise WebhookParseError("webhook body has no jobId", provider=self.name)
        try:
            status = self.parse_status(data)
        except ProviderError as error:
            raise WebhookParseError(error.detail, provider=self.name) from None
        return WebhookEvent(job_id, None, status)

    def _error(self, reply: HttpReply) -> ProviderError:
        return classify(reply.status, reply.text, reply.headers, provider=self.name)


def _amount(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def _progress(value: Any) -> int | None:
    found = _json.number(value)
    if found is None or not math.isfinite(found):
        return None
    return _json.percent(found)
