"""What each provider can do, applied on top of the canonical limits (DESIGN.md section 4)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bot.request import (
    DURATION_MAX_S,
    DURATION_MIN_S,
    IMAGE_MAX_ASPECT,
    IMAGE_MAX_BYTES,
    IMAGE_MIN_SIDE_PX,
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
    # image-to-video
    image_to_video: bool = False
    end_frame: bool = False
    image_prompt_required: bool = True  # False: an image alone is enough
    image_multishot: bool = True  # shots may be combined with a start image
    image_max_bytes: int = IMAGE_MAX_BYTES
    image_min_side_px: int = IMAGE_MIN_SIDE_PX
    image_max_aspect: float = IMAGE_MAX_ASPECT
    # how the image reaches the vendor, in order of preference: "url" (the bot's /media link),
    # "base64" (plain), "data_uri", "upload" (the vendor's own file API), "file" (local)
    image_forms: tuple[str, ...] = ()

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
        found += self._image_problems(request)
        return found

    def _image_problems(self, request: VideoRequest) -> list[str]:
        who = self.label
        if request.image is None:
            return []
        if not self.image_to_video:
            return [
                f"{who} has no documented Kling v3 image-to-video; providers that can animate an"
                f" image: {', '.join(CAPABILITIES[n].label for n in image_to_video_providers())}."
            ]
        found: list[str] = []
        if request.end_image is not None and not self.end_frame:
            found.append(f"{who} does not support an end frame.")
        if request.shots and not self.image_multishot:
            found.append(f"{who} cannot combine an image with multiple shots.")
        if self.image_prompt_required and not (request.prompt or "").strip() and not request.shots:
            found.append(f"{who} needs a prompt with the image: say how it should move.")
        for which, ref in (("image", request.image), ("end image", request.end_image)):
            if ref is None:
                continue
            if ref.size_bytes > self.image_max_bytes:
                found.append(
                    f"{who} takes images up to {self.image_max_bytes // 1_048_576} MB; the {which}"
                    f" is {ref.size_bytes / 1_048_576:.1f} MB."
                )
            if min(ref.width_px, ref.height_px) < self.image_min_side_px:
                found.append(
                    f"{who} needs each side of the {which} to be at least"
                    f" {self.image_min_side_px} px (it is {ref.width_px}×{ref.height_px})."
                )
            if max(ref.ratio, 1 / ref.ratio) > self.image_max_aspect:
                found.append(
                    f"{who} takes images between 1:{self.image_max_aspect:g} and"
                    f" {self.image_max_aspect:g}:1; the {which} is {ref.width_px}×{ref.height_px}."
                )
        return found

    def resolve(self, request: VideoRequest) -> VideoRequest:
        """Fill in the provider's defaults for audio and resolution."""
        return request.model_copy(
            update={
                "audio": self.audio_default if request.audio is None else request.audio,
                "resolution": request.resolution or self.resolutions[0],
            }
        )


def image_to_video_providers(names: Iterable[str] | None = None) -> list[str]:
    """The providers (of `names`, default all) that can animate an image; `local` last."""
    wanted = None if names is None else set(names)
    found = [
        name
        for name, caps in CAPABILITIES.items()
        if caps.image_to_video and (wanted is None or name in wanted)
    ]
    return sorted(found, key=lambda name: name == "local")


# Image forms and limits: shared/reference/kling_official_and_i2v.md section 2.
CAPABILITIES: dict[str, Capabilities] = {
    "local": Capabilities(
        label="The local preview renderer",
        resolutions=("720p", "1080p"),
        cancel=True,
        webhooks="token",
        image_to_video=True,
        end_frame=True,
        image_prompt_required=False,
        image_forms=("file",),
    ),
    "kling": Capabilities(
        label="Kling",
        resolutions=("1080p", "720p"),  # mode pro | std
        audio_default=False,  # `sound` defaults to off
        cfg_scale=False,  # "only kling-v1.x models support it"
        cancel=False,
        webhooks="signed",  # Standard Webhooks with KLINGBOT_KLING_WEBHOOK_SECRET, else the URL token
        image_to_video=True,
        end_frame=True,  # image_tail
        image_prompt_required=False,  # [?] the I2V prompt is optional in the legacy docs
        image_forms=("url", "base64"),
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
    "eachlabs": Capabilities(
        label="EachLabs",
        cancel=True,
        webhooks="signed",
        image_to_video=True,  # [?] kling-v3-pro-image-to-video, from a garbled copy of its page
        end_frame=True,
        image_forms=("url", "data_uri"),  # [?] data URI: not documented
    ),
    "novita": Capabilities(
        label="Novita",
        resolutions=("1080p", "720p", "4k"),
        audio_default=False,
        voice_ids=False,
        shot_types=frozenset(),
        webhooks="token",
        image_to_video=True,
        end_frame=True,
        image_multishot=False,  # pro-i2v's multi_prompt is string[] (no per-shot durations)
        image_forms=("url", "data_uri"),  # [?] data URI: not documented (a PPIO client sends it)
    ),
    "segmind": Capabilities(
        label="Segmind",
        shot_types=frozenset({"customize"}),
        webhooks="none",
        image_to_video=True,
        end_frame=True,
        image_max_bytes=50 * 1024 * 1024,  # "Max 50MB" (the canonical 10 MB applies first)
        image_forms=("url", "data_uri"),  # [?] data URI: "string (uri)"
    ),
    "fal": Capabilities(
        label="fal.ai",
        resolutions=("1080p", "720p", "4k"),
        cancel=True,
        webhooks="signed",
        image_to_video=True,
        end_frame=True,
        image_forms=("url", "data_uri"),
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
        image_to_video=True,
        end_frame=True,
        image_forms=("url", "data_uri", "upload"),  # data URIs only under 1 MB
    ),
}
