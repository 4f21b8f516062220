"""Replicate double (shared/reference/providers.md section 7).

POST /v1/models/kwaivgi/kling-v3-video/predictions   Authorization: Bearer <token>
  {"input": {...}, "webhook"?, "webhook_events_filter"?} -> 201 prediction object
GET  /v1/predictions/{id}         -> prediction {id, model, version, input, logs, output,
                                     data_removed, error, status, metrics, urls, created_at, ...}
POST /v1/predictions/{id}/cancel  -> prediction (status canceled)
GET  /v1/webhooks/default/secret  -> {"key": "whsec_…"}
POST /v1/files (multipart `content`) -> 201 {"id", "urls": {"get"}}; start_image/end_image take a
  URL (such a file URL too) or a data URI under 1 MB
Errors are problem details: {"title", "detail", "status"} (422 adds "invalid_fields").
Webhooks are Standard Webhooks, signed by the double's own HMAC code (not the project's).
"""

from __future__ import annotations

import base64
import email.policy
import hashlib
import hmac
import itertools
import json
import os
from dataclasses import dataclass
from email.parser import BytesParser
from typing import Any

import aiohttp
from aiohttp import web

from tests.provider_doubles.base import FakeJob, VendorDouble, image_problem, now_s

API_TOKEN = "r8_test_token"
MODEL = "kwaivgi/kling-v3-video"
VERSION = "4a8ba274d1e4c7a5f8f0c1c9a0e3b2d1c0b9a8f7e6d5c4b3a2918070605040302"
INPUT_FIELDS = {
    "prompt",
    "negative_prompt",
    "mode",
    "aspect_ratio",
    "duration",
    "generate_audio",
    "multi_prompt",
    "start_image",
    "end_image",
}
EVENTS = {"start", "output", "logs", "completed"}
SENSITIVE = (
    "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
)
POLL_WORDS = {
    "queued": "starting",
    "running": "processing",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "canceled",
    "aborted": "aborted",
}


@dataclass
class ReplicateJob(FakeJob):
    removed: bool = False  # the output was deleted (API predictions keep it for an hour)
    created_at: str = "2026-03-01T12:00:00.000000Z"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


DATA_URI_MAX_BYTES = 1024 * 1024  # "data URIs only for files under 1 MB"


def input_problems(data: Any, files: set[str] | None = None) -> list[tuple[str, str]]:
    """(field, description) for everything the documented input schema refuses."""
    if not isinstance(data, dict):
        return [("input", "Invalid type. Expected: object")]
    found = [
        (f"input.{k}", "Additional property is not allowed") for k in data if k not in INPUT_FIELDS
    ]
    for name in ("start_image", "end_image"):
        if name in data:
            problem = image_problem(data[name], name, max_data_uri_bytes=DATA_URI_MAX_BYTES)
            uploaded = files is not None and "/v1/files/" in str(data[name])
            if problem is None and uploaded and data[name].rsplit("/", 1)[-1] not in (files or ()):
                problem = f"{name}: no such uploaded file"
            if problem:
                found.append((f"input.{name}", problem))
    if "end_image" in data and "start_image" not in data:
        found.append(("input.end_image", "end_image needs start_image"))
    has_multi = "multi_prompt" in data
    if "prompt" not in data and not has_multi:
        found.append(("input.prompt", "prompt is required"))
    for field in ("prompt", "negative_prompt"):
        if field in data and (not isinstance(data[field], str) or len(data[field]) > 2500):
            found.append((f"input.{field}", "Invalid type. Expected: string (≤ 2500)"))
    if "mode" in data and data["mode"] not in ("standard", "pro"):
        found.append(("input.mode", "must be one of: standard, pro"))
    if "aspect_ratio" in data and data["aspect_ratio"] not in ("16:9", "9:16", "1:1"):
        found.append(("input.aspect_ratio", "must be one of: 16:9, 9:16, 1:1"))
    duration = data.get("duration", 5)
    if not _is_int(duration):
        found.append(("input.duration", "Invalid type. Expected: integer"))
    elif not 3 <= duration <= 15:
        found.append(("input.duration", "Must be between 3 and 15"))
    if "generate_audio" in data and not isinstance(data["generate_audio"], bool):
        found.append(("input.generate_audio", "Invalid type. Expected: boolean"))
    if has_multi:
        found += _multi_prompt_problems(data["multi_prompt"], duration)
    return found


