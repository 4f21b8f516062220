"""fal.ai queue double (shared/reference/providers.md section 6).

POST /fal-ai/kling-video/v3/{standard,pro,4k}/{text,image}-to-video[?fal_webhook=url]  body = input
  (image-to-video: start_image_url required, end_image_url; URL or data URI; no aspect_ratio)
  -> {"request_id", "gateway_request_id", "status": "IN_QUEUE", "queue_position",
      "status_url", "response_url", "cancel_url"}          Authorization: Key <key>
GET  /fal-ai/kling-video/requests/{id}/status  -> 202 IN_QUEUE / IN_PROGRESS, 200 COMPLETED
GET  /fal-ai/kling-video/requests/{id}         -> {"video": {...}} or the model's error reply
PUT  /fal-ai/kling-video/requests/{id}/cancel  -> 202 CANCELLATION_REQUESTED / 400 ALREADY_COMPLETED
The same paths under the full model path answer 405 (the documented gotcha).
GET  /.well-known/jwks.json -> the double's Ed25519 public keys. Webhooks are signed with the
double's own private key (its own code, not the project's).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.provider_doubles.base import FakeJob, VendorDouble, image_problem, now_s

API_KEY = "fal-key-id:fal-key-secret"
APP = "fal-ai/kling-video"
TIERS = ("standard", "pro", "4k")
USER_ID = "user-fal-test"
DURATIONS = tuple(str(n) for n in range(3, 16))
INPUT_FIELDS = {
    "prompt",
    "multi_prompt",
    "duration",
    "generate_audio",
    "voice_ids",
    "shot_type",
    "aspect_ratio",
    "negative_prompt",
    "cfg_scale",
}
# image-to-video: "Aspect ratio is determined by the start image" (no aspect_ratio field)
IMAGE_INPUT_FIELDS = (INPUT_FIELDS - {"aspect_ratio"}) | {"start_image_url", "end_image_url"}
CONTENT_CHECKER = "The content could not be processed because it was flagged by a content checker."


@dataclass
class FalJob(FakeJob):
    tier: str = "pro"
    error_status: int = 422  # the HTTP status of the result of a failed request
    error_type: str = "generation_failed"
    retryable: bool | None = None  # X-Fal-Retryable on the failed result, when set


def _problem(field: str | None, msg: str, kind: str) -> dict[str, Any]:
    loc = ["body", field] if field else ["body"]
    return {"loc": loc, "msg": msg, "type": kind}


def input_problems(data: Any, *, image: bool = False) -> list[dict[str, Any]]:
    """What fal's documented input schema refuses, as fal's `detail` entries."""
    if not isinstance(data, dict):
        return [_problem(None, "Input should be a valid dictionary", "dict_type")]
    fields = IMAGE_INPUT_FIELDS if image else INPUT_FIELDS
    found = [
        _problem(k, "Extra inputs are not permitted", "extra_forbidden")
        for k in data
        if k not in fields
    ]
    if image:
        for name in ("start_image_url", "end_image_url"):
            if name == "start_image_url" or name in data:
                problem = image_problem(data.get(name), name)
                if problem:
                    found.append(_problem(name, problem, "value_error"))
        if "end_image_url" in data and "multi_prompt" in data:
            found.append(_problem("end_image_url", "not with multi_prompt", "value_error"))
    has_prompt, has_multi = "prompt" in data, "multi_prompt" in data
    if has_prompt == has_multi:
        found.append(
            _problem(
                None, "Either prompt or multi_prompt must be provided, not both", "value_error"
            )
        )
    if has_prompt and (not isinstance(data["prompt"], str) or not data["prompt"].strip()):
        found.append(_problem("prompt", "Input should be a non-empty string", "string_type"))
    if "duration" in data and data["duration"] not in DURATIONS:
        found.append(_problem("duration", f"Input should be one of {DURATIONS}", "enum"))
    if has_multi:
        shots = data["multi_prompt"]
        if not isinstance(shots, list) or not 1 <= len(shots) <= 6:
            found.append(_problem("multi_prompt", "Input should be a list of shots", "list_type"))
        else:
            for shot in shots:
                if (
                    not isinstance(shot, dict)
                    or not set(shot) <= {"prompt", "duration"}
                    or not isinstance(shot.get("prompt"), str)
                    or shot.get("duration", "5") not in DURATIONS
                ):
                    found.append(_problem("multi_prompt", f"bad shot {shot!r}", "value_error"))
    if "generate_audio" in data and not isinstance(data["generate_audio"], bool):
        found.append(_problem("generate_audio", "Input should be a boolean", "bool_type"))
    if "aspect_ratio" in data and data["aspect_ratio"] not in ("16:9", "9:16", "1:1"):
        found.append(_problem("aspect_ratio", "Input should be 16:9, 9:16 or 1:1", "enum"))
    if "shot_type" in data and data["shot_type"] not in ("customize", "intelligent"):
        found.append(_problem("shot_type", "Input should be customize or intelligent", "enum"))
    if "negative_prompt" in data and not isinstance(data["negative_prompt"], str):
        found.append(_problem("negative_prompt", "Input should be a string", "string_type"))
    cfg = data.get("cfg_scale", 0.5)
    if isinstance(cfg, bool) or not isinstance(cfg, int | float) or not 0 <= cfg <= 1:
        found.append(_problem("cfg_scale", "Input should be between 0 and 1", "value_error"))
    if "voice_ids" in data:
        voices = data["voice_ids"]
        if (
            not isinstance(voices, list)
            or len(voices) > 2
            or not all(isinstance(v, str) for v in voices)
        ):
            found.append(_problem("voice_ids", "At most 2 voice ids (strings)", "list_type"))
    return found


def public_jwk(key: Ed25519PrivateKey, kid: str) -> dict[str, str]:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"}


class FalDouble(VendorDouble):
    name = "fal"

    def __init__(self) -> None:
        super().__init__(default_script=["queued", "queued", "running", "succeeded"])
        self.api_key = API_KEY
        self.signing_key = Ed25519PrivateKey.generate()
        self.published_keys: list[Ed25519PrivateKey] = [self.signing_key]
        self.jwks_fetches = 0
        self.jwks_reply: tuple[int, Any] | None = None  # (status, body) instead of the keys
        self._uuids = itertools.count(1)

    def new_id(self) -> str:
        return f"00000000-0000-4000-8000-{next(self._uuids):012d}"

    def rotate_key(self, *, keep_old: bool = False) -> None:
        """Sign with a new key; publish it (and the old one too with keep_old)."""
        self.signing_key = Ed25519PrivateKey.generate()
        self.published_keys = (
            [*self.published_keys, self.signing_key] if keep_old else [self.signing_key]
        )

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/.well-known/jwks.json"

    def routes(self) -> list[tuple[str, str, Any]]:
        model = "/fal-ai/kling-video/v3/{tier}/text-to-video"
        return [
            ("POST", model, self.create),
            ("POST", "/fal-ai/kling-video/v3/{tier}/image-to-video", self.create),
            ("GET", f"/{APP}/requests/{{id}}/status", self.status),
            ("GET", f"/{APP}/requests/{{id}}", self.result),
            ("PUT", f"/{APP}/requests/{{id}}/cancel", self.cancel),
            ("*", model + "/requests/{rest:.*}", self.wrong_path),
            ("GET", "/.well-known/jwks.json", self.jwks),
        ]

    def urls(self, job_id: str) -> dict[str, str]:
        base = f"{self.base_url}/{APP}/requests/{job_id}"
        return {
            "status_url": f"{base}/status",
            "response_url": base,
            "cancel_url": f"{base}/cancel",
        }

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Key {self.api_key}"

    def _unauthorized(self) -> web.Response:
        return self.json({"detail": "No user found for Key ID and Secret"}, 401)

    async def create(self, request: web.Request) -> web.StreamResponse:
        scripted = await self.create_behaviour(request)
        if scripted is not None:
            return scripted
        if request.match_info["tier"] not in TIERS:
            return self.json({"detail": "Application not found"}, 404)
        if not self._authorized(request):
            return self._unauthorized()
        if request.content_type != "application/json":
            return self.json({"detail": "Content-Type must be application/json"}, 400)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self.json({"detail": "Request body is not valid JSON"}, 400)
        problems = input_problems(body, image=request.path.endswith("/image-to-video"))
        if problems:
            return self.json({"detail": problems}, 422)
        job = FalJob(
            self.new_id(),
            body,
            list(self.default_script),
            webhook_url=request.query.get("fal_webhook"),
            tier=request.match_info["tier"],
        )
        self.jobs[job.id] = job
        return self.json(
            {
                "request_id": job.id,
                "gateway_request_id": job.id,
                "status": "IN_QUEUE",
                "queue_position": self._queue_position(job),
                **self.urls(job.id),
            }
        )

    def _job(self, request: web.Request) -> FalJob | None:
        job = self.jobs.get(request.match_info["id"])
        return job if isinstance(job, FalJob) else None

    @staticmethod
    def _queue_position(job: FakeJob) -> int:
        return job.script[job.step + 1 :].count("queued") if not job.cancelled else 0

    async def status(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        job = self._job(request)
        if job is None:
            return self.json({"detail": "Request not found"}, 404)
        position = self._queue_position(job)
        state = job.advance()
        urls = self.urls(job.id)
        logs: list[dict[str, str]] | None = [] if request.query.get("logs") == "1" else None
        if state == "queued":
            data: dict[str, Any] = {
                "status": "IN_QUEUE",
                "queue_position": position,
                "response_url": urls["response_url"],
            }
            return self.json(data, 202)
        if state == "running":
            return self.json(
                {"status": "IN_PROGRESS", "logs": logs, "response_url": urls["response_url"]}, 202
            )
        return self.json(
            {
                "status": "COMPLETED",
                "logs": logs,
                "metrics": {"inference_time": 96.4},
                "response_url": urls["response_url"],
            }
        )

    def error_body(self, job: FalJob) -> dict[str, Any]:
        if job.error_status >= 500:
            return {"detail": job.error, "error_type": job.error_type}
        return {
            "detail": [
                {
                    "loc": ["body", "prompt"],
                    "msg": job.error,
                    "type": job.error_type,
                    "url": f"https://docs.fal.ai/errors#{job.error_type}",
                }
            ]
        }

    def video(self, job: FakeJob) -> dict[str, Any]:
        return {
            "video": {
                "url": self.file_url(job.id),
                "content_type": "video/mp4",
                "file_name": "output.mp4",
                "file_size": len(self.video_bytes),
            }
        }

    async def result(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        job = self._job(request)
        if job is None:
            return self.json({"detail": "Request not found"}, 404)
        state = job.state
        if state == "succeeded":
            return self.json(self.video(job))
        if state == "failed":
            response = self.json(self.error_body(job), job.error_status)
            if job.retryable is not None:
                response.headers["X-Fal-Retryable"] = "true" if job.retryable else "false"
            if job.error_status >= 500:
                response.headers["X-Fal-Error-Type"] = job.error_type
            return response
        if state == "cancelled":
            return self.json({"detail": "Request was cancelled by the user"}, 400)
        return self.json({"detail": "Request is still in progress"}, 400)

    async def cancel(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        job = self._job(request)
        if job is None:
            return self.json({"status": "NOT_FOUND"}, 404)
        if job.state in ("succeeded", "failed", "cancelled"):
            return self.json({"status": "ALREADY_COMPLETED"}, 400)
        job.cancelled = True
        return self.json({"status": "CANCELLATION_REQUESTED"}, 202)

    async def wrong_path(self, request: web.Request) -> web.Response:
        return self.json({"detail": "Method Not Allowed"}, 405)

    async def jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        if self.jwks_reply is not None:
            return self.json(self.jwks_reply[1], self.jwks_reply[0])
        keys = [public_jwk(k, f"key-{i}") for i, k in enumerate(self.published_keys)]
        return self.json({"keys": keys})

    # -- webhooks ---------------------------------------------------------------------------

    def webhook_body(self, job: FalJob, *, success: bool = True, payload: bool = True) -> bytes:
        if success:
            data: dict[str, Any] = {
                "request_id": job.id,
                "gateway_request_id": job.id,
                "status": "OK",
                "payload": self.video(job) if payload else None,
            }
            if not payload:
                data["payload_error"] = "Response payload is too large to send"
        else:
            data = {
                "request_id": job.id,
                "gateway_request_id": job.id,
                "status": "ERROR",
                "error": f"Invalid status code: {job.error_status}",
                "payload": self.error_body(job),
            }
        return json.dumps(data).encode()

    def sign(
        self,
        body: bytes,
        request_id: str,
        timestamp: int,
        *,
        key: Ed25519PrivateKey | None = None,
        user_id: str = USER_ID,
    ) -> dict[str, str]:
        message = "\n".join(
            [request_id, user_id, str(timestamp), hashlib.sha256(body).hexdigest()]
        ).encode()
        signature = (key or self.signing_key).sign(message).hex()
        return {
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": user_id,
            "X-Fal-Webhook-Timestamp": str(timestamp),
            "X-Fal-Webhook-Signature": signature,
            "Content-Type": "application/json",
        }

    async def send_webhook(
        self,
        job: FalJob,
        url: str | None = None,
        *,
        success: bool = True,
        payload: bool = True,
        timestamp: int | None = None,
    ) -> int:
        """POST the webhook for `job` as fal would; return the receiver's HTTP status."""
        body = self.webhook_body(job, success=success, payload=payload)
        headers = self.sign(body, job.id, timestamp or now_s())
        async with (
            aiohttp.ClientSession() as session,
            session.post(url or job.webhook_url or "", data=body, headers=headers) as response,
        ):
            self.webhook_results.append(response.status)
            return response.status
