"""Pointing discord.py at the double (and importing it despite ``filterwarnings=error``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import yarl

if TYPE_CHECKING:
    from .double import DiscordDouble


@contextmanager
def patch_discord_py(double: DiscordDouble) -> Iterator[None]:
    """Route discord.py's REST, webhooks and gateway to ``double``; restore on exit."""
    with warnings.catch_warnings():
        # discord.py 2.7.1 imports the stdlib ``audioop`` module, deprecated in 3.11.
        warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
        import discord.gateway
        import discord.http

    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = double.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(double.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway
