"""The canonical video request, validated before any credit is reserved (DESIGN.md section 4).

Each provider's own limits (capabilities) are applied on top by `Capabilities.problems()`.
Every violation becomes a specific, user-readable sentence; all of them are reported at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bot.errors import InvalidRequest

__all__ = [
    "ASPECT_RATIOS",
    "DURATION_MAX_S",
    "DURATION_MIN_S",
    "IMAGE_MAX_ASPECT",
    "IMAGE_MAX_BYTES",
    "IMAGE_MIMES",
    "IMAGE_MIN_SIDE_PX",
    "MAX_SHOTS",
    "MAX_VOICES",
    "PROMPT_MAX_CHARS",
    "RESOLUTIONS",
    "SHOT_PROMPT_MAX_CHARS",
    "SHOT_TYPES",
    "AspectRatio",
    "ImageRef",
    "Resolution",
    "Shot",
    "ShotType",
    "VideoRequest",
    "parse_request",
]

AspectRatio = Literal["16:9", "9:16", "1:1"]
Resolution = Literal["720p", "1080p", "4k"]
ShotType = Literal["customize", "intelligent"]
ASPECT_RATIOS: tuple[str, ...] = get_args(AspectRatio)
RESOLUTIONS: tuple[str, ...] = get_args(Resolution)
SHOT_TYPES: tuple[str, ...] = get_args(ShotType)

PROMPT_MAX_CHARS = 2500
NEGATIVE_PROMPT_MAX_CHARS = 2500
SHOT_PROMPT_MAX_CHARS = 512
MAX_SHOTS = 5
MAX_VOICES = 2
DURATION_MIN_S = 3
DURATION_MAX_S = 15
SHOT_MIN_DURATION_S = 1
VOICE_ID_MAX_CHARS = 128
VOICE_REF = re.compile(r"<<<voice_(\d+)>>>")
VOICE_ID = re.compile(r"^[A-Za-z0-9_.:\-]+$")

# Image-to-video: the limits nearly every vendor shares (kling_official_and_i2v.md section 2.3)
IMAGE_MIMES = ("image/jpeg", "image/png")
IMAGE_MAX_BYTES = 10 * 1024 * 1024
IMAGE_MIN_SIDE_PX = 300
IMAGE_MAX_ASPECT = 2.5  # width:height between 1:2.5 and 2.5:1
_RATIO_OF: dict[AspectRatio, float] = {"16:9": 16 / 9, "9:16": 9 / 16, "1:1": 1.0}


class Shot(BaseModel):
    """One shot of a multi-shot video."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    duration_s: int


class ImageRef(BaseModel):
    """An image stored with the job (by content hash), described without its bytes.

    `bot.media.images.check_image` makes the normalized PNG/JPEG this describes; the file is kept
    under its sha256 and handed to the adapter at submit time (`bot.providers.ImageInputs`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    mime: Literal["image/jpeg", "image/png"]
    width_px: int = Field(ge=1)
    height_px: int = Field(ge=1)
    size_bytes: int = Field(ge=1)

    @property
    def ratio(self) -> float:
        """Width divided by height."""
        return self.width_px / self.height_px

    @property
    def nearest_aspect_ratio(self) -> AspectRatio:
        """The canonical aspect ratio closest to the image's own (a label; never sent)."""
        return min(_RATIO_OF, key=lambda name: abs(math.log(self.ratio / _RATIO_OF[name])))

    @property
    def extension(self) -> str:
        return "png" if self.mime == "image/png" else "jpg"

    def problems(self, which: str) -> list[str]:
        """Every canonical image limit this image breaks; `which` names it ("The image")."""
        found: list[str] = []
        if self.size_bytes > IMAGE_MAX_BYTES:
            found.append(
                f"{which} is {self.size_bytes / 1_048_576:.1f} MB; the limit is"
                f" {IMAGE_MAX_BYTES // 1_048_576} MB."
            )
        if min(self.width_px, self.height_px) < IMAGE_MIN_SIDE_PX:
            found.append(
                f"{which} is {self.width_px}×{self.height_px} px; each side must be at least"
                f" {IMAGE_MIN_SIDE_PX} px."
            )
        if max(self.ratio, 1 / self.ratio) > IMAGE_MAX_ASPECT:
            found.append(
                f"{which} is {self.width_px}×{self.height_px} px (aspect"
                f" {aspect_text(self.width_px, self.height_px)}); it must be between 1:2.5 and"
                " 2.5:1."
            )
        return found


