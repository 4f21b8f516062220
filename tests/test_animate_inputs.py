"""The outside input /animate parses itself: the Animate form's values and the image name in a
/media link; and the `seconds: prompt` shot fields of the same forms. Whatever arrives gives
options or a specific refusal, and a link names only the job's own stored images."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from bot.discord.animate import animate_options
from bot.discord.modals import parse_shots
from bot.errors import InvalidRequest
from bot.media.images import check_image
from bot.pipeline import MediaStore
from bot.request import parse_request
from storage import Database, Job, JobStore, ManualClock, NewJob

FORM_KEYS = st.sampled_from(["prompt", "duration", "negative_prompt", "other"])


@given(st.dictionaries(FORM_KEYS, st.text(max_size=40)))
def test_animate_form_values_give_options_or_a_specific_refusal(values: dict[str, str]) -> None:
    duration = values.get("duration", "").strip()
    if duration and not duration.isdecimal():
        with pytest.raises(InvalidRequest, match="whole number of seconds"):
            animate_options(values)
        return
    options = animate_options(values)
    assert set(options) <= {"prompt", "duration_s", "negative_prompt"}
    if "duration_s" in options:
        assert isinstance(options["duration_s"], int) and options["duration_s"] >= 0
    for key in ("prompt", "negative_prompt"):
        if key in options:
            assert options[key] == options[key].strip() and options[key]


def test_animate_form_examples() -> None:
    assert animate_options({"prompt": "  wind ", "duration": " 7 ", "negative_prompt": ""}) == {
        "prompt": "wind",
        "duration_s": 7,
    }
    assert animate_options({"prompt": "", "duration": ""}) == {}
    with pytest.raises(InvalidRequest, match=r"3 to 15 \(got '5s'\)"):
        animate_options({"duration": "5s"})
    with pytest.raises(InvalidRequest, match="whole number"):
        animate_options({"duration": "²"})  # a digit to str.isdigit, not to int()
    with pytest.raises(InvalidRequest, match="Duration must be 3 to 15 seconds"):
        parse_request({**animate_options({"duration": "99"}), "prompt": "x"})


async def stored_job(store: MediaStore, db_path: Path) -> tuple[Job, str]:
    """A real job row asking to animate a stored image, and that image's file name."""
    out = io.BytesIO()
    Image.new("RGB", (400, 400), (1, 2, 3)).save(out, "PNG")
    image = check_image(out.getvalue())
    store.store_image(image)
    request = parse_request({"image": image.ref.model_dump()}).model_dump(mode="json")
    async with await Database.open(db_path) as db:
        job = await JobStore(db).create(NewJob(provider="local", request=request, cost=1))
    return job, f"{image.sha256}.png"


def test_an_image_link_names_only_the_jobs_own_images(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media", "http://127.0.0.1:1", 3600, 10**9, ManualClock())
    job, own = asyncio.run(stored_job(store, tmp_path / "bot.db"))
    names = st.one_of(
        st.text(max_size=80),
        st.sampled_from([own, own.upper(), own.replace(".png", ".jpg"), f"../{own}", own + "/"]),
    )

    @given(name=names)
    def check(name: str) -> None:
        found = store.job_image(job, name)
        if name != own:
            assert found is None
            return
        assert found is not None
        path, ref = found
        assert path == store.images_dir / own and path.is_file()
        assert store.image_link(job, ref) == (
            f"http://127.0.0.1:1/media/{job.id}/{job.media_token}/{own}"
        )

    check()


@given(st.dictionaries(st.sampled_from([f"shot_{n}" for n in range(1, 7)]), st.text(max_size=30)))
def test_shot_fields_give_shots_or_a_sentence_for_each_bad_one(values: dict[str, str]) -> None:
    shots, problems = parse_shots(values)
    assert shots or problems
    for shot in shots:
        assert isinstance(shot["duration_s"], int) and isinstance(shot["prompt"], str)
    assert all("Shot" in p or "at least one shot" in p for p in problems)


def test_a_superscript_digit_is_not_a_number_of_seconds() -> None:
    assert parse_shots({"shot_1": "²: a fox"})[1] == [
        "Shot 1 must start with its length in seconds, like `3: a fox wakes up`."
    ]
