"""What the shared provider contract suite needs to know about one vendor: a `VendorCase`.

A case holds the vendor's own facts as data (wire bodies, error replies, status words, how its
double is scripted); tests/test_provider_contract.py holds the behaviour every vendor shares and
checks it against each case. `...` in an expectation means "not checked for this vendor".
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType
from typing import Any, Protocol

from hypothesis import strategies as st

from bot.providers.base import Headers as ReceivedHeaders
from bot.providers.base import (
    ProviderJob,
    ProviderState,
    ProviderStatus,
    VideoProvider,
    WebhookEvent,
)
from bot.providers.capabilities import CAPABILITIES, Capabilities
from bot.providers.errors import ErrorKind
from bot.providers.http import ProviderHttp
from bot.request import VideoRequest
from tests.provider_doubles.base import FakeJob, VendorDouble

JsonObject = dict[str, Any]
Headers = dict[str, str]


class Parser(Protocol):
    """What every adapter reads outside input with (status replies and webhooks)."""

    def parse_status(self, data: JsonObject) -> ProviderStatus: ...

    def parse_webhook(self, headers: ReceivedHeaders, body: bytes) -> WebhookEvent: ...


@dataclass(frozen=True)
class Setup:
    """How a test wants its adapter built."""

    origin: str  # http://127.0.0.1:<port> of the vendor double (which may not listen yet)
    key: str
    route: str = "default"
    now_s: float | None = None  # a fixed clock (None: the real one)
    work_dir: Path | None = None
    reply_timeout_s: float = 5.0  # for adapters with a client of their own (Segmind v1)

    def clock(self) -> Callable[[], float]:
        """The adapter's clock: fixed at `now_s` when the test gives one."""
        now = self.now_s
        return time.time if now is None else lambda: now


@dataclass(frozen=True)
class Route:
    """One way the adapter creates a job (most vendors have one; Segmind has auto, v2 and v1)."""

    name: str
    path: str  # where the double receives the create
    first_job_id: str  # the id the adapter reports for the double's first job


@dataclass(frozen=True)
class Reply:
    """A scripted HTTP error reply, and the error the adapter must make of it."""

    status: int
    body: Any
    kind: ErrorKind
    headers: Mapping[str, str] = field(default_factory=dict)
    retry_after_s: float | None = None
    vendor_code: str | EllipsisType | None = ...
    detail_has: str = ""  # a text the error detail must contain
    detail_lacks: str = ""  # a text it must not contain


@dataclass(frozen=True)
class Failure:
    """A job that ran and failed at the vendor, and the error the adapter must report."""

    message: str
    kind: ErrorKind
    vendor_code: str | EllipsisType | None = ...  # scripted on the job where the vendor has codes
    status_code: int | EllipsisType | None = ...  # scripted where the vendor reports one (fal)
    word: str = "failed"  # the double's script word for the failure
    vendor_status: str = ""  # "" means the case's `failed_status`
    knobs: Mapping[str, Any] = field(default_factory=dict)  # vendor-only scripting, see the case


@dataclass(frozen=True)
class Signer:
    """How a vendor signs webhooks, for the forgery tests (all at provider_support.NOW)."""

    parser: Callable[[], Parser]  # an adapter that verifies what `sign` signs
    sign: Callable[..., Headers]  # (body, *, ts=NOW, ref="p1", wrong_key=False) -> headers
    sample: Callable[[str], bytes]  # a signed-able success body for a job id
    signature_header: str
    timestamp_header: str
    garbage_signature: str
    forgeries: Mapping[str, Callable[[bytes, Headers], tuple[bytes, Headers]]] = field(
        default_factory=dict
    )  # the vendor's own ways to forge, beyond the common ones
    # (job id, delivery id) a signed body must parse to; `ref` is what sign() put in its headers
    expected_event: Callable[[JsonObject, str], tuple[str | None, str | None]] | None = None
    # the background task that fetches keys or secrets, for adapters that have one
    background: Callable[[Any], object] | None = None
    # headers signed with the double's own live key or secret (adapters must fetch it first)
    sign_as_double: Callable[[VendorDouble, bytes, str], Headers] | None = None


@dataclass(frozen=True)
class Strictness:
    """Creates the vendor's double must accept and refuse, so no adapter passes on a lax double."""

    good: JsonObject  # a create body it accepts
    accepted: int  # with this status
    bad: tuple[JsonObject, ...]  # create bodies it refuses with `refused`
    refusal: Callable[[Any], object]  # true for the vendor's refusal reply body
    foreign_auth: Headers  # the key in another scheme: refused with 401
    refused: int = 422  # the HTTP status of a refused body (Kling: 400 with code 1201)


