"""The playground's page and its API: a Discord-like channel view served from the package's static
files, a JSON API that acts on the double as the person the page acts as (the same public methods
the tests use), and server-sent events that push every message change live.

Bad input from the page (an unsynced command, an option out of range, a component that is gone)
is answered 400 with the double's message, which the page shows.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from . import view
from .double import DiscordDouble, DoubleInteraction, DoubleUsageError, Message
from .double.interactions import AUTOCOMPLETE
from .options import ATTACHMENT, PageInputError, parse_option, parse_range
from .scenario import Scenario

JSON = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATIC_DIR = Path(__file__).parent / "static"
MODAL_CALLBACK = 9
KEEPALIVE_S = 15.0
MAX_BODY_BYTES = 256 * 1024 * 1024  # as the double: the bot uploads clips if both share an app


class EventHub:
    """Fans the double's events out to each page's stream, filtered for the person it acts as."""

    def __init__(self, double: DiscordDouble) -> None:
        self.double = double
        self.streams: dict[asyncio.Queue[tuple[str, JSON] | None], int] = {}
        self.watchers: set[asyncio.Task[None]] = set()
        self._unsubscribe = double.subscribe(self._on_event)

    def close(self) -> None:
        """Stop listening, end every stream and the watchers of unanswered interactions."""
        self._unsubscribe()
        for queue in self.streams:
            queue.put_nowait(None)
        for task in self.watchers:
            task.cancel()

    def push(self, person_id: int | None, event: str, data: JSON) -> None:
        """Send ``event`` to the streams of ``person_id`` (``None``: to everyone)."""
        for queue, person in self.streams.items():
            if person_id is None or person == person_id:
                queue.put_nowait((event, data))

    def _on_event(self, event: str, subject: object) -> None:
        if event == "COMMANDS_SYNCED":
            self.push(None, "commands", {})
        elif isinstance(subject, Message):
            data = {"id": str(subject.id), "channel_id": str(subject.channel_id)}
            if event != "MESSAGE_DELETE":
                data = view.message_json(self.double, subject)
            for queue, person in self.streams.items():
                if subject.deleted or view.visible_to(self.double, subject, person):
                    queue.put_nowait(("message", data))
        elif isinstance(subject, DoubleInteraction) and event == "INTERACTION_RESPONSE":
            last = subject.responses[-1]
            if last.kind == "callback" and last.ok and last.callback_type == MODAL_CALLBACK:
                modal = {"interaction_id": str(subject.id), "modal": subject.modal}
                self.push(subject.user_id, "modal", modal)

    def watch(self, inter: DoubleInteraction) -> None:
        """Tell the person "This interaction failed" when the bot does not acknowledge in time."""

        async def watch() -> None:
            timeout_s = self.double.world.ack_deadline_s + 0.5
            try:
                ack = await inter.wait_ack(timeout=timeout_s, allow_rejected=True)
            except TimeoutError:
                reason = "the bot did not answer in time"
            else:
                if ack.ok:
                    return
                reason = f"Discord refused the bot's answer ({ack.status}, code {ack.code})"
            failed = {"interaction_id": str(inter.id), "name": inter.name, "reason": reason}
            self.push(inter.user_id, "failed", failed)

        task = asyncio.create_task(watch())
        self.watchers.add(task)
        task.add_done_callback(self.watchers.discard)


def create_app(double: DiscordDouble, scenario: Scenario) -> web.Application:
    """The page (``/``), its static files, the JSON API (``/api/...``) and the event stream."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_errors])
    api = _Api(double, scenario)

    async def start_events(app: web.Application) -> None:
        api.events = EventHub(double)

    async def stop_events(app: web.Application) -> None:
        if api.events is not None:
            api.events.close()

    app.on_startup.append(start_events)
    app.on_shutdown.append(stop_events)
    app.add_routes(
        [
            web.get("/", _index),
            web.static("/static", STATIC_DIR),
            web.get("/api/world", api.world),
            web.get("/api/commands", api.commands),
            web.get("/api/channels/{cid}/messages", api.messages),
            web.get("/api/attachments/{aid}/{filename}", api.attachment),
            web.get("/api/events", api.stream),
            web.post("/api/invoke", api.invoke),
            web.post("/api/autocomplete", api.autocomplete),
            web.post("/api/click", api.click),
            web.post("/api/modal", api.modal),
            web.post("/api/message_command", api.message_command),
            web.post("/api/post", api.post),
        ]
    )
    return app


