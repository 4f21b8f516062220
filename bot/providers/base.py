"""The interface every video provider adapter implements, and the values it returns.

Adapters translate between the canonical `VideoRequest` and one vendor's wire format. They never
touch the ledger, the job store or Discord; every failure they report is a `ProviderError`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from bot.providers.capabilities import CAPABILITIES, Capabilities
from bot.providers.errors import ProviderError
from bot.providers.http import ProviderHttp
from bot.providers.images import ImageInputs
from bot.request import VideoRequest
from bot.settings import ProviderSettings


class ProviderState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (ProviderState.SUCCEEDED, ProviderState.FAILED, ProviderState.CANCELLED)


@dataclass(frozen=True)
class ProviderStatus:
    """A vendor's report on one job, in canonical terms."""

    state: ProviderState
    vendor_status: str = ""
    progress_pct: int | None = None
    queue_position: int | None = None
    eta_s: float | None = None
    video_url: str | None = None
    error: ProviderError | None = None

    def __post_init__(self) -> None:
        if self.state is ProviderState.SUCCEEDED and not self.video_url:
            raise ValueError("a succeeded status needs a video URL")


@dataclass(frozen=True)
class ProviderJob:
    """What identifies a job at the vendor; `data` keeps URLs the vendor told us to use."""

    id: str
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Submission:
    job: ProviderJob
    status: ProviderStatus


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook: a hint that a job changed. The status endpoint stays the truth."""

    provider_job_id: str | None
    delivery_id: str | None = None  # the vendor's id for this delivery, when it sends one
    status: ProviderStatus | None = None


Headers = Mapping[str, str]


class Recovery(StrEnum):
    """How a create whose answer was lost (a crash, a cut connection) is found again."""

    RESUBMIT = "resubmit"  # creating again with the same client_ref makes no second job
    LOOKUP = "lookup"  # find(client_ref) asks the vendor for the job the create made
    NONE = "none"  # neither: only a webhook or the deadline settles it


class VideoProvider(ABC):
    """One vendor's Kling v3 Pro text-to-video (and, where offered, image-to-video) API."""

    name: ClassVar[str]
    recovery: ClassVar[Recovery] = Recovery.NONE

    def __init__(
        self,
        settings: ProviderSettings,
        http: ProviderHttp,
        *,
        webhook_tolerance_s: float = 300.0,
        now_s: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.http = http
        self.webhook_tolerance_s = webhook_tolerance_s
        self.now_s = now_s

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES[self.name]

    @property
    def files_dir(self) -> Path | None:
        """Where this adapter keeps clips itself: its `file://` links are downloaded only from
        under this directory (None: it keeps none)."""
        return None

    @property
    def api_key(self) -> str:
        key = self.settings.api_key
        return key.get_secret_value() if key is not None else ""

    @abstractmethod
    async def submit(
        self,
        request: VideoRequest,
        *,
        webhook_url: str | None,
        images: ImageInputs | None = None,
        client_ref: str | None = None,
    ) -> Submission:
        """Create the job. Raises ProviderError; `outcome_unknown` if it may exist anyway.

        `images` carries the contents of `request.image`/`request.end_image` (image-to-video).
        `client_ref` is the bot's own id for the job: vendors that take an id from the caller
        get it, so a lost answer can be recovered (see `recovery`).
        """

    @abstractmethod
    async def poll(self, job: ProviderJob) -> ProviderStatus:
        """Ask the vendor where the job is."""

    async def find(self, client_ref: str, request: VideoRequest) -> Submission | None:
        """The job a create with `client_ref` made, or None if the vendor made none (only for
        `recovery` LOOKUP). Raises ProviderError when the vendor cannot tell now."""
        raise NotImplementedError(f"{self.name} cannot look up a create")

    async def cancel(self, job: ProviderJob) -> bool:
        """Ask the vendor to stop the job; False where the vendor cannot cancel."""
        return False

    @abstractmethod
    def parse_webhook(self, headers: Headers, body: bytes) -> WebhookEvent:
        """Verify (raise WebhookAuthError) and parse (raise WebhookParseError) a webhook."""

    async def prepare_webhooks(self) -> None:
        """Fetch what webhook verification needs (keys, secrets) before webhooks arrive."""
        return

    async def close(self) -> None:
        return None
