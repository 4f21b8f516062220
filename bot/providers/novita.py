"""Novita AI: Kling v3.0 text-to-video through the async task API.

Create `POST {base}/v3/async/{endpoint}` with `Authorization: Bearer`; the resolution picks the
endpoint (720p `kling-v3.0-std-t2v`, 1080p `kling-v3.0-pro-t2v`, 4k `kling-v3.0-4k-t2v`) and the
reply is `{"task_id"}`. Poll `GET {base}/v3/async/task-result?task_id=…`: `task.status` is
TASK_STATUS_QUEUED|PROCESSING|SUCCEED|FAILED with the failure text in `task.reason`, progress in
`task.progress_percent`/`task.eta`, and the video in `videos[].video_url` (a presigned link that
lives `video_url_ttl` seconds). Audio is `sound` (default off), durations are integers, there are
no voice ids or shot types, and no cancel. See shared/reference/providers.md section 4.
Image-to-video: `kling-v3.0-{std,pro,4k}-i2v` with `image`/`end_image` and no `aspect_ratio`; a
prompt is required and shots are refused (pro-i2v's `multi_prompt` is a list of strings, with no
per-shot durations).

Where the docs are uncertain [?]:
- `multi_prompt` items are undocumented: we send `{"prompt", "duration"}` with an integer duration
  (the type of Novita's top-level `duration`; the shape every other Kling v3 API uses).
- Webhooks: `extra.webhook.url` is Novita's generic async-task field; the Kling page does not list
  `extra`. We send it when a webhook URL is given. If Novita refuses the body with HTTP 400 naming
  `extra` or the webhook (a definite "not created"), the create is sent once more without `extra`
  and the job relies on polling. Deliveries are unsigned (the bot's per-job URL token is the only
  check); the body is `{"event_type": "ASYNC_TASK_RESULT", "payload": <task result>}`, and a bare
  task result is accepted too.
- Error bodies are read as Novita's `{"code", "reason", "message", "metadata"}` (any other shape
  through the shared reader). `reason` NOT_ENOUGH_BALANCE (HTTP 403 per the white-label mirror)
  is out of funds; other 403s are auth; RATE_LIMIT_EXCEEDED is rate limited; a reason containing
  NOT_FOUND on a poll is an unknown task.
- Statuses are read with or without the `TASK_STATUS_` prefix; TASK_STATUS_CANCELED (seen in
  third-party schemas) is cancelled; `task.err_detail` is read when `task.reason` is empty.
"""

from __future__ import annotations

import re
from typing import Any

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
from bot.providers.images import ImageInput, ImageInputs, pick_image
from bot.request import VideoRequest

ENDPOINTS = {
    "720p": "kling-v3.0-std-t2v",
    "1080p": "kling-v3.0-pro-t2v",
    "4k": "kling-v3.0-4k-t2v",
}
DEFAULT_ENDPOINT = ENDPOINTS["1080p"]
IMAGE_ENDPOINTS = {
    "720p": "kling-v3.0-std-i2v",
    "1080p": "kling-v3.0-pro-i2v",
    "4k": "kling-v3.0-4k-i2v",
}
WEBHOOK_EVENT = "ASYNC_TASK_RESULT"

STATES = {
    "queued": ProviderState.QUEUED,
    "pending": ProviderState.QUEUED,
    "processing": ProviderState.RUNNING,
    "running": ProviderState.RUNNING,
    "succeed": ProviderState.SUCCEEDED,
    "succeeded": ProviderState.SUCCEEDED,
    "success": ProviderState.SUCCEEDED,
    "failed": ProviderState.FAILED,
    "fail": ProviderState.FAILED,
    "canceled": ProviderState.CANCELLED,
    "cancelled": ProviderState.CANCELLED,
}

REASONS = {
    "NOT_ENOUGH_BALANCE": ErrorKind.OUT_OF_FUNDS,
    "RATE_LIMIT_EXCEEDED": ErrorKind.RATE_LIMITED,
}

_WEBHOOK_REFUSED = re.compile(r"\bextra\b|webhook", re.IGNORECASE)


def endpoint_for(request: VideoRequest) -> str:
    """The model endpoint: Novita sells each resolution (and image-to-video) as its own."""
    table = IMAGE_ENDPOINTS if request.image is not None else ENDPOINTS
    return table.get(request.resolution or "1080p", table["1080p"])


def build_body(
    request: VideoRequest, *, start: ImageInput | None = None, end: ImageInput | None = None
) -> dict[str, Any]:
    """The request body, in Novita's field names and types (without `extra`).

    Image-to-video: `image` (and `end_image`): the bot's public URL, else a data URI [?]; the i2v
    endpoints have no `aspect_ratio`.
    """
    data: dict[str, Any] = {"duration": int(request.duration_s), "sound": bool(request.audio)}
    if start is None:
        data["aspect_ratio"] = request.aspect_ratio
    else:
        data["image"] = start.url or start.data_uri()
        if end is not None:
            data["end_image"] = end.url or end.data_uri()
    if request.shots:
        data["multi_prompt"] = [
            {"prompt": shot.prompt, "duration": int(shot.duration_s)} for shot in request.shots
        ]
    else:
        data["prompt"] = request.prompt
    if request.negative_prompt:
        data["negative_prompt"] = request.negative_prompt
    if request.cfg_scale is not None:
        data["cfg_scale"] = request.cfg_scale
    return data


def status_word(value: Any) -> str:
    """`TASK_STATUS_SUCCEED` → `succeed` (the prefix is optional)."""
    word = (_json.text(value) or "").lower()
    return word.removeprefix("task_status_")


