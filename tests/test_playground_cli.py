"""`klingbot playground` and `make run` as a newcomer runs them: real processes in a temporary
working directory, real sockets on 127.0.0.1, SIGINT to stop."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.playground import scenario as sc
from bot.playground.cli import GO_LIVE, port_number
from bot.playground.double import DiscordDouble
from bot.playground.runner import choose_providers
from bot.settings import FalSettings, Settings
from storage import BotState, Database

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
STARTUP_S = 60.0
STOP_S = 15.0
URL_PREFIX = "Playground running at "


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any klingbot or Discord setting (a newcomer's shell)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KLINGBOT_") and k not in ("DISCORD_TOKEN", "BROWSER")
    }
    env.pop("DISPLAY", None)  # no graphical browser for the CLI to open
    env.pop("WAYLAND_DISPLAY", None)
    return env | extra


async def until_session_ends(session_id: int) -> list[int]:
    """Wait (at most STOP_S) for a session's processes to exit; those still alive."""
    deadline = asyncio.get_running_loop().time() + STOP_S
    while (alive := session_pids(session_id)) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    return alive


def session_pids(session_id: int) -> list[int]:
    """Processes still alive in a session (the subprocess started its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == session_id and fields[0] != "Z":
            found.append(int(entry.name))
    return found


@dataclass
class Started:
    process: asyncio.subprocess.Process
    lines: list[str]

    @property
    def url(self) -> str:
        [line] = [line for line in self.lines if line.startswith(URL_PREFIX)]
        return line.removeprefix(URL_PREFIX)

    async def interrupt(self) -> int:
        """SIGINT to the whole session, as Ctrl-C in a terminal; the exit code."""
        os.killpg(self.process.pid, signal.SIGINT)
        return await asyncio.wait_for(self.process.wait(), STOP_S)


@asynccontextmanager
async def started(cmd: list[str], cwd: Path, env: dict[str, str]) -> AsyncIterator[Started]:
    """Start `cmd` in its own session, read its output up to the URL line, kill it on exit
    if the test did not stop it."""
    stderr = (cwd / "stderr.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,
    )
    run = Started(process, [])
    try:
        assert process.stdout is not None
        async with asyncio.timeout(STARTUP_S):
            while not any(line.startswith(URL_PREFIX) for line in run.lines):
                raw = await process.stdout.readline()
                if not raw:
                    log = (cwd / "stderr.log").read_text()[-3000:]
                    raise AssertionError(f"exited before the URL line: {run.lines}\n{log}")
                run.lines.append(raw.decode().rstrip("\n"))
        yield run
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        stderr.close()


def playground_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bot", "playground", "--no-browser", "--port", "0", *args]


async def poll(check: Any, what: str, timeout_s: float = 60.0) -> Any:
    """Poll `check()` (a coroutine function) until it returns something truthy."""
    try:
        async with asyncio.timeout(timeout_s):
            while not (result := await check()):
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"no {what} after {timeout_s} s") from None
    return result


async def fund_amounts(db_path: Path) -> list[int]:
    async with await Database.open(db_path) as db:
        rows = await db.fetchall(
            "SELECT amount FROM transfers WHERE reason = 'fund' AND guild_id = ?",
            (sc.PLAYGROUND_GUILD,),
        )
    return [int(row[0]) for row in rows]


# -- the playground process ---------------------------------------------------------------


async def test_playground_delivers_a_video_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    """The member's /video in the 1 MiB channel: rendered, re-encoded in worker processes to
    fit, posted; then SIGINT stops the process and every process it started."""
    async with started(playground_cmd(), tmp_path, clean_env()) as run:
        assert run.lines[-1] == f"{URL_PREFIX}{run.url}"
        assert run.url.startswith("http://127.0.0.1:") and run.url.endswith("/")
        channel = f"{run.url}_test/messages/{sc.SMALL_UPLOADS}"
        async with aiohttp.ClientSession() as http:
            async with http.get(run.url) as page:
                assert page.status == 200
            async with http.get(run.url + "bot/healthz") as health:
                assert health.status == 200
            invoke = {
                "name": "video",
                "options": {"prompt": "a red fox running through snow", "duration": 5},
                "user_id": sc.MEMBER,
                "guild_id": sc.PLAYGROUND_GUILD,
                "channel_id": sc.SMALL_UPLOADS,
            }
            async with http.post(run.url + "_test/invoke", json=invoke) as answer:
                assert answer.status == 200, await answer.text()

            async def clip() -> dict[str, Any] | None:
                async with http.get(channel) as response:
                    messages = await response.json()
                return next(
                    (
                        a
                        for m in messages
                        for a in m["attachments"]
                        if m["author"]["id"] == str(sc.BOT_ID) and a["filename"].endswith(".mp4")
                    ),
                    None,
                )

            attachment = await poll(clip, "clip in #small-uploads", timeout_s=120)
            async with http.get(attachment["url"]) as response:
                video = await response.read()
            assert video[4:8] == b"ftyp" and len(video) == attachment["size"]
            assert attachment["size"] <= 1024 * 1024
        assert len(session_pids(run.process.pid)) > 1  # the re-encoder's worker processes
        assert await run.interrupt() == 0
    assert await until_session_ends(run.process.pid) == []
    log = (tmp_path / "stderr.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert (tmp_path / "data" / "playground.db").exists()


async def test_restart_funds_the_pool_once_and_reset_starts_clean(tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "playground.db"
    for _ in range(2):
        async with started(playground_cmd(), tmp_path, clean_env()) as run:
            assert await run.interrupt() == 0
    assert await fund_amounts(db_path) == [1_000]
    async with await Database.open(db_path) as db:
        await BotState(db).set("left-by-the-test", "1")
    marker = tmp_path / "data" / "playground" / "left-by-the-test"
    marker.write_text("x")

    async with started(playground_cmd("--reset"), tmp_path, clean_env()) as run:
        assert await run.interrupt() == 0
    assert await fund_amounts(db_path) == [1_000]
    async with await Database.open(db_path) as db:
        assert await BotState(db).get("left-by-the-test") is None
    assert not marker.exists()


async def test_a_taken_port_is_refused_with_what_to_do(tmp_path: Path) -> None:
    async with started(playground_cmd(), tmp_path, clean_env()) as first:
        port = first.url.rstrip("/").rsplit(":", 1)[1]
        second = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "playground",
            "--no-browser",
            "--port",
            port,
            cwd=tmp_path,
            env=clean_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(second.communicate(), STARTUP_S)
        assert second.returncode == 2
        assert out == b""
        assert f"Port {port} is in use" in err.decode() and "--port 0" in err.decode()
        assert await first.interrupt() == 0


# -- make run --------------------------------------------------------------------------------


def make_run(*args: str) -> list[str]:
    """`make run` from the repository's Makefile, in the test's directory, with this venv (its
    install step taken as done)."""
    installed = str(VENV / ".installed-run")
    return [
        "make",
        "-s",
        "-f",
        str(REPO / "Makefile"),
        "-o",
        installed,
        f"VENV={VENV}",
        "run",
        *args,
    ]


async def test_make_run_without_a_token_starts_the_playground(tmp_path: Path) -> None:
    assert not (tmp_path / ".env").exists()
    cmd = make_run("RUN_ARGS=--port 0 --no-browser")
    async with started(cmd, tmp_path, clean_env()) as run:
        assert run.lines[0] == GO_LIVE
        assert run.lines[1].startswith(f"{URL_PREFIX}http://127.0.0.1:")
        async with aiohttp.ClientSession() as http, http.get(run.url) as page:
            assert page.status == 200
        await run.interrupt()  # make ends at once; klingbot stops on its own SIGINT
    assert await until_session_ends(run.process.pid) == []


async def test_make_run_with_a_token_runs_the_real_bot(tmp_path: Path) -> None:
    """DISCORD_TOKEN in .env: `klingbot run` logs into "Discord" (a double on 127.0.0.1)."""
    token = "a-test-token"
    async with DiscordDouble(app_id=sc.APP_ID, bot_user_id=sc.BOT_ID, token=token) as double:
        double.add_guild(sc.PLAYGROUND_GUILD, name="g", owner_id=sc.OWNER)
        double.add_channel(sc.PLAYGROUND_GUILD, sc.GENERAL, "general")
        (tmp_path / ".env").write_text(f"DISCORD_TOKEN={token}\n")
        env = clean_env(
            KLINGBOT_DISCORD_API_BASE_URL=double.api_base,
            KLINGBOT_DISCORD_GATEWAY_URL=double.gateway_url,
            KLINGBOT_HTTP_PORT="0",
            KLINGBOT_DEV_GUILD_ID=str(sc.PLAYGROUND_GUILD),
        )
        process = await asyncio.create_subprocess_exec(
            *make_run("RUN_ARGS=--port 0 --no-browser"),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            await double.wait_until_connected(timeout=STARTUP_S)
            await double.wait_for(lambda: bool(double.commands(sc.PLAYGROUND_GUILD)), STARTUP_S)
        finally:
            os.killpg(process.pid, signal.SIGINT)
            out, _ = await asyncio.wait_for(process.communicate(), STOP_S)
    text = out.decode()
    assert GO_LIVE not in text and URL_PREFIX not in text
    assert (tmp_path / "data" / "klingbot.db").exists()  # the real install's database
    assert not (tmp_path / "data" / "playground.db").exists()
    assert await until_session_ends(process.pid) == []


# -- small parts -----------------------------------------------------------------------------


@given(st.text(max_size=8))
def test_port_number_takes_a_port_or_explains(text: str) -> None:
    digits = text.strip()
    if digits.isascii() and digits.isdigit() and int(digits) <= 65535:
        assert port_number(text) == int(digits)
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="not a port"):
            port_number(text)


@given(st.integers(min_value=-70_000, max_value=140_000))
def test_port_number_round_trips_ports(number: int) -> None:
    if 0 <= number <= 65535:
        assert port_number(str(number)) == number
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="not a port"):
            port_number(str(number))


def test_port_number_examples() -> None:
    assert [port_number(t) for t in ("0", "8765", " 65535 ")] == [0, 8765, 65535]
    for bad in ("-1", "65536", "http", "", "²", "٣"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a port"):
            port_number(bad)


def test_provider_with_its_key_is_kept_else_local() -> None:
    without_key = Settings(_env_file=None, provider="fal", failover_providers=["local"])
    assert choose_providers(without_key) == ("local", [])
    with_key = Settings(
        _env_file=None,
        provider="fal",
        failover_providers=["replicate", "local"],
        fal=FalSettings(api_key=SecretStr("k")),
    )
    assert choose_providers(with_key) == ("fal", ["local"])
    assert choose_providers(Settings(_env_file=None)) == ("local", [])
