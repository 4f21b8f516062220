"""The README documents every setting and every command, so a newcomer finds them all. The
commands are read from the bot's real command tree and the real `klingbot` parser."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from discord import app_commands
from pydantic import BaseModel

from bot.cli import build_parser
from bot.discord.cli import open_bot
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


async def slash_commands(tmp_path: Path) -> tuple[list[str], list[str]]:
    """The bot's real command tree, built without logging in: every slash command as it is
    typed (`/pool blocklist add`, groups walked) and every context-menu command's name."""
    settings = Settings(_env_file=None, db_path=tmp_path / "bot.db", media_dir=tmp_path / "media")
    async with open_bot(settings, with_web=False, start_pipeline=False) as bot:
        await bot.setup_hook()  # loads the extensions in their setup order
        slash: list[str] = []
        menus: list[str] = []
        pending: list[Any] = list(bot.tree.get_commands())
        while pending:
            command = pending.pop(0)
            if isinstance(command, app_commands.Group):
                pending.extend(command.commands)
            elif isinstance(command, app_commands.ContextMenu):
                menus.append(command.name)
            else:
                slash.append(f"/{command.qualified_name}")
        await bot.close()
    return slash, menus


def documented(command: str) -> bool:
    """Written out in full, or as one of a group's commands in that group's table row
    (`/pool channels add/remove/list`, `` `/pool blocklist add ...` / `remove` / `list` ``)."""
    if command in README:
        return True
    group, _, leaf = command.rpartition(" ")
    if not group:
        return False
    rows = [line.split("|")[1] for line in README.splitlines() if line.startswith("|")]
    return any(
        f"{group} " in row and leaf in re.findall(r"[a-z_-]+", row.split(group, 1)[1])
        for row in rows
    )


async def test_every_command_is_documented(tmp_path: Path) -> None:
    slash, menus = await slash_commands(tmp_path)
    assert len(slash) > 20 and "/video" in slash  # the tree was really built
    assert [c for c in slash if not documented(c)] == []
    assert [m for m in menus if f"**{m}**" not in README] == []


def cli_commands(parser: argparse.ArgumentParser, path: str = "klingbot") -> list[str]:
    """Every command of the real `klingbot` parser, sub-commands walked (`klingbot db upgrade`)."""
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += cli_commands(sub, f"{path} {name}")
            return found
    return [path]


def test_every_cli_command_is_documented() -> None:
    commands = cli_commands(build_parser())
    assert "klingbot db upgrade" in commands and "klingbot run" in commands
    assert [c for c in commands if c not in README] == []
