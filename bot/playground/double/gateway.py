"""The gateway websocket: HELLO, heartbeats, IDENTIFY/READY, RESUME with replay, dispatch; each
session gets only the events of its shard (sharding.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import Coroutine
from typing import Any

from aiohttp import WSMsgType, web

from .model import GatewayRecord
from .sharding import (
    INVALID_SHARD,
    SHARDING_REQUIRED,
    UNSHARDED,
    Shard,
    event_guild_id,
    owns,
    parse_shard,
)
from .state import World

JSON = dict[str, Any]

DISPATCH, HEARTBEAT, IDENTIFY, RESUME, REQUEST_MEMBERS = 0, 1, 2, 6, 8
INVALID_SESSION, HELLO, HEARTBEAT_ACK = 9, 10, 11
GUILDS, GUILD_MEMBERS, GUILD_MESSAGES, DIRECT_MESSAGES = 1 << 0, 1 << 1, 1 << 9, 1 << 12
HEARTBEAT_INTERVAL_MS = 41250
# Discord's ACK crosses a network. Sent at once on loopback, it can reach discord.py before its
# heartbeat thread has noted the send, which discord.py then logs as a 41 s latency.
HEARTBEAT_ACK_DELAY_S = 0.05
REPLAY_BUFFER = 2000
_CLOSE = -1  # queue marker: close the websocket with the code in the text slot
# A client closing with these codes cannot resume. (discord.py 2.7.1 on aiohttp 3.14 actually
# sends 4000 from Client.close(): its reader task closes the socket first.)
_ENDS_SESSION = (1000, 1001)
RESUME_GRACE_S = 30.0


class _Connection:
    """One websocket; frames go out in order through a queue drained by a writer task."""

    def __init__(self, ws: web.WebSocketResponse, path: str) -> None:
        self.ws = ws
        self.path = path
        self.queue: asyncio.Queue[tuple[int, str | None, str]] = asyncio.Queue()
        self.session: Session | None = None
        self.closed_by_server = False

    async def close(self, code: int) -> None:
        """Close from the double's side (the session stays resumable)."""
        self.closed_by_server = True
        await self.ws.close(code=code, message=b"closed by the Discord double")

    def send(self, op: int, t: str | None, text: str) -> None:
        self.queue.put_nowait((op, t, text))

    def send_json(self, frame: JSON) -> None:
        self.send(frame["op"], frame.get("t"), json.dumps(frame))


class Session:
    """A gateway session: sequence numbers and a replay buffer that outlives connections."""

    def __init__(self, session_id: str, intents: int, shard: Shard = UNSHARDED) -> None:
        self.id = session_id
        self.intents = intents
        self.shard = shard
        self.seq = 0
        self.buffer: deque[tuple[int, str, str]] = deque(maxlen=REPLAY_BUFFER)
        self.connection: _Connection | None = None
        self.detached_at: float | None = None

    def push(self, event: str, data: Any) -> None:
        self.seq += 1
        text = json.dumps({"op": DISPATCH, "t": event, "s": self.seq, "d": data})
        self.buffer.append((self.seq, event, text))
        if self.connection is not None:
            self.connection.send(DISPATCH, event, text)

    def wants(self, event: str, data: Any) -> bool:
        """Apply the intents the bot identified with."""
        if event.startswith("MESSAGE_"):
            dm = not (isinstance(data, dict) and data.get("guild_id"))
            return bool(self.intents & (DIRECT_MESSAGES if dm else GUILD_MESSAGES))
        if event.startswith("GUILD_MEMBER_"):
            return bool(self.intents & GUILD_MEMBERS)
        if event.startswith(("GUILD_", "CHANNEL_")):
            return bool(self.intents & GUILDS)
        return True


