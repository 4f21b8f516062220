"""Novita double (shared/seeds/003 and shared/reference/providers.md section 4).

POST /v3/async/kling-v3.0-{std,pro,4k}-t2v   Authorization: Bearer <key>, Content-Type: application/json
  body {prompt XOR multi_prompt, sound: bool, duration: int 3..15, cfg_scale: 0..1,
        aspect_ratio, negative_prompt, extra?: {webhook: {url, test_mode?}}}  -> {"task_id"}
POST /v3/async/kling-v3.0-{std,pro,4k}-i2v   image (URL or data URI), end_image, prompt required,
  no aspect_ratio
GET  /v3/async/task-result?task_id=…
  -> {"extra", "task": {task_id, task_type, status, reason, eta, progress_percent},
      "images": [], "videos": [{video_url, video_url_ttl, video_type}], "audios": []}
Errors: {"code", "reason", "message", "metadata"} (403 NOT_ENOUGH_BALANCE, 429 RATE_LIMIT_EXCEEDED,
400 INVALID_REQUEST_BODY). Webhooks: unsigned POST {"event_type": "ASYNC_TASK_RESULT", "payload"}.

Assumed where Novita does not document it (the adapter says the same): multi_prompt items are
{prompt: str, duration: int}; an unknown task is 404 TASK_NOT_FOUND.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import aiohttp
from aiohttp import web

from tests.provider_doubles.base import FakeJob, VendorDouble, image_problem

API_KEY = "nv-test-key"
ENDPOINTS = {
    "kling-v3.0-std-t2v": "720p",
    "kling-v3.0-pro-t2v": "1080p",
    "kling-v3.0-4k-t2v": "4k",
}
IMAGE_ENDPOINTS = {
    "kling-v3.0-std-i2v": "720p",
    "kling-v3.0-pro-i2v": "1080p",
    "kling-v3.0-4k-i2v": "4k",
}
FIELDS = {
    "sound",
    "prompt",
    "duration",
    "cfg_scale",
    "aspect_ratio",
    "multi_prompt",
    "negative_prompt",
    "extra",
}
# i2v: image (required), end_image (URL; not with multi_prompt), prompt required, no aspect_ratio
IMAGE_FIELDS = {"image", "end_image", "sound", "prompt", "duration", "cfg_scale", "multi_prompt"}
IMAGE_FIELDS |= {"negative_prompt", "extra"}
WORDS = {
    "queued": "TASK_STATUS_QUEUED",
    "running": "TASK_STATUS_PROCESSING",
    "succeeded": "TASK_STATUS_SUCCEED",
    "failed": "TASK_STATUS_FAILED",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def body_problems(data: Any, *, accept_extra: bool = True) -> list[str]:
    """What the documented request schema refuses."""
    if not isinstance(data, dict):
        return ["body must be a JSON object"]
    problems = [f"unknown field {k}" for k in data if k not in FIELDS]
    has_prompt, has_multi = "prompt" in data, "multi_prompt" in data
    if has_prompt == has_multi:
        problems.append("prompt and multi_prompt are mutually exclusive; give exactly one")
    if has_prompt and (not isinstance(data["prompt"], str) or len(data["prompt"]) > 2500):
        problems.append("prompt must be a string of at most 2500 characters")
    duration = data.get("duration", 5)
    if not isinstance(duration, int) or isinstance(duration, bool) or not 3 <= duration <= 15:
        problems.append(f"duration must be an integer 3..15, got {duration!r}")
    if "sound" in data and not isinstance(data["sound"], bool):
        problems.append("sound must be a boolean")
    if "cfg_scale" in data and (
        not _is_number(data["cfg_scale"]) or not 0 <= data["cfg_scale"] <= 1
    ):
        problems.append("cfg_scale must be a number 0..1")
    if "aspect_ratio" in data and data["aspect_ratio"] not in ("16:9", "9:16", "1:1"):
        problems.append("aspect_ratio must be 16:9, 9:16 or 1:1")
    if "negative_prompt" in data and (
        not isinstance(data["negative_prompt"], str) or len(data["negative_prompt"]) > 2500
    ):
        problems.append("negative_prompt must be a string of at most 2500 characters")
    if has_multi:
        shots = data["multi_prompt"]
        if not isinstance(shots, list) or not shots:
            problems.append("multi_prompt must be a non-empty list")
        else:
            for shot in shots:
                if (
                    not isinstance(shot, dict)
                    or set(shot) != {"prompt", "duration"}
                    or not isinstance(shot["prompt"], str)
                    or not isinstance(shot["duration"], int)
                    or isinstance(shot["duration"], bool)
                ):
                    problems.append(f"bad multi_prompt item {shot!r}")
    if "extra" in data:
        if not accept_extra:
            problems.append("unknown field extra")
        else:
            problems += extra_problems(data["extra"])
    return problems


def extra_problems(extra: Any) -> list[str]:
    if not isinstance(extra, dict) or set(extra) - {"webhook"}:
        return [f"bad extra {extra!r}"]
    hook = extra.get("webhook")
    if not isinstance(hook, dict) or set(hook) - {"url", "test_mode"}:
        return [f"bad extra.webhook {hook!r}"]
    url = hook.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return ["extra.webhook.url must be an http(s) URL"]
    return []


def image_body_problems(data: Any) -> list[str]:
    """What the documented i2v schema refuses (data URIs accepted for `image` [?])."""
    if not isinstance(data, dict):
        return ["body must be a JSON object"]
    problems = [f"unknown field {k}" for k in data if k not in IMAGE_FIELDS]
    if not isinstance(data.get("prompt"), str) or not data["prompt"].strip():
        problems.append("prompt is required")
    for name in ("image", "end_image"):
        if name == "image" or name in data:
            problem = image_problem(data.get(name), name)
            if problem:
                problems.append(problem)
    if "end_image" in data and "multi_prompt" in data:
        problems.append("end_image cannot be used with multi_prompt")
    rest = {k: v for k, v in data.items() if k not in ("image", "end_image")}
    problems += [p for p in body_problems(rest) if "prompt and multi_prompt" not in p]
    return problems


class NovitaDouble(VendorDouble):
    name = "novita"
    id_prefix = "nv-task-"

    def __init__(self) -> None:
        super().__init__(default_script=["queued", "running", "succeeded"])
        self.api_key = API_KEY
        self.accept_extra = True  # False: refuse `extra` like an endpoint without webhooks
        self.poll_replies: deque[tuple[int, Any]] = deque()
        self.video_ttl_s = 3600

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", "/v3/async/{endpoint}", self.create),
            ("GET", "/v3/async/task-result", self.result),
        ]

    def next_poll(self, status: int, body: Any) -> None:
        """Answer the next task-result request with `status`/`body` (bytes are sent raw)."""
        self.poll_replies.append((status, body))

    def error(self, status: int, reason: str, message: str) -> web.Response:
        return self.json(
            {"code": status, "reason": reason, "message": message, "metadata": {}}, status
        )

    def _auth_problem(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self.error(401, "INVALID_API_KEY", "invalid api key")
        return None

    async def create(self, request: web.Request) -> web.StreamResponse:
        endpoint = request.match_info["endpoint"]
        if endpoint in IMAGE_ENDPOINTS:
            return await self.create_image(request, endpoint)
        if endpoint not in ENDPOINTS:
            return self.error(404, "NOT_FOUND", f"unknown endpoint {endpoint}")
        scripted = await self.create_behaviour(request)
        if scripted is not None:
            return scripted
        refused = self._auth_problem(request)
        if refused is not None:
            return refused
        if request.content_type != "application/json":
            return self.error(400, "INVALID_REQUEST_BODY", "Content-Type must be application/json")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self.error(400, "INVALID_REQUEST_BODY", "body is not JSON")
        problems = body_problems(body, accept_extra=self.accept_extra)
        if problems:
            return self.error(400, "INVALID_REQUEST_BODY", "; ".join(problems))
        job = FakeJob(
            self.new_id(),
            {"endpoint": endpoint, "body": body},
            list(self.default_script),
            webhook_url=(body.get("extra") or {}).get("webhook", {}).get("url"),
        )
        self.jobs[job.id] = job
        return self.json({"task_id": job.id})

    async def create_image(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        scripted = await self.create_behaviour(request)
        if scripted is not None:
            return scripted
        refused = self._auth_problem(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self.error(400, "INVALID_REQUEST_BODY", "body is not JSON")
        problems = image_body_problems(body)
        if problems:
            return self.error(400, "INVALID_REQUEST_BODY", "; ".join(problems))
        job = FakeJob(
            self.new_id(),
            {"endpoint": endpoint, "body": body},
            list(self.default_script),
            webhook_url=(body.get("extra") or {}).get("webhook", {}).get("url"),
        )
        self.jobs[job.id] = job
        return self.json({"task_id": job.id})

    def task_result(self, job: FakeJob, state: str) -> dict[str, Any]:
        word = WORDS.get(state, state)
        done = word == "TASK_STATUS_SUCCEED"
        progress = {"queued": 0, "running": 40}.get(state, 100)
        return {
            "extra": {"seed": "1234", "debug_info": {"request_info": "", "submit_time_ms": "0"}},
            "task": {
                "task_id": job.id,
                "task_type": "KLING_V3_T2V",
                "status": word,
                "reason": job.error if word == "TASK_STATUS_FAILED" else "",
                "eta": 0 if done else 90,
                "progress_percent": progress,
            },
            "images": [],
            "videos": [
                {
                    "video_url": self.file_url(job.id),
                    "video_url_ttl": str(self.video_ttl_s),
                    "video_type": "mp4",
                }
            ]
            if done
            else [],
            "audios": [],
        }

    async def result(self, request: web.Request) -> web.StreamResponse:
        refused = self._auth_problem(request)
        if refused is not None:
            return refused
        if self.poll_replies:
            status, body = self.poll_replies.popleft()
            if isinstance(body, bytes):
                return web.Response(status=status, body=body, content_type="application/json")
            return self.json(body, status)
        task_id = request.query.get("task_id", "")
        job = self.jobs.get(task_id)
        if job is None:
            return self.error(404, "TASK_NOT_FOUND", f"task {task_id} not found")
        return self.json(self.task_result(job, job.advance()))

    # -- webhooks ---------------------------------------------------------------------------

    def webhook_body(self, job: FakeJob, *, success: bool = True) -> bytes:
        payload = self.task_result(job, "succeeded" if success else "failed")
        return json.dumps({"event_type": "ASYNC_TASK_RESULT", "payload": payload}).encode()

    async def send_webhook(
        self, job: FakeJob, url: str | None = None, *, success: bool = True
    ) -> int:
        """POST the webhook for `job` as Novita would (unsigned); return the receiver's status."""
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
