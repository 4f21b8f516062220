"""EachLabs: `kling-v3-pro-text-to-video` (and `kling-v3-pro-image-to-video`) through the
prediction API.

Create `POST {base}/prediction/` with `X-API-Key`, body `{"model", "input": {...}, "webhook_url",
"webhook_secret"}`; the reply carries `predictionID`. Poll `GET {base}/prediction/{id}`: status
created|starting|processing|success|error|cancelled, `output` is the video URL on success and
`{error_code, error_message}` on error. Durations are strings. Webhooks are HMAC-SHA256 over
"{timestamp}.{body}" with the secret sent along with each create (three documented payload shapes
are accepted); every webhook is verified. The secret is `KLINGBOT_EACHLABS_WEBHOOK_SECRET`, else
derived from the API key (HMAC-SHA256 of a fixed label): the same after a restart and in every
process sharing the key, without being stored anywhere. See shared/reference/providers.md
section 3.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
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
from bot.providers.capabilities import CAPABILITIES
from bot.providers.errors import ErrorKind, ProviderError, WebhookParseError
from bot.providers.http import HttpReply, classify, failure_kind
from bot.providers.images import ImageInput, ImageInputs, pick_image
from bot.providers.signing import verify_timestamped_hmac
from bot.request import VideoRequest

MODEL = "kling-v3-pro-text-to-video"
IMAGE_MODEL = "kling-v3-pro-image-to-video"  # [?] a garbled copy of its page; fal's schema
DERIVED_SECRET_LABEL = b"klingbot/eachlabs/webhook-secret/v1"

STATES = {
    "created": ProviderState.QUEUED,
    "queued": ProviderState.QUEUED,
    "starting": ProviderState.QUEUED,
    "processing": ProviderState.RUNNING,
    "running": ProviderState.RUNNING,
    "success": ProviderState.SUCCEEDED,
    "succeeded": ProviderState.SUCCEEDED,
    "completed": ProviderState.SUCCEEDED,
    "error": ProviderState.FAILED,
    "failed": ProviderState.FAILED,
    "cancelled": ProviderState.CANCELLED,
    "canceled": ProviderState.CANCELLED,
}

ERROR_CODES = {
    "INPUT_VALIDATION_ERROR": ErrorKind.INVALID_INPUT,
    "PROVIDER_RATE_LIMIT": ErrorKind.RATE_LIMITED,
    "PROVIDER_SERVER_ERROR": ErrorKind.TRANSIENT,
    "NETWORK_ERROR": ErrorKind.TRANSIENT,
    "EXECUTION_TIMEOUT": ErrorKind.TRANSIENT,
    "WORKER_LOST": ErrorKind.TRANSIENT,
    "PUBLISH_FAILED": ErrorKind.TRANSIENT,
    "PROVIDER_FAILED": ErrorKind.UNKNOWN,
}


def build_input(
    request: VideoRequest, *, start: ImageInput | None = None, end: ImageInput | None = None
) -> dict[str, Any]:
    """The `input` object, in EachLabs' (fal-compatible) field names and types.

    Image-to-video [?]: `start_image_url`/`end_image_url` (the bot's public URL, else a data URI)
    and no `aspect_ratio`, as in fal's schema the model copies.
    """
    audio = request.audio if request.audio is not None else CAPABILITIES["eachlabs"].audio_default
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


class EachLabsProvider(VideoProvider):
    name = "eachlabs"

    def _headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key, "Content-Type": "application/json"}

    @property
    def webhook_secret(self) -> str:
        """The webhook secret: the configured one, else the one derived from the API key."""
        secret = self.settings.webhook_secret
        configured = secret.get_secret_value() if secret is not None else ""
        return configured or self._derived_secret

    @functools.cached_property
    def _derived_secret(self) -> str:
        if not self.api_key:  # no key, no jobs: any secret will do, just not a guessable one
            return secrets.token_hex(32)
        return hmac.new(self.api_key.encode(), DERIVED_SECRET_LABEL, hashlib.sha256).hexdigest()

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
        start = pick_image(images, request.image, "start", provider=self.name)
        end = pick_image(images, request.end_image, "end", provider=self.name)
        body: dict[str, Any] = {
            "model": MODEL if start is None else IMAGE_MODEL,
            "input": build_input(request, start=start, end=end),
        }
        if webhook_url:
            body["webhook_url"] = webhook_url
            body["webhook_secret"] = self.webhook_secret
        reply = await self.http.create(
            f"{self.settings.base_url}/prediction/",
            provider=self.name,
            headers=self._headers(),
            json_body=body,
        )
        if reply.status >= 300:
            raise self._error(reply)
        data = _json.loads_object(reply.body) or {}
        job_id = _json.text(data.get("predictionID")) or _json.text(data.get("id"))
        if not job_id:
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"create accepted without a readable predictionID: {reply.text[:200]!r}",
                provider=self.name,
                status_code=reply.status,
                outcome_unknown=True,
            )
        return Submission(ProviderJob(job_id), ProviderStatus(ProviderState.QUEUED, "created"))

    async def poll(self, job: ProviderJob) -> ProviderStatus:
        reply = await self.http.call(
            "GET",
            f"{self.settings.base_url}/prediction/{quote(job.id, safe='')}",
            provider=self.name,
            headers=self._headers(),
        )
        if reply.status >= 300:
            raise self._error(reply)
        return self.parse_status(reply.json_object())

    async def cancel(self, job: ProviderJob) -> bool:
        reply = await self.http.call(
            "GET",
            f"{self.settings.base_url}/prediction/{quote(job.id, safe='')}",
            provider=self.name,
            headers=self._headers(),
        )
        data = _json.loads_object(reply.body) if reply.status < 300 else None
        cancel_url = _json.text(_json.dig(data, "urls", "cancel"))
        if not cancel_url or not cancel_url.startswith(("https://", "http://")):
            return False
        answer = await self.http.call(
            "POST", cancel_url, provider=self.name, headers=self._headers()
        )
        return answer.status < 300

    def parse_status(self, data: dict[str, Any]) -> ProviderStatus:
        """Read a prediction object (poll reply or webhook body)."""
        word = (_json.text(data.get("status")) or "").lower()
        state = STATES.get(word)
        if state is None:
            raise ProviderError(
                ErrorKind.UNKNOWN, f"unknown prediction status {word!r}", provider=self.name
            )
        output = data.get("output")
        if state is ProviderState.SUCCEEDED:
            url = _json.find_url(output)
            if not url:
                # documented as the video URL; without one the job is not usable yet
                return ProviderStatus(ProviderState.RUNNING, word)
            return ProviderStatus(state, word, progress_pct=100, video_url=url)
        if state is ProviderState.FAILED:
            return ProviderStatus(state, word, error=self._failure(data))
        return ProviderStatus(state, word)

    def _failure(self, data: dict[str, Any]) -> ProviderError:
        output = data.get("output")
        if isinstance(output, list) and output:
            output = output[0]
        error = _json.dig(output, "error") if isinstance(output, dict) else None
        source = error if isinstance(error, dict) else output if isinstance(output, dict) else {}
        code = _json.text(_json.dig(source, "error_code"))
        message = (
            _json.text(_json.dig(source, "error_message"))
            or _json.text(data.get("error"))
            or _json.text(data.get("message"))
            or _json.text(data.get("details"))
            or "the job failed"
        )
        kind = ERROR_CODES.get(code or "") or failure_kind(message, code)
        if code == "PROVIDER_REJECTED":
            kind = failure_kind(message, code)
            kind = kind if kind is not ErrorKind.UNKNOWN else ErrorKind.CONTENT_POLICY
        return ProviderError(kind, message, provider=self.name, vendor_code=code)

    def parse_webhook(self, headers: Headers, body: bytes) -> WebhookEvent:
        verify_timestamped_hmac(
            headers,
            body,
            self.webhook_secret,
            now_s=self.now_s(),
            tolerance_s=self.webhook_tolerance_s,
            provider=self.name,
        )
        data = _json.loads_object(body)
        if data is None:
            raise WebhookParseError("webhook body is not a JSON object", provider=self.name)
        job_id = (
            _json.text(data.get("exec_id"))
            or _json.text(data.get("predictionID"))
            or _json.text(data.get("id"))
        )
        try:
            status = self.parse_status(data)
        except ProviderError as error:
            raise WebhookParseError(error.detail, provider=self.name) from None
        return WebhookEvent(job_id, None, status)

    def _error(self, reply: HttpReply) -> ProviderError:
        return classify(reply.status, reply.text, reply.headers, provider=self.name)
