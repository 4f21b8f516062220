"""EachLabs-only behaviour: without a webhook secret, deliveries rest on the URL token. What every
vendor shares is in tests/test_provider_contract.py (EachLabs' facts for it:
tests/provider_cases/eachlabs.py)."""

from __future__ import annotations

from bot.providers.base import ProviderState
from tests.provider_cases.eachlabs import parser


def test_webhook_without_secret_relies_on_the_url_token() -> None:
    body = b'{"exec_id": "p9", "status": "failed", "output": "", "error": "boom"}'
    event = parser().parse_webhook({}, body)
    assert event.provider_job_id == "p9" and event.status is not None
    assert event.status.state is ProviderState.FAILED