class NovitaProvider(VideoProvider):
    name = "novita"

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
        problems = self.capabilities.problems(request)
        if problems:  # nothing Novita can express: refuse before anything is billed
            raise ProviderError(ErrorKind.INVALID_INPUT, " ".join(problems), provider=self.name)
        start = pick_image(images, request.image, "start", provider=self.name)
        end = pick_image(images, request.end_image, "end", provider=self.name)
        endpoint = endpoint_for(request)
        body = build_body(request, start=start, end=end)
        reply = await self._create(endpoint, body, webhook_url)
        if reply.status >= 300:
            raise self._error(reply)
        data = _json.loads_object(reply.body)
        job_id = _json.text(data.get("task_id")) if data is not None else None
        if not job_id:
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"create reply has no task_id: {reply.text[:200]!r}",
                provider=self.name,
                status_code=reply.status,
                outcome_unknown=True,
            )
        job = ProviderJob(job_id, {"endpoint": endpoint})
        return Submission(job, ProviderStatus(ProviderState.QUEUED, "submitted"))

    async def _create(
        self, endpoint: str, body: dict[str, Any], webhook_url: str | None
    ) -> HttpReply:
        url = f"{self.settings.base_url}/v3/async/{endpoint}"
        if not webhook_url:
            return await self.http.create(
                url, provider=self.name, headers=self._headers(), json_body=body
            )
        with_hook = {**body, "extra": {"webhook": {"url": webhook_url}}}
        reply = await self.http.create(
            url, provider=self.name, headers=self._headers(), json_body=with_hook
        )
        if reply.status == 400 and _WEBHOOK_REFUSED.search(reply.text):
            # refused outright, so nothing was created: send it again without the webhook
            reply = await self.http.create(
                url, provider=self.name, headers=self._headers(), json_body=body
            )
        return reply

    async def poll(self, job: ProviderJob) -> ProviderStatus:
        reply = await self.http.call(
            "GET",
            f"{self.settings.base_url}/v3/async/task-result",
            provider=self.name,
            headers=self._headers(),
            params={"task_id": job.id},
        )
        if reply.status >= 300:
            raise self._error(reply, polling=True)
        return self.parse_status(reply.json_object())

    def parse_status(self, data: dict[str, Any]) -> ProviderStatus:
        """Read a task-result object (poll reply or webhook payload)."""
        task = data.get("task")
        if not isinstance(task, dict):
            raise ProviderError(
                ErrorKind.UNKNOWN, "task result has no task object", provider=self.name
            )
        raw = _json.text(task.get("status")) or ""
        state = STATES.get(status_word(raw))
        if state is None:
            raise ProviderError(
                ErrorKind.UNKNOWN, f"unknown task status {raw!r}", provider=self.name
            )
        progress = _json.percent(task.get("progress_percent"))
        eta = _json.number(task.get("eta"))
        eta_s = eta if eta is not None and 0 <= eta < 10**7 else None
        if state is ProviderState.SUCCEEDED:
            url = _json.find_url(data.get("videos"))
            if not url:
                # a finished task without a video link is not usable yet
                return ProviderStatus(ProviderState.RUNNING, raw, progress_pct=progress)
            return ProviderStatus(state, raw, progress_pct=100, video_url=url)
        if state is ProviderState.FAILED:
            message = (
                _json.text(task.get("reason"))
                or _json.text(task.get("err_detail"))
                or "the task failed"
            )
            error = ProviderError(failure_kind(message), message, provider=self.name)
            return ProviderStatus(state, raw, error=error)
        return ProviderStatus(state, raw, progress_pct=progress, eta_s=eta_s)

    def parse_webhook(self, headers: Headers, body: bytes) -> WebhookEvent:
        data = _json.loads_object(body)
        if data is None:
            raise WebhookParseError("webhook body is not a JSON object", provider=self.name)
        event = _json.text(data.get("event_type"))
        if event is not None and event != WEBHOOK_EVENT:
            raise WebhookParseError(f"unexpected event_type {event!r}", provider=self.name)
        payload = data.get("payload") if "payload" in data else data
        if not isinstance(payload, dict):
            raise WebhookParseError("webhook payload is not an object", provider=self.name)
        job_id = _json.text(_json.dig(payload, "task", "task_id"))
        if not job_id:
            raise WebhookParseError("webhook payload has no task.task_id", provider=self.name)
        try:
            status = self.parse_status(payload)
        except ProviderError as error:
            raise WebhookParseError(error.detail, provider=self.name) from None
        return WebhookEvent(job_id, None, status)

    def _error(self, reply: HttpReply, *, polling: bool = False) -> ProviderError:
        base = classify(reply.status, reply.text, reply.headers, provider=self.name)
        data = _json.loads_object(reply.body)
        reason = _json.text(data.get("reason")) if data is not None else None
        message = _json.text(data.get("message")) if data is not None else None
        if not reason and not message:
            return base
        kind = base.kind
        upper = (reason or "").upper()
        if upper in REASONS:
            kind = REASONS[upper]
        elif polling and "NOT_FOUND" in upper and reply.status in (400, 404):
            kind = ErrorKind.NOT_FOUND
        detail = f"HTTP {reply.status}: {message or reason}"
        return ProviderError(
            kind,
            detail,
            provider=self.name,
            status_code=reply.status,
            retry_after_s=base.retry_after_s,
            vendor_code=reason or base.vendor_code,
        )
