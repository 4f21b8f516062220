"""Kling official API double, legacy surface (shared/reference/kling_official_and_i2v.md section 1).

Every route wants `Authorization: Bearer <JWT>`: HS256, header {"alg": "HS256", "typ": "JWT"},
claims iss = access key, exp, nbf, signed with the secret key. The double checks it with its own
HMAC code (not PyJWT, not the project's) against its own clock (`clock`), and answers HTTP 401 with
code 1001 (no header), 1002 (invalid: format, signature, issuer, claims), 1003 (not yet valid) or
1004 (expired). Every token it accepted is kept in `tokens` (header, claims).

POST /v1/videos/text2video    {model_name: "kling-v3", prompt, negative_prompt, multi_shot, shot_type
                               customize|intelligence, multi_prompt [{index, prompt, duration: str}],
                               voice_list [{voice_id}] (needs sound "on"), sound on|off, mode std|pro,
                               aspect_ratio 16:9|9:16|1:1, duration "3".."15", callback_url,
                               external_task_id, watermark_info}
POST /v1/videos/image2video   the same without aspect_ratio, plus image (URL or base64 without a
                               data: prefix; a JPEG or PNG) and image_tail (not with multi_shot)
  -> {"code": 0, "message": "SUCCEED", "request_id", "data": {task_id, task_status: "submitted",
      task_info: {external_task_id}, created_at, updated_at}}
GET  /v1/videos/{kind}/{task_id} -> {"code": 0, ..., "data": {task_id, task_status
      submitted|processing|succeed|failed, task_status_msg, task_info, task_result: {videos:
      [{id, url, watermark_url, duration: "5.1"}]}, watermark_info, final_unit_deduction, …}}
      (a task of the other kind is 404 code 1203, as the real paths must match the create)
Errors: {"code", "message", "request_id"} with the HTTP status of the official table; `cfg_scale`
and unknown fields are refused (1201) to keep the adapter to the v3 field list. More live tasks
than `max_parallel` is 429 code 1303 "parallel task over resource pack limit".
Callbacks: the flat legacy task body; with `webhook_secret` set, signed as Standard Webhooks.
With `render_s` set, a task renders on the vendor's clock instead of by polls: it stays
"processing" for `render_s` seconds, then succeeds and the double POSTs its callback to
`callback_url` once (the receiver's status, or 0 when nothing answered, in `webhook_results`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from tests.provider_doubles.base import FakeJob, VendorDouble

ACCESS_KEY = "AKklingtest0123456789"
SECRET_KEY = "SKklingsecret-abcdefghijklmnop"
MODEL_NAMES = (
    "kling-v1",
    "kling-v1-6",
    "kling-v2-master",
    "kling-v2-1-master",
    "kling-v2-5-turbo",
    "kling-v2-6",
    "kling-v3",
)
COMMON_FIELDS = {
    "model_name",
    "prompt",
    "negative_prompt",
    "multi_shot",
    "shot_type",
    "multi_prompt",
    "voice_list",
    "sound",
    "mode",
    "duration",
    "callback_url",
    "external_task_id",
    "watermark_info",
}
FIELDS = {
    "text2video": COMMON_FIELDS | {"aspect_ratio"},
    "image2video": COMMON_FIELDS | {"image", "image_tail"},
}
DURATIONS = {str(n) for n in range(3, 16)}
WORDS = {
    "queued": "submitted",
    "running": "processing",
    "succeeded": "succeed",
    "failed": "failed",
}
HTTP_OF_CODE = {
    **dict.fromkeys(range(1000, 1005), 401),
    **dict.fromkeys((1100, 1101, 1102, 1302, 1303, 1304), 429),
    1103: 403,
    1200: 400,
    1201: 400,
    1202: 404,
    1203: 404,
    1300: 400,
    1301: 400,
    5000: 500,
    5001: 503,
    5002: 504,
}
RISK_CONTROL = "Failure to pass the risk control system"


@dataclass
class KlingJob(FakeJob):
    kind: str = "text2video"
    created_at_ms: int = 0


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(claims: dict[str, Any], secret: str = SECRET_KEY) -> str:
    """A JWT made by the double's own code (for tests that send their own tokens, or compare the
    adapter's): compact JSON, the claims in the order given, as JWT libraries write them."""
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(signature)}"