def aspect_text(width_px: int, height_px: int) -> str:
    """An aspect ratio as "W:1" or "1:H" with two decimals ("2.67:1", "1:3.00")."""
    if width_px >= height_px:
        return f"{width_px / height_px:.2f}:1"
    return f"1:{height_px / width_px:.2f}"


class VideoRequest(BaseModel):
    """What a member asked for, in provider-neutral terms.

    `audio` and `resolution` may be None, meaning "the provider's default"; `Capabilities.resolve`
    fills them in before the request is priced and stored.

    Image-to-video: `image` is the start frame, `end_image` the optional end frame. The output
    follows the image's own aspect ratio, so with an image `aspect_ratio` is not chosen: it is
    derived from the image (the nearest of 16:9, 9:16, 1:1, a label for status messages) and no
    adapter sends it. A different, explicitly given aspect ratio is refused. The prompt may be left
    out with an image where the provider allows it (`Capabilities.image_prompt_required`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str | None = None
    negative_prompt: str | None = None
    duration_s: int = 5
    aspect_ratio: AspectRatio = "16:9"
    audio: bool | None = None
    resolution: Resolution | None = None
    cfg_scale: float | None = None
    shot_type: ShotType | None = None
    shots: tuple[Shot, ...] = ()
    voice_ids: tuple[str, ...] = ()
    image: ImageRef | None = None
    end_image: ImageRef | None = None

    @model_validator(mode="before")
    @classmethod
    def _aspect_from_image(cls, data: Any) -> Any:
        """With an image and no aspect ratio given, take the one nearest the image's."""
        if not isinstance(data, dict) or data.get("image") is None or "aspect_ratio" in data:
            return data
        image = data["image"]
        try:
            ref = image if isinstance(image, ImageRef) else ImageRef.model_validate(image)
        except ValidationError:
            return data  # reported by the field's own validation
        return {**data, "aspect_ratio": ref.nearest_aspect_ratio}

    @property
    def is_image_to_video(self) -> bool:
        return self.image is not None

    @property
    def is_multishot(self) -> bool:
        return bool(self.shots)

    @property
    def summary(self) -> str:
        """A one-line description for status messages and logs."""
        text = self.prompt or " | ".join(f"{s.duration_s}s: {s.prompt}" for s in self.shots)
        if not text and self.image is not None:
            text = f"(animate a {self.image.width_px}×{self.image.height_px} image)"
        return text if len(text) <= 120 else text[:119] + "…"

    def problems(self) -> list[str]:
        """Every way this request breaks the canonical limits (empty when valid)."""
        found: list[str] = []
        prompt = (self.prompt or "").strip()
        if self.prompt is not None and not prompt and not self.shots:
            found.append("The prompt is empty: describe the video you want.")
        elif not prompt and not self.shots and self.image is None:
            found.append("A prompt is required (or use /multishot to give shots).")
        if prompt and self.shots:
            found.append("Give either one prompt or a list of shots, not both.")
        if len(self.prompt or "") > PROMPT_MAX_CHARS:
            found.append(
                f"The prompt is {len(self.prompt or '')} characters; the limit is {PROMPT_MAX_CHARS}."
            )
        if (
            self.negative_prompt is not None
            and len(self.negative_prompt) > NEGATIVE_PROMPT_MAX_CHARS
        ):
            found.append(
                f"The negative prompt is {len(self.negative_prompt)} characters;"
                f" the limit is {NEGATIVE_PROMPT_MAX_CHARS}."
            )
        if not DURATION_MIN_S <= self.duration_s <= DURATION_MAX_S:
            found.append(
                f"Duration must be {DURATION_MIN_S} to {DURATION_MAX_S} seconds"
                f" (got {self.duration_s})."
            )
        if self.cfg_scale is not None and not 0.0 <= self.cfg_scale <= 1.0:
            found.append(f"cfg_scale must be between 0 and 1 (got {self.cfg_scale:g}).")
        found += self._shot_problems()
        found += self._voice_problems()
        found += self._image_problems()
        return found

    def _image_problems(self) -> list[str]:
        found: list[str] = []
        if self.image is None:
            if self.end_image is not None:
                found.append("An end frame needs a start image too.")
            return found
        found += self.image.problems("The image")
        if self.end_image is not None:
            found += self.end_image.problems("The end image")
            if self.shots:
                found.append("An end frame cannot be combined with multiple shots.")
        derived = self.image.nearest_aspect_ratio
        if self.aspect_ratio != derived:
            found.append(
                "The video takes the image's own aspect ratio"
                f" ({self.image.width_px}×{self.image.height_px}): leave the aspect ratio out."
            )
        return found

    def _shot_problems(self) -> list[str]:
        found: list[str] = []
        if not self.shots:
            return found
        if len(self.shots) > MAX_SHOTS:
            found.append(f"At most {MAX_SHOTS} shots are allowed (got {len(self.shots)}).")
        for number, shot in enumerate(self.shots, start=1):
            text = shot.prompt.strip()
            if not text:
                found.append(f"Shot {number} has no prompt.")
            elif len(shot.prompt) > SHOT_PROMPT_MAX_CHARS:
                found.append(
                    f"Shot {number}'s prompt is {len(shot.prompt)} characters;"
                    f" the limit is {SHOT_PROMPT_MAX_CHARS}."
                )
            if shot.duration_s < SHOT_MIN_DURATION_S:
                found.append(f"Shot {number} must last at least {SHOT_MIN_DURATION_S} second.")
        total = sum(s.duration_s for s in self.shots)
        if total != self.duration_s:
            found.append(
                f"The shots last {total} seconds in total but the video is {self.duration_s}"
                " seconds: they must add up to the duration."
            )
        return found

    def _voice_problems(self) -> list[str]:
        found: list[str] = []
        if len(self.voice_ids) > MAX_VOICES:
            found.append(f"At most {MAX_VOICES} voice ids are allowed (got {len(self.voice_ids)}).")
        for number, voice in enumerate(self.voice_ids, start=1):
            if not voice or len(voice) > VOICE_ID_MAX_CHARS or not VOICE_ID.match(voice):
                found.append(f"Voice id {number} ({voice[:40]!r}) is not a valid voice id.")
        if self.voice_ids and self.audio is False:
            found.append("Voice ids need audio: turn audio on, or remove the voice ids.")
        texts = [self.prompt or ""] + [s.prompt for s in self.shots]
        referenced = {int(n) for text in texts for n in VOICE_REF.findall(text)}
        for number in range(1, len(self.voice_ids) + 1):
            if number not in referenced:
                found.append(
                    f"Voice {number} is given but the prompt never says <<<voice_{number}>>>:"
                    " put it where that voice should speak."
                )
        for number in sorted(referenced):
            if not 1 <= number <= len(self.voice_ids):
                found.append(
                    f"The prompt uses <<<voice_{number}>>> but no voice id {number} was given."
                )
        return found


