"""Provider errors: one taxonomy for every vendor (their place in the whole tree: bot/errors.py).

ProviderError (kind: ErrorKind)        an outbound call to a vendor failed, for any reason
WebhookRefused (http_status)           an inbound callback from a vendor that must be refused
├── WebhookAuthError   → 401           missing/invalid signature, stale timestamp
└── WebhookParseError  → 400           not JSON, or not the vendor's payload shape
"""

from __future__ import annotations

import math
from enum import StrEnum

from bot.errors import KlingbotError

# The longest a vendor may make us wait ("Retry-After" and the like); a huge or infinite value
# would otherwise stall that provider until a restart.
MAX_RETRY_AFTER_S = 600.0


def bounded_wait_s(seconds: float | None) -> float | None:
    """A vendor's requested wait within [0, MAX_RETRY_AFTER_S] (None when absent or not a number)."""
    if seconds is None or math.isnan(seconds):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


class ErrorKind(StrEnum):
    INVALID_INPUT = "invalid_input"  # the vendor refused the parameters; retrying won't help
    CONTENT_POLICY = "content_policy"  # moderation refused the prompt or the result
    OUT_OF_FUNDS = "out_of_funds"  # the operator's vendor account has no credit left
    AUTH = "auth"  # the API key is missing, wrong or not allowed
    RATE_LIMITED = "rate_limited"  # slow down; retry_after_s says for how long
    TRANSIENT = "transient"  # 5xx, timeouts, network: try again later
    NOT_FOUND = "not_found"  # the vendor does not know this job (or it expired there)
    RESULT_EXPIRED = "result_expired"  # the video link is gone
    UNKNOWN = "unknown"  # anything else, including replies we cannot read


USER_MESSAGES: dict[ErrorKind, str] = {
    ErrorKind.INVALID_INPUT: "The video provider refused these settings.",
    ErrorKind.CONTENT_POLICY: "The video provider's content filter refused this request.",
    ErrorKind.OUT_OF_FUNDS: "The bot's video provider account is out of credit; an admin has to top it up.",
    ErrorKind.AUTH: "The bot's video provider key was refused; an admin has to fix it.",
    ErrorKind.RATE_LIMITED: "The video provider is busy (rate limited).",
    ErrorKind.TRANSIENT: "The video provider had a temporary problem.",
    ErrorKind.NOT_FOUND: "The video provider no longer knows this job.",
    ErrorKind.RESULT_EXPIRED: "The video provider's download link expired before the clip was saved.",
    ErrorKind.UNKNOWN: "The video provider failed in an unexpected way.",
}


class ProviderError(KlingbotError):
    """A vendor call failed. `str()` is a user-facing sentence; `detail` is for the logs."""

    def __init__(
        self,
        kind: ErrorKind,
        detail: str = "",
        *,
        provider: str = "",
        status_code: int | None = None,
        retry_after_s: float | None = None,
        vendor_code: str | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        self.kind = kind
        self.detail = detail
        self.provider = provider
        self.status_code = status_code
        self.retry_after_s = bounded_wait_s(retry_after_s)
        self.vendor_code = vendor_code
        # True when a create may have reached the vendor although no answer came back.
        self.outcome_unknown = outcome_unknown
        message = USER_MESSAGES[kind]
        if kind in (ErrorKind.INVALID_INPUT, ErrorKind.CONTENT_POLICY) and detail:
            message += f" ({_short(detail)})"
        super().__init__(message)

    def __repr__(self) -> str:
        return (
            f"ProviderError({self.kind.value}, provider={self.provider!r}, status={self.status_code},"
            f" code={self.vendor_code!r}, detail={_short(self.detail)!r})"
        )

    @property
    def retryable(self) -> bool:
        return self.kind in (ErrorKind.RATE_LIMITED, ErrorKind.TRANSIENT)


class WebhookRefused(KlingbotError):
    """A webhook delivery that must be refused with `http_status`; `str()` is the reason."""

    http_status = 400

    def __init__(self, detail: str, *, provider: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.provider = provider

    def __str__(self) -> str:
        return self.detail


class WebhookAuthError(WebhookRefused):
    http_status = 401


class WebhookParseError(WebhookRefused):
    http_status = 400


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
