"""Kling's official API (Kuaishou), legacy `model_name` surface, with `model_name: "kling-v3"`.

Auth: a JWT (HS256, header {"alg": "HS256", "typ": "JWT"}, claims {"iss": access key, "exp":
now + 1800, "nbf": now - 5}) signed with the secret key by PyJWT, sent as `Authorization: Bearer
<token>`. One token is reused and made anew `TOKEN_RENEW_S` before it expires.

Create `POST {base}/v1/videos/text2video` (or `/v1/videos/image2video` with `image` and
`image_tail`: a URL, or plain base64 without a `data:` prefix). The body carries `mode` (pro =
1080p, std = 720p), `duration` as a string "3".."15", `sound` on|off, `negative_prompt`,
`voice_list` [{voice_id}], multi-shot as `multi_shot`/`shot_type` (customize|intelligence)/
`multi_prompt` [{index, prompt, duration: str}], `aspect_ratio` (text-to-video only: image-to-video
follows the image), `callback_url`. `cfg_scale` is v1.x only and never sent (the capability table
refuses it). Replies are `{"code", "message", "request_id", "data"}`; code 0 is success and the
create's `data.task_id` is the job. Poll `GET {base}/v1/videos/{kind}/{task_id}` (the kind of the
create, kept in `ProviderJob.data["kind"]`): `task_status` submitted|processing|succeed|failed,
`task_status_msg` says why a task failed, `task_result.videos[].url` is the clip (hotlink-protected
and deleted after 30 days: the pipeline downloads it at once). Kling has no cancel.

Business codes (section 1.8): 1000-1004 auth; 1100 account exception and 1103 no permission and
1304 IP whitelist (auth: an admin must act); 1101 arrears and 1102 resource pack used up (out of
funds: failover); 1200/1201 invalid parameters; 1202/1203 bad method/resource (invalid input on a
create, not found on a poll); 1300/1301 content policy; 1302 request rate and 1303 concurrency over
the resource pack (rate limited: wait Retry-After, else at least `BACKOFF_S`); 5000-5002 server
error/maintenance/timeout (transient). A non-zero code is an error whatever the HTTP status.

Callbacks: Kling POSTs the task on status changes to `callback_url` (the bot's per-job token URL).
With KLINGBOT_KLING_WEBHOOK_SECRET ("whsec_…") every delivery must carry valid Standard Webhooks
headers (webhook-id, webhook-timestamp within the tolerance, webhook-signature v1,<base64>; a
webhook-id is the delivery id). Without a secret Kling sends no signature and the URL token is the
only check. Bodies are read in every documented shape: the flat legacy task (official page), the
same wrapped in `{code, data}` (a third-party summary) and the new surface's `{id, status,
outputs}` (the doc's test vector).

Where the docs are uncertain [?]:
- `multi_prompt[].index` starts at 1 (the official example shows only the type).
- A canonical shot type `customize` without shots is a plain single-shot request; `intelligent`
  without shots is `multi_shot: true, shot_type: "intelligence"` with the prompt.
- The image-to-video prompt is optional (as in the older I2V docs).
- An image URL is sent when the bot serves the image publicly; otherwise base64.

Why one module of this length: it is one vendor's whole wire format (JWT, bodies, codes, callbacks), as for every other adapter.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import jwt

from bot.providers import _json
from bot.providers.base import (
    Headers,
    ProviderJob,
    ProviderState,
    ProviderStatus,
    Recovery,
    Submission,
    VideoProvider,
    WebhookEvent,
)
from bot.providers.errors import ErrorKind, ProviderError, WebhookParseError
from bot.providers.http import HttpReply, ProviderHttp, classify, failure_kind, retry_after_s
from bot.providers.images import ImageInput, ImageInputs, pick_image
from bot.providers.signing import verify_standard_webhook
from bot.request import VideoRequest
from bot.settings import KlingSettings, ProviderSettings

MODEL = "kling-v3"
MODES: dict[str, str] = {"720p": "std", "1080p": "pro"}
TOKEN_LIFETIME_S = 1800  # Kling's example: exp = now + 1800
TOKEN_NOT_BEFORE_S = 5  # nbf = now - 5 (clock skew)
TOKEN_RENEW_S = 300  # make a new token when the current one has less than this left
BACKOFF_S = 1.0  # "exponential backoff starting at >= 1 s" for 1302/1303
KINDS = ("text2video", "image2video")
# Kling's words for a task stopped by moderation ("risk control", "content security", in Chinese:
# 风控 risk control, 审核 review, 违规 violation, 敏感 sensitive)
_POLICY = re.compile(r"risk|content.?security|风控|审核|违规|敏感", re.IGNORECASE)

STATES = {
    "submitted": ProviderState.QUEUED,
    "processing": ProviderState.RUNNING,
    "succeed": ProviderState.SUCCEEDED,
    "succeeded": ProviderState.SUCCEEDED,  # the new surface's spelling (callbacks)
    "failed": ProviderState.FAILED,
}

CODES: dict[int, ErrorKind] = {
    **dict.fromkeys(range(1000, 1005), ErrorKind.AUTH),
    1100: ErrorKind.AUTH,  # account exception: an admin must look
    1101: ErrorKind.OUT_OF_FUNDS,  # account in arrears (postpaid)
    1102: ErrorKind.OUT_OF_FUNDS,  # resource pack used up or expired (prepaid)
    1103: ErrorKind.AUTH,  # no permission for this API or model
    1200: ErrorKind.INVALID_INPUT,
    1201: ErrorKind.INVALID_INPUT,
    1202: ErrorKind.INVALID_INPUT,
    1203: ErrorKind.INVALID_INPUT,
    1300: ErrorKind.CONTENT_POLICY,
    1301: ErrorKind.CONTENT_POLICY,
    1302: ErrorKind.RATE_LIMITED,
    1303: ErrorKind.RATE_LIMITED,
    1304: ErrorKind.AUTH,  # IP whitelist
    5000: ErrorKind.TRANSIENT,
    5001: ErrorKind.TRANSIENT,
    5002: ErrorKind.TRANSIENT,
}


def build_body(
    request: VideoRequest,
    *,
    start: ImageInput | None = None,
    end: ImageInput | None = None,
    audio_default: bool = False,
) -> dict[str, Any]:
    """The create body in Kling's field names and types (without `callback_url`)."""
    audio = audio_default if request.audio is None else request.audio
    body: dict[str, Any] = {
        "model_name": MODEL,
        "mode": MODES[request.resolution or "1080p"],
        "duration": str(request.duration_s),
        "sound": "on" if audio else "off",
    }
    if request.shots:
        body["multi_shot"] = True
        body["shot_type"] = "customize"
        body["multi_prompt"] = [
            {"index": number, "prompt": shot.prompt, "duration": str(shot.duration_s)}
            for number, shot in enumerate(request.shots, start=1)
        ]
    else:
        if request.prompt:
            body["prompt"] = request.prompt
        if request.shot_type == "intelligent":
            body["multi_shot"] = True
            body["shot_type"] = "intelligence"
    if request.negative_prompt:
        body["negative_prompt"] = request.negative_prompt
    if request.voice_ids:
        body["voice_list"] = [{"voice_id": voice} for voice in request.voice_ids]
    if start is None:
        body["aspect_ratio"] = request.aspect_ratio
    else:
        body["image"] = image_value(start)
        if end is not None:
            body["image_tail"] = image_value(end)
    return body


