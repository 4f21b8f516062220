"""Download a finished clip: streamed to disk with a size cap and a timeout, never whole in memory,
only from where a clip may come (`DownloadPolicy`), and kept only if it is a video.

The link comes from a vendor's reply, so it is not trusted:
- https only; http only at a trusted origin (the scheme, host and port of a configured provider
  base URL, which may also be a loopback or private address: a test double, a proxy);
- every other host's addresses are checked after resolution and after each redirect (no
  loopback, link-local, private, shared, reserved, multicast or unspecified address), and the
  request is sent to the checked address (no second lookup that could answer differently);
- at most `max_redirects` redirects, each one checked like the first link;
- `file://` only under the provider's own work directory (the local provider, Segmind's v1 clips);
- the file must be a readable video (PyAV probe) before it is kept.

The file appears at its destination only when complete and checked (written to a temporary name,
owner-only, then renamed). An expired or missing link (403/404/410) is `RESULT_EXPIRED`; network
trouble and 5xx are `TRANSIENT`; a refused link, a clip over the cap or not a video is `UNKNOWN`
with a clear detail.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import aiohttp
from yarl import URL

from bot.media import MediaError, probe
from bot.providers.errors import ErrorKind, ProviderError

CHUNK_BYTES = 256 * 1024
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# The whole download is bounded by `timeout_s`, not by the session's per-call API timeout.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30)
FILE_MODE = 0o600
DIR_MODE = 0o700

Origin = tuple[str, str, int]
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the system resolver)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def origin_of(url: URL) -> Origin | None:
    if not url.scheme or not url.host or url.port is None:
        return None
    return (url.scheme.lower(), url.host.lower(), url.port)


def is_public_address(address: str) -> bool:
    """True for an address on the public internet (not loopback, link-local, private, shared,
    reserved, multicast or unspecified; an IPv4-mapped IPv6 address counts as its IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class DownloadPolicy:
    """Where a clip may be downloaded from (see the module docstring)."""

    trusted_origins: frozenset[Origin] = frozenset()
    file_root: Path | None = None
    max_redirects: int = MAX_REDIRECTS
    resolve: Resolver = field(default=system_resolve, compare=False)
    address_allowed: Callable[[str], bool] = field(default=is_public_address, compare=False)

    @classmethod
    def trusting(
        cls,
        base_urls: Iterable[str],
        *,
        file_root: Path | None = None,
        max_redirects: int = MAX_REDIRECTS,
        resolve: Resolver = system_resolve,
    ) -> DownloadPolicy:
        """A policy that trusts the origins of these (configured provider) base URLs."""
        origins = {origin_of(URL(u)) for u in base_urls if u}
        trusted = frozenset(o for o in origins if o is not None)
        return cls(trusted, file_root, max_redirects, resolve)

    def trusts(self, url: URL) -> bool:
        return origin_of(url) in self.trusted_origins

    async def address_for(self, url: URL, provider: str) -> str:
        """The checked address to send a request for `url` (not at a trusted origin) to."""
        if url.scheme != "https":
            raise _refused(
                f"{url.scheme or 'a relative'} link outside a provider's base URL", url, provider
            )
        host = url.raw_host or ""  # ASCII (IDNA) form
        if not host or url.port is None:
            raise _refused("a link without a host", url, provider)
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                addresses = await self.resolve(host, url.port)
            except (UnicodeError, ValueError) as error:
                raise _refused(f"an invalid host name ({error})", url, provider) from error
            except OSError as error:
                raise ProviderError(
                    ErrorKind.TRANSIENT,
                    f"cannot resolve the video link's host {host!r}: {error}",
                    provider=provider,
                ) from error
        if not addresses:
            raise ProviderError(ErrorKind.TRANSIENT, f"{host!r} has no address", provider=provider)
        blocked = [a for a in addresses if not self.address_allowed(a)]
        if blocked:
            raise _refused(f"{host} resolves to a non-public address ({blocked[0]})", url, provider)
        return addresses[0]

    def file_path(self, url: str, provider: str) -> Path:
        """The local file a `file://` link names, if it is under this provider's own directory."""
        parsed = urlparse(url)
        if self.file_root is None:
            raise _refused("a file:// link from a provider that keeps no files", url, provider)
        if parsed.netloc not in ("", "localhost"):
            raise _refused("a file:// link to another host", url, provider)
        try:
            path = Path(unquote(parsed.path)).resolve()
        except (OSError, ValueError) as error:
            raise _refused(f"an unreadable file path ({error})", url, provider) from error
        if not path.is_relative_to(self.file_root.resolve()):
            raise _refused("a file:// link outside the provider's own directory", url, provider)
        return path


async def download(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    timeout_s: float,
    policy: DownloadPolicy,
    provider: str = "",
) -> int:
    """Save `url` to `dest` if the policy allows it and it is a video; return its size in bytes."""
    dest.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.part")
    try:
        async with asyncio.timeout(timeout_s):
            if url.startswith("file:"):
                source = policy.file_path(url, provider)
                size = await asyncio.to_thread(_copy_file, source, partial, max_bytes, provider)
            else:
                size = await _fetch(session, url, partial, max_bytes, provider, policy)
            await asyncio.to_thread(_require_video, partial, provider)
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
    session: aiohttp.ClientSession,
    link: str,
    partial: Path,
    max_bytes: int,
    provider: str,
    policy: DownloadPolicy,
) -> int:
    try:
        url = URL(link)
    except ValueError as error:
        raise _refused("an unreadable link", link, provider) from error
    for _ in range(policy.max_redirects + 1):
        try:
            async with await _request(session, url, provider, policy) as response:
                location = response.headers.get("Location")
                if response.status in REDIRECT_STATUSES and location:
                    try:
                        url = url.join(URL(location))
                    except ValueError as error:
                        raise _refused("an unreadable redirect", location, provider) from error
                    continue
                return await _save(response, partial, max_bytes, provider)
        except aiohttp.ClientError as error:
            raise ProviderError(
                ErrorKind.TRANSIENT, f"download failed: {error!r}", provider=provider
            ) from error
    raise _refused(f"more than {policy.max_redirects} redirects", link, provider)


