"""REST routes under ``/api/v10`` plus the attachment file server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from . import responses
from .faults import ratelimit_headers
from .messages import CHANNEL_FLAGS, create_message, delete_message, edit_message, find_by_nonce
from .model import ATTACH_FILES, SEND_MESSAGES, Channel, Guild, Message, PartInfo, RecordedRequest
from .state import World
from .wire import ApiError, ParsedBody, error_response, json_response, parse_body

JSON = dict[str, Any]
API_PREFIX = "/api/v10"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_NO_AUTH = ("/interactions/", "/webhooks/")
BODY = web.RequestKey("discord_double_body", ParsedBody)


def _int(request: web.Request, key: str) -> int:
    raw = request.match_info[key]
    if not raw.isdigit():
        raise ApiError(
            400,
            50035,
            "Invalid Form Body",
            errors={
                key: {
                    "_errors": [
                        {
                            "code": "NUMBER_TYPE_COERCE",
                            "message": f"Value {raw!r} is not snowflake.",
                        }
                    ]
                }
            },
        )
    return int(raw)


def _body(request: web.Request) -> ParsedBody:
    return request[BODY]


def no_content() -> web.Response:
    return web.Response(status=204)


class RestApi:
    """Discord's REST API as far as a bot uses it; every request is logged in ``world.requests``."""

    def __init__(self, world: World) -> None:
        self.world = world

    # -- plumbing ------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Log, authenticate, inject faults and turn errors into Discord's JSON bodies."""
        if not request.path.startswith(API_PREFIX + "/"):
            return await handler(request)
        path = request.path[len(API_PREFIX) :]
        record = RecordedRequest(
            request.method, path, dict(request.query), None, [], at=self.world.clock.now()
        )
        self.world.requests.append(record)
        response: web.StreamResponse
        bucket_headers: dict[str, str] | None = None
        try:
            body = await parse_body(request)
            record.json = body.json
            record.parts = [
                PartInfo(f.field, f.filename, f.size, f.content_type) for f in body.files
            ]
            request[BODY] = body
            self._authenticate(request, path)
            if self.world.ratelimiter is not None:
                bucket_headers = self.world.ratelimiter.admit(request.method, path)
            fault = self.world.faults.take(request.method, path)
            if fault is not None:
                raise fault.error(path)
            response = await handler(request)
        except ApiError as err:
            record.code = err.code
            if err.status == 429:
                record.rate_limit_scope = err.headers.get("X-RateLimit-Scope")
            response = error_response(err)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            record.unrouted = True
            record.code = 0
            response = error_response(
                ApiError(
                    404,
                    0,
                    f"404: Not Found (the Discord double has no route for "
                    f"{request.method} {API_PREFIX}{path})",
                )
            )
        except Exception as exc:  # a bug in the double: answer 500 and keep it for the test
            self.world.internal_errors.append(exc)
            record.code = 0
            response = error_response(ApiError(500, 0, f"Discord double crashed: {exc!r}"))
        record.status = response.status
        if response.status != 429:
            for key, value in (bucket_headers or ratelimit_headers(path)).items():
                response.headers.setdefault(key, value)
        self.world.changed()
        return response

    def _authenticate(self, request: web.Request, path: str) -> None:
        if path.startswith(_NO_AUTH) or path == "/gateway":  # /gateway/bot needs the token
            return
        if request.headers.get("Authorization") != f"Bot {self.world.token}":
            raise ApiError(401, 0, "401: Unauthorized")

    def routes(self) -> list[web.RouteDef]:
        p = API_PREFIX
        msg_route = p + "/webhooks/{app}/{token}/messages/{mid}"
        return [
            web.get(p + "/gateway", self.get_gateway),
            web.get(p + "/gateway/bot", self.get_gateway),
            web.get(p + "/users/@me", self.get_me),
            web.post(p + "/users/@me/channels", self.create_dm),
            web.get(p + "/users/{uid}", self.get_user),
            web.get(p + "/oauth2/applications/@me", self.get_application),
            web.get(p + "/applications/@me", self.get_application),
            web.get(p + "/applications/{app}/commands", self.get_commands),
            web.put(p + "/applications/{app}/commands", self.put_commands),
            web.get(p + "/applications/{app}/guilds/{gid}/commands", self.get_commands),
            web.put(p + "/applications/{app}/guilds/{gid}/commands", self.put_commands),
            web.get(p + "/guilds/{gid}", self.get_guild),
            web.get(p + "/guilds/{gid}/channels", self.get_guild_channels),
            web.get(p + "/guilds/{gid}/roles", self.get_guild_roles),
            web.get(p + "/guilds/{gid}/members/{uid}", self.get_member),
            web.get(p + "/channels/{cid}", self.get_channel),
            web.get(p + "/channels/{cid}/messages", self.list_messages),
            web.post(p + "/channels/{cid}/messages", self.post_message),
            web.post(p + "/channels/{cid}/typing", self.typing),
            web.get(p + "/channels/{cid}/messages/{mid}", self.get_message),
            web.patch(p + "/channels/{cid}/messages/{mid}", self.patch_message),
            web.delete(p + "/channels/{cid}/messages/{mid}", self.delete_message),
            web.post(p + "/interactions/{iid}/{token}/callback", self.interaction_callback),
            web.post(p + "/webhooks/{app}/{token}", self.webhook_execute),
            web.get(msg_route, self.webhook_message),
            web.patch(msg_route, self.webhook_message),
            web.delete(msg_route, self.webhook_message),
            web.get("/attachments/{cid}/{aid}/{filename}", self.get_attachment),
        ]

    # -- users, application, commands ----------------------------------------------------

    async def get_gateway(self, request: web.Request) -> web.Response:
        url = f"{self.world.base_url.replace('http', 'ws', 1)}/gateway/"
        if request.path.endswith("/gateway"):  # GET /gateway: the address only
            return json_response({"url": url})
        return json_response(self.world.sharding.gateway_bot_json(url, len(self.world.guilds)))

    async def get_me(self, request: web.Request) -> web.Response:
        me = self.world.bot.to_json() | {"verified": True, "mfa_enabled": False, "locale": "en-US"}
        return json_response(me)

    async def get_user(self, request: web.Request) -> web.Response:
        user = self.world.users.get(_int(request, "uid"))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return json_response(user.to_json())

    async def create_dm(self, request: web.Request) -> web.Response:
        recipient = int(_body(request).payload().get("recipient_id") or 0)
        if recipient not in self.world.users or recipient == self.world.bot.id:
            raise ApiError(400, 50033, "Invalid Recipient(s)")
        cid = self.world.dm_channels.get(recipient)
        if cid is None:
            cid = self.world.ids.next()
            self.world.channels[cid] = Channel(cid, None, "", type=1, recipient_id=recipient)
            self.world.dm_channels[recipient] = cid
        return json_response(self.world.channel_json(self.world.channels[cid]))

    async def get_application(self, request: web.Request) -> web.Response:
        w = self.world
        return json_response(
            {
                "id": str(w.app_id),
                "name": w.bot.username,
                "description": "",
                "icon": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": w.app_owner.to_json(),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "bot": w.bot.to_json(),
                "interactions_endpoint_url": None,
                "redirect_uris": [],
                "tags": [],
                "approximate_guild_count": len(w.guilds),
            }
        )

    def _scope(self, request: web.Request) -> int | None:
        if _int(request, "app") != self.world.app_id:
            raise ApiError(403, 50001, "Missing Access")
        if "gid" not in request.match_info:
            return None
        gid = _int(request, "gid")
        if gid not in self.world.guilds:
            raise ApiError(403, 50001, "Missing Access")
        return gid

    async def get_commands(self, request: web.Request) -> web.Response:
        return json_response(self.world.commands.get(self._scope(request)))

    async def put_commands(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        stored = self.world.commands.put(scope, _body(request).json)
        self.world.notify("COMMANDS_SYNCED", scope)
        return json_response(stored)

    # -- guilds ----------------------------------------------------------------------------

    def _guild(self, request: web.Request) -> Guild:
        guild = self.world.guilds.get(_int(request, "gid"))
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild

    async def get_guild(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        out = self.world.guild_json(guild)
        if request.query.get("with_counts") in ("true", "1"):
            out["approximate_member_count"] = len(guild.members)
            out["approximate_presence_count"] = 0
        return json_response(out)

    async def get_guild_channels(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        return json_response([self.world.channel_json(c) for c in guild.channels.values()])

    async def get_guild_roles(self, request: web.Request) -> web.Response:
        return json_response([r.to_json() for r in self._guild(request).roles.values()])

    async def get_member(self, request: web.Request) -> web.Response:
        member = self._guild(request).members.get(_int(request, "uid"))
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return json_response(member.to_json())

    # -- channels and messages ---------------------------------------------------------------

    def _channel(self, request: web.Request) -> Channel:
        channel = self.world.channels.get(_int(request, "cid"))
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return channel

    def _message(self, request: web.Request) -> Message:
        channel = self._channel(request)
        msg = self.world.messages.get(_int(request, "mid"))
        if msg is None or msg.deleted or msg.ephemeral or msg.channel_id != channel.id:
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    async def get_channel(self, request: web.Request) -> web.Response:
        return json_response(self.world.channel_json(self._channel(request)))

    async def list_messages(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        q = {k: v for k, v in request.query.items() if v.isdigit()}
        limit = max(1, min(100, int(q.get("limit", "50"))))
        msgs = sorted(
            (
                m
                for m in self.world.messages.values()
                if m.channel_id == channel.id and not m.deleted and not m.ephemeral
            ),
            key=lambda m: m.id,
            reverse=True,
        )
        if "before" in q:
            msgs = [m for m in msgs if m.id < int(q["before"])]
        if "after" in q:
            msgs = [m for m in msgs if m.id > int(q["after"])][-limit:]
        return json_response([self.world.message_json(m) for m in msgs[:limit]])

    async def post_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        body = _body(request)
        payload = body.payload()
        if channel.guild_id is not None:
            needed = SEND_MESSAGES | (ATTACH_FILES if body.files else 0)
            if self.world.app_permissions(channel) & needed != needed:
                raise ApiError(403, 50013, "Missing Permissions")
        if channel.recipient_id in self.world.closed_dms:
            raise ApiError(403, 50007, "Cannot send messages to this user")
        if payload.get("enforce_nonce") and payload.get("nonce") is not None:
            earlier = find_by_nonce(self.world, channel, payload["nonce"])
            if earlier is not None:
                return json_response(self.world.message_json(earlier))
        msg = create_message(self.world, channel, payload, body.files, allowed_flags=CHANNEL_FLAGS)
        return json_response(self.world.message_json(msg))

    async def typing(self, request: web.Request) -> web.Response:
        self._channel(request)
        return no_content()

    async def get_message(self, request: web.Request) -> web.Response:
        return json_response(self.world.message_json(self._message(request)))

    async def patch_message(self, request: web.Request) -> web.Response:
        msg = self._message(request)
        if msg.author.id != self.world.bot.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        body = _body(request)
        edit_message(self.world, msg, body.payload(), body.files)
        return json_response(self.world.message_json(msg))

    async def delete_message(self, request: web.Request) -> web.Response:
        delete_message(self.world, self._message(request))
        return no_content()

    # -- interactions --------------------------------------------------------------------------

    async def interaction_callback(self, request: web.Request) -> web.Response:
        inter = responses.by_callback_route(
            self.world, _int(request, "iid"), request.match_info["token"]
        )
        body = _body(request)
        result = responses.run(
            self.world,
            inter,
            kind="callback",
            method=request.method,
            path=request.path,
            body=body,
            target=None,
            op=lambda: responses.callback(self.world, inter, body),
        )
        return json_response(result)

    async def webhook_execute(self, request: web.Request) -> web.Response:
        inter = responses.by_webhook_route(
            self.world, _int(request, "app"), request.match_info["token"]
        )
        body = _body(request)
        wait = request.query.get("wait", "false").lower() in ("1", "true")
        result = responses.run(
            self.world,
            inter,
            kind="followup",
            method=request.method,
            path=request.path,
            body=body,
            target=None,
            op=lambda: responses.followup(self.world, inter, body, wait),
        )
        return no_content() if result is None else json_response(result)

    async def webhook_message(self, request: web.Request) -> web.Response:
        inter = responses.by_webhook_route(
            self.world, _int(request, "app"), request.match_info["token"]
        )
        body = _body(request)
        target = request.match_info["mid"]
        ops: dict[str, tuple[str, Callable[[], responses.Outcome]]] = {
            "GET": ("get", lambda: responses.get_message(self.world, inter, target)),
            "PATCH": ("edit", lambda: responses.patch_message(self.world, inter, target, body)),
            "DELETE": ("delete", lambda: responses.remove_message(self.world, inter, target)),
        }
        kind, op = ops[request.method]
        result = responses.run(
            self.world,
            inter,
            kind=kind,
            method=request.method,
            path=request.path,
            body=body,
            target=target,
            op=op,
        )
        return no_content() if result is None else json_response(result)

    async def get_attachment(self, request: web.Request) -> web.Response:
        """The CDN: only the signed link as issued, and only until it expires."""
        raw = request.match_info["aid"]
        att = self.world.attachments.get(int(raw)) if raw.isdigit() else None
        if att is None:
            raise web.HTTPNotFound()
        signed = parse_qs(urlsplit(att.url).query)
        if any(request.query.get(key) != values[0] for key, values in signed.items()):
            raise web.HTTPNotFound(text="This content is no longer available.")
        if att.expires_at is not None and self.world.clock.wall() > att.expires_at:
            raise web.HTTPNotFound(text="This content is no longer available.")
        att.downloads += 1
        self.world.changed()
        return web.Response(body=att.data, headers={"Content-Type": att.content_type})
