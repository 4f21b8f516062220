"""`klingbot playground` and `klingbot run-or-playground` (what `make run` runs: the real bot
with a Discord token, else the playground)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import webbrowser
from pathlib import Path

from bot.discord.cli import run
from bot.playground.runner import DEFAULT_PORT, Playground
from bot.settings import Settings

GO_LIVE = (
    "No DISCORD_TOKEN: starting the playground. To go live, put DISCORD_TOKEN=... in .env"
    " (see README, 'Going live')."
)


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 for any free one."""
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or int(digits) > 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port: give 1-65535, or 0 for any free one"
        )
    return int(digits)


def open_browser(url: str) -> str | None:
    """Open `url` in the default graphical browser; otherwise say what to do (a text browser
    would take over this terminal, so none is started)."""
    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return f"No web browser found here: open {url} in one."
    if type(browser) is webbrowser.GenericBrowser:  # a console browser, or one that blocks
        return f"Open {url} in your browser."
    if not browser.open(url):
        return f"Could not start a browser: open {url} in one."
    return None


def quiet_discord_logs(verbose: bool) -> None:
    """A newcomer's terminal shows the playground's own lines, not discord.py's connection
    chatter or its warnings about voice libraries the bot never uses (`-v` shows everything)."""
    if verbose:
        return
    logging.getLogger("discord").setLevel(logging.WARNING)
    logging.getLogger("discord.client").addFilter(
        lambda record: "voice will NOT be supported" not in record.getMessage()
    )


async def playground(args: argparse.Namespace, settings: Settings) -> int:
    """Run until SIGINT or SIGTERM (during startup they cancel it), then stop everything."""
    quiet_discord_logs(bool(getattr(args, "verbose", False)))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main = asyncio.current_task()
    started = False

    def on_signal() -> None:
        if started:
            stop.set()
        elif main is not None:
            main.cancel()

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    try:
        async with Playground(
            settings, port=args.port, data_dir=Path("data"), reset=args.reset
        ) as pg:
            started = True
            print(f"Playground running at {pg.url}", flush=True)
            if not args.no_browser:
                note = await asyncio.to_thread(open_browser, pg.url)
                if note:
                    print(note, flush=True)
            await stop.wait()
    except asyncio.CancelledError:  # a signal during startup: everything started is stopped
        return 0
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    return 0


async def run_or_playground(args: argparse.Namespace, settings: Settings) -> int:
    """`klingbot run` when a Discord token is set, else the playground (saying so)."""
    if settings.has_discord_token:
        return await run(args, settings)
    print(GO_LIVE, flush=True)
    return await playground(args, settings)


def add_playground_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.add_argument(
        "--reset",
        action="store_true",
        help="start clean: delete the playground's database and media (data/playground*)",
    )


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "playground",
        help="try the bot on this machine, with no Discord application",
        description=(
            "Start a local stand-in for Discord, the real bot with every command, the job"
            " pipeline (the `local` provider unless another one has its key) and a web page"
            " that works like a Discord channel. Keeps its own data in data/playground.db and"
            " data/playground/."
        ),
    )
    add_playground_options(parser)
    parser.set_defaults(func=playground)
    either = sub.add_parser(
        "run-or-playground",
        description="`run` with DISCORD_TOKEN set, else `playground` (what `make run` does).",
    )
    add_playground_options(either)
    either.set_defaults(func=run_or_playground)