class GatewayHub:
    """All sessions and connections; ``world.dispatch`` fans events out to live sessions."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.sessions: dict[str, Session] = {}
        self.connections: set[_Connection] = set()
        self.resume_url = ""
        self._tasks: set[asyncio.Task[None]] = set()
        world.dispatch = self.dispatch

    @property
    def live_sessions(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.connection is not None]

    def reachable(self, guild_id: int | None = None) -> bool:
        """A session of the shard owning `guild_id` (None: shard 0, which gets DMs) is connected,
        or dropped recently enough that the bot may resume it."""
        return any(owns(s.shard, guild_id) for s in self._resumable())

    def live_shards(self) -> list[Shard]:
        """The (id, count) of every connected session (unsharded: (0, 1))."""
        return sorted(s.shard for s in self.live_sessions)

    def _resumable(self) -> list[Session]:
        now = time.monotonic()
        return [
            s
            for s in self.sessions.values()
            if s.connection is not None
            or (s.detached_at is not None and now - s.detached_at < RESUME_GRACE_S)
        ]

    def dispatch(self, event: str, data: Any) -> None:
        guild_id = event_guild_id(event, data)
        for session in self.sessions.values():
            if owns(session.shard, guild_id) and session.wants(event, data):
                session.push(event, data)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """The websocket route (``/gateway/?v=10&encoding=json&compress=...``)."""
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = _Connection(ws, request.path)
        self.connections.add(conn)
        writer = asyncio.create_task(self._write(conn))
        conn.send_json({"op": HELLO, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
        client_code: int | None = None
        try:
            while True:
                msg = await ws.receive()
                if msg.type is WSMsgType.TEXT:
                    self._on_frame(conn, json.loads(msg.data))
                elif msg.type is WSMsgType.CLOSE:
                    client_code = int(msg.data)
                    break
                elif msg.type is not WSMsgType.BINARY:
                    break
        finally:
            self._detach(conn, None if conn.closed_by_server else client_code)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    def disconnect(self, code: int = 4000) -> asyncio.Task[None]:
        """Close every live websocket with ``code`` (4000 keeps sessions resumable)."""
        return self._spawn(self._close_all(code))

    async def close(self) -> None:
        """Close everything (server shutdown)."""
        await self._close_all(1001)
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _close_all(self, code: int) -> None:
        await asyncio.gather(
            *(c.close(code) for c in list(self.connections)),
            return_exceptions=True,
        )

    async def _write(self, conn: _Connection) -> None:
        while True:
            op, event, text = await conn.queue.get()
            if op == _CLOSE:
                self._spawn(conn.close(int(text)))
                return
            try:
                await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return
            self._log("send", op, event, conn)

    def _log(self, direction: str, op: int, event: str | None, conn: _Connection) -> None:
        session_id = conn.session.id if conn.session is not None else None
        now = self.world.clock.now()
        self.world.gateway_log.append(
            GatewayRecord(direction, op, event, session_id, conn.path, now)
        )
        self.world.changed()

    def _detach(self, conn: _Connection, close_code: int | None) -> None:
        self.connections.discard(conn)
        session = conn.session
        if session is not None and session.connection is conn:
            session.connection = None
            session.detached_at = time.monotonic()
            if close_code in _ENDS_SESSION:
                self.sessions.pop(session.id, None)
        self.world.changed()

    def _on_frame(self, conn: _Connection, frame: JSON) -> None:
        op = frame.get("op")
        data = frame.get("d")
        self._log("recv", op if isinstance(op, int) else -1, None, conn)
        if op == HEARTBEAT:
            loop = asyncio.get_running_loop()
            loop.call_later(HEARTBEAT_ACK_DELAY_S, conn.send_json, {"op": HEARTBEAT_ACK})
        elif op == IDENTIFY and isinstance(data, dict):
            self._identify(conn, data)
        elif op == RESUME and isinstance(data, dict):
            self._resume(conn, data)
        elif op == REQUEST_MEMBERS and isinstance(data, dict) and conn.session is not None:
            self._chunk(conn.session, data)

    def _identify(self, conn: _Connection, data: JSON) -> None:
        if data.get("token") != self.world.token:
            self._close_later(conn, 4004)
            return
        world = self.world
        world.sharding.session_starts += 1
        shard = parse_shard(data.get("shard"))
        counts = {s.shard[1] for s in self._resumable()}  # one count for all of a bot's sessions
        if shard is None or (counts and counts != {shard[1]}):
            self._close_later(conn, INVALID_SHARD)
            return
        guild_ids = [g for g in world.guilds if owns(shard, g)]
        if len(guild_ids) > world.sharding.max_guilds_per_session:
            self._close_later(conn, SHARDING_REQUIRED)
            return
        session = Session(uuid.uuid4().hex, int(data.get("intents") or 0), shard)
        self.sessions[session.id] = session
        self._attach(conn, session)
        ready: JSON = {
            "v": 10,
            "user": world.bot.to_json() | {"verified": True, "mfa_enabled": False},
            "guilds": [{"id": str(g), "unavailable": True} for g in guild_ids],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_url,
            "application": {"id": str(world.app_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": [],
        }
        if "shard" in data:
            ready["shard"] = data["shard"]
        session.push("READY", ready)
        for guild_id in guild_ids:
            session.push("GUILD_CREATE", world.guild_create_json(world.guilds[guild_id]))

    def _resume(self, conn: _Connection, data: JSON) -> None:
        session = self.sessions.get(str(data.get("session_id")))
        seq = int(data.get("seq") or 0)
        oldest = session.buffer[0][0] if session is not None and session.buffer else 1
        if (
            session is None
            or data.get("token") != self.world.token
            or (session.seq > seq and seq + 1 < oldest)
        ):
            conn.send_json({"op": INVALID_SESSION, "d": False})
            return
        if session.connection is not None:
            self._close_later(session.connection, 4000)
        self._attach(conn, session)
        for number, event, text in session.buffer:
            if number > seq:
                conn.send(DISPATCH, event, text)
        session.push("RESUMED", {})

    def _attach(self, conn: _Connection, session: Session) -> None:
        conn.session = session
        session.connection = conn
        session.detached_at = None
        self.world.changed()

    def _chunk(self, session: Session, data: JSON) -> None:
        guild = self.world.guilds.get(int(data.get("guild_id") or 0))
        if guild is None:
            return
        members = list(guild.members.values())
        user_ids = data.get("user_ids")
        if user_ids is not None:
            wanted = {int(u) for u in (user_ids if isinstance(user_ids, list) else [user_ids])}
            members = [m for m in members if m.user.id in wanted]
        elif data.get("query"):
            prefix = str(data["query"]).lower()
            members = [m for m in members if m.user.username.lower().startswith(prefix)]
        limit = int(data.get("limit") or 0)
        if limit:
            members = members[:limit]
        chunk: JSON = {
            "guild_id": str(guild.id),
            "members": [m.to_json() for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        session.push("GUILD_MEMBERS_CHUNK", chunk)

    def _close_later(self, conn: _Connection, code: int) -> None:
        """Close after the frames already queued (e.g. INVALID_SESSION) went out."""
        conn.send(_CLOSE, None, str(code))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
