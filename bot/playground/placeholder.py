"""A stand-in for the playground's page (`bot.playground.web`) until it is merged: `/` lists the
servers, channels and people as text. The runner imports `create_app` from here; switching to the
page is that one import."""

from __future__ import annotations

from aiohttp import web

from bot.playground.double import DiscordDouble
from bot.playground.scenario import Scenario


def create_app(double: DiscordDouble, scenario: Scenario) -> web.Application:
    lines = ["klingbot playground (the page is not built yet; the Discord stand-in is at /_test)"]
    for guild in scenario.guilds:
        lines.append(f"server {guild.name}: " + ", ".join(f"#{c.name}" for c in guild.channels))
    lines += [f"{p.name} ({p.role})" for p in scenario.people]

    async def index(_: web.Request) -> web.Response:
        return web.Response(text="\n".join(lines) + "\n")

    app = web.Application()
    app.router.add_get("/", index)
    return app
