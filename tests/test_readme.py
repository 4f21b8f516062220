"""The README documents every setting and every command, so a newcomer finds them all."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from bot.settings import ProviderSettings, Settings, env_name

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = []
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub in annotation.model_fields:
                if sub in ProviderSettings.model_fields:
                    if f"KLINGBOT_<P>_{sub.upper()}" not in README:
                        missing.append(f"KLINGBOT_<P>_{sub.upper()}")
                elif env_name(name, sub) not in README:
                    missing.append(env_name(name, sub))
        elif env_name(name) not in README:
            missing.append(env_name(name))
    assert missing == []


def test_every_command_is_documented() -> None:
    commands = [
        "/video",
        "/multishot",
        "/credits balance",
        "/credits history",
        "/jobs list",
        "/jobs cancel",
        "/queue",
        "/pool status",
        "/pool grant",
        "/pool cap",
        "/pool approval",
        "/pool limits",
        "/pool freeze",
        "/pool blocklist",
        "/pool channels",
        "/pool logchannel",
        "/pool report",
        "/klingadmin fund",
        "/klingadmin audit",
        "/klingadmin jobs",
        "/klingadmin refund",
        "klingbot run",
        "klingbot generate",
        "klingbot sync",
        "klingbot invite-url",
        "klingbot db upgrade",
        "klingbot ledger audit",
    ]
    assert [c for c in commands if c not in README] == []