def _is_image(data: bytes) -> bool:
    return data.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"))


def image_problem(value: Any, field: str) -> str | None:
    """Why `value` is not a valid image field (a URL, or plain base64 of a JPEG/PNG)."""
    if not isinstance(value, str) or not value:
        return f"{field} must be a non-empty string"
    if value.startswith(("https://", "http://")):
        return None
    if value.startswith("data:"):
        return f"{field}: base64 must not carry a data:image/...;base64, prefix"
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return f"{field} is neither a URL nor valid base64"
    if not _is_image(decoded):
        return f"{field} is not a jpg/jpeg/png image"
    if len(decoded) > 10 * 1024 * 1024:
        return f"{field} is larger than 10MB"
    return None


def body_problems(kind: str, data: Any) -> list[str]:
    """What the documented v3 schema refuses (code 1201 with the message)."""
    if not isinstance(data, dict):
        return ["body must be a JSON object"]
    problems = [f"unknown field {k}" for k in data if k not in FIELDS[kind]]
    if "cfg_scale" in data:
        problems.append("cfg_scale is only supported by kling-v1.x models")
    if data.get("model_name", "kling-v1") not in MODEL_NAMES:
        problems.append(f"model_name {data.get('model_name')!r} is not supported")
    multi = data.get("multi_shot", False)
    if not isinstance(multi, bool):
        problems.append("multi_shot must be a boolean")
    shot_type = data.get("shot_type")
    if multi and shot_type not in ("customize", "intelligence"):
        problems.append("shot_type must be customize or intelligence when multi_shot is true")
    if not multi and ("shot_type" in data or "multi_prompt" in data):
        problems.append("shot_type and multi_prompt need multi_shot")
    prompt = data.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > 2500):
        problems.append("prompt must be a string of at most 2500 characters")
    needs_prompt = kind == "text2video" and not (multi and shot_type == "customize")
    if needs_prompt and not (isinstance(prompt, str) and prompt.strip()):
        problems.append("prompt is required")
    duration = data.get("duration", "5")
    if duration not in DURATIONS:
        problems.append(f"duration must be a string '3'..'15', got {duration!r}")
    if multi and shot_type == "customize":
        problems += _multi_prompt_problems(data.get("multi_prompt"), duration)
    negative = data.get("negative_prompt")
    if negative is not None and (not isinstance(negative, str) or len(negative) > 2500):
        problems.append("negative_prompt must be a string of at most 2500 characters")
    if data.get("sound", "off") not in ("on", "off"):
        problems.append("sound must be on or off")
    if "voice_list" in data:
        voices = data["voice_list"]
        if (
            not isinstance(voices, list)
            or not 1 <= len(voices) <= 2
            or not all(
                isinstance(v, dict) and set(v) == {"voice_id"} and isinstance(v["voice_id"], str)
                for v in voices
            )
        ):
            problems.append("voice_list must be 1..2 objects {voice_id}")
        if data.get("sound") != "on":
            problems.append("voice_list needs sound on")
    if data.get("mode", "std") not in ("std", "pro"):
        problems.append("mode must be std or pro")
    if "aspect_ratio" in data and data["aspect_ratio"] not in ("16:9", "9:16", "1:1"):
        problems.append("aspect_ratio must be 16:9, 9:16 or 1:1")
    if "callback_url" in data and not str(data["callback_url"]).startswith(("http://", "https://")):
        problems.append("callback_url must be a URL")
    if kind == "image2video":
        problem = image_problem(data.get("image"), "image")
        if problem:
            problems.append(problem)
        if "image_tail" in data:
            tail = image_problem(data["image_tail"], "image_tail")
            if tail:
                problems.append(tail)
            if multi:
                problems.append("image_tail cannot be used with multi_shot")
    return problems


def _multi_prompt_problems(shots: Any, duration: Any) -> list[str]:
    if not isinstance(shots, list) or not 1 <= len(shots) <= 6:
        return ["multi_prompt must be a list of 1..6 shots"]
    for number, shot in enumerate(shots, start=1):
        if (
            not isinstance(shot, dict)
            or set(shot) != {"index", "prompt", "duration"}
            or shot["index"] != number
            or not isinstance(shot["prompt"], str)
            or len(shot["prompt"]) > 512
            or not isinstance(shot["duration"], str)
            or not shot["duration"].isdigit()
            or int(shot["duration"]) < 1
        ):
            return [f"bad multi_prompt item {shot!r}"]
    if str(sum(int(shot["duration"]) for shot in shots)) != duration:
        return ["the multi_prompt durations must add up to duration"]
    return []


