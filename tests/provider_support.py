"""Shared pieces for provider contract tests: sample requests, HTTP client, free ports."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import cast

import aiohttp
import pytest
from hypothesis import strategies as st

from bot.providers.http import ProviderHttp
from bot.request import Shot, VideoRequest

PLAIN = VideoRequest(
    prompt="A red fox running through snow",
    duration_s=5,
    aspect_ratio="16:9",
    audio=True,
    resolution="1080p",
)
PLAIN_FULL = VideoRequest(
    prompt="A lighthouse at dusk, waves crashing",
    negative_prompt="blurry, watermark",
    duration_s=10,
    aspect_ratio="9:16",
    audio=False,
    resolution="1080p",
    cfg_scale=0.7,
    shot_type="customize",
)
MULTI = VideoRequest(
    duration_s=8,
    aspect_ratio="1:1",
    audio=True,
    resolution="1080p",
    shots=(
        Shot(prompt="A fox wakes up in its den", duration_s=3),
        Shot(prompt="The fox runs across a snowy field", duration_s=5),
    ),
)
VOICE = VideoRequest(
    prompt="<<<voice_1>>> says hello to <<<voice_2>>> on a park bench",
    duration_s=5,
    aspect_ratio="16:9",
    audio=True,
    resolution="1080p",
    voice_ids=("voice_123456", "voice_abcdef"),
)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def http() -> AsyncIterator[ProviderHttp]:
    async with aiohttp.ClientSession() as session:
        client = ProviderHttp(session, timeout_s=2.0, connect_retries=2, retry_delay_s=0.2)
        yield client
        await client.close()


# Parsers are pure: adapters built only to parse or verify never touch the network.
NO_HTTP = cast(ProviderHttp, None)


# Arbitrary JSON, for the property tests that feed every parser of outside input.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