async def _index(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bad input from the page: 400 with the message the page shows."""
    try:
        return await handler(request)
    except (DoubleUsageError, PageInputError) as exc:
        return web.json_response({"error": str(exc)}, status=400)


class _Api:
    def __init__(self, double: DiscordDouble, scenario: Scenario) -> None:
        self.double = double
        self.scenario = scenario
        self.events: EventHub | None = None

    # -- reading ----------------------------------------------------------------------------

    async def world(self, _: web.Request) -> web.Response:
        return web.json_response(view.world_json(self.double, self.scenario))

    async def commands(self, request: web.Request) -> web.Response:
        guild_id = _id(request.query.get("guild_id"), "guild_id")
        person = self._person(request.query.get("person_id"))
        self._guild(guild_id)
        return web.json_response(view.visible_commands(self.double, guild_id, person))

    async def messages(self, request: web.Request) -> web.Response:
        person = self._person(request.query.get("person_id"))
        channel_id = _id(request.match_info["cid"], "channel")
        return web.json_response(view.channel_messages(self.double, channel_id, person))

    async def attachment(self, request: web.Request) -> web.StreamResponse:
        """An attachment of a message the person can see, with byte ranges for <video>."""
        person = self._person(request.query.get("person_id"))
        att_id = _id(request.match_info["aid"], "attachment")
        holder = next(
            (
                m
                for m in self.double.world.messages.values()
                if any(a.id == att_id for a in m.attachments)
            ),
            None,
        )
        if holder is None or not view.visible_to(self.double, holder, person):
            raise web.HTTPNotFound(text="no such attachment for this person")
        att = next(a for a in holder.attachments if a.id == att_id)
        headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
        try:
            wanted = parse_range(request.headers.get("Range"), att.size)
        except PageInputError:
            headers["Content-Range"] = f"bytes */{att.size}"
            return web.Response(status=416, headers=headers)
        if wanted is None:
            return web.Response(body=att.data, content_type=att.content_type, headers=headers)
        headers["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{att.size}"
        return web.Response(
            status=206,
            body=att.data[wanted.start : wanted.end + 1],
            content_type=att.content_type,
            headers=headers,
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events for one person: ``message`` (created, edited or deleted),
        ``modal`` (the bot opened a form), ``failed`` (an interaction failed), ``commands``."""
        person = self._person(request.query.get("person_id"))
        assert self.events is not None
        queue: asyncio.Queue[tuple[str, JSON] | None] = asyncio.Queue()
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        self.events.streams[queue] = person
        try:
            await response.write(b": connected\n\n")
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if item is None:
                    break
                event, data = item
                await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
        except ConnectionResetError:
            pass
        finally:
            self.events.streams.pop(queue, None)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    # -- acting -----------------------------------------------------------------------------

    async def invoke(self, request: web.Request) -> web.Response:
        """Run a slash command: ``{person_id, guild_id, channel_id, name, group?, sub?,
        options: {name: text}, files?: {name: {filename, data_b64}}}``."""
        body = await _json(request)
        person = self._person(body.get("person_id"))
        guild_id, channel_id = self._place(body)
        name, group, sub = str(body.get("name", "")), body.get("group"), body.get("sub")
        command = view.command_for(self.double, guild_id, person, name, view.CHAT_INPUT)
        options = _options(command, group, sub, body.get("options"), body.get("files"))
        inter = await self.double.invoke(
            name,
            options,
            group=group,
            sub=sub,
            user_id=person,
            guild_id=guild_id,
            channel_id=channel_id,
        )
        return self._started(inter)

    async def autocomplete(self, request: web.Request) -> web.Response:
        """The bot's choices for the text typed into an autocomplete option so far."""
        body = await _json(request)
        person = self._person(body.get("person_id"))
        guild_id, channel_id = self._place(body)
        name, group, sub = str(body.get("name", "")), body.get("group"), body.get("sub")
        focused = str(body.get("focused", ""))
        command = view.command_for(self.double, guild_id, person, name, view.CHAT_INPUT)
        raw = dict(body.get("options") or {})
        typed = raw.pop(focused, "")
        options = _options(command, group, sub, raw, None)
        options[focused] = str(typed)
        inter = await self.double.autocomplete(
            name,
            options,
            focused,
            group=group,
            sub=sub,
            user_id=person,
            guild_id=guild_id,
            channel_id=channel_id,
        )
        try:
            ack = await inter.wait_ack(timeout=self.double.world.ack_deadline_s + 0.5)
        except (TimeoutError, AssertionError) as exc:
            return web.json_response({"choices": [], "error": str(exc)})
        assert inter.type == AUTOCOMPLETE
        return web.json_response({"choices": (ack.data or {}).get("choices") or []})

    async def click(self, request: web.Request) -> web.Response:
        """Press a button, or pick ``values`` in a select: ``{person_id, message_id,
        custom_id, values?}``."""
        body = await _json(request)
        person = self._person(body.get("person_id"))
        values = body.get("values")
        if values is not None and not (
            isinstance(values, list) and all(isinstance(v, str) for v in values)
        ):
            raise PageInputError("values must be a list of strings")
        message_id = _id(body.get("message_id"), "message_id")
        inter = await self.double.click(
            message_id, str(body.get("custom_id", "")), user_id=person, values=values
        )
        return self._started(inter)

    async def modal(self, request: web.Request) -> web.Response:
        """Submit the form the bot opened: ``{person_id, interaction_id, custom_id, values}``."""
        body = await _json(request)
        person = self._person(body.get("person_id"))
        values = body.get("values") or {}
        if not isinstance(values, dict) or not all(
            isinstance(v, str | list) for v in values.values()
        ):
            raise PageInputError("values must map each field's custom_id to its text")
        inter = await self.double.submit_modal(
            _id(body.get("interaction_id"), "interaction_id"),
            str(body.get("custom_id", "")),
            values,
            user_id=person,
        )
        return self._started(inter)

    async def message_command(self, request: web.Request) -> web.Response:
        """Run a message command from a message's Apps menu: ``{person_id, name, message_id}``."""
        body = await _json(request)
        person = self._person(body.get("person_id"))
        message_id = _id(body.get("message_id"), "message_id")
        msg = self.double.message(message_id)
        if msg.guild_id is None or not view.visible_to(self.double, msg, person):
            raise DoubleUsageError(f"no visible message {message_id}")
        name = str(body.get("name", ""))
        view.command_for(self.double, msg.guild_id, person, name, view.MESSAGE_COMMAND)
        inter = await self.double.invoke_message_command(name, message_id, user_id=person)
        return self._started(inter)

    async def post(self, request: web.Request) -> web.Response:
        """Post a plain message (and files) as the person: ``{person_id, channel_id, content,
        files?: [{filename, data_b64}]}``."""
        body = await _json(request)
        person = self._person(body.get("person_id"))
        files = [_file(f) for f in body.get("files") or []]
        msg = self.double.post_as_member(
            _id(body.get("channel_id"), "channel_id"),
            str(body.get("content", "")),
            user_id=person,
            attachments=files,
        )
        return web.json_response(view.message_json(self.double, msg))

    # -- helpers ----------------------------------------------------------------------------

    def _started(self, inter: DoubleInteraction) -> web.Response:
        assert self.events is not None
        self.events.watch(inter)
        return web.json_response({"interaction_id": str(inter.id)})

    def _person(self, raw: Any) -> int:
        person = _id(raw, "person_id")
        if person not in {p.id for p in self.scenario.people}:
            raise PageInputError(f"nobody with id {person} in this playground")
        return person

    def _guild(self, guild_id: int) -> None:
        if guild_id not in {g.id for g in self.scenario.guilds}:
            raise PageInputError(f"no server {guild_id} in this playground")

    def _place(self, body: JSON) -> tuple[int, int]:
        guild_id = _id(body.get("guild_id"), "guild_id")
        channel_id = _id(body.get("channel_id"), "channel_id")
        self._guild(guild_id)
        channel = self.double.world.channels.get(channel_id)
        if channel is None or channel.guild_id != guild_id:
            raise PageInputError(f"no channel {channel_id} in server {guild_id}")
        return guild_id, channel_id


async def _json(request: web.Request) -> JSON:
    try:
        body = await request.json()
    except ValueError:
        raise PageInputError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise PageInputError("the request body must be a JSON object")
    return body


def _id(raw: Any, what: str) -> int:
    text = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise PageInputError(f"{what} must be an id, got {raw!r}")
    return int(text)


def _file(raw: Any) -> tuple[str, bytes]:
    if not isinstance(raw, dict) or not isinstance(raw.get("filename"), str):
        raise PageInputError("a file is {filename, data_b64}")
    try:
        data = base64.b64decode(str(raw.get("data_b64", "")), validate=True)
    except binascii.Error:
        raise PageInputError(f"{raw['filename']!r}: data_b64 is not base64") from None
    return raw["filename"], data


def _options(command: JSON, group: Any, sub: Any, texts: Any, files: Any) -> dict[str, Any]:
    """Typed option values from the texts (and files) the page sent, by the synced definitions."""
    if texts is not None and not (
        isinstance(texts, dict) and all(isinstance(v, str) for v in texts.values())
    ):
        raise PageInputError("options must map each option's name to the text typed")
    if files is not None and not isinstance(files, dict):
        raise PageInputError("files must map each attachment option's name to a file")
    defs: list[JSON] = command.get("options") or []
    for wanted in (group, sub):
        if wanted is not None:
            found = next((o for o in defs if o["name"] == wanted and o["type"] in (1, 2)), None)
            if found is None:
                raise DoubleUsageError(f"/{command['name']} has no subcommand {wanted!r}")
            defs = found.get("options") or []
    known = {d["name"]: d for d in defs}
    out: dict[str, Any] = {}
    for name, text in (texts or {}).items():
        if name not in known:
            raise DoubleUsageError(f"/{command['name']} has no option {name!r}")
        out[name] = parse_option(known[name], text)
    for name, raw in (files or {}).items():
        if known.get(name, {}).get("type") != ATTACHMENT:
            raise DoubleUsageError(f"/{command['name']} has no attachment option {name!r}")
        out[name] = _file(raw)
    return out