_FIELD_NAMES = {
    "prompt": "prompt",
    "negative_prompt": "negative prompt",
    "duration_s": "duration",
    "aspect_ratio": "aspect ratio",
    "audio": "audio",
    "resolution": "resolution",
    "cfg_scale": "cfg_scale",
    "shot_type": "shot type",
    "shots": "shots",
    "voice_ids": "voice ids",
    "image": "image",
    "end_image": "end image",
}


def _friendly(error: Mapping[str, Any]) -> str:
    """Turn one pydantic error into a sentence a Discord member understands."""
    loc = [str(p) for p in error.get("loc", ())]
    field = _FIELD_NAMES.get(loc[0], loc[0]) if loc else "request"
    if loc[:1] == ["shots"] and len(loc) >= 2 and loc[1].isdigit():
        field = f"shot {int(loc[1]) + 1}" + (f" {loc[2]}" if len(loc) > 2 else "")
    kind = str(error.get("type", ""))
    if kind == "literal_error":
        allowed = {
            "aspect_ratio": ASPECT_RATIOS,
            "resolution": RESOLUTIONS,
            "shot_type": SHOT_TYPES,
        }.get(loc[0] if loc else "", ())
        return f"The {field} must be one of {', '.join(allowed)}."
    if kind == "extra_forbidden":
        return f"Unknown option {loc[-1]!r}."
    if kind.startswith("int"):
        return f"The {field} must be a whole number."
    if kind.startswith("float"):
        return f"The {field} must be a number."
    if kind.startswith("bool"):
        return f"The {field} must be on or off."
    if kind.startswith("string"):
        return f"The {field} must be text."
    return f"The {field} is not valid: {error.get('msg', 'invalid value')}."


def parse_request(data: Mapping[str, Any] | VideoRequest) -> VideoRequest:
    """Build and check a request; raise InvalidRequest listing every problem."""
    if isinstance(data, VideoRequest):
        request = data
    else:
        try:
            request = VideoRequest.model_validate(dict(data))
        except ValidationError as error:
            raise InvalidRequest([_friendly(e) for e in error.errors()]) from None
    problems = request.problems()
    if problems:
        raise InvalidRequest(problems)
    return request