def _multi_prompt_problems(value: Any, duration: Any) -> list[tuple[str, str]]:
    field = "input.multi_prompt"
    if not isinstance(value, str):
        return [(field, "Invalid type. Expected: string (a JSON array)")]
    try:
        shots = json.loads(value)
    except ValueError:
        return [(field, "must be a JSON array")]
    if not isinstance(shots, list) or not 1 <= len(shots) <= 6:
        return [(field, "must be a JSON array of 1 to 6 shots")]
    for shot in shots:
        if (
            not isinstance(shot, dict)
            or set(shot) != {"prompt", "duration"}
            or not isinstance(shot["prompt"], str)
            or not _is_int(shot["duration"])
            or shot["duration"] < 1
        ):
            return [(field, f"bad shot {shot!r}: needs prompt (string) and duration (int ≥ 1)")]
    if sum(shot["duration"] for shot in shots) != duration:
        return [(field, "shot durations must add up to duration")]
    return []


class ReplicateDouble(VendorDouble):
    name = "replicate"

    def __init__(self) -> None:
        super().__init__(default_script=["queued", "running", "running", "succeeded"])
        self.api_token = API_TOKEN
        self.webhook_secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        self._letters = itertools.count(1)
        self.files: dict[str, tuple[str, bytes]] = {}  # uploaded through the files API

    def new_id(self) -> str:
        number, letters = next(self._letters), ""
        while number:
            number, digit = divmod(number, 26)
            letters = "abcdefghijklmnopqrstuvwxyz"[digit] + letters
        return "kv3" + letters.rjust(23, "a")

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/v1"

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", f"/v1/models/{MODEL}/predictions", self.create),
            ("GET", "/v1/predictions/{id}", self.get),
            ("POST", "/v1/predictions/{id}/cancel", self.cancel),
            ("GET", "/v1/webhooks/default/secret", self.secret),
            ("POST", "/v1/files", self.upload),
        ]

    async def upload(self, request: web.Request) -> web.Response:
        """The files API: multipart `content` -> 201 {id, name, content_type, size, urls.get}."""
        if not self._authorized(request):
            return self._unauthorized()
        if not request.content_type.startswith("multipart/"):
            return self.problem(415, "Unsupported media type", "send multipart/form-data")
        # the recording middleware has read the stream: parse the stored body
        raw = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
        message = BytesParser(policy=email.policy.default).parsebytes(raw + await request.read())
        parts = [
            part
            for part in message.iter_parts()
            if part.get_param("name", header="content-disposition") == "content"
        ]
        if len(parts) != 1 or not isinstance(parts[0].get_content(), bytes):
            return self.problem(422, "Input validation failed", "- content: file is required\n")
        content = parts[0]
        data = content.get_content()
        file_id = f"file-{len(self.files) + 1:04d}"
        self.files[file_id] = (content.get_content_type(), data)
        return self.json(
            {
                "id": file_id,
                "name": content.get_filename(),
                "content_type": content.get_content_type(),
                "size": len(data),
                "checksums": {"sha256": hashlib.sha256(data).hexdigest()},
                "urls": {"get": f"{self.api_base}/files/{file_id}"},
            },
            201,
        )

    def problem(self, status: int, title: str, detail: str, **extra: Any) -> web.Response:
        data = {"title": title, "detail": detail, "status": status, **extra}
        response = self.json(data, status)
        response.content_type = "application/problem+json"
        return response

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_token}"

    def _unauthorized(self) -> web.Response:
        return self.problem(401, "Unauthenticated", "You did not pass a valid authentication token")

    async def create(self, request: web.Request) -> web.StreamResponse:
        scripted = await self.create_behaviour(request)
        if scripted is not None:
            return scripted
        if not self._authorized(request):
            return self._unauthorized()
        if request.content_type != "application/json":
            return self.problem(415, "Unsupported media type", "send application/json")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self.problem(400, "Invalid JSON", "the request body is not JSON")
        if not isinstance(body, dict):
            return self.problem(422, "Input validation failed", "- body must be an object\n")
        problems = input_problems(body.get("input"), set(self.files))
        extra = set(body) - {"input", "webhook", "webhook_events_filter"}
        problems += [(k, "Additional property is not allowed") for k in sorted(extra)]
        webhook = body.get("webhook")
        if webhook is not None and (
            not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))
        ):
            problems.append(("webhook", "must be a URL"))
        events = body.get("webhook_events_filter", ["start", "output", "logs", "completed"])
        if not isinstance(events, list) or not set(events) <= EVENTS or not events:
            problems.append(("webhook_events_filter", f"must be a list of {sorted(EVENTS)}"))
        if problems:
            return self.problem(
                422,
                "Input validation failed",
                "".join(f"- {field}: {description}\n" for field, description in problems),
                invalid_fields=[
                    {"type": "invalid", "field": field, "description": description}
                    for field, description in problems
                ],
            )
        job = ReplicateJob(self.new_id(), body, list(self.default_script), webhook_url=webhook)
        self.jobs[job.id] = job
        return self.json(self.prediction(job, "queued"), 201)

    def _job(self, request: web.Request) -> ReplicateJob | None:
        job = self.jobs.get(request.match_info["id"])
        return job if isinstance(job, ReplicateJob) else None

    def prediction(self, job: ReplicateJob, state: str) -> dict[str, Any]:
        word = POLL_WORDS.get(state, state)
        base = f"{self.api_base}/predictions/{job.id}"
        data: dict[str, Any] = {
            "id": job.id,
            "model": MODEL,
            "version": VERSION,
            "input": job.request.get("input"),
            "logs": "",
            "output": None,
            "data_removed": False,
            "error": None,
            "status": word,
            "created_at": job.created_at,
            "urls": {
                "cancel": f"{base}/cancel",
                "get": base,
                "stream": f"https://stream.replicate.example/v1/files/{job.id}",
                "web": f"https://replicate.com/p/{job.id}",
            },
        }
        if word == "processing":
            done = min(99, 30 * job.polls)
            data["logs"] = f"Submitting to Kling…\n{done}%|{'█' * (done // 10)}| {done}/100"
        if word in ("succeeded", "failed", "canceled", "aborted"):
            data["completed_at"] = "2026-03-01T12:03:00.000000Z"
            data["metrics"] = {"predict_time": 168.2, "total_time": 170.9}
        if word == "succeeded":
            if job.removed:
                data["data_removed"] = True
                data["input"] = {}
            else:
                data["output"] = self.file_url(job.id)
        if word in ("failed", "aborted"):
            data["error"] = job.error
        return data

    async def get(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        job = self._job(request)
        if job is None:
            return self.problem(404, "Not found", "The requested resource could not be found.")
        return self.json(self.prediction(job, job.advance()))

    async def cancel(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        job = self._job(request)
        if job is None:
            return self.problem(404, "Not found", "The requested resource could not be found.")
        if job.state not in ("succeeded", "failed", "aborted"):
            job.cancelled = True
        return self.json(self.prediction(job, job.state))

    async def secret(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        return self.json({"key": self.webhook_secret})

    # -- webhooks ---------------------------------------------------------------------------

    def webhook_body(self, job: ReplicateJob, *, success: bool = True) -> bytes:
        return json.dumps(self.prediction(job, "succeeded" if success else "failed")).encode()

    @staticmethod
    def sign(secret: str, body: bytes, msg_id: str, timestamp: int) -> dict[str, str]:
        key = base64.b64decode(secret.split("_", 1)[1])
        signed = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
        digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": f"v1,{digest}",
            "Content-Type": "application/json",
        }

    async def send_webhook(
        self,
        job: ReplicateJob,
        url: str | None = None,
        *,
        success: bool = True,
        msg_id: str = "msg_2mDPQsyzNvmAv4b4wNDcMUHFRfJ",
        timestamp: int | None = None,
    ) -> int:
        """POST the webhook for `job` as Replicate would; return the receiver's HTTP status."""
        body = self.webhook_body(job, success=success)
        headers = self.sign(self.webhook_secret, body, msg_id, timestamp or now_s())
        async with (
            aiohttp.ClientSession() as session,
            session.post(url or job.webhook_url or "", data=body, headers=headers) as response,
        ):
            self.webhook_results.append(response.status)
            return response.status