async def _request(
    session: aiohttp.ClientSession, url: URL, provider: str, policy: DownloadPolicy
) -> aiohttp.ClientResponse:
    """Start a GET of `url`: as it is at a trusted origin, else at its checked address."""
    if policy.trusts(url):
        return await session.get(url, allow_redirects=False, timeout=STREAM_TIMEOUT)
    address = await policy.address_for(url, provider)
    host = url.raw_host or ""
    return await session.get(
        url.with_host(address),
        allow_redirects=False,
        timeout=STREAM_TIMEOUT,
        headers={"Host": url.host_port_subcomponent or host},
        server_hostname=host,
    )


async def _save(
    response: aiohttp.ClientResponse, partial: Path, max_bytes: int, provider: str
) -> int:
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
    with _owner_only(partial) as out:
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


def _copy_file(source: Path, partial: Path, max_bytes: int, provider: str) -> int:
    if not source.is_file():
        raise ProviderError(ErrorKind.RESULT_EXPIRED, f"no file at {source}", provider=provider)
    size = 0
    with source.open("rb") as src, _owner_only(partial) as out:
        while chunk := src.read(CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(size, max_bytes, provider)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size


def _owner_only(path: Path) -> io.BufferedWriter:
    """Open `path` for writing, created readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    return os.fdopen(fd, "wb")


def _require_video(path: Path, provider: str) -> None:
    try:
        probe(path)
    except MediaError as error:
        raise ProviderError(
            ErrorKind.UNKNOWN,
            f"the video link did not give a video ({error}); it is not kept",
            provider=provider,
        ) from None


def _refused(reason: str, url: object, provider: str) -> ProviderError:
    return ProviderError(
        ErrorKind.UNKNOWN,
        f"refused to download the clip: {reason} ({str(url)[:200]})",
        provider=provider,
    )


def _too_large(size: int, max_bytes: int, provider: str) -> ProviderError:
    return ProviderError(
        ErrorKind.UNKNOWN,
        f"the clip is larger than the {max_bytes // (1024 * 1024)} MB download limit"
        f" (KLINGBOT_DOWNLOAD_MAX_MB); got at least {size} bytes",
        provider=provider,
    )
