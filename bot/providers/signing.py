"""Webhook signature checks. Each verifies the raw body before anything parses it.

- EachLabs: HMAC-SHA256 over "{timestamp}.{body}", headers X-Webhook-Signature: sha256=<hex>
  and X-Webhook-Timestamp (unix seconds).
- Standard Webhooks (Replicate): HMAC-SHA256 over "{id}.{timestamp}.{body}" keyed with the
  base64 secret after "whsec_"; headers webhook-id, webhook-timestamp, webhook-signature
  ("v1,<base64>", several may be given separated by spaces).
- fal: Ed25519 over "{request_id}\\n{user_id}\\n{timestamp}\\n{sha256_hex(body)}", hex signature,
  public keys from fal's JWKS (cached; refreshed when no key verifies).

Header values are text that may hold any byte a client sent (aiohttp decodes them with
surrogateescape), so everything signed or compared is turned into bytes first (`text_bytes`):
a non-ASCII signature or id is a mismatch (401), never an exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bot.providers.errors import WebhookAuthError

Headers = Mapping[str, str]


def header(headers: Headers, name: str) -> str:
    """Case-insensitive header lookup ('' when absent)."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return ""


def text_bytes(value: str) -> bytes:
    """`value` as bytes, for any str (lone surrogates included); never raises."""
    return value.encode("utf-8", "surrogatepass")


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets (tokens, signatures) as bytes: any text works."""
    return hmac.compare_digest(text_bytes(given), text_bytes(expected))


def check_timestamp(value: str, now_s: float, tolerance_s: float, *, provider: str) -> int:
    """Parse a unix-seconds timestamp and refuse it if too old or too far ahead."""
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 15:
        raise WebhookAuthError("missing or malformed webhook timestamp", provider=provider)
    stamp = int(text)
    if abs(now_s - stamp) > tolerance_s:
        raise WebhookAuthError(
            f"webhook timestamp is {int(now_s - stamp)} s off (replayed or clock skew)",
            provider=provider,
        )
    return stamp


def verify_timestamped_hmac(
    headers: Headers,
    body: bytes,
    secret: str,
    *,
    now_s: float,
    tolerance_s: float,
    provider: str,
    signature_header: str = "X-Webhook-Signature",
    timestamp_header: str = "X-Webhook-Timestamp",
) -> None:
    """EachLabs-style: sha256=<hex> of HMAC(secret, "{timestamp}.{body}")."""
    signature = header(headers, signature_header).strip()
    stamp = header(headers, timestamp_header)
    if not signature or not stamp:
        raise WebhookAuthError("missing webhook signature headers", provider=provider)
    check_timestamp(stamp, now_s, tolerance_s, provider=provider)
    given = signature.removeprefix("sha256=").strip().lower()
    expected = hmac.new(
        text_bytes(secret), text_bytes(stamp.strip()) + b"." + body, hashlib.sha256
    ).hexdigest()
    if not same_secret(given, expected):
        raise WebhookAuthError("webhook signature does not match", provider=provider)


def standard_webhook_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret ("whsec_<base64>")."""
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return text_bytes(secret)


def verify_standard_webhook(
    headers: Headers, body: bytes, secret: str, *, now_s: float, tolerance_s: float, provider: str
) -> str:
    """Verify a Standard Webhooks delivery; return its webhook-id."""
    webhook_id = header(headers, "webhook-id").strip()
    stamp = header(headers, "webhook-timestamp").strip()
    signatures = header(headers, "webhook-signature").strip()
    if not webhook_id or not stamp or not signatures:
        raise WebhookAuthError("missing webhook-id/timestamp/signature headers", provider=provider)
    check_timestamp(stamp, now_s, tolerance_s, provider=provider)
    message = text_bytes(f"{webhook_id}.{stamp}.") + body
    expected = base64.b64encode(
        hmac.new(standard_webhook_key(secret), message, hashlib.sha256).digest()
    ).decode()
    for item in signatures.split():
        version, _, value = item.partition(",")
        if version == "v1" and same_secret(value, expected):
            return webhook_id
    raise WebhookAuthError("webhook signature does not match", provider=provider)


class FalKeys:
    """fal's webhook public keys from its JWKS, cached for `ttl_s`."""

    def __init__(
        self,
        fetch_jwks: Callable[[], Awaitable[object]],
        *,
        ttl_s: float = 24 * 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch_jwks
        self._ttl_s = ttl_s
        self._clock = clock
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at = float("-inf")

    @property
    def keys(self) -> list[Ed25519PublicKey]:
        return list(self._keys)

    @property
    def stale(self) -> bool:
        return not self._keys or self._clock() - self._fetched_at > self._ttl_s

    async def refresh(self) -> None:
        """Fetch the JWKS and keep every Ed25519 key in it."""
        document = await self._fetch()
        keys = []
        entries = document.get("keys", []) if isinstance(document, dict) else []
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or entry.get("crv") != "Ed25519":
                continue
            x = entry.get("x")
            if not isinstance(x, str):
                continue
            try:
                raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
                keys.append(Ed25519PublicKey.from_public_bytes(raw))
            except (ValueError, binascii.Error):
                continue
        if keys:
            self._keys = keys
            self._fetched_at = self._clock()


def fal_message(headers: Headers, body: bytes) -> bytes:
    parts = [
        header(headers, "X-Fal-Webhook-Request-Id").strip(),
        header(headers, "X-Fal-Webhook-User-Id").strip(),
        header(headers, "X-Fal-Webhook-Timestamp").strip(),
        hashlib.sha256(body).hexdigest(),
    ]
    return text_bytes("\n".join(parts))


def verify_fal(
    headers: Headers,
    body: bytes,
    keys: list[Ed25519PublicKey],
    *,
    now_s: float,
    tolerance_s: float,
    provider: str = "fal",
) -> str:
    """Verify a fal webhook against `keys`; return its request id."""
    request_id = header(headers, "X-Fal-Webhook-Request-Id").strip()
    user_id = header(headers, "X-Fal-Webhook-User-Id").strip()
    stamp = header(headers, "X-Fal-Webhook-Timestamp").strip()
    signature_hex = header(headers, "X-Fal-Webhook-Signature").strip()
    if not (request_id and user_id and stamp and signature_hex):
        raise WebhookAuthError("missing X-Fal-Webhook-* headers", provider=provider)
    check_timestamp(stamp, now_s, tolerance_s, provider=provider)
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        raise WebhookAuthError("webhook signature is not hex", provider=provider) from None
    message = fal_message(headers, body)
    for key in keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return request_id
    raise WebhookAuthError("webhook signature does not match any fal key", provider=provider)