class KlingDouble(VendorDouble):
    name = "kling"

    def __init__(self) -> None:
        super().__init__(default_script=["queued", "running", "succeeded"])
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.clock: Callable[[], float] = time.time
        self.webhook_secret: str | None = None
        self.max_parallel: int | None = None
        self.peak_live = 0  # the most tasks live at once
        self.over_parallel = 0  # creates refused with 1303 (over max_parallel)
        self.tokens: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.refused_tokens: list[int] = []  # the codes of refused tokens, in order
        self.poll_replies: deque[tuple[int, Any]] = deque()
        self._task_ids = itertools.count(867283741759111202)
        self.render_s: float | None = None  # set: tasks finish on their own and call back
        self._renders: set[asyncio.Task[None]] = set()

    def new_id(self) -> str:
        return str(next(self._task_ids))

    async def stop(self) -> None:
        for render in self._renders:
            render.cancel()
        await asyncio.gather(*self._renders, return_exceptions=True)
        await super().stop()

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", "/v1/videos/{kind}", self.create),
            ("GET", "/v1/videos/{kind}/{id}", self.query),
        ]

    def envelope(self, code: int, message: str, data: Any = None) -> dict[str, Any]:
        body: dict[str, Any] = {"code": code, "message": message, "request_id": str(uuid.uuid4())}
        if data is not None:
            body["data"] = data
        return body

    def error(self, code: int, message: str, status: int | None = None) -> web.Response:
        return self.json(self.envelope(code, message), status or HTTP_OF_CODE.get(code, 400))

    def next_error(
        self, code: int, message: str, *, status: int | None = None, headers: Any = None
    ) -> None:
        """Answer the next create with Kling error `code`."""
        self.next_create(
            "status", status or HTTP_OF_CODE.get(code, 400), self.envelope(code, message), headers
        )

    def next_poll(self, status: int, body: Any) -> None:
        """Answer the next query with `status`/`body` (bytes are sent raw)."""
        self.poll_replies.append((status, body))

    # -- auth -------------------------------------------------------------------------------

    def _auth_problem(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if not header:
            return self._refuse(1001, "Authorization header is empty")
        if not header.startswith("Bearer ") or header.count(" ") != 1:
            return self._refuse(1002, "Authorization is invalid")
        parts = header.removeprefix("Bearer ").split(".")
        if len(parts) != 3:
            return self._refuse(1002, "Authorization is invalid")
        try:
            head = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, binascii.Error):
            return self._refuse(1002, "Authorization is invalid")
        expected = hmac.new(
            self.secret_key.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256
        ).digest()
        if (
            head != {"alg": "HS256", "typ": "JWT"}
            or not hmac.compare_digest(signature, expected)
            or not isinstance(claims, dict)
            or claims.get("iss") != self.access_key
            or not all(isinstance(claims.get(k), int) for k in ("exp", "nbf"))
        ):
            return self._refuse(1002, "Authorization is invalid")
        now = self.clock()
        if now < claims["nbf"]:
            return self._refuse(1003, "Authorization is not yet valid")
        if now >= claims["exp"]:
            return self._refuse(1004, "Authorization has expired")
        self.tokens.append((head, claims))
        return None

    def _refuse(self, code: int, message: str) -> web.Response:
        self.refused_tokens.append(code)
        return self.error(code, message)

    # -- tasks ------------------------------------------------------------------------------

    def live(self) -> int:
        return sum(1 for job in self.jobs.values() if job.state not in ("succeeded", "failed"))

    async def create(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        if kind not in FIELDS:
            return self.error(1202, f"unknown API {kind}")
        scripted = await self.create_behaviour(request)
        if scripted is not None:
            return scripted
        refused = self._auth_problem(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self.error(1200, "request body is not JSON")
        problems = body_problems(kind, body)
        if problems:
            return self.error(1201, "; ".join(problems))
        if self.max_parallel is not None and self.live() >= self.max_parallel:
            self.over_parallel += 1
            return self.error(1303, "parallel task over resource pack limit")
        job = KlingJob(
            self.new_id(),
            body,
            list(self.default_script),
            webhook_url=body.get("callback_url"),
            kind=kind,
            created_at_ms=int(self.clock() * 1000),
        )
        self.jobs[job.id] = job
        self.peak_live = max(self.peak_live, self.live())
        if self.render_s is not None:
            job.script = ["running"]
            render = asyncio.create_task(self._render(job, self.render_s))
            self._renders.add(render)
            render.add_done_callback(self._renders.discard)
        data = {
            "task_id": job.id,
            "task_info": {"external_task_id": body.get("external_task_id", "")},
            "task_status": "submitted",
            "created_at": job.created_at_ms,
            "updated_at": job.created_at_ms,
        }
        return self.json(self.envelope(0, "SUCCEED", data))

    def task(self, job: KlingJob, state: str) -> dict[str, Any]:
        word = WORDS.get(state, state)
        data: dict[str, Any] = {
            "task_id": job.id,
            "task_status": word,
            "task_status_msg": job.error if word == "failed" else "",
            "task_info": {"external_task_id": job.request.get("external_task_id", "")},
            "watermark_info": {"enabled": False},
            "created_at": job.created_at_ms,
            "updated_at": int(self.clock() * 1000),
        }
        if word == "succeed":
            data["task_result"] = {
                "videos": [
                    {
                        "id": f"video-{job.id}",
                        "url": self.file_url(job.id),
                        "watermark_url": f"{self.base_url}/files/{job.id}-wm.mp4",
                        "duration": f"{job.request.get('duration', '5')}.1",
                    }
                ]
            }
            data["final_unit_deduction"] = "4"
        return data

    async def query(self, request: web.Request) -> web.StreamResponse:
        refused = self._auth_problem(request)
        if refused is not None:
            return refused
        if self.poll_replies:
            status, body = self.poll_replies.popleft()
            if isinstance(body, bytes):
                return web.Response(status=status, body=body, content_type="application/json")
            return self.json(body, status)
        wanted = request.match_info["id"]
        job = self.jobs.get(wanted) or next(  # the path takes task_id or external_task_id
            (j for j in self.jobs.values() if j.request.get("external_task_id") == wanted), None
        )
        if not isinstance(job, KlingJob) or job.kind != request.match_info["kind"]:
            return self.error(1203, "task not found")
        return self.json(self.envelope(0, "SUCCEED", self.task(job, job.advance())))

    async def _render(self, job: KlingJob, render_s: float) -> None:
        """The vendor's own work on a task: `render_s` of rendering, then success and one
        callback (when the task named a callback_url)."""
        await asyncio.sleep(render_s)  # the simulated render time at the vendor
        job.script, job.step = ["succeeded"], 0
        if job.webhook_url:
            try:
                await self.send_callback(job)
            except aiohttp.ClientError:
                self.webhook_results.append(0)

    # -- callbacks --------------------------------------------------------------------------

    def callback_body(self, job: KlingJob, state: str = "succeeded") -> bytes:
        data = self.task(job, state)
        data["final_balance_deduction"] = {"quota": "0", "list_price": "0"}
        return json.dumps(data).encode()

    @staticmethod
    def sign(secret: str, body: bytes, msg_id: str, timestamp: int) -> dict[str, str]:
        """Standard Webhooks headers, computed by the double's own code."""
        key = base64.b64decode(secret.removeprefix("whsec_"))
        signed = f"{msg_id}.{timestamp}.".encode() + body
        digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": f"v1,{digest}",
        }

    async def send_callback(
        self,
        job: KlingJob,
        url: str | None = None,
        *,
        state: str = "succeeded",
        msg_id: str = "msg_kling_0001",
        timestamp: int | None = None,
        body: bytes | None = None,
    ) -> int:
        """POST the callback for `job` as Kling would; return the receiver's HTTP status."""
        payload = body if body is not None else self.callback_body(job, state)
        headers = {"Content-Type": "application/json"}
        if self.webhook_secret:
            stamp = timestamp if timestamp is not None else int(self.clock())
            headers |= self.sign(self.webhook_secret, payload, msg_id, stamp)
        async with (
            aiohttp.ClientSession() as session,
            session.post(url or job.webhook_url or "", data=payload, headers=headers) as response,
        ):
            self.webhook_results.append(response.status)
            return response.status
