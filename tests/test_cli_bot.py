"""The command line as an admin uses it: generate offline, run, sync, invite-url."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import pytest

from bot.playground.double import DiscordDouble
from tests.e2e_support import APP_ID, GUILD, TOKEN, make_double
from tests.provider_support import free_port

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KLINGBOT_") and k != "DISCORD_TOKEN"
    }
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def klingbot(
    *args: str, cwd: Path, timeout_s: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.mark.parametrize(
    ("aspect", "size", "audio"), [("16:9", (1280, 720), True), ("9:16", (720, 1280), False)]
)
def test_generate_offline_on_a_fresh_install(
    tmp_path: Path, aspect: str, size: tuple[int, int], audio: bool
) -> None:
    out = tmp_path / "fox.mp4"
    flag = "--audio" if audio else "--no-audio"
    result = klingbot(
        "generate",
        "a red fox running through snow",
        "--duration",
        "5",
        "--aspect",
        aspect,
        flag,
        "--out",
        str(out),
        cwd=tmp_path,
        KLINGBOT_LOCAL_RENDER_S="0.5",
    )
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    assert "not charged" in result.stderr and "local" in result.stderr
    with av.open(str(out)) as clip:
        video = clip.streams.video[0]
        assert (video.width, video.height) == size
        assert clip.duration is not None and abs(clip.duration / 1_000_000 - 5.0) < 0.1
        assert bool(clip.streams.audio) is audio


def test_generate_refuses_invalid_requests_clearly(tmp_path: Path) -> None:
    result = klingbot(
        "generate", "x" * 2501, "--duration", "20", "--out", str(tmp_path / "x.mp4"), cwd=tmp_path
    )
    assert result.returncode == 2
    assert "2501 characters" in result.stderr and "3 to 15 seconds" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x.mp4").exists()


def test_run_without_a_token_names_the_setting(tmp_path: Path) -> None:
    result = klingbot("run", cwd=tmp_path)
    assert result.returncode == 2
    assert "DISCORD_TOKEN is not set" in result.stderr and "Traceback" not in result.stderr


def test_run_with_a_vendor_but_no_key_names_the_key(tmp_path: Path) -> None:
    result = klingbot("run", cwd=tmp_path, DISCORD_TOKEN="t", KLINGBOT_PROVIDER="fal")
    assert result.returncode == 2 and "KLINGBOT_FAL_API_KEY is not set" in result.stderr


def test_invite_url(tmp_path: Path) -> None:
    token = base64.b64encode(str(APP_ID).encode()).decode().rstrip("=") + ".abc.def"
    result = klingbot("invite-url", cwd=tmp_path, DISCORD_TOKEN=token)
    assert result.returncode == 0
    url = result.stdout.strip()
    assert f"client_id={APP_ID}" in url and "scope=bot+applications.commands" in url
    assert "permissions=" in url
    missing = klingbot("invite-url", cwd=tmp_path)
    assert missing.returncode == 2 and "--client-id" in missing.stderr


@pytest.mark.slow
async def test_run_connects_to_the_double_and_serves_commands(tmp_path: Path) -> None:
    double: DiscordDouble = await make_double()
    port = free_port()
    env = clean_env(
        DISCORD_TOKEN=TOKEN,
        KLINGBOT_DISCORD_API_BASE_URL=double.api_base,
        KLINGBOT_DISCORD_GATEWAY_URL=double.gateway_url,
        KLINGBOT_DEV_GUILD_ID=str(GUILD),
        KLINGBOT_HTTP_PORT=str(port),
        KLINGBOT_LOCAL_RENDER_S="0.2",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await double.wait_until_connected(timeout=30)
        await double.wait_for(lambda: bool(double.commands(GUILD)), timeout=30)
        names = {c["name"] for c in double.commands(GUILD)}
        assert {"video", "multishot", "credits", "jobs"} <= names
        inter = await double.invoke("credits", sub="balance", guild_id=GUILD)
        ack = await inter.wait_ack(timeout=10)
        assert ack.data is not None and ack.data["embeds"][0]["title"] == "Your credits"
        response = b""
        for _ in range(100):  # discord.py reports ready once the guilds have arrived
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /readyz HTTP/1.0\r\n\r\n")
            response = await reader.read()
            writer.close()
            if b"200 OK" in response:
                break
            await asyncio.sleep(0.1)
        assert b"200 OK" in response and b'"discord": true' in response
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
            await double.stop()
    assert proc.returncode == 0
