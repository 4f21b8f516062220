"""What each provider can do, applied on top of the canonical limits (DESIGN.md section 4)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.request import (
    DURATION_MAX_S,
    DURATION_MIN_S,
    MAX_SHOTS,
    PROMPT_MAX_CHARS,
    Resolution,
    ShotType,
    VideoRequest,
)

ALL_DURATIONS = frozenset(range(DURATION_MIN_S, DURATION_MAX_S + 1))
BOTH_SHOT_TYPES: frozenset[ShotType] = frozenset({"customize", "intelligent"})


@dataclass(frozen=True)
class Capabilities:
    """One vendor's limits. The first resolution is the default; one resolution means fixed."""

    label: str
    durations_s: frozenset[int] = ALL_DURATIONS
    resolutions: tuple[Resolution, ...] = ("1080p",)
    audio_default: bool = True
    max_shots: int = MAX_SHOTS
    voice_ids: bool = True
    cfg_scale: bool = True
    shot_types: frozenset[ShotType] = BOTH_SHOT_TYPES
    prompt_max_chars: int = PROMPT_MAX_CHARS
    cancel: bool = False
    webhooks: str = "token"  # "signed" (verified signature), "token" (secret URL), "none"

    def problems(self, request: VideoRequest) -> list[str]:
        """Every way `request` exceeds what this provider can do."""
        found: list[str] = []
        who = self.label
        if self.durations_s != ALL_DURATIONS and request.duration_s not in self.durations_s:
            allowed = " or ".join(str(d) for d in sorted(self.durations_s))
            found.append(f"{who} makes {allowed}-second videos only (got {request.duration_s}).")
        if request.resolution is not None and request.resolution not in self.resolutions:
            options = ", ".join(self.resolutions)
            found.append(f"{who} renders {options} only (got {request.resolution}).")
        if request.prompt is not None and len(request.prompt) > self.prompt_max_chars:
            found.append(f"{who} accepts prompts up to {self.prompt_max_chars} characters.")
        if request.shots and self.max_shots == 0:
            found.append(f"{who} does not support multi-shot videos.")
        elif len(request.shots) > self.max_shots:
            found.append(f"{who} supports at most {self.max_shots} shots.")
        if request.voice_ids and not self.voice_ids:
            found.append(f"{who} does not support voice ids.")
        if request.voice_ids and request.audio is None and not self.audio_default:
            found.append("Voice ids need audio: turn audio on, or remove the voice ids.")
        if request.cfg_scale is not None and not self.cfg_scale:
            found.append(f"{who} does not support cfg_scale.")
        if request.shot_type is not None and request.shot_type not in self.shot_types:
            if self.shot_types:
                found.append(f"{who} supports shot type {', '.join(sorted(self.shot_types))} only.")
            else:
                found.append(f"{who} does not support choosing a shot type.")
        return found

    def resolve(self, request: VideoRequest) -> VideoRequest:
        """Fill in the provider's defaults for audio and resolution."""
        return request.model_copy(
            update={
                "audio": self.audio_default if request.audio is None else request.audio,
                "resolution": request.resolution or self.resolutions[0],
            }
        )


CAPABILITIES: dict[str, Capabilities] = {
    "local": Capabilities(
        label="The local preview renderer",
        resolutions=("720p", "1080p"),
        cancel=True,
        webhooks="token",
    ),
    "pixeldojo": Capabilities(label="PixelDojo", webhooks="token"),
    "aihubmax": Capabilities(
        label="AIHubMax",
        durations_s=frozenset({5, 10}),
        resolutions=("1080p", "720p", "4k"),
        audio_default=False,
        cfg_scale=False,
        shot_types=frozenset(),
        webhooks="token",
    ),
    "eachlabs": Capabilities(label="EachLabs", cancel=True, webhooks="signed"),
    "novita": Capabilities(
        label="Novita",
        resolutions=("1080p", "720p", "4k"),
        audio_default=False,
        voice_ids=False,
        shot_types=frozenset(),
        webhooks="token",
    ),
    "segmind": Capabilities(label="Segmind", shot_types=frozenset({"customize"}), webhooks="none"),
    "fal": Capabilities(
        label="fal.ai", resolutions=("1080p", "720p", "4k"), cancel=True, webhooks="signed"
    ),
    "replicate": Capabilities(
        label="Replicate",
        resolutions=("1080p", "720p"),
        audio_default=False,
        voice_ids=False,
        cfg_scale=False,
        shot_types=frozenset(),
        cancel=True,
        webhooks="signed",
    ),
}