Send = Callable[[VendorDouble, FakeJob, str, bool, str], Awaitable[int]]


@dataclass(frozen=True)
class Webhooks:
    """A vendor's webhooks: how its double sends them and what its adapter must accept."""

    send: Send  # (double, job, url, success, variant) -> the receiver's HTTP status
    flag: Callable[[FakeJob], None]  # script the job to fail for a content-policy reason
    bodies: st.SearchStrategy[bytes]  # arbitrary deliveries for the property test
    headers: st.SearchStrategy[Headers]
    parsers: tuple[Callable[[], Parser], ...]  # webhook-parsing adapters (secret or not)
    variants: tuple[str, ...] = ("default",)  # delivery shapes the double can send
    delivery_ids: tuple[str | None, str | None] = (None, None)  # expected: (success, failure)
    failure_fields: Mapping[str, Any] = field(default_factory=dict)  # more on the failure's error
    garbage: tuple[bytes, ...] = ()  # bodies that must be refused with 400
    names_the_job: bool = True  # False: a delivery may leave the job to the URL token
    signer: Signer | None = None


def _same(word: str) -> str:
    return word


def _no_fields(word: str, state: ProviderState) -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True, kw_only=True)
class VendorCase:
    """Everything vendor-specific the shared contract suite needs (one entry in CASES)."""

    name: str
    double_type: Callable[[], VendorDouble]
    adapter: Callable[[ProviderHttp, Setup], VideoProvider]
    parser: Callable[[], Parser]  # an adapter built only to parse (no HTTP)
    api_key: str
    wrong_key: str
    key_header: tuple[str, str]  # (name, value) every authenticated call carries
    absent_headers: tuple[str, ...] = ()  # headers no call may carry
    hook: str  # the webhook URL the bot would give
    routes: tuple[Route, ...]  # the first is the adapter's default
    direct_route: str | None = None  # the route that reports create errors as they come, if
    # the default one may turn some into another call (Segmind's auto tries v1 after a v2 404)

    # the request on the wire
    plain_body: JsonObject  # the create body for PLAIN with `hook`
    plain_query: Mapping[str, str] = field(default_factory=dict)
    plain_job: Callable[[VendorDouble], ProviderJob]
    plain_status: Mapping[str, Any]  # fields of the submission's status
    wire: tuple[tuple[str, VideoRequest, JsonObject], ...]  # (label, request, body without hook)
    refused: tuple[tuple[str, VideoRequest, list[str]], ...] = ()  # (label, request, problems)

    # creates that fail
    create_ok: int  # the status of a successful create
    create_errors: tuple[Reply, ...]
    malformed_creates: tuple[bytes | JsonObject, ...]
    empty_account: Callable[[VendorDouble], None] | None = None  # leave too little credit

    # polling
    script: Mapping[str, str] = field(default_factory=dict)  # canonical -> the double's word
    polls: tuple[Mapping[str, Any], ...]  # status fields, poll by poll, of the default script
    poll_gets: Callable[[str], Sequence[tuple[str, Mapping[str, str]]]]  # (path, query) of those
    unknown_job: str
    not_found_code: str | EllipsisType | None = ...
    script_poll: Callable[[VendorDouble, Reply], None] | None = None  # answer the next poll
    poll_errors: tuple[Reply, ...] = ()
    failures: tuple[Failure, ...]
    fail_job: Callable[[VendorDouble, FakeJob, Failure], None]
    failed_status: str  # the vendor_status of a failed job
    exact_failure_detail: bool = True  # False: the detail only contains the vendor's message

    # statuses
    status_body: Callable[[str], JsonObject]  # a status reply with this word (video + error)
    status_words: tuple[tuple[str, ProviderState], ...]
    vendor_status: Callable[[str], str] = _same
    status_fields: Callable[[str, ProviderState], Mapping[str, Any]] = _no_fields
    status_error_detail: str | None = None  # the failure text status_body carries, if read
    unreadable_statuses: tuple[JsonObject, ...] = ()
    no_video_statuses: tuple[tuple[JsonObject, Mapping[str, Any]], ...] = ()
    progress_body: Callable[[Any], JsonObject] | None = None
    status_strategy: st.SearchStrategy[Any]

    strictness: Strictness | None = None  # for doubles that check the create schema

    # cancel: (method, path) of the cancel call for a job id, where the vendor can cancel
    cancel_call: Callable[[str], tuple[str, str]] | None = None

    webhooks: Webhooks | None = None

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES[self.name]

    def word(self, canonical: str) -> str:
        """The double's script word for a canonical state word."""
        return self.script.get(canonical, canonical)