def image_value(image: ImageInput) -> str:
    """A public URL when there is one, else plain base64 (Kling refuses a `data:` prefix)."""
    return image.url or image.base64()


def kind_of(request: VideoRequest) -> str:
    return "image2video" if request.image is not None else "text2video"


class KlingProvider(VideoProvider):
    name = "kling"
    recovery = Recovery.LOOKUP  # creates carry external_task_id = the bot's job id

    def __init__(
        self,
        settings: ProviderSettings,
        http: ProviderHttp,
        *,
        webhook_tolerance_s: float = 300.0,
        now_s: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings, http, webhook_tolerance_s=webhook_tolerance_s, now_s=now_s)
        self._token = ""
        self._token_exp_s = 0

    # -- auth -------------------------------------------------------------------------------

    def _keys(self) -> tuple[str, str]:
        settings = self.settings
        if not isinstance(settings, KlingSettings):
            return "", ""
        access = settings.access_key.get_secret_value() if settings.access_key else ""
        secret = settings.secret_key.get_secret_value() if settings.secret_key else ""
        return access, secret

    def token(self) -> str:
        """The bearer JWT; a new one once the current one has less than TOKEN_RENEW_S left."""
        now = int(self.now_s())
        if self._token and now < self._token_exp_s - TOKEN_RENEW_S:
            return self._token
        access, secret = self._keys()
        if not access or not secret:
            raise ProviderError(
                ErrorKind.AUTH,
                "KLINGBOT_KLING_ACCESS_KEY and KLINGBOT_KLING_SECRET_KEY must both be set",
                provider=self.name,
            )
        exp = now + TOKEN_LIFETIME_S
        claims = {"iss": access, "exp": exp, "nbf": now - TOKEN_NOT_BEFORE_S}
        with warnings.catch_warnings():
            # the secret key's length is Kling's choice; newer PyJWT warns below 32 bytes
            warnings.filterwarnings("ignore", message="The HMAC key is", category=UserWarning)
            self._token = jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "JWT"})
        self._token_exp_s = exp
        return self._token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"}

    @property
    def _webhook_secret(self) -> str:
        secret = self.settings.webhook_secret
        return secret.get_secret_value() if secret is not None else ""

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
        if problems:  # nothing Kling can express: refuse before anything is billed
            raise ProviderError(ErrorKind.INVALID_INPUT, " ".join(problems), provider=self.name)
        start = pick_image(images, request.image, "start", provider=self.name)
        end = pick_image(images, request.end_image, "end", provider=self.name)
        body = build_body(
            request, start=start, end=end, audio_default=self.capabilities.audio_default
        )
        if webhook_url:
            body["callback_url"] = webhook_url
        if client_ref:
            body["external_task_id"] = client_ref  # unique per account: find() asks by it
        kind = kind_of(request)
        reply = await self.http.create(
            f"{self.settings.base_url}/v1/videos/{kind}",
            provider=self.name,
            headers=self._headers(),
            json_body=body,
        )
        data = self.read_reply(reply, creating=True)
        job_id = _json.text(data.get("task_id")) if isinstance(data, dict) else None
        if not isinstance(data, dict) or not job_id:
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"create reply has no data.task_id: {reply.text[:200]!r}",
                provider=self.name,
                status_code=reply.status,
                outcome_unknown=True,
            )
        try:
            status = self.parse_task(data)
        except ProviderError:
            status = ProviderStatus(ProviderState.QUEUED, "submitted")
        return Submission(ProviderJob(job_id, {"kind": kind}), status)

    async def find(self, client_ref: str, request: VideoRequest) -> Submission | None:
        """The task a create with `external_task_id` = `client_ref` made (the query path takes
        either id), or None if Kling has no such task."""
        kind = kind_of(request)
        try:
            status = await self._query(kind, client_ref)
        except ProviderError as error:
            if error.kind is ErrorKind.NOT_FOUND:
                return None
            raise
        task, data = status
        return Submission(ProviderJob(task, {"kind": kind}), data)

    async def _query(self, kind: str, task_or_external_id: str) -> tuple[str, ProviderStatus]:
        reply = await self.http.call(
            "GET",
            f"{self.settings.base_url}/v1/videos/{kind}/{quote(task_or_external_id, safe='')}",
            provider=self.name,
            headers=self._headers(),
        )
        data = self.read_reply(reply, creating=False)
        task_id = _json.text(data.get("task_id")) if isinstance(data, dict) else None
        if not isinstance(data, dict) or not task_id:
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"query reply has no data.task_id: {reply.text[:200]!r}",
                provider=self.name,
                status_code=reply.status,
            )
        return task_id, self.parse_task(data)

    async def poll(self, job: ProviderJob) -> ProviderStatus:
        kind = job.data.get("kind", "text2video")
        if kind not in KINDS:
            kind = "text2video"
        reply = await self.http.call(
            "GET",
            f"{self.settings.base_url}/v1/videos/{kind}/{quote(job.id, safe='')}",
            provider=self.name,
            headers=self._headers(),
        )
        data = self.read_reply(reply, creating=False)
        if not isinstance(data, dict):
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"query reply has no data object: {reply.text[:200]!r}",
                provider=self.name,
                status_code=reply.status,
            )
        return self.parse_task(data)

    def parse_task(self, data: dict[str, Any]) -> ProviderStatus:
        """Read a task object (legacy `task_status`, or the new surface's `status`)."""
        raw = _json.text(data.get("task_status")) or _json.text(data.get("status")) or ""
        state = STATES.get(raw.lower())
        if state is None:
            raise ProviderError(
                ErrorKind.UNKNOWN, f"unknown task status {raw!r}", provider=self.name
            )
        if state is ProviderState.SUCCEEDED:
            url = _json.find_url(_json.dig(data, "task_result", "videos")) or _json.find_url(
                data.get("outputs")
            )
            if not url:  # finished without a link yet: not usable, keep polling
                return ProviderStatus(ProviderState.RUNNING, raw)
            return ProviderStatus(state, raw, progress_pct=100, video_url=url)
        if state is ProviderState.FAILED:
            message = (
                _json.text(data.get("task_status_msg"))
                or _json.text(data.get("message"))
                or "the task failed"
            )
            kind = ErrorKind.CONTENT_POLICY if _POLICY.search(message) else failure_kind(message)
            error = ProviderError(kind, message, provider=self.name)
            return ProviderStatus(state, raw, error=error)
        return ProviderStatus(state, raw)

    # -- callbacks --------------------------------------------------------------------------

    def parse_webhook(self, headers: Headers, body: bytes) -> WebhookEvent:
        delivery_id = None
        if self._webhook_secret:
            delivery_id = verify_standard_webhook(
                headers,
                body,
                self._webhook_secret,
                now_s=self.now_s(),
                tolerance_s=self.webhook_tolerance_s,
                provider=self.name,
            )
        data = _json.loads_object(body)
        if data is None:
            raise WebhookParseError("callback body is not a JSON object", provider=self.name)
        wrapped = data.get("data")
        task: dict[str, Any] = wrapped if isinstance(wrapped, dict) else data
        job_id = _json.text(task.get("task_id")) or _json.text(task.get("id"))
        if not job_id:
            raise WebhookParseError("callback has no task_id", provider=self.name)
        try:
            status = self.parse_task(task)
        except ProviderError as error:
            raise WebhookParseError(error.detail, provider=self.name) from None
        return WebhookEvent(job_id, delivery_id, status)

    # -- errors -----------------------------------------------------------------------------

    def read_reply(self, reply: HttpReply, *, creating: bool) -> Any:
        """`data` of a reply whose code is 0; else the mapped ProviderError."""
        envelope = _json.loads_object(reply.body)
        code = _code(envelope)
        if reply.status < 300 and code == 0 and envelope is not None:
            return envelope.get("data")
        if reply.status < 300 and (envelope is None or code is None):
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"unreadable reply (HTTP {reply.status}): {reply.text[:200]!r}",
                provider=self.name,
                status_code=reply.status,
                outcome_unknown=creating,
            )
        raise self._error(reply, envelope, code, creating=creating)

    def _error(
        self,
        reply: HttpReply,
        envelope: dict[str, Any] | None,
        code: int | None,
        *,
        creating: bool,
    ) -> ProviderError:
        base = classify(reply.status, reply.text, reply.headers, provider=self.name)
        if code is None or code == 0:
            return base
        message = _json.text(envelope.get("message")) if envelope else None
        kind = CODES.get(code)
        if kind is None:
            kind = base.kind if reply.status >= 300 else ErrorKind.UNKNOWN
        elif code in (1202, 1203) and not creating:
            kind = ErrorKind.NOT_FOUND  # the task (or its kind) is unknown
        retry: float | None = None
        if kind is ErrorKind.RATE_LIMITED:
            retry = max(BACKOFF_S, retry_after_s(reply.headers, now_s=self.now_s()) or 0.0)
        elif kind is ErrorKind.TRANSIENT:
            retry = retry_after_s(reply.headers, now_s=self.now_s())
        return ProviderError(
            kind,
            f"HTTP {reply.status} code {code}: {message or 'no message'}",
            provider=self.name,
            status_code=reply.status,
            retry_after_s=retry,
            vendor_code=str(code),
        )


def _code(envelope: dict[str, Any] | None) -> int | None:
    """The business code of a reply (None when it has none)."""
    if envelope is None:
        return None
    value = envelope.get("code")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        return int(value)  # ASCII digits only: "²" is a digit to str.isdigit, not to int()
    return None
