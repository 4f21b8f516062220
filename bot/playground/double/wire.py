"""HTTP plumbing: Discord-style JSON responses, API errors and request-body parsing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

JSON = dict[str, Any]


class ApiError(Exception):
    """A Discord API error; the REST layer turns it into ``{"message", "code"}`` JSON."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        errors: JSON | None = None,
        headers: dict[str, str] | None = None,
        extra: JSON | None = None,
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> JSON:
        """Return the JSON body Discord sends for this error."""
        out: JSON = {"message": self.message, "code": self.code}
        if self.errors is not None:
            out["errors"] = self.errors
        out.update(self.extra)
        return out


def invalid_form(errors: JSON) -> ApiError:
    """Return Discord's 400 50035 "Invalid Form Body" error with field ``errors``."""
    return ApiError(400, 50035, "Invalid Form Body", errors=errors)


def form_error(code: str, message: str) -> JSON:
    """Return one Discord field-error leaf (``{"_errors": [...]}``)."""
    return {"_errors": [{"code": code, "message": message}]}


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Answer ``data`` as JSON with ``Content-Type: application/json`` exactly (no charset).

    discord.py's ``json_or_text`` compares the header verbatim, so the charset
    that ``web.json_response`` adds would make it treat every body as text.
    """
    all_headers = {"Content-Type": "application/json"}
    all_headers.update(headers or {})
    return web.Response(body=json.dumps(data).encode(), status=status, headers=all_headers)


def error_response(err: ApiError) -> web.Response:
    """Render an :class:`ApiError` the way Discord does."""
    return json_response(err.body(), status=err.status, headers=err.headers)


@dataclass(frozen=True)
class FilePart:
    """One uploaded file of a multipart request."""

    field: str
    filename: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        """Size of the upload in bytes."""
        return len(self.data)


@dataclass
class ParsedBody:
    """A request body: JSON (plain or ``payload_json``) plus any uploaded files."""

    json: Any = None
    files: list[FilePart] = field(default_factory=list)
    multipart: bool = False
    other_fields: dict[str, str] = field(default_factory=dict)

    def payload(self) -> JSON:
        """The JSON object, or ``{}`` when the body was empty (400 if it is not an object)."""
        if self.json is None:
            return {}
        if not isinstance(self.json, dict):
            raise invalid_form(
                {"_errors": [{"code": "DICT_TYPE_CONVERT", "message": "Not a dict"}]}
            )
        return self.json


MAX_REQUEST_BYTES = 256 * 1024 * 1024
READ_CHUNK_BYTES = 256 * 1024


async def parse_body(request: web.Request) -> ParsedBody:
    """Read the whole body once: JSON, or multipart with ``payload_json`` and ``files[n]``."""
    ctype = request.content_type
    if ctype.startswith("multipart/"):
        body = ParsedBody(multipart=True)
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):  # nested multipart: not used by Discord
                continue
            data = await _read_part(part)
            name = part.name or ""
            if part.filename is not None:
                body.files.append(
                    FilePart(
                        field=name,
                        filename=part.filename,
                        content_type=part.headers.get("Content-Type", "application/octet-stream"),
                        data=bytes(data),
                    )
                )
            elif name == "payload_json":
                body.json = _loads(bytes(data))
            else:
                body.other_fields[name] = bytes(data).decode(errors="replace")
        return body
    raw = bytearray()
    while chunk := await request.content.read(READ_CHUNK_BYTES):
        raw += chunk
        _check_size(len(raw))
    if not raw:
        return ParsedBody()
    return ParsedBody(json=_loads(bytes(raw)))


async def _read_part(part: BodyPartReader) -> bytes:
    """A part's bytes, held to the double's own limit (not the serving application's)."""
    data = bytearray()
    while not part.at_eof():
        data += await part.read_chunk(READ_CHUNK_BYTES)
        _check_size(len(data))
    return bytes(data)


def _check_size(size: int) -> None:
    if size > MAX_REQUEST_BYTES:
        raise ApiError(413, 40005, "Request entity too large")


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, 50109, "The request body contains invalid JSON.") from exc
