"""PixelDojo double (shared/seeds/000 and shared/reference/providers.md section 1).

POST /api/v1/models/kling-video-v3-pro-text/run  top-level fields   Authorization: Bearer
  -> 202 {"jobId", "status": "pending", "statusUrl", "creditCost", "creditsRemaining", "expiresAt"}
GET  /api/v1/jobs/{jobId} -> {"jobId", "status", "output": {"video"}?, "error"?, "creditCost", ...}
Errors: {"error": message} with 401 / 402 / 422 / 429 (Retry-After). Webhooks: the job object,
unsigned. Statuses in `FakeJob.script` are PixelDojo's words (pending, processing, completed,
failed, ...).
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import aiohttp
from aiohttp import web

from tests.provider_doubles.base import Behaviour, FakeJob, VendorDouble

API_KEY = "pd_test_key"
MODEL = "kling-video-v3-pro-text"
CREDITS_PER_SECOND = 8
FIELDS = {
    "prompt",
    "multi_prompt",
    "duration",
    "aspect_ratio",
    "generate_audio",
    "voice_ids",
    "shot_type",
    "negative_prompt",
    "cfg_scale",
    "webhook_url",
}
EXPIRES_AT = "2030-01-23T12:00:00Z"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def body_problems(data: Any) -> list[str]:
    """What the documented run input refuses (strictly: names, types, required fields)."""
    if not isinstance(data, dict):
        return ["body must be a JSON object"]
    problems = [f"unknown field {k}" for k in data if k not in FIELDS]
    if not isinstance(data.get("prompt"), str) or not data["prompt"].strip():
        problems.append("prompt is required and must be a non-empty string")
    if "duration" in data and (not _is_int(data["duration"]) or not 3 <= data["duration"] <= 15):
        problems.append(f"duration must be an integer 3..15, got {data['duration']!r}")
    if "aspect_ratio" in data and data["aspect_ratio"] not in ("16:9", "9:16", "1:1"):
        problems.append("bad aspect_ratio")
    if "generate_audio" in data and not isinstance(data["generate_audio"], bool):
        problems.append("generate_audio must be a boolean")
    if "shot_type" in data and data["shot_type"] not in ("customize", "intelligent"):
        problems.append("bad shot_type")
    if "negative_prompt" in data and not isinstance(data["negative_prompt"], str):
        problems.append("negative_prompt must be a string")
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
            or not 1 <= len(voices) <= 2
            or not all(isinstance(v, str) for v in voices)
        ):
            problems.append("voice_ids must be a list of 1..2 strings")
    if "webhook_url" in data and (
        not isinstance(data["webhook_url"], str)
        or not data["webhook_url"].startswith(("https://", "http://"))
    ):
        problems.append("webhook_url must be a URL")
    if "multi_prompt" in data:
        shots = data["multi_prompt"]
        if not isinstance(shots, list) or not 1 <= len(shots) <= 5:
            problems.append("multi_prompt must be a list of 1..5 shots")
        else:
            for shot in shots:
                if (
                    not isinstance(shot, dict)
                    or set(shot) != {"prompt", "duration"}
                    or not isinstance(shot["prompt"], str)
                    or not _is_int(shot["duration"])
                ):
                    problems.append(f"bad shot {shot!r}")
            if not problems and sum(s["duration"] for s in shots) != data.get("duration", 5):
                problems.append("the shot durations must add up to duration")
    return problems


class PixelDojoDouble(VendorDouble):
    name = "pixeldojo"
    id_prefix = "job_"

    def __init__(self) -> None:
        super().__init__(default_script=["pending", "processing", "completed"])
        self.api_key = API_KEY
        self.credits = 1000
        self.status_host: str | None = None  # set: statusUrl points at another host
        self.poll_behaviours: deque[Behaviour] = deque()  # scripted replies to GET /jobs/{id}

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api/v1"

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", f"/api/v1/models/{MODEL}/run", self.create),
            ("GET", "/api/v1/jobs/{id}", self.get),
        ]

    def _error(self, status: int, message: str, **extra: Any) -> web.Response:
        return self.json({"error": message, **extra}, status)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def create(self, request: web.Request) -> web.StreamResponse:
        scripted = await self.create_behaviour(request)
        if scripted is not None:
            return scripted
        if not self._authorized(request):
            return self._error(401, "Invalid or missing API key")
        if request.content_type != "application/json":
            return self._error(415, "Content-Type must be application/json")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self._error(400, "body is not JSON")
        problems = body_problems(body)
        if problems:
            return self._error(422, "Validation error", details=problems)
        cost = CREDITS_PER_SECOND * body.get("duration", 5)
        if cost > self.credits:
            return self._error(402, "Insufficient credits", credits_remaining=self.credits)
        self.credits -= cost
        job = FakeJob(
            self.new_id(), body, list(self.default_script), webhook_url=body.get("webhook_url")
        )
        self.jobs[job.id] = job
        status_base = self.status_host or self.api_base
        return self.json(
            {
                "jobId": job.id,
                "status": "pending",
                "statusUrl": f"{status_base}/jobs/{job.id}",
                "creditCost": cost,
                "creditsRemaining": self.credits,
                "expiresAt": EXPIRES_AT,
            },
            202,
        )

    def job_object(self, job: FakeJob, word: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "jobId": job.id,
            "status": word,
            "creditCost": CREDITS_PER_SECOND * job.request.get("duration", 5),
            "expiresAt": EXPIRES_AT,
        }
        if word == "completed":
            data["output"] = {"video": self.file_url(job.id)}
        elif word == "failed":
            data["error"] = job.error
        return data

    def next_poll(
        self, status: int, body: Any, headers: dict[str, str] | None = None, times: int = 1
    ) -> None:
        """Answer the next status request(s) with `status`/`body` instead of the job."""
        for _ in range(times):
            self.poll_behaviours.append(Behaviour("status", status, body, headers or {}))

    async def get(self, request: web.Request) -> web.Response:
        if self.poll_behaviours:
            scripted = self.poll_behaviours.popleft()
            if isinstance(scripted.body, bytes | str):
                return web.Response(
                    status=scripted.status, body=scripted.body, headers=scripted.headers
                )
            return web.Response(
                status=scripted.status,
                text=json.dumps(scripted.body),
                content_type="application/json",
                headers=scripted.headers,
            )
        if not self._authorized(request):
            return self._error(401, "Invalid or missing API key")
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return self._error(404, "Job not found")
        return self.json(self.job_object(job, job.advance()))

    # -- webhooks ---------------------------------------------------------------------------

    def webhook_body(self, job: FakeJob, *, success: bool = True) -> bytes:
        return json.dumps(self.job_object(job, "completed" if success else "failed")).encode()

    async def send_webhook(
        self, job: FakeJob, url: str | None = None, *, success: bool = True
    ) -> int:
        """POST the job object to the job's webhook_url; return the receiver's HTTP status."""
        body = self.webhook_body(job, success=success)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                url or job.webhook_url or "",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as response,
        ):
            self.webhook_results.append(response.status)
            return response.status
