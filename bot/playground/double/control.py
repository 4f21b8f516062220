"""``/_test``: a thin JSON mirror of the Python API, for tests driving the double from afar."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .interactions import DoubleInteraction
from .model import DoubleUsageError, Message
from .wire import json_response

if TYPE_CHECKING:
    from .double import DiscordDouble

JSON = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.Response]]


def interaction_json(inter: DoubleInteraction) -> JSON:
    return {
        "id": str(inter.id),
        "type": inter.type,
        "name": inter.name,
        "acked_type": inter.acked_type,
        "original_message_id": _opt(inter.original_message_id),
        "followup_ids": [str(i) for i in inter.followup_ids],
        "modal": inter.modal,
        "responses": [dataclasses.asdict(r) for r in inter.responses],
    }


def routes(double: DiscordDouble) -> list[web.RouteDef]:
    """The control routes, bound to ``double``."""

    def guarded(fn: Callable[[web.Request, JSON], Awaitable[Any]]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            body: JSON = await request.json() if request.can_read_body else {}
            try:
                return json_response(await fn(request, body))
            except (DoubleUsageError, KeyError, TypeError, ValueError) as exc:
                return json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)

        return handler

    async def invoke(_: web.Request, b: JSON) -> JSON:
        inter = await double.invoke(
            b["name"],
            b.get("options"),
            sub=b.get("sub"),
            group=b.get("group"),
            user_id=b.get("user_id"),
            guild_id=b.get("guild_id"),
            channel_id=b.get("channel_id"),
        )
        return interaction_json(inter)

    async def click(_: web.Request, b: JSON) -> JSON:
        inter = await double.click(
            int(b["message_id"]), b["custom_id"], user_id=b.get("user_id"), values=b.get("values")
        )
        return interaction_json(inter)

    async def modal(_: web.Request, b: JSON) -> JSON:
        inter = await double.submit_modal(
            int(b["interaction_id"]), b["custom_id"], b.get("values"), user_id=b.get("user_id")
        )
        return interaction_json(inter)

    async def message_command(_: web.Request, b: JSON) -> JSON:
        inter = await double.invoke_message_command(
            b["name"], int(b["message_id"]), user_id=b.get("user_id")
        )
        return interaction_json(inter)

    async def post(_: web.Request, b: JSON) -> JSON:
        files = [(f["filename"], base64.b64decode(f["data_b64"])) for f in b.get("files") or []]
        msg = double.post_as_member(
            int(b["channel_id"]), b.get("content", ""), user_id=b.get("user_id"), attachments=files
        )
        return _message_json(double, msg)

    async def messages(request: web.Request, _: JSON) -> list[JSON]:
        return [_message_json(double, m) for m in double.messages(int(request.match_info["cid"]))]

    async def interaction(request: web.Request, _: JSON) -> JSON:
        return interaction_json(double.interaction(int(request.match_info["iid"])))

    async def fail(_: web.Request, b: JSON) -> JSON:
        fault = double.fail(
            b["method"],
            b["path_regex"],
            int(b.get("status", 500)),
            b.get("code"),
            times=int(b.get("times", 1)),
            retry_after_s=float(b.get("retry_after_s", 0.5)),
            scope=b.get("scope", "user"),
        )
        return {"status": fault.status, "code": fault.code, "times": fault.times}

    async def advance(_: web.Request, b: JSON) -> JSON:
        double.clock.advance(float(b["seconds"]))
        return {"now": double.clock.now()}

    async def requests(_: web.Request, __: JSON) -> list[JSON]:
        return [dataclasses.asdict(r) for r in double.requests]

    p = "/_test"
    return [
        web.post(p + "/invoke", guarded(invoke)),
        web.post(p + "/click", guarded(click)),
        web.post(p + "/modal", guarded(modal)),
        web.post(p + "/message_command", guarded(message_command)),
        web.post(p + "/post", guarded(post)),
        web.get(p + "/messages/{cid}", guarded(messages)),
        web.get(p + "/interactions/{iid}", guarded(interaction)),
        web.post(p + "/fail", guarded(fail)),
        web.post(p + "/clock/advance", guarded(advance)),
        web.get(p + "/requests", guarded(requests)),
    ]


def _message_json(double: DiscordDouble, msg: Message) -> JSON:
    return double.world.message_json(msg) | {"edit_count": msg.edit_count}


def _opt(value: int | None) -> str | None:
    return None if value is None else str(value)
