"""Shared pieces for provider contract tests: sample requests, HTTP client, free ports, the
`double` and `make` fixtures a vendor case drives, and a watch on connect attempts."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import aiohttp
import pytest
from hypothesis import strategies as st

from bot.providers.base import VideoProvider
from bot.providers.http import ProviderHttp
from bot.request import Shot, VideoRequest

if TYPE_CHECKING:
    from tests.provider_cases.case import VendorCase
    from tests.provider_doubles.base import VendorDouble

NOW = 1_800_000_000  # the fixed clock of tests that sign or read reset times
SAMPLE_VIDEO = "https://cdn.example/v.mp4"  # the video URL in hand-written status replies

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

# The samples in Kling's own input schema (durations as strings), which fal, Segmind and EachLabs
# (in `input`) take as they are; other vendors' cases spell out their own fields.
KLING_PLAIN: dict[str, Any] = {
    "prompt": "A red fox running through snow",
    "duration": "5",
    "aspect_ratio": "16:9",
    "generate_audio": True,
}
KLING_FULL: dict[str, Any] = {
    "prompt": "A lighthouse at dusk, waves crashing",
    "negative_prompt": "blurry, watermark",
    "duration": "10",
    "aspect_ratio": "9:16",
    "generate_audio": False,
    "cfg_scale": 0.7,
    "shot_type": "customize",
}
KLING_MULTI: dict[str, Any] = {
    "multi_prompt": [
        {"prompt": "A fox wakes up in its den", "duration": "3"},
        {"prompt": "The fox runs across a snowy field", "duration": "5"},
    ],
    "duration": "8",
    "aspect_ratio": "1:1",
    "generate_audio": True,
}
KLING_VOICE: dict[str, Any] = {
    "prompt": "<<<voice_1>>> says hello to <<<voice_2>>> on a park bench",
    "voice_ids": ["voice_123456", "voice_abcdef"],
    "duration": "5",
    "aspect_ratio": "16:9",
    "generate_audio": True,
}

# Replies that are no JSON object at all, for every reader of outside JSON.
NOT_AN_OBJECT = (b"{not json", b"", b"[1, 2]", b'"text"')
NOT_JSON = (b"", b"not json", b"[1, 2]", b"\xff\xfe\x00garbage")


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


# -- adapters on a vendor double, for the case a test runs with -------------------------------


T = TypeVar("T")


def narrow(value: object, kind: type[T]) -> T:
    """`value` as the vendor-specific `kind` it must be (an adapter, a double's job)."""
    assert isinstance(value, kind), f"{value!r} is not a {kind.__name__}"
    return value


@pytest.fixture
def case(request: pytest.FixtureRequest) -> VendorCase:
    """The vendor case of a vendor's test module: its `CASE` (the contract suite parametrizes)."""
    found = getattr(request.module, "CASE", None)
    assert found is not None, f"{request.module.__name__} names no CASE"
    return cast("VendorCase", found)


@pytest.fixture
async def double(case: VendorCase) -> AsyncIterator[VendorDouble]:
    """The case's vendor double, listening on 127.0.0.1."""
    async with case.double_type() as vendor:
        yield vendor


class Make:
    """Builds the case's adapter on its double (or on `origin`), keeping each to close later."""

    def __init__(
        self, case: VendorCase, double: VendorDouble, http: ProviderHttp, work_dir: Path
    ) -> None:
        self.case, self.double, self.http, self.work_dir = case, double, http, work_dir
        self.made: list[VideoProvider] = []

    def __call__(
        self,
        *,
        key: str | None = None,
        route: str | None = None,
        now_s: float | None = None,
        origin: str | None = None,
        client: ProviderHttp | None = None,
        reply_timeout_s: float = 5.0,
    ) -> VideoProvider:
        from tests.provider_cases.case import Setup  # (the cases import this module)

        setup = Setup(
            origin=origin or self.double.base_url,
            key=self.case.api_key if key is None else key,
            route=route or self.case.routes[0].name,
            now_s=now_s,
            work_dir=self.work_dir,
            reply_timeout_s=reply_timeout_s,
        )
        provider = self.case.adapter(client or self.http, setup)
        self.made.append(provider)
        return provider


@pytest.fixture
async def make(
    case: VendorCase, double: VendorDouble, http: ProviderHttp, tmp_path: Path
) -> AsyncIterator[Make]:
    """Adapters for the test's vendor case; each is closed at the end of the test."""
    maker = Make(case, double, http, tmp_path / case.name)
    yield maker
    for provider in maker.made:
        await provider.close()


# -- connect attempts ------------------------------------------------------------------------


class ConnectAttempts:
    """This process's TCP connect attempts to one loopback port, as they happen.

    Python raises the audit event `socket.connect` just before each connect(). To a loopback port
    nothing listens on, connect() has already been refused when it returns (Linux answers the SYN
    at once), so after `first` is set the double can start listening without turning that attempt
    into a success.
    """

    def __init__(self, port: int, loop: asyncio.AbstractEventLoop) -> None:
        self.port = port
        self.count = 0
        self.first = asyncio.Event()
        self._loop = loop

    def seen(self) -> None:
        self.count += 1
        self._loop.call_soon_threadsafe(self.first.set)


_watched: dict[int, ConnectAttempts] = {}
_hook_lock = threading.Lock()
_hook_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "socket.connect" or not _watched:
        return
    address = args[1] if len(args) > 1 else None
    if isinstance(address, tuple) and len(address) >= 2 and address[0] == "127.0.0.1":
        watch = _watched.get(address[1])
        if watch is not None:
            watch.seen()


@contextmanager
def connect_attempts(port: int) -> Iterator[ConnectAttempts]:
    """Watch connect attempts to 127.0.0.1:`port` while the block runs."""
    global _hook_installed
    with _hook_lock:
        if not _hook_installed:  # audit hooks cannot be removed: install one, once
            sys.addaudithook(_audit)
            _hook_installed = True
    watch = ConnectAttempts(port, asyncio.get_running_loop())
    _watched[port] = watch
    try:
        yield watch
    finally:
        del _watched[port]


def json_object(body: bytes) -> dict[str, Any] | None:
    """`body` as a JSON object, or None when it is not one."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def id_text(value: Any) -> str | None:
    """A vendor id as adapters must read it: a non-blank string (stripped) or a number."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def strictly_equal(left: Any, right: Any) -> bool:
    """JSON equality that also tells 5 from 5.0 and from True (json.dumps spells them apart)."""
    return bool(left == right) and _canonical(left) == _canonical(right)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
