"""The playground page's API (bot.playground.web) against the real bot in the scenario's double:
who sees what, acting as someone else, bad input, live updates; and its input parsers."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.playground.options import (
    BOOLEAN,
    INTEGER,
    NUMBER,
    STRING,
    USER,
    PageInputError,
    parse_option,
    parse_range,
)
from bot.playground.scenario import GENERAL, MEMBER, MODERATOR, OWNER, PLAYGROUND, PLAYGROUND_GUILD
from tests.playground_support import Stack, playground_stack

JSON = dict[str, Any]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with playground_stack(tmp_path) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http: aiohttp.ClientSession, stack: Stack, path: str, body: JSON) -> Any:
    async with http.post(stack.url + path, json=body) as response:
        return response.status, await response.json()


async def invoke(
    http: aiohttp.ClientSession, stack: Stack, person: int, name: str, **body: Any
) -> Any:
    payload = {"person_id": person, "guild_id": PLAYGROUND_GUILD, "channel_id": GENERAL}
    return await call(http, stack, "/api/invoke", payload | {"name": name, **body})


async def messages(http: aiohttp.ClientSession, stack: Stack, person: int) -> list[JSON]:
    url = f"{stack.url}/api/channels/{GENERAL}/messages?person_id={person}"
    async with http.get(url) as response:
        assert response.status == 200
        found: list[JSON] = await response.json()
        return found


async def test_each_person_sees_their_commands_and_their_own_ephemeral_replies(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    def names(commands: list[JSON]) -> set[str]:
        return {c["name"] for c in commands}

    seen = {}
    for person in (OWNER, MODERATOR, MEMBER):
        url = f"{stack.url}/api/commands?guild_id={PLAYGROUND_GUILD}&person_id={person}"
        async with http.get(url) as response:
            seen[person] = names(await response.json())
    assert {"klingadmin", "pool", "video"} <= seen[OWNER]
    assert "pool" in seen[MODERATOR] and "klingadmin" not in seen[MODERATOR]
    assert "video" in seen[MEMBER] and not {"pool", "klingadmin"} & seen[MEMBER]

    status, refused = await invoke(http, stack, MEMBER, "pool", sub="status")
    assert status == 400 and "not available to this person" in refused["error"]

    status, started = await invoke(
        http, stack, OWNER, "klingadmin", sub="fund", options={"credits": "500"}
    )
    assert status == 200
    inter = stack.double.interaction(int(started["interaction_id"]))
    assert inter.user_id == OWNER  # acting as the owner
    await inter.wait_ack(timeout=15)
    mine = [m for m in await messages(http, stack, OWNER) if m["ephemeral"]]
    starting = PLAYGROUND.guilds[0].starting_pool_credits  # the playground funds it at start
    assert len(mine) == 1 and f"now has {starting + 500} available" in mine[0]["content"]
    assert mine[0]["interaction"]["user_id"] == str(OWNER)
    for other in (MODERATOR, MEMBER):
        assert not [m for m in await messages(http, stack, other) if m["ephemeral"]]


async def test_bad_options_are_refused_with_the_reason_and_change_nothing(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    before = len(stack.double.interactions)
    cases = [
        ({"prompt": "a fox", "duration": "99"}, "outside 3..15"),
        ({"prompt": "a fox", "duration": "five"}, "duration: 'five' is not a whole number"),
        ({"prompt": "a fox", "colour": "red"}, "no option 'colour'"),
        ({"duration": "5"}, "required option 'prompt' missing"),
    ]
    for options, reason in cases:
        status, body = await invoke(http, stack, MEMBER, "video", options=options)
        assert status == 400, body
        assert reason in body["error"]
    status, body = await call(http, stack, "/api/invoke", {"person_id": "me"})
    assert (status, body) == (400, {"error": "person_id must be an id, got 'me'"})
    assert len(stack.double.interactions) == before


async def test_events_push_the_status_message_as_it_is_edited(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    await invoke(http, stack, OWNER, "klingadmin", sub="fund", options={"credits": "500"})
    async with http.get(f"{stack.url}/api/events?person_id={MEMBER}") as events:
        assert events.headers["Content-Type"] == "text/event-stream"
        assert await events.content.readline() == b": connected\n"
        status, _ = await invoke(
            http, stack, MEMBER, "video", options={"prompt": "a red fox", "duration": "3"}
        )
        assert status == 200
        received: list[tuple[str, JSON]] = []
        event = ""
        async with asyncio.timeout(60):  # until the clip's message is pushed
            while not any(m.get("attachments") for e, m in received if e == "message"):
                line = (await events.content.readline()).decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    received.append((event, json.loads(line[6:])))
    bot_messages = [m for e, m in received if e == "message" and m["author"]["bot"]]
    receipt = next(m for m in bot_messages if m["ephemeral"])
    assert receipt["interaction"]["user_id"] == str(MEMBER)
    status_edits = [m for m in bot_messages if not m["ephemeral"] and m["edit_count"] > 0]
    assert status_edits, "no edit of the status message was pushed"
    clip = next(m for m in bot_messages if m["attachments"])
    attachment = clip["attachments"][0]
    assert attachment["content_type"] == "video/mp4"
    url = f"{stack.url}{attachment['url']}?person_id={MEMBER}"
    async with http.get(url, headers={"Range": "bytes=0-99"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 0-99/{attachment['size']}"
        assert len(await response.read()) == 100


async def test_autocomplete_asks_the_bot_only_for_options_synced_with_it(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    body = {
        "person_id": MEMBER,
        "guild_id": PLAYGROUND_GUILD,
        "channel_id": GENERAL,
        "name": "video",
        "options": {"prompt": "a f"},
        "focused": "prompt",
    }
    before = len(stack.double.interactions)
    status, answer = await call(http, stack, "/api/autocomplete", body)
    assert status == 400 and "'prompt' has no synced autocomplete" in answer["error"]
    assert len(stack.double.interactions) == before


# The page's colours: text and the background it is drawn on, each pair at least WCAG AA (4.5:1).
TEXT_ON_BACKGROUND = [
    ("--text", "--bg-main"),
    ("--text", "--bg-input"),
    ("--muted", "--bg-main"),
    ("--muted", "--bg-side"),
    ("--muted", "--bg-rail"),
    ("--muted", "--bg-input"),
    ("--muted", "--ephemeral"),
    ("--link", "--bg-main"),
    ("--link", "--ephemeral"),
    ("--error", "--bg-main"),
    ("#ffffff", "--accent"),
    ("#ffffff", "--primary"),
    ("#ffffff", "--secondary"),
    ("#ffffff", "--success"),
    ("#ffffff", "--danger"),
]


def test_text_colours_have_aa_contrast() -> None:
    css = (Path(__file__).parent.parent / "bot/playground/static/app.css").read_text()
    colours = dict(re.findall(r"(--[a-z-]+):\s*(#[0-9a-f]{6});", css))

    def luminance(colour: str) -> float:
        value = colours.get(colour, colour)
        channels = [int(value[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    low = []
    for text, background in TEXT_ON_BACKGROUND:
        light, dark = sorted((luminance(text), luminance(background)), reverse=True)
        ratio = (light + 0.05) / (dark + 0.05)
        if ratio < 4.5:
            low.append(f"{text} on {background}: {ratio:.2f}")
    assert low == []


# -- parsers of page input ---------------------------------------------------------------------

INT_OPTION = {"name": "n", "type": INTEGER}


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(["", " ", "+"]))
def test_whole_numbers_are_read_back(value: int, pad: str) -> None:
    text = f"{pad}{value}" if pad != "+" or value >= 0 else str(value)
    assert parse_option(INT_OPTION, text) == value


@given(st.text(max_size=30), st.sampled_from([INTEGER, NUMBER, BOOLEAN, USER, STRING]))
def test_any_text_is_a_value_or_a_page_input_error(text: str, otype: int) -> None:
    option = {"name": "opt", "type": otype}
    try:
        value = parse_option(option, text)
    except PageInputError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert refusal.startswith("opt: ") and otype != STRING
        return
    expected = {INTEGER: int, NUMBER: float, BOOLEAN: bool, USER: int, STRING: str}[otype]
    assert type(value) is expected
    if otype == STRING:
        assert value == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_are_read_back(value: float) -> None:
    assert parse_option({"name": "x", "type": NUMBER}, repr(value)) == value


@given(st.integers(0, 5000), st.integers(0, 5000), st.integers(1, 4000))
def test_byte_ranges_stay_inside_the_body(first: int, last: int, size: int) -> None:
    header = f"bytes={first}-{last}"
    try:
        wanted = parse_range(header, size)
    except PageInputError:
        assert first >= size or last < first
        return
    assert wanted is not None
    assert 0 <= wanted.start <= wanted.end < size
    assert (wanted.start, wanted.end) == (first, min(last, size - 1))


@given(st.text(max_size=40), st.integers(0, 4000))
def test_any_range_header_is_a_range_none_or_refused(header: str, size: int) -> None:
    try:
        wanted = parse_range(header, size)
    except PageInputError:
        return
    if wanted is not None:
        assert 0 <= wanted.start <= wanted.end < size and wanted.length >= 1


def test_range_forms() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=5-", 10) == parse_range("bytes=5-9", 10)
    suffix = parse_range("bytes=-3", 10)
    assert suffix is not None and (suffix.start, suffix.end) == (7, 9)
    assert parse_range("bytes=0-1,4-5", 10) is None  # several ranges: the whole body
    with pytest.raises(PageInputError):
        parse_range("bytes=10-", 10)
