"""Download a finished clip: streamed to disk with a size cap and a timeout, never whole in memory.

The file appears at its destination only when complete (written to a temporary name, then
renamed). An expired or missing link (403/404/410) is `RESULT_EXPIRED`; network trouble and 5xx are
`TRANSIENT`; a clip over the cap is `UNKNOWN` with a clear detail. `file://` URLs (the local
provider) are copied the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import aiohttp

from bot.providers.errors import ErrorKind, ProviderError

CHUNK_BYTES = 256 * 1024


async def download(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    timeout_s: float,
    provider: str = "",
) -> int:
    """Save `url` to `dest`; return its size in bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.part")
    try:
        async with asyncio.timeout(timeout_s):
            if url.startswith("file://"):
                size = await asyncio.to_thread(
                    _copy_file, Path(unquote(urlparse(url).path)), partial, max_bytes, provider
                )
            else:
                size = await _fetch(session, url, partial, max_bytes, provider)
        os.replace(partial, dest)
        return size
    except TimeoutError:
        raise ProviderError(
            ErrorKind.TRANSIENT, f"download took longer than {timeout_s:g} s", provider=provider
        ) from None
    except OSError as error:
        raise ProviderError(
            ErrorKind.TRANSIENT, f"cannot write the clip to disk: {error}", provider=provider
        ) from error
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


async def _fetch(
    session: aiohttp.ClientSession, url: str, partial: Path, max_bytes: int, provider: str
) -> int:
    try:
        async with session.get(url, allow_redirects=True) as response:
            if response.status in (401, 403, 404, 410):
                raise ProviderError(
                    ErrorKind.RESULT_EXPIRED,
                    f"HTTP {response.status} for the video link",
                    provider=provider,
                    status_code=response.status,
                )
            if response.status >= 300:
                kind = ErrorKind.TRANSIENT if response.status >= 500 else ErrorKind.UNKNOWN
                raise ProviderError(
                    kind,
                    f"HTTP {response.status} for the video link",
                    provider=provider,
                    status_code=response.status,
                )
            if response.content_length is not None and response.content_length > max_bytes:
                raise _too_large(response.content_length, max_bytes, provider)
            size = 0
            with partial.open("wb") as out:
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    size += len(chunk)
                    if size > max_bytes:
                        raise _too_large(size, max_bytes, provider)
                    await asyncio.to_thread(out.write, chunk)
                await asyncio.to_thread(out.flush)
                await asyncio.to_thread(os.fsync, out.fileno())
            if response.content_length is not None and size != response.content_length:
                raise ProviderError(
                    ErrorKind.TRANSIENT,
                    f"download ended after {size} of {response.content_length} bytes",
                    provider=provider,
                )
            return size
    except aiohttp.ClientError as error:
        raise ProviderError(
            ErrorKind.TRANSIENT, f"download failed: {error!r}", provider=provider
        ) from error


def _copy_file(source: Path, partial: Path, max_bytes: int, provider: str) -> int:
    if not source.is_file():
        raise ProviderError(ErrorKind.RESULT_EXPIRED, f"no file at {source}", provider=provider)
    size = 0
    with source.open("rb") as src, partial.open("wb") as out:
        while chunk := src.read(CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(size, max_bytes, provider)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size


def _too_large(size: int, max_bytes: int, provider: str) -> ProviderError:
    return ProviderError(
        ErrorKind.UNKNOWN,
        f"the clip is larger than the {max_bytes // (1024 * 1024)} MB download limit"
        f" (KLINGBOT_DOWNLOAD_MAX_MB); got at least {size} bytes",
        provider=provider,
    )
