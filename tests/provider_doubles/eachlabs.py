"""EachLabs double (shared/seeds/002 and shared/reference/providers.md section 3).

POST /v1/prediction[/]  {"model", "input", "webhook_url"?, "webhook_secret"?}  X-API-Key
  (model kling-v3-pro-image-to-video: input adds start_image_url, end_image_url: URL or data URI)
  -> {"status": "success", "message": "Prediction created successfully", "predictionID": id}
GET  /v1/prediction/{id} -> {"id", "input", "status", "output", "logs", "metrics", "urls"}
POST /v1/prediction/{id}/cancel
Errors: {"status": "error", "message", "details"}. Webhooks: HMAC-SHA256 over "{ts}.{body}".
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import aiohttp
from aiohttp import web

from tests.provider_doubles.base import FakeJob, VendorDouble, image_problem, now_s

API_KEY = "el-test-key"
MODEL = "kling-v3-pro-text-to-video"
IMAGE_MODEL = "kling-v3-pro-image-to-video"
DURATIONS = {str(n) for n in range(3, 16)}
INPUT_FIELDS = {
    "prompt",
    "duration",
    "multi_prompt",
    "generate_audio",
    "voice_ids",
    "shot_type",
    "aspect_ratio",
    "negative_prompt",
    "cfg_scale",
}
# [?] the I2V page survives only garbled: fal's schema, aspect_ratio listed (ignored)
IMAGE_INPUT_FIELDS = INPUT_FIELDS | {"start_image_url", "end_image_url"}
POLL_WORDS = {
    "queued": "starting",
    "running": "processing",
    "succeeded": "success",
    "failed": "error",
    "cancelled": "cancelled",
    "created": "created",
}


def input_problems(data: Any, *, image: bool = False) -> list[str]:
    """What the documented input schema refuses (every documented image form is accepted)."""
    if not isinstance(data, dict):
        return ["input must be an object"]
    fields = IMAGE_INPUT_FIELDS if image else INPUT_FIELDS
    problems = [f"unknown field {k}" for k in data if k not in fields]
    if image:
        for name in ("start_image_url", "end_image_url"):
            if name == "start_image_url" or name in data:
                problem = image_problem(data.get(name), name)
                if problem:
                    problems.append(problem)
    has_prompt, has_multi = "prompt" in data, "multi_prompt" in data
    if has_prompt == has_multi:
        problems.append("Either prompt or multi_prompt must be provided, but not both")
    if has_prompt and (not isinstance(data["prompt"], str) or not data["prompt"]):
        problems.append("prompt must be a non-empty string")
    if "duration" in data and data["duration"] not in DURATIONS:
        problems.append(f"duration must be a string 3..15, got {data['duration']!r}")
    if has_multi:
        shots = data["multi_prompt"]
        if not isinstance(shots, list) or not 1 <= len(shots) <= 5:
            problems.append("multi_prompt must be a list of 1..5 shots")
        else:
            for shot in shots:
                if (
                    not isinstance(shot, dict)
                    or set(shot) != {"prompt", "duration"}
                    or not isinstance(shot["prompt"], str)
                    or not isinstance(shot["duration"], str)
                ):
                    problems.append(f"bad shot {shot!r}")
    if "generate_audio" in data and not isinstance(data["generate_audio"], bool):
        problems.append("generate_audio must be a boolean")
    if "aspect_ratio" in data and data["aspect_ratio"] not in ("16:9", "9:16", "1:1"):
        problems.append("bad aspect_ratio")
    if "shot_type" in data and data["shot_type"] not in ("customize", "intelligent"):
        problems.append("bad shot_type")
    if "cfg_scale" in data and (
        isinstance(data["cfg_scale"], bool)
        or not isinstance(data["cfg_scale"], int | float)
        or not 0 <= data["cfg_scale"] <= 1
    ):
        problems.append("cfg_scale must be a number 0..1")
    if "voice_ids" in data:
        voices = data["voice_ids"]
        if (
            not isinstance(voices, list)
            or len(voices) > 2
            or not all(isinstance(v, str) for v in voices)
        ):
            problems.append("voice_ids must be a list of at most 2 strings")
    return problems


class EachLabsDouble(VendorDouble):
    name = "eachlabs"
    id_prefix = "pred-"

    def __init__(self, *, max_live: int | None = None) -> None:
        super().__init__(default_script=["created", "queued", "running", "succeeded"])
        self.api_key = API_KEY
        self.max_live = max_live  # like the real key: more concurrent jobs than this get a 429
        self.peak_live = 0
        self.throttled = 0
        self.create_order: list[str] = []  # job ids in the order they were created

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/v1"

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", "/v1/prediction", self.create),
            ("POST", "/v1/prediction/", self.create),
            ("GET", "/v1/prediction/{id}", self.get),
            ("POST", "/v1/prediction/{id}/cancel", self.cancel),
        ]

    def live(self) -> int:
        """Jobs the vendor is still working on."""
        return sum(
            1 for job in self.jobs.values() if job.state not in ("succeeded", "failed", "cancelled")
        )

    def _error(self, status: int, message: str, details: Any = None) -> web.Response:
        return self.json({"status": "error", "message": message, "details": details}, status)

    async def create(self, request: web.Request) -> web.StreamResponse:
        scripted = await self.create_behaviour(request)
        if scripted is not None:
            return scripted
        if request.headers.get("X-API-Key") != self.api_key:
            return self._error(401, "Invalid or missing X-API-Key")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self._error(400, "body is not JSON")
        if not isinstance(body, dict) or body.get("model") not in (MODEL, IMAGE_MODEL):
            return self._error(404, "Unknown model")
        problems = input_problems(body.get("input"), image=body.get("model") == IMAGE_MODEL)
        extra = set(body) - {"model", "input", "webhook_url", "webhook_secret", "version"}
        problems += [f"unknown top-level field {k}" for k in extra]
        if problems:
            return self._error(400, "Invalid input", problems)
        if self.max_live is not None and self.live() >= self.max_live:
            self.throttled += 1
            return web.Response(
                status=429,
                text=json.dumps({"status": "error", "message": "Too many concurrent predictions"}),
                content_type="application/json",
                headers={"Retry-After": "1"},
            )
        job = FakeJob(
            self.new_id(), body, list(self.default_script), webhook_url=body.get("webhook_url")
        )
        self.jobs[job.id] = job
        self.create_order.append(job.id)
        self.peak_live = max(self.peak_live, self.live())
        return self.json(
            {
                "status": "success",
                "message": "Prediction created successfully",
                "predictionID": job.id,
            }
        )

    def prediction(self, job: FakeJob, state: str) -> dict[str, Any]:
        word = POLL_WORDS.get(state, state)
        output: Any = None
        if word == "success":
            output = self.file_url(job.id)
        elif word == "error":
            output = {"error_code": job.error_code or "PROVIDER_FAILED", "error_message": job.error}
        return {
            "id": job.id,
            "input": job.request.get("input"),
            "status": word,
            "output": output,
            "logs": None,
            "metrics": {"predict_time": 12.5, "cost": 0.84},
            "urls": {
                "cancel": f"{self.api_base}/prediction/{job.id}/cancel",
                "get": f"{self.api_base}/prediction/{job.id}",
            },
        }

    async def get(self, request: web.Request) -> web.Response:
        if request.headers.get("X-API-Key") != self.api_key:
            return self._error(401, "Invalid or missing X-API-Key")
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return self._error(404, "Prediction not found")
        return self.json(self.prediction(job, job.advance()))

    async def cancel(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return self._error(404, "Prediction not found")
        job.cancelled = True
        return self.json({"status": "success", "message": "Prediction cancelled"})

    # -- webhooks ---------------------------------------------------------------------------

    def webhook_body(self, job: FakeJob, *, success: bool = True, variant: str = "seed") -> bytes:
        if variant == "legacy":
            data: dict[str, Any] = self.prediction(job, "succeeded" if success else "failed")
        elif variant == "docs":
            data = {
                "exec_id": job.id,
                "flow_id": None,
                "status": "succeeded" if success else "failed",
                "output": self.file_url(job.id)
                if success
                else [
                    {
                        "error": {
                            "error_code": job.error_code or "PROVIDER_FAILED",
                            "error_message": job.error,
                        }
                    }
                ],
                "error": "" if success else job.error,
            }
        else:
            data = {
                "exec_id": job.id,
                "status": "succeeded" if success else "failed",
                "output": self.file_url(job.id) if success else "",
                "error": "" if success else job.error,
            }
        return json.dumps(data).encode()

    @staticmethod
    def sign(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
        digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
        return {
            "X-Webhook-Signature": f"sha256={digest.hexdigest()}",
            "X-Webhook-Timestamp": str(timestamp),
            "X-Webhook-Secret": secret,
            "Content-Type": "application/json",
        }

    async def send_webhook(
        self,
        job: FakeJob,
        url: str | None = None,
        *,
        success: bool = True,
        variant: str = "seed",
        secret: str | None = None,
        timestamp: int | None = None,
    ) -> int:
        """POST the webhook for `job` as EachLabs would; return the receiver's HTTP status."""
        body = self.webhook_body(job, success=success, variant=variant)
        secret = secret if secret is not None else job.request.get("webhook_secret")
        headers = (
            self.sign(secret, body, timestamp or now_s())
            if secret
            else {"Content-Type": "application/json"}
        )
        async with (
            aiohttp.ClientSession() as session,
            session.post(url or job.webhook_url or "", data=body, headers=headers) as response,
        ):
            self.webhook_results.append(response.status)
            return response.status
