"""Video provider adapters behind one interface.

build_provider(name, settings, http)  -> VideoProvider
VideoProvider.submit(request, webhook_url=..., images=ImageInputs | None) / poll / cancel /
parse_webhook
ProviderError(kind)                    the one error taxonomy (see bot.providers.errors)

Owns: each vendor's wire format (requests, statuses, webhooks and their signatures), HTTP calls
with their retry rules, clip downloads. Adapters never touch the ledger, jobs or Discord.
May import: bot.request, bot.settings, bot.errors, bot.media (the offline `local` renderer).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from bot.providers.base import (
    ProviderJob,
    ProviderState,
    ProviderStatus,
    Recovery,
    Submission,
    VideoProvider,
    WebhookEvent,
)
from bot.providers.capabilities import CAPABILITIES, Capabilities, image_to_video_providers
from bot.providers.errors import (
    ErrorKind,
    ProviderError,
    WebhookAuthError,
    WebhookParseError,
    WebhookRefused,
)
from bot.providers.http import ProviderHttp
from bot.providers.images import ImageInput, ImageInputs
from bot.settings import Settings

__all__ = [
    "ADAPTERS",
    "CAPABILITIES",
    "Capabilities",
    "ErrorKind",
    "ImageInput",
    "ImageInputs",
    "ProviderError",
    "ProviderHttp",
    "ProviderJob",
    "ProviderState",
    "ProviderStatus",
    "Recovery",
    "Submission",
    "VideoProvider",
    "WebhookAuthError",
    "WebhookEvent",
    "WebhookParseError",
    "WebhookRefused",
    "build_provider",
    "image_to_video_providers",
]

ADAPTERS: dict[str, str] = {
    "local": "bot.providers.local:LocalProvider",
    "pixeldojo": "bot.providers.pixeldojo:PixelDojoProvider",
    "aihubmax": "bot.providers.aihubmax:AIHubMaxProvider",
    "eachlabs": "bot.providers.eachlabs:EachLabsProvider",
    "novita": "bot.providers.novita:NovitaProvider",
    "segmind": "bot.providers.segmind:SegmindProvider",
    "fal": "bot.providers.fal:FalProvider",
    "replicate": "bot.providers.replicate:ReplicateProvider",
    "kling": "bot.providers.kling:KlingProvider",
}


def provider_class(name: str) -> type[VideoProvider]:
    module_name, _, class_name = ADAPTERS[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert isinstance(cls, type) and issubclass(cls, VideoProvider)
    return cls


def build_provider(name: str, settings: Settings, http: ProviderHttp) -> VideoProvider:
    """The adapter for `name`, configured from its settings group."""
    extra: dict[str, Any] = {}
    if name in ("local", "segmind"):  # adapters that keep files of their own
        extra["work_dir"] = Path(settings.media_dir) / f"{name}-provider"
    return provider_class(name)(
        settings.provider_settings(name),
        http,
        webhook_tolerance_s=settings.webhook_tolerance_s,
        **extra,
    )
