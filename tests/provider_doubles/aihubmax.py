"""AIHubMax double (shared/seeds/001 and shared/reference/providers.md sections 0 and 2).

POST /v1/videos/generations  {"model": "kling-v3-text-to-video", "prompt", "resolution",
  "duration" (int 5|10), "aspect_ratio", "generate_audio", "negative_prompt"?, "voice_ids"?,
  "multi_prompt"?, "callback_url"?}   Authorization: Bearer
  -> task object {"created", "id": "task-unified-…", "model", "object", "progress", "status",
     "task_info", "type", "usage"}
GET  /v1/tasks/{id} -> the task object; `results` holds the video (as `{url}` objects, plain
  strings or `result_data[].video_url`, per `result_format`), `error{code, message, type}` on failure
Errors: {"error": {"code", "message", "type", "param"?, "fallback_suggestion"?}}; 401, 402
insufficient quota, 404, 429 ("retry after 60 seconds"). Callbacks: the task object, unsigned.
Statuses in `FakeJob.script`: pending, processing, completed, completed_no_results (the documented
race: "completed" before the URL is attached), failed, cancelled.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import aiohttp
from aiohttp import web

from tests.provider_doubles.base import Behaviour, FakeJob, VendorDouble

API_KEY = "sk-aihubmax-test"
MODEL = "kling-v3-text-to-video"
CREATED = 1757165031
CREDITS_PER_SECOND = 54000
FIELDS = {
    "model",
    "prompt",
    "resolution",
    "generate_audio",
    "negative_prompt",
    "aspect_ratio",
    "duration",
    "voice_ids",
    "multi_prompt",
    "callback_url",
}
PROGRESS = {"pending": 0, "processing": 45, "completed_no_results": 99, "completed": 100}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def body_problems(data: Any, *, accept_callback: bool = True) -> list[tuple[str, str]]:
    """(param, problem) for everything the documented schema refuses."""
    if not isinstance(data, dict):
        return [("", "body must be a JSON object")]
    problems = [(k, f"Unknown parameter: {k}") for k in data if k not in FIELDS]
    if data.get("model") != MODEL:
        problems.append(("model", f"model must be {MODEL}"))
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > 2500:
        problems.append(("prompt", "prompt is required: a string of at most 2500 characters"))
    if "resolution" in data and data["resolution"] not in ("720p", "1080p", "4k"):
        problems.append(("resolution", "resolution must be 720p, 1080p or 4k"))
    if "duration" in data and (not _is_int(data["duration"]) or data["duration"] not in (5, 10)):
        problems.append(("duration", f"duration must be the integer 5 or 10: {data['duration']!r}"))
    if "aspect_ratio" in data and data["aspect_ratio"] not in ("16:9", "9:16", "1:1"):
        problems.append(("aspect_ratio", "aspect_ratio must be 16:9, 9:16 or 1:1"))
    if "generate_audio" in data and not isinstance(data["generate_audio"], bool):
        problems.append(("generate_audio", "generate_audio must be a boolean"))
    if "negative_prompt" in data and not isinstance(data["negative_prompt"], str):
        problems.append(("negative_prompt", "negative_prompt must be a string"))
    if "voice_ids" in data:
        voices = data["voice_ids"]
        if (
            not isinstance(voices, list)
            or not 1 <= len(voices) <= 2
            or not all(isinstance(v, str) for v in voices)
        ):
            problems.append(("voice_ids", "voice_ids must be a list of 1..2 strings"))
        if data.get("generate_audio") is not True:
            problems.append(("voice_ids", "voice_ids need generate_audio=true"))
    if "multi_prompt" in data:
        shots = data["multi_prompt"]
        if not isinstance(shots, list) or not shots:
            problems.append(("multi_prompt", "multi_prompt must be a non-empty list"))
        elif not all(
            isinstance(s, dict)
            and set(s) == {"prompt", "duration"}
            and isinstance(s["prompt"], str)
            and _is_int(s["duration"])
            for s in shots
        ):
            problems.append(("multi_prompt", f"bad multi_prompt items: {shots!r}"))
        elif sum(s["duration"] for s in shots) != data.get("duration", 5):
            problems.append(("multi_prompt", "segment durations must add up to duration"))
    if "callback_url" in data:
        if not accept_callback:
            problems.append(("callback_url", "Unknown parameter: callback_url"))
        elif not isinstance(data["callback_url"], str) or not data["callback_url"].startswith(
            "https://"
        ):
            problems.append(("callback_url", "callback_url must be an HTTPS URL"))
    return problems


class AIHubMaxDouble(VendorDouble):
    name = "aihubmax"
    id_prefix = f"task-unified-{CREATED}-"

    def __init__(self) -> None:
        super().__init__(default_script=["pending", "processing", "completed"])
        self.api_key = API_KEY
        self.quota = 10_000_000
        self.accept_callback = True
        self.result_format = "objects"  # "objects" | "strings" | "result_data"
        self.poll_behaviours: deque[Behaviour] = deque()

    @property
    def api_base(self) -> str:
        return self.base_url

    def new_id(self) -> str:
        return f"{self.id_prefix}job{next(self._ids):05d}"

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", "/v1/videos/generations", self.create),
            ("GET", "/v1/tasks/{id}", self.get),
        ]

    def _error(
        self, status: int, message: str, kind: str, param: str | None = None, **extra: Any
    ) -> web.Response:
        error: dict[str, Any] = {"code": status, "message": message, "type": kind, **extra}
        if param is not None:
            error["param"] = param
        return self.json({"error": error}, status)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def create(self, request: web.Request) -> web.StreamResponse:
        scripted = await self.create_behaviour(request)
        if scripted is not None:
            return scripted
        if not self._authorized(request):
            return self._error(401, "Invalid API key", "authentication_error")
        if request.content_type != "application/json":
            return self._error(
                400, "Content-Type must be application/json", "invalid_request_error"
            )
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self._error(400, "body is not JSON", "invalid_request_error")
        problems = body_problems(body, accept_callback=self.accept_callback)
        if problems:
            param, message = problems[0]
            return self._error(400, message, "invalid_request_error", param or None)
        cost = CREDITS_PER_SECOND * body.get("duration", 5)
        if cost > self.quota:
            return self._error(402, "Insufficient quota", "insufficient_quota_error")
        self.quota -= cost
        job = FakeJob(
            self.new_id(), body, list(self.default_script), webhook_url=body.get("callback_url")
        )
        self.jobs[job.id] = job
        return self.json(self.task(job, "pending"))

    def task(self, job: FakeJob, word: str) -> dict[str, Any]:
        duration = job.request.get("duration", 5)
        status = "completed" if word == "completed_no_results" else word
        data: dict[str, Any] = {
            "created": CREATED,
            "id": job.id,
            "model": MODEL,
            "object": "video.generation.task",
            "progress": PROGRESS.get(word, 0),
            "status": status,
            "task_info": {
                "can_cancel": word == "pending",
                "estimated_time": 300,
                "video_duration": duration,
            },
            "type": "video",
            "usage": {
                "billing_rule": "per_second",
                "credits_reserved": CREDITS_PER_SECOND * duration,
                "user_group": "default",
            },
        }
        if word == "completed_no_results":
            data["results"] = None
        elif word == "completed":
            url = self.file_url(job.id)
            if self.result_format == "strings":
                data["results"] = [url]
            elif self.result_format == "result_data":
                data["results"] = []
                data["result_data"] = [{"video_url": url, "duration": duration}]
            else:
                data["results"] = [{"url": url}]
        elif word == "failed":
            data["error"] = {
                "code": job.error_code or "generation_failed_no_content",
                "message": job.error,
                "type": "task_error",
            }
        return data

    def next_poll(
        self, status: int, body: Any, headers: dict[str, str] | None = None, times: int = 1
    ) -> None:
        """Answer the next task query(ies) with `status`/`body` instead of the task."""
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
            return self._error(401, "Invalid API key", "authentication_error")
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return self._error(404, "Task not found", "not_found_error")
        return self.json(self.task(job, job.advance()))

    # -- callbacks --------------------------------------------------------------------------

    def callback_body(self, job: FakeJob, *, success: bool = True) -> bytes:
        return json.dumps(self.task(job, "completed" if success else "failed")).encode()

    async def send_webhook(
        self, job: FakeJob, url: str | None = None, *, success: bool = True
    ) -> int:
        """POST the task object to `url` as the callback would; return the receiver's status."""
        body = self.callback_body(job, success=success)
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
