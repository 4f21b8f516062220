"""Prices in whole credits: per second of video, times multipliers for audio and resolution.

Default 8 credits per second (PixelDojo's published price for Kling v3 Pro). Each provider may
override the per-second price (`KLINGBOT_<PROVIDER>_PRICE_PER_SECOND`). Fractions round up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from bot.request import VideoRequest
from bot.settings import PROVIDER_NAMES, Settings


@dataclass(frozen=True)
class PriceTable:
    per_second: int = 8
    provider_per_second: dict[str, int] = field(default_factory=dict)
    audio_multiplier: float = 1.0
    resolution_multipliers: dict[str, float] = field(
        default_factory=lambda: {"720p": 1.0, "1080p": 1.0, "4k": 2.0}
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> PriceTable:
        overrides: dict[str, int] = {}
        for name in PROVIDER_NAMES:
            price = settings.provider_settings(name).price_per_second
            if price is not None:
                overrides[name] = price
        return cls(
            per_second=settings.price_per_second,
            provider_per_second=overrides,
            audio_multiplier=settings.price_audio_multiplier,
            resolution_multipliers={
                "720p": settings.price_720p_multiplier,
                "1080p": settings.price_1080p_multiplier,
                "4k": settings.price_4k_multiplier,
            },
        )

    def quote(self, request: VideoRequest, provider: str) -> int:
        """Credits for a resolved request (audio and resolution decided) at `provider`."""
        rate = Fraction(self.provider_per_second.get(provider, self.per_second))
        total = rate * request.duration_s
        if request.audio:
            total *= Fraction(str(self.audio_multiplier))
        if request.resolution is not None:
            total *= Fraction(str(self.resolution_multipliers.get(request.resolution, 1.0)))
        return math.ceil(total)

    def describe(self, request: VideoRequest, provider: str) -> str:
        """How a price came about, for the acknowledgement and /video details."""
        rate = self.provider_per_second.get(provider, self.per_second)
        parts = [f"{request.duration_s} s × {rate} credits/s"]
        if request.audio and self.audio_multiplier != 1.0:
            parts.append(f"× {self.audio_multiplier:g} (audio)")
        multiplier = self.resolution_multipliers.get(request.resolution or "", 1.0)
        if multiplier != 1.0:
            parts.append(f"× {multiplier:g} ({request.resolution})")
        return " ".join(parts) + f" = {self.quote(request, provider)} credits"
