"""EachLabs-only behaviour: without a configured webhook secret, deliveries are signed with one
derived from the API key (never trusted to the URL token alone). What every vendor shares is in
tests/test_provider_contract.py (EachLabs' facts for it: tests/provider_cases/eachlabs.py)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from bot.providers.base import ProviderState
from bot.providers.eachlabs import EachLabsProvider
from bot.providers.errors import WebhookAuthError
from bot.settings import EachLabsSettings
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble
from tests.provider_support import NO_HTTP


def test_webhook_without_a_configured_secret_is_verified_with_the_derived_one() -> None:
    now = 1_800_000_000
    provider = EachLabsProvider(
        EachLabsSettings(api_key=SecretStr(API_KEY)), NO_HTTP, now_s=lambda: now
    )
    body = b'{"exec_id": "p9", "status": "failed", "output": "", "error": "boom"}'
    with pytest.raises(WebhookAuthError):
        provider.parse_webhook({}, body)  # unsigned: refused, not trusted to the URL token
    derived = provider.webhook_secret
    assert len(derived) == 64 and derived != API_KEY
    same_key = EachLabsProvider(EachLabsSettings(api_key=SecretStr(API_KEY)), NO_HTTP)
    assert same_key.webhook_secret == derived, "every process with the key derives the same secret"
    event = provider.parse_webhook(EachLabsDouble.sign(derived, body, now), body)
    assert event.provider_job_id == "p9" and event.status is not None
    assert event.status.state is ProviderState.FAILED
