"""Segmind double (shared/seeds/004 and shared/reference/providers.md section 5).

Every route wants `x-api-key` (a key sent as `Authorization` is refused with 401) and
`Content-Type: application/json` on POSTs (else 406 "Invalid content type").
POST /v2/kling-3-pro-text2video -> {"request_id", "status": "QUEUED", "poll_url", "status_url",
                                    "response_url"}
GET  /v2/requests/{id}/status   -> {"request_id", "status", "metrics"} (no output)
GET  /v2/requests/{id}          -> {"request_id", "status": "COMPLETED", "output", "video", "metrics"}
     a FAILED job answers 422 {"status": "FAILED", "error", "metrics"} (`failed_http`);
     an expired record answers 404 {"error": "Request … not found"}
POST /v1/kling-3-pro-text2video -> blocks, then the video (`v1_reply` picks the form)
POST /v{1,2}/kling-3-pro-image2video -> the same, with start_image_url (required) / end_image_url
Body: prompt XOR multi_prompt [{prompt ≤512, duration: str}] ≤5 (XOR assumed, as fal), duration
"3".."15" (string), aspect_ratio, cfg_scale 0..1, generate_audio bool, negative_prompt,
shot_type "customize", voice_ids ≤2 strings. Errors: {"error": msg}; 405 is an HTML page.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import deque
from typing import Any

from aiohttp import web

from tests.provider_doubles.base import FakeJob, VendorDouble, image_problem

API_KEY = "SG_0123456789abcdef"
MODEL = "kling-3-pro-text2video"
IMAGE_MODEL = "kling-3-pro-image2video"  # the same body plus start_image_url/end_image_url (uri)
DURATIONS = {str(n) for n in range(3, 16)}
FIELDS = {
    "prompt",
    "duration",
    "aspect_ratio",
    "cfg_scale",
    "generate_audio",
    "negative_prompt",
    "shot_type",
    "voice_ids",
    "multi_prompt",
}
WORDS = {
    "queued": "QUEUED",
    "running": "PROCESSING",
    "succeeded": "COMPLETED",
    "failed": "FAILED",
}
HTML_405 = (
    "<html>\r\n<head><title>405 Not Allowed</title></head>\r\n<body>\r\n"
    "<center><h1>405 Not Allowed</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>"
)
V1_REPLIES = ("bytes", "octet", "output_url", "video_url", "base64", "data_uri", "truncated")


def body_problems(data: Any, *, image: bool = False) -> list[str]:
    """What the documented request schema refuses."""
    if not isinstance(data, dict):
        return ["body must be a JSON object"]
    fields = FIELDS | {"start_image_url", "end_image_url"} if image else FIELDS
    problems = [f"unknown field {k}" for k in data if k not in fields]
    if image:
        for name in ("start_image_url", "end_image_url"):
            if name == "start_image_url" or name in data:
                problem = image_problem(data.get(name), name)  # [?] data URIs accepted
                if problem:
                    problems.append(problem)
    has_prompt, has_multi = "prompt" in data, "multi_prompt" in data
    if has_prompt == has_multi:
        problems.append("Give either prompt or multi_prompt, not both")
    if has_prompt and (not isinstance(data["prompt"], str) or not data["prompt"].strip()):
        problems.append("Prompt is Mandatory and must be string")
    if "duration" in data and data["duration"] not in DURATIONS:
        problems.append(f"duration must be a string 3..15, got {data['duration']!r}")
    if "generate_audio" in data and not isinstance(data["generate_audio"], bool):
        problems.append("generate_audio must be a boolean")
    if "aspect_ratio" in data and data["aspect_ratio"] not in ("16:9", "9:16", "1:1"):
        problems.append("aspect_ratio must be 16:9, 9:16 or 1:1")
    if "cfg_scale" in data and (
        isinstance(data["cfg_scale"], bool)
        or not isinstance(data["cfg_scale"], int | float)
        or not 0 <= data["cfg_scale"] <= 1
    ):
        problems.append("cfg_scale must be a number 0..1")
    if "negative_prompt" in data and not isinstance(data["negative_prompt"], str):
        problems.append("negative_prompt must be a string")
    if "shot_type" in data and data["shot_type"] != "customize":
        problems.append("shot_type must be customize")
    if "voice_ids" in data:
        voices = data["voice_ids"]
        if (
            not isinstance(voices, list)
            or len(voices) > 2
            or not all(isinstance(v, str) for v in voices)
        ):
            problems.append("voice_ids must be a list of at most 2 strings")
    if has_multi:
        shots = data["multi_prompt"]
        if not isinstance(shots, list) or not 1 <= len(shots) <= 5:
            problems.append("multi_prompt must be a list of 1..5 segments")
        else:
            for shot in shots:
                if (
                    not isinstance(shot, dict)
                    or set(shot) - {"prompt", "duration"}
                    or not isinstance(shot.get("prompt"), str)
                    or len(shot["prompt"]) > 512
                    or not isinstance(shot.get("duration", "5"), str)
                    or not shot.get("duration", "5").isdigit()
                ):
                    problems.append(f"bad multi_prompt segment {shot!r}")
    return problems


class SegmindDouble(VendorDouble):
    name = "segmind"
    id_prefix = "sg-req-"

    def __init__(self) -> None:
        super().__init__(default_script=["queued", "running", "succeeded"])
        self.api_key = API_KEY
        self.v2_missing: int | None = None  # 404 or 405: v2 has no such model
        self.v1_reply = "bytes"  # one of V1_REPLIES
        self.v1_delay_s = 0.0
        self.failed_http = 422  # how the status/result endpoints answer a FAILED job
        self.link_prefix = ""  # the returned poll/status/response URLs use this path prefix
        self.link_origin: str | None = None  # …and this origin (default: the double's own)
        self.expired_requests: set[str] = set()
        self.poll_replies: deque[tuple[int, Any, dict[str, str]]] = deque()

    def routes(self) -> list[tuple[str, str, Any]]:
        routes: list[tuple[str, str, Any]] = [
            ("POST", f"/v2/{MODEL}", self.create_v2),
            ("POST", f"/v1/{MODEL}", self.create_v1),
            ("POST", f"/v2/{IMAGE_MODEL}", self.create_v2),
            ("POST", f"/v1/{IMAGE_MODEL}", self.create_v1),
        ]
        for prefix in ("", "/alt"):
            routes += [
                ("GET", f"{prefix}/v2/requests/{{id}}/status", self.status),
                ("GET", f"{prefix}/v2/requests/{{id}}", self.result),
            ]
        return routes

    def next_poll(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """Answer the next status/result request with `status`/`body` (bytes are sent raw)."""
        self.poll_replies.append((status, body, headers or {}))

    def error(self, status: int, message: str) -> web.Response:
        return self.json({"error": message}, status)

    def _auth_problem(self, request: web.Request) -> web.Response | None:
        if "Authorization" in request.headers:
            return self.error(401, "Unauthorized. API key is invalid or may have expired")
        key = request.headers.get("x-api-key")
        if key is None:
            return self.error(401, "Missing Authorization or x-api-key in header")
        if key != self.api_key:
            return self.error(401, "Unauthorized. API key is invalid or may have expired")
        return None

    async def _checked_body(self, request: web.Request) -> tuple[Any, web.Response | None]:
        refused = self._auth_problem(request)
        if refused is not None:
            return None, refused
        if request.content_type != "application/json":
            return None, self.error(406, "Invalid content type")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return None, self.error(400, "body is not JSON")
        problems = body_problems(body, image=request.path.endswith(IMAGE_MODEL))
        if problems:
            return None, self.error(400, "; ".join(problems))
        return body, None

    def link(self, job_id: str, suffix: str = "") -> str:
        origin = self.link_origin or self.base_url
        return f"{origin}{self.link_prefix}/v2/requests/{job_id}{suffix}"

    async def create_v2(self, request: web.Request) -> web.StreamResponse:
        if self.v2_missing == 404:
            self.creates += 1
            return self.error(404, f"Model {MODEL} not found")
        if self.v2_missing == 405:
            self.creates += 1
            return web.Response(status=405, text=HTML_405, content_type="text/html")
        scripted = await self.create_behaviour(request)
        if scripted is not None:
            return scripted
        body, refused = await self._checked_body(request)
        if refused is not None:
            return refused
        job = FakeJob(self.new_id(), body, list(self.default_script))
        self.jobs[job.id] = job
        return self.json(
            {
                "request_id": job.id,
                "status": "QUEUED",
                "poll_url": self.link(job.id, "/status"),
                "status_url": self.link(job.id, "/status"),
                "response_url": self.link(job.id),
            }
        )

    def _metrics(self, done: bool) -> dict[str, Any]:
        metrics: dict[str, Any] = {"queue_time": 1.5, "inference_time": 201.2, "total_time": 202.7}
        if done:
            metrics |= {"cost": 0.84, "remaining_credits": 41.16}
        return metrics

    def _failed(self, job: FakeJob) -> web.Response:
        return self.json(
            {
                "request_id": job.id,
                "status": "FAILED",
                "error": job.error,
                "metrics": self._metrics(False),
            },
            self.failed_http,
        )

    def _scripted_poll(self) -> web.Response | None:
        if not self.poll_replies:
            return None
        status, body, headers = self.poll_replies.popleft()
        if isinstance(body, bytes):
            return web.Response(
                status=status, body=body, content_type="application/json", headers=headers
            )
        return web.Response(
            status=status, text=json.dumps(body), content_type="application/json", headers=headers
        )

    def _job(self, request: web.Request) -> tuple[FakeJob | None, web.Response | None]:
        refused = self._auth_problem(request) or self._scripted_poll()
        if refused is not None:
            return None, refused
        job_id = request.match_info["id"]
        job = self.jobs.get(job_id)
        if job is None or job_id in self.expired_requests:
            return None, self.error(404, f"Request {job_id} not found")
        return job, None

    async def status(self, request: web.Request) -> web.Response:
        job, answer = self._job(request)
        if job is None:
            assert answer is not None
            return answer
        word = WORDS.get(job.advance(), "QUEUED")
        if word == "FAILED":
            return self._failed(job)
        return self.json(
            {"request_id": job.id, "status": word, "metrics": self._metrics(word == "COMPLETED")}
        )

    async def result(self, request: web.Request) -> web.Response:
        job, answer = self._job(request)
        if job is None:
            assert answer is not None
            return answer
        word = WORDS.get(job.state, "QUEUED")
        if word == "FAILED":
            return self._failed(job)
        if word != "COMPLETED":
            return self.json({"request_id": job.id, "status": word})
        return self.json(
            {
                "request_id": job.id,
                "status": "COMPLETED",
                "output": self.file_url(job.id),
                "video": self.file_url(job.id),
                "metrics": self._metrics(True),
            }
        )

    @staticmethod
    def _v1_json(data: Any, headers: dict[str, str]) -> web.Response:
        return web.Response(text=json.dumps(data), content_type="application/json", headers=headers)

    async def create_v1(self, request: web.Request) -> web.StreamResponse:
        scripted = await self.create_behaviour(request)
        if scripted is not None:
            return scripted
        body, refused = await self._checked_body(request)
        if refused is not None:
            return refused
        if self.v1_delay_s:
            await asyncio.sleep(self.v1_delay_s)
        job = FakeJob(self.new_id(), body, ["succeeded"])
        self.jobs[job.id] = job
        accounting = {"x-request-id": job.id, "x-remaining-credits": "41.16", "x-cost": "0.84"}
        encoded = base64.b64encode(self.video_bytes).decode()
        match self.v1_reply:
            case "bytes":
                return web.Response(
                    body=self.video_bytes, content_type="video/mp4", headers=accounting
                )
            case "octet":
                return web.Response(body=self.video_bytes, content_type="application/octet-stream")
            case "output_url":
                return self._v1_json({"output": self.file_url(job.id)}, accounting)
            case "video_url":
                return self._v1_json(
                    {"video": self.file_url(job.id), "status": "COMPLETED"}, accounting
                )
            case "base64":
                return self._v1_json({"video": encoded}, accounting)
            case "data_uri":
                return self._v1_json({"output": f"data:video/mp4;base64,{encoded}"}, accounting)
            case "truncated":
                response = web.StreamResponse(headers={"Content-Type": "video/mp4", **accounting})
                response.content_length = len(self.video_bytes) + 4096
                await response.prepare(request)
                await response.write(self.video_bytes)
                await asyncio.sleep(0.05)
                if request.transport is not None:
                    request.transport.abort()
                return response
        raise AssertionError(f"unknown v1_reply {self.v1_reply!r}")
