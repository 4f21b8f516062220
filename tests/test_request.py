"""The canonical request: every limit of DESIGN.md section 4, per-provider limits, messages."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import InvalidRequest
from bot.pricing import PriceTable
from bot.providers.capabilities import CAPABILITIES
from bot.request import Shot, VideoRequest, parse_request


def problems_of(**fields: Any) -> list[str]:
    with pytest.raises(InvalidRequest) as info:
        parse_request(fields)
    return info.value.problems


def test_a_plain_request_is_valid() -> None:
    request = parse_request({"prompt": "a red fox running through snow", "duration_s": 5})
    assert request.duration_s == 5 and request.aspect_ratio == "16:9"
    assert request.audio is None and request.resolution is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"prompt": "x" * 2501}, "The prompt is 2501 characters; the limit is 2500."),
        ({}, "A prompt is required (or use /multishot to give shots)."),
        ({"prompt": "   "}, "The prompt is empty: describe the video you want."),
        (
            {"prompt": "a", "negative_prompt": "n" * 2501},
            "The negative prompt is 2501 characters; the limit is 2500.",
        ),
        ({"prompt": "a", "duration_s": 2}, "Duration must be 3 to 15 seconds (got 2)."),
        ({"prompt": "a", "duration_s": 16}, "Duration must be 3 to 15 seconds (got 16)."),
        ({"prompt": "a", "cfg_scale": 1.5}, "cfg_scale must be between 0 and 1 (got 1.5)."),
        ({"prompt": "a", "cfg_scale": -0.1}, "cfg_scale must be between 0 and 1 (got -0.1)."),
        (
            {"prompt": "a", "aspect_ratio": "4:3"},
            "The aspect ratio must be one of 16:9, 9:16, 1:1.",
        ),
        ({"prompt": "a", "resolution": "8k"}, "The resolution must be one of 720p, 1080p, 4k."),
        (
            {"prompt": "a", "shot_type": "auto"},
            "The shot type must be one of customize, intelligent.",
        ),
        ({"prompt": "a", "duration_s": "five"}, "The duration must be a whole number."),
        ({"prompt": "a", "colour": "red"}, "Unknown option 'colour'."),
    ],
)
def test_each_limit_has_a_specific_message(fields: dict[str, Any], expected: str) -> None:
    assert problems_of(**fields) == [expected]


def test_boundaries_are_inclusive() -> None:
    parse_request({"prompt": "x" * 2500, "negative_prompt": "n" * 2500, "duration_s": 15})
    parse_request({"prompt": "x", "duration_s": 3, "cfg_scale": 0.0})
    parse_request({"prompt": "x", "cfg_scale": 1.0})


def shots(*durations: int, text: str = "a shot") -> list[dict[str, Any]]:
    return [{"prompt": f"{text} {n}", "duration_s": d} for n, d in enumerate(durations)]


def test_shots_must_sum_to_the_duration() -> None:
    ok = parse_request({"duration_s": 8, "shots": shots(3, 5)})
    assert ok.is_multishot and ok.shots[1] == Shot(prompt="a shot 1", duration_s=5)
    assert problems_of(duration_s=10, shots=shots(3, 5)) == [
        "The shots last 8 seconds in total but the video is 10 seconds: they must add up to the duration."
    ]


def test_shot_limits() -> None:
    assert problems_of(duration_s=6, shots=shots(1, 1, 1, 1, 1, 1)) == [
        "At most 5 shots are allowed (got 6)."
    ]
    long = [{"prompt": "x" * 513, "duration_s": 5}]
    assert problems_of(duration_s=5, shots=long) == [
        "Shot 1's prompt is 513 characters; the limit is 512."
    ]
    assert "Shot 2 has no prompt." in problems_of(
        duration_s=5, shots=[{"prompt": "a", "duration_s": 3}, {"prompt": " ", "duration_s": 2}]
    )
    assert "Shot 1 must last at least 1 second." in problems_of(
        duration_s=5, shots=[{"prompt": "a", "duration_s": 0}, {"prompt": "b", "duration_s": 5}]
    )
    assert problems_of(prompt="both", duration_s=5, shots=shots(5)) == [
        "Give either one prompt or a list of shots, not both."
    ]


def test_voice_ids() -> None:
    ok = parse_request({"prompt": "<<<voice_1>>> sings", "voice_ids": ["v1"], "audio": True})
    assert ok.voice_ids == ("v1",)
    assert problems_of(prompt="<<<voice_1>>> sings", voice_ids=["v1"], audio=False) == [
        "Voice ids need audio: turn audio on, or remove the voice ids."
    ]
    assert problems_of(prompt="a", voice_ids=["a", "b", "c"])[0] == (
        "At most 2 voice ids are allowed (got 3)."
    )
    assert problems_of(prompt="nobody speaks", voice_ids=["v1"]) == [
        "Voice 1 is given but the prompt never says <<<voice_1>>>: put it where that voice should speak."
    ]
    assert problems_of(prompt="<<<voice_2>>> hi") == [
        "The prompt uses <<<voice_2>>> but no voice id 2 was given."
    ]
    assert problems_of(prompt="<<<voice_1>>>", voice_ids=["bad id!"]) == [
        "Voice id 1 ('bad id!') is not a valid voice id."
    ]


def test_every_problem_is_reported_at_once() -> None:
    found = problems_of(prompt="x" * 3000, duration_s=99, cfg_scale=7)
    assert len(found) == 3
    with pytest.raises(InvalidRequest) as info:
        parse_request({"prompt": "x" * 3000, "duration_s": 99})
    assert str(info.value).startswith("Please fix these:\n• ")


# -- per-provider limits ---------------------------------------------------------------------


def test_aihubmax_makes_5_or_10_seconds_only() -> None:
    caps = CAPABILITIES["aihubmax"]
    assert caps.problems(VideoRequest(prompt="a", duration_s=7)) == [
        "AIHubMax makes 5 or 10-second videos only (got 7)."
    ]
    assert caps.problems(VideoRequest(prompt="a", duration_s=10)) == []


@pytest.mark.parametrize(
    ("provider", "request_fields", "message"),
    [
        ("eachlabs", {"resolution": "4k"}, "EachLabs renders 1080p only (got 4k)."),
        (
            "replicate",
            {"voice_ids": ("v",), "prompt": "<<<voice_1>>>", "audio": True},
            "Replicate does not support voice ids.",
        ),
        ("replicate", {"cfg_scale": 0.5}, "Replicate does not support cfg_scale."),
        ("novita", {"shot_type": "customize"}, "Novita does not support choosing a shot type."),
        ("segmind", {"shot_type": "intelligent"}, "Segmind supports shot type customize only."),
        (
            "aihubmax",
            {"voice_ids": ("v",), "prompt": "<<<voice_1>>>"},
            "Voice ids need audio: turn audio on, or remove the voice ids.",
        ),
    ],
)
def test_provider_limits(provider: str, request_fields: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"prompt": "a fox", **request_fields}
    assert message in CAPABILITIES[provider].problems(VideoRequest(**fields))


def test_resolve_fills_provider_defaults() -> None:
    request = VideoRequest(prompt="a")
    assert CAPABILITIES["aihubmax"].resolve(request).audio is False
    resolved = CAPABILITIES["eachlabs"].resolve(request)
    assert (resolved.audio, resolved.resolution) == (True, "1080p")
    local = CAPABILITIES["local"].resolve(request.model_copy(update={"audio": False}))
    assert (local.audio, local.resolution) == (False, "720p")


# -- pricing ---------------------------------------------------------------------------------


def test_price_defaults_to_8_credits_per_second() -> None:
    table = PriceTable()
    assert (
        table.quote(
            VideoRequest(prompt="a", duration_s=5, audio=True, resolution="1080p"), "pixeldojo"
        )
        == 40
    )
    assert table.quote(VideoRequest(prompt="a", duration_s=15, resolution="1080p"), "fal") == 120


def test_price_overrides_and_multipliers_round_up() -> None:
    table = PriceTable(
        per_second=8,
        provider_per_second={"fal": 11},
        audio_multiplier=1.5,
        resolution_multipliers={"720p": 0.75, "1080p": 1.0, "4k": 2.0},
    )
    assert (
        table.quote(VideoRequest(prompt="a", duration_s=5, audio=True, resolution="1080p"), "fal")
        == 83
    )
    assert (
        table.quote(VideoRequest(prompt="a", duration_s=3, audio=False, resolution="720p"), "x")
        == 18
    )
    assert (
        table.quote(VideoRequest(prompt="a", duration_s=5, audio=False, resolution="4k"), "x") == 80
    )
    assert (
        table.describe(
            VideoRequest(prompt="a", duration_s=5, audio=True, resolution="1080p"), "fal"
        )
        == "5 s × 11 credits/s × 1.5 (audio) = 83 credits"
    )


# -- the parser of outside input never raises anything else ----------------------------------

values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
field_names = st.sampled_from(
    [
        "prompt",
        "negative_prompt",
        "duration_s",
        "aspect_ratio",
        "audio",
        "resolution",
        "cfg_scale",
        "shot_type",
        "shots",
        "voice_ids",
        "other",
    ]
)
shot_values = st.lists(
    st.dictionaries(st.sampled_from(["prompt", "duration_s", "x"]), values, max_size=3), max_size=7
)


@settings(max_examples=400)
@given(
    st.dictionaries(field_names, values | shot_values | st.lists(values, max_size=4), max_size=8)
)
def test_parse_request_only_raises_invalid_request(data: dict[str, Any]) -> None:
    problems: list[str] = []
    try:
        request: VideoRequest | None = parse_request(data)
    except InvalidRequest as error:
        request, problems = None, error.problems
    if request is None:
        assert problems and all(isinstance(p, str) and p for p in problems)
    else:
        assert request.problems() == []
