"""KLINGBOT_SHARD_COUNT and KLINGBOT_SHARD_IDS: the strict parser of shard ids, and the settings
that refuse bad ones by name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.discord.cli import open_bot
from bot.discord.client import FrontConfig
from bot.errors import ConfigError
from bot.settings import Settings, load_settings
from bot.shards import check_shard_ids, parse_shard_ids, shard_of


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in list(os.environ):
        if name.startswith("KLINGBOT_") or name == "DISCORD_TOKEN":
            monkeypatch.delenv(name)
    monkeypatch.chdir(str(tmp_path))  # no stray .env


# -- the parser --------------------------------------------------------------------------------


@st.composite
def written_ids(draw: st.DrawFn) -> tuple[int, str, list[int]]:
    """A count, some distinct ids below it, and one way of writing them: singles and ranges in
    any order, with spaces around items and dashes."""
    count = draw(st.integers(1, 300))
    ids = sorted(draw(st.sets(st.integers(0, count - 1), min_size=1, max_size=40)))
    runs: list[list[int]] = []
    for shard in ids:  # consecutive ids may be written as one range, or one by one
        if runs and runs[-1][-1] == shard - 1 and draw(st.booleans()):
            runs[-1].append(shard)
        else:
            runs.append([shard])
    items = [
        str(run[0]) if len(run) == 1 else f"{run[0]}{draw(st.sampled_from(['-', ' - ']))}{run[-1]}"
        for run in runs
    ]
    items = draw(st.permutations(items))
    spaces = st.sampled_from(["", " ", "  "])
    text = ",".join(f"{draw(spaces)}{item}{draw(spaces)}" for item in items)
    return count, text, ids


@given(written_ids())
def test_any_way_of_writing_ids_reads_back_the_same_ids(case: tuple[int, str, list[int]]) -> None:
    count, text, ids = case
    assert parse_shard_ids(text, count) == tuple(ids)


@given(st.text(max_size=30), st.integers(1, 50))
def test_any_text_gives_valid_ids_or_a_value_error(text: str, count: int) -> None:
    try:
        ids = parse_shard_ids(text, count)
    except ValueError as error:
        message = str(error)
    else:
        message = ""
        assert ids and list(ids) == sorted(set(ids)) and all(0 <= i < count for i in ids)
        return
    assert message  # a specific message, never an empty one


@given(written_ids(), st.data())
def test_an_id_given_twice_is_refused(
    case: tuple[int, str, list[int]], data: st.DataObject
) -> None:
    count, text, ids = case
    again = data.draw(st.sampled_from(ids))
    with pytest.raises(ValueError, match=f"shard {again} is listed twice|is listed twice"):
        parse_shard_ids(f"{text},{again}", count)


@given(st.integers(1, 1000), st.integers(0, 5000))
def test_an_id_at_or_above_the_count_is_refused(count: int, extra: int) -> None:
    with pytest.raises(ValueError, match=f"does not exist with KLINGBOT_SHARD_COUNT={count}"):
        parse_shard_ids(f"0-{count + extra}" if extra % 2 else str(count + extra), count)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        (" ", "is empty"),
        ("0,,1", "'' is not a shard id"),
        ("0,", "'' is not a shard id"),
        ("-1", "'-1' is not a shard id"),
        ("+1", "'\\+1' is not a shard id"),
        ("1.0", "'1.0' is not a shard id"),
        ("0x1", "'0x1' is not a shard id"),
        ("1_0", "'1_0' is not a shard id"),
        ("١", "'١' is not a shard id"),  # a digit, but not an ASCII one
        ("0-1-2", "'0-1-2' is not a shard id"),
        ("0..2", "'0..2' is not a shard id"),
        ("0;1", "'0;1' is not a shard id"),
        ("2-0", "runs backwards; write 0-2"),
        ("0-4", "shard 4 does not exist"),
        ("9" * 5000, "does not exist"),
        ("0-1,1", "shard 1 is listed twice"),
        ("0-2,1-3", "shard 1 is listed twice"),
    ],
)
def test_bad_ids_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_shard_ids(text, 4)


def test_ids_given_as_numbers_follow_the_same_rules() -> None:
    assert check_shard_ids([2, 0], 3) == (0, 2)
    with pytest.raises(ValueError, match="does not exist"):
        check_shard_ids([3], 3)
    with pytest.raises(ValueError, match="listed twice"):
        check_shard_ids([1, 1], 3)


def test_shard_of_follows_discords_formula() -> None:
    # (guild_id >> 22) % count, from Discord's gateway documentation
    assert shard_of(81384788765712384, 3) == (81384788765712384 // 2**22) % 3
    assert [shard_of((n << 22) | 12345, 3) for n in range(6)] == [0, 1, 2, 0, 1, 2]


# -- the settings ------------------------------------------------------------------------------


def test_unset_is_one_unsharded_client() -> None:
    settings = load_settings()
    assert (settings.shard_count, settings.shard_ids) == (None, None)
    config = FrontConfig.from_settings(settings)
    assert config.syncs_commands


def test_count_alone_holds_every_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLINGBOT_SHARD_COUNT", "4")
    settings = load_settings()
    assert (settings.shard_count, settings.shard_ids) == (4, None)
    assert FrontConfig.from_settings(settings).syncs_commands


@pytest.mark.parametrize(
    ("text", "ids", "syncs"), [("0,1", (0, 1), True), ("1-2", (1, 2), False), (" 2 ", (2,), False)]
)
def test_count_and_ids(
    monkeypatch: pytest.MonkeyPatch, text: str, ids: tuple[int, ...], syncs: bool
) -> None:
    monkeypatch.setenv("KLINGBOT_SHARD_COUNT", "3")
    monkeypatch.setenv("KLINGBOT_SHARD_IDS", text)
    settings = load_settings()
    assert (settings.shard_count, settings.shard_ids) == (3, ids)
    config = FrontConfig.from_settings(settings)
    assert (config.shard_count, config.shard_ids, config.syncs_commands) == (3, ids, syncs)


@pytest.mark.parametrize(
    ("env", "named", "message"),
    [
        ({"KLINGBOT_SHARD_IDS": "0"}, "KLINGBOT_SHARD_IDS", "needs KLINGBOT_SHARD_COUNT"),
        ({"KLINGBOT_SHARD_COUNT": "2", "KLINGBOT_SHARD_IDS": "0,2"}, "KLINGBOT_SHARD_IDS", "shard 2 does not exist"),
        ({"KLINGBOT_SHARD_COUNT": "2", "KLINGBOT_SHARD_IDS": "one"}, "KLINGBOT_SHARD_IDS", "'one' is not a shard id"),
        ({"KLINGBOT_SHARD_COUNT": "0"}, "KLINGBOT_SHARD_COUNT", "greater than or equal to 1"),
        ({"KLINGBOT_SHARD_COUNT": "two"}, "KLINGBOT_SHARD_COUNT", "valid integer"),
        ({"KLINGBOT_SHARD_COUNT": "1000001"}, "KLINGBOT_SHARD_COUNT", "less than or equal to"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str, message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert f"{named}: " in text and message in text and "Traceback" not in text
    other = ({"KLINGBOT_SHARD_COUNT", "KLINGBOT_SHARD_IDS"} - {named}).pop()
    assert f"{other}: " not in text  # only the bad one is named


async def test_a_bot_that_never_logged_in_closes(tmp_path: Path) -> None:
    """discord.py's sharded close needs what login makes; a bot built only for its command tree
    (the README check, tools) still closes."""
    settings = Settings(_env_file=None, db_path=tmp_path / "bot.db", media_dir=tmp_path / "media")
    async with open_bot(settings, with_web=False, start_pipeline=False) as bot:
        await bot.close()
        assert bot.is_closed()
