"""Settings: environment names, parsing, and startup errors that name the setting."""

from __future__ import annotations

import pytest

from bot.errors import ConfigError
from bot.settings import Settings, env_name, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("KLINGBOT_") or name == "DISCORD_TOKEN":
            monkeypatch.delenv(name)
    monkeypatch.chdir(str(tmp_path))  # no stray .env


def test_defaults_run_offline() -> None:
    s = load_settings()
    assert s.provider == "local" and s.price_per_second == 8 and s.public_url is None
    assert s.eachlabs.max_concurrent == 10 and s.eachlabs.creates_per_min == 100
    assert s.eachlabs.base_url == "https://api.eachlabs.ai/v1"
    assert s.missing_provider_keys() == []


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "tok")
    monkeypatch.setenv("KLINGBOT_PROVIDER", "eachlabs")
    monkeypatch.setenv("KLINGBOT_EACHLABS_API_KEY", "el-key")
    monkeypatch.setenv("KLINGBOT_EACHLABS_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("KLINGBOT_FAL_WEBHOOK_SECRET", "s")
    monkeypatch.setenv("KLINGBOT_OWNER_IDS", "11, 22")
    monkeypatch.setenv("KLINGBOT_FAILOVER_PROVIDERS", "fal,Replicate")
    monkeypatch.setenv("KLINGBOT_PUBLIC_URL", "https://bot.example.org/")
    monkeypatch.setenv("KLINGBOT_JOB_DEADLINE_S", "900")
    s = load_settings()
    assert s.discord_token is not None and s.discord_token.get_secret_value() == "tok"
    key = s.eachlabs.api_key
    assert key is not None and key.get_secret_value() == "el-key"
    assert "el-key" not in repr(s)
    assert s.eachlabs.base_url == "http://127.0.0.1:9/v1"
    assert s.owner_ids == [11, 22] and s.provider_chain == ["eachlabs", "fal", "replicate"]
    assert s.public_url == "https://bot.example.org" and s.job_deadline_s == 900
    assert sorted(m.split(" ")[0] for m in s.missing_for_run()) == [
        "KLINGBOT_FAL_API_KEY",
        "KLINGBOT_REPLICATE_API_KEY",
    ]


def test_bad_values_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLINGBOT_HTTP_PORT", "eighty")
    monkeypatch.setenv("KLINGBOT_EACHLABS_MAX_CONCURRENT", "0")
    monkeypatch.setenv("KLINGBOT_PROVIDER", "midjourney")
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    for name in ("KLINGBOT_HTTP_PORT", "KLINGBOT_EACHLABS_MAX_CONCURRENT", "KLINGBOT_PROVIDER"):
        assert name in text
    assert "'eighty'" in text and "Traceback" not in text


def test_missing_token_is_named() -> None:
    missing = Settings().missing_for_run()
    assert len(missing) == 1 and missing[0].startswith("DISCORD_TOKEN is not set")


def test_dotenv_file_is_read(tmp_path: object) -> None:
    from pathlib import Path

    Path(".env").write_text("KLINGBOT_PRICE_PER_SECOND=12\nDISCORD_TOKEN=abc\n")
    s = load_settings()
    assert s.price_per_second == 12 and s.missing_for_run() == []


def test_env_name() -> None:
    assert env_name("eachlabs", "api_key") == "KLINGBOT_EACHLABS_API_KEY"
    assert env_name("discord_token") == "DISCORD_TOKEN"
