"""Replicate: `kwaivgi/kling-v3-video` through the predictions API.

Create `POST {base}/models/kwaivgi/kling-v3-video/predictions` with `Authorization: Bearer <token>`
and `{"input": {...}, "webhook": url, "webhook_events_filter": ["completed"]}`. The input differs
from fal's: `duration` is an integer, the resolution is `mode` (standard = 720p, pro = 1080p),
`multi_prompt` is a JSON *string* of `[{"prompt", "duration": N}]`, and there is no cfg_scale,
shot_type or voice_ids (the capability table refuses those before anything is sent; `submit`
checks again and refuses without a create). The reply is the prediction object `{id, status,
output, error, logs, metrics, urls, data_removed}`; poll `GET {base}/predictions/{id}`, cancel
`POST {base}/predictions/{id}/cancel` (both built from the base URL, so the token only ever goes
there). Image-to-video uses the same model with `start_image`/`end_image` and no `aspect_ratio`
(ignored when a start image is given): the bot's public URL of the image, else a data URI when it
is under 1 MB, else the `urls.get` of an upload to `POST {base}/files` (multipart `content`). Status starting|processing|succeeded|failed|canceled (and `aborted`: terminated before it
started); `output` is the video URI (a string, or a list). Predictions made through the API lose
their inputs and outputs after an hour (`data_removed`): a success read after that is
RESULT_EXPIRED.

Webhooks are Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<b64>`)
over the prediction object; `WebhookEvent.delivery_id` is the webhook-id. The secret is
`settings.webhook_secret` ("whsec_…") or, when that is not set, the account's default secret from
`GET {base}/webhooks/default/secret` (`{"key": "whsec_…"}`), fetched by `prepare_webhooks()`.
`parse_webhook` is synchronous: without a secret in memory it refuses the delivery (401) and starts
a background fetch (at most one per `secret_refresh_interval_s`); Replicate retries, and the poller
covers the gap.

Uncertain points [?] of shared/reference/providers.md section 7, and what this adapter does:
- Insufficient credit is sent as 402 (→ out_of_funds); a 429 is rate limiting even when credit is
  low (Replicate throttles harder then), with the wait read from Retry-After or from "resets in
  ~30s" in the message.
- Moderation failures are read from the prediction's `error`: code E005 (sensitive content), and
  the words "sensitive"/"flagged"/"content policy", are content policy. Codes are looked for as
  `E####` or `E###` anywhere in the message, e.g. "… (E005)".
- `multi_prompt` runs alongside a `prompt`: public code sends the first shot's prompt as `prompt`
  too, which works whether `prompt` is required or ignored in multi-shot mode; so does this.
- A `4k` mode was reported later; the capability table does not offer 4k, so it is never sent.
- `aborted` (seen in Replicate's client, not in the model docs) is a transient failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
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
from bot.providers.errors import ErrorKind, ProviderError, WebhookAuthError, WebhookParseError
from bot.providers.http import HttpReply, ProviderHttp, classify, error_message, failure_kind
from bot.providers.images import ImageInput, ImageInputs, pick_image
from bot.providers.signing import verify_standard_webhook
from bot.request import VideoRequest
from bot.settings import ProviderSettings

log = logging.getLogger(__name__)

MODEL = "kwaivgi/kling-v3-video"
MODES: dict[str, str] = {"720p": "standard", "1080p": "pro", "4k": "4k"}
DATA_URI_MAX_BYTES = 1024 * 1024  # Replicate: data URIs only for files under 1 MB

STATES = {
    "starting": ProviderState.QUEUED,
    "processing": ProviderState.RUNNING,
    "succeeded": ProviderState.SUCCEEDED,
    "failed": ProviderState.FAILED,
    "aborted": ProviderState.FAILED,
    "canceled": ProviderState.CANCELLED,
    "cancelled": ProviderState.CANCELLED,
}

ERROR_CODES = {
    "E005": ErrorKind.CONTENT_POLICY,  # sensitive content [?]
    "E1001": ErrorKind.TRANSIENT,  # model out of memory
    "E6716": ErrorKind.TRANSIENT,  # timeout starting the prediction
}
_CODE = re.compile(r"\b(E\d{3,4})\b")
_TQDM = re.compile(r"(\d{1,3})%\|")


def build_input(
    request: VideoRequest,
    *,
    audio_default: bool = False,
    start_image: str | None = None,
    end_image: str | None = None,
) -> dict[str, Any]:
    """The `input` object in Replicate's field names and types.

    With `start_image` (a URL or data URI) `aspect_ratio` is left out: Replicate ignores it then.
    """
    audio = audio_default if request.audio is None else request.audio
    data: dict[str, Any] = {
        "mode": MODES[request.resolution or "1080p"],
        "duration": request.duration_s,
        "generate_audio": audio,
    }
    if start_image is None:
        data["aspect_ratio"] = request.aspect_ratio
    else:
        data["start_image"] = start_image
        if end_image is not None:
            data["end_image"] = end_image
    if request.shots:
        shots = [{"prompt": shot.prompt, "duration": shot.duration_s} for shot in request.shots]
        data["prompt"] = request.shots[0].prompt
        data["multi_prompt"] = json.dumps(shots, ensure_ascii=False)
    else:
        data["prompt"] = request.prompt
    if request.negative_prompt:
        data["negative_prompt"] = request.negative_prompt
    return data


class ReplicateProvider(VideoProvider):
    name = "replicate"

    def __init__(
        self,
        settings: ProviderSettings,
        http: ProviderHttp,
        *,
        webhook_tolerance_s: float = 300.0,
        now_s: Callable[[], float] = time.time,
        secret_refresh_interval_s: float = 60.0,
    ) -> None:
        super().__init__(settings, http, webhook_tolerance_s=webhook_tolerance_s, now_s=now_s)
        self.secret_refresh_interval_s = secret_refresh_interval_s
        # the background fetch of the default secret started by a webhook that came too early
        self.secret_fetch: asyncio.Task[None] | None = None
        self._fetched_secret = ""
        self._last_secret_fetch = float("-inf")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}

    @property
    def webhook_secret(self) -> str:
        """The configured secret, else the one fetched from Replicate ('' when neither)."""
        secret = self.settings.webhook_secret
        return secret.get_secret_value() if secret is not None else self._fetched_secret

    def _prediction_url(self, job_id: str, suffix: str = "") -> str:
        return f"{self.settings.base_url}/predictions/{quote(job_id, safe='')}{suffix}"

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
        body: dict[str, Any] = {
            "input": build_input(
                request,
                audio_default=self.capabilities.audio_default,
                start_image=await self._image_value(start) if start else None,
                end_image=await self._image_value(end) if end else None,
            )
        }
        if webhook_url:
            body["webhook"] = webhook_url
            body["webhook_events_filter"] = ["completed"]
        reply = await self.http.create(
            f"{self.settings.base_url}/models/{MODEL}/predictions",
            provider=self.name,
            headers=self._headers(),
            json_body=body,
        )
        if reply.status >= 300:
            raise self._error(reply)
        data = _json.loads_object(reply.body)
        job_id = _json.text(data.get("id")) if data is not None else None
        if data is None or not job_id:
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"create reply has no prediction id: {reply.text[:200]!r}",
                provider=self.name,
                status_code=reply.status,
                outcome_unknown=True,
            )
        try:
            status = self.parse_status(data)
        except ProviderError:
            status = ProviderStatus(ProviderState.QUEUED, "starting")
        return Submission(ProviderJob(job_id), status)

    async def _image_value(self, image: ImageInput) -> str:
        """The bot's public URL; else a data URI (under 1 MB); else an upload to the files API."""
        if image.url:
            return image.url
        if image.size_bytes <= DATA_URI_MAX_BYTES:
            return image.data_uri()
        extension = "png" if image.mime == "image/png" else "jpg"
        reply = await self.http.upload(
            f"{self.settings.base_url}/files",
            provider=self.name,
            headers={"Authorization": f"Bearer {self.api_key}"},
            field="content",
            filename=f"start.{extension}",
            data=image.data,
            content_type=image.mime,
        )
        if reply.status >= 300:
            raise self._error(reply)
        data = _json.loads_object(reply.body)
        url = _json.text(_json.dig(data, "urls", "get"))
        if not url or not url.startswith(("https://", "http://")):
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"the file upload reply has no urls.get: {reply.text[:200]!r}",
                provider=self.name,
                status_code=reply.status,
            )
        return url

    async def poll(self, job: ProviderJob) -> ProviderStatus:
        reply = await self.http.call(
            "GET", self._prediction_url(job.id), provider=self.name, headers=self._headers()
        )
        if reply.status >= 300:
            raise self._error(reply)
        return self.parse_status(reply.json_object())

    async def cancel(self, job: ProviderJob) -> bool:
        """True when the prediction is (being) cancelled; False when it had already finished."""
        reply = await self.http.call(
            "POST",
            self._prediction_url(job.id, "/cancel"),
            provider=self.name,
            headers=self._headers(),
        )
        if reply.status in (404, 409, 410):
            return False
        if reply.status >= 300:
            raise self._error(reply)
        data = _json.loads_object(reply.body)
        word = (_json.text(data.get("status")) if data is not None else None) or ""
        return STATES.get(word.lower()) not in (ProviderState.SUCCEEDED, ProviderState.FAILED)

    def parse_status(self, data: dict[str, Any]) -> ProviderStatus:
        """Read a prediction object (create reply, poll reply or webhook body)."""
        word = (_json.text(data.get("status")) or "").lower()
        state = STATES.get(word)
        if state is None:
            raise ProviderError(
                ErrorKind.UNKNOWN, f"unknown prediction status {word!r}", provider=self.name
            )
        if state is ProviderState.SUCCEEDED:
            url = _json.find_url(data.get("output"))
            if url:
                return ProviderStatus(state, word, progress_pct=100, video_url=url)
            if data.get("data_removed") is True:
                error = ProviderError(
                    ErrorKind.RESULT_EXPIRED,
                    "the prediction's output was deleted (API predictions keep it for an hour)",
                    provider=self.name,
                )
            else:
                error = ProviderError(
                    ErrorKind.UNKNOWN,
                    f"succeeded without an output URL: {json.dumps(data.get('output'))[:200]}",
                    provider=self.name,
                )
            return ProviderStatus(ProviderState.FAILED, word, error=error)
        if state is ProviderState.FAILED:
            return ProviderStatus(state, word, error=self._failure(data, word))
        if state is ProviderState.RUNNING:
            return ProviderStatus(state, word, progress_pct=_progress(data.get("logs")))
        return ProviderStatus(state, word)

    def _failure(self, data: dict[str, Any], word: str) -> ProviderError:
        raw = data.get("error")
        message, code = error_message(raw) if raw else ("", None)
        if word == "aborted":
            message = message or "the prediction was aborted before it started"
        message = message or "the prediction failed"
        match = _CODE.search(f"{message} {code or ''}")
        code = match.group(1) if match else code
        kind = ERROR_CODES.get(code or "") or failure_kind(message, code)
        if word == "aborted" and kind is ErrorKind.UNKNOWN:
            kind = ErrorKind.TRANSIENT
        return ProviderError(kind, message, provider=self.name, vendor_code=code)

    # -- webhooks ---------------------------------------------------------------------------

    async def prepare_webhooks(self) -> None:
        """Fetch the account's default webhook secret unless one is configured.

        Raises ProviderError when it cannot be fetched.
        """
        if self.settings.webhook_secret is not None:
            return
        await self._fetch_secret()

    async def _fetch_secret(self) -> None:
        reply = await self.http.call(
            "GET",
            f"{self.settings.base_url}/webhooks/default/secret",
            provider=self.name,
            headers=self._headers(),
        )
        if reply.status >= 300:
            raise self._error(reply)
        key = _json.text(reply.json_object().get("key"))
        if not key:
            raise ProviderError(
                ErrorKind.UNKNOWN, "the webhook secret reply has no key", provider=self.name
            )
        self._fetched_secret = key

    def parse_webhook(self, headers: Headers, body: bytes) -> WebhookEvent:
        secret = self.webhook_secret
        if not secret:
            self._fetch_secret_soon()
            raise WebhookAuthError(
                "no webhook secret yet (prepare_webhooks() fetches it)", provider=self.name
            )
        delivery_id = verify_standard_webhook(
            headers,
            body,
            secret,
            now_s=self.now_s(),
            tolerance_s=self.webhook_tolerance_s,
            provider=self.name,
        )
        data = _json.loads_object(body)
        if data is None:
            raise WebhookParseError("webhook body is not a JSON object", provider=self.name)
        try:
            status = self.parse_status(data)
        except ProviderError as error:
            raise WebhookParseError(error.detail, provider=self.name) from None
        return WebhookEvent(_json.text(data.get("id")), delivery_id, status)

    def _fetch_secret_soon(self) -> None:
        if self.secret_fetch is not None and not self.secret_fetch.done():
            return
        now = time.monotonic()
        if now - self._last_secret_fetch < self.secret_refresh_interval_s:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: nothing can fetch; prepare_webhooks() must
            return
        self._last_secret_fetch = now
        self.secret_fetch = loop.create_task(self._fetch_quietly(), name="replicate-secret")

    async def _fetch_quietly(self) -> None:
        try:
            await self._fetch_secret()
        except ProviderError as error:
            log.warning("replicate: cannot fetch the webhook secret: %r", error)
        except Exception:  # a background task must not die unseen
            log.exception("replicate: webhook secret fetch failed")

    def _error(self, reply: HttpReply) -> ProviderError:
        return classify(reply.status, reply.text, reply.headers, provider=self.name)

    async def close(self) -> None:
        task, self.secret_fetch = self.secret_fetch, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _progress(logs: Any) -> int | None:
    """The last tqdm-style percentage ("42%|████") in the logs, if any."""
    if not isinstance(logs, str):
        return None
    found = _TQDM.findall(logs[-4000:])
    return _json.percent(found[-1]) if found else None
