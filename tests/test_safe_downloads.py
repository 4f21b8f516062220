"""Clip downloads go only where a clip may come from, and keep only videos.

The vendor double is a configured provider base URL (so http and loopback are allowed for it, as
for any configured base URL); the "internal" server stands for a loopback-only service: another
port on 127.0.0.1 that no provider is configured at, so it counts as a private address.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from yarl import URL

from bot.providers import (
    ErrorKind,
    ProviderError,
    ProviderHttp,
    ProviderJob,
    ProviderState,
    ProviderStatus,
    VideoProvider,
)
from bot.providers.download import DownloadPolicy, download, is_public_address
from bot.providers.eachlabs import EachLabsProvider
from bot.providers.local import LocalProvider
from bot.settings import EachLabsSettings, LocalSettings
from storage import AccountRef, JobState
from tests.pipeline_support import member, pipeline
from tests.provider_doubles.clip import tiny_clip
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble

FIRST_JOB = "pred-000001"  # the double's id for the first job it creates


@asynccontextmanager
async def internal_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback-only service holding something that must not leave the machine (here a real
    video, so that only the address check can stop it); yields its URL and the paths it served."""
    hits: list[str] = []

    async def secret(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=tiny_clip(), content_type="video/mp4")

    app = web.Application()
    app.router.add_get("/{name}", secret)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    finally:
        await runner.cleanup()


@pytest.fixture
async def double() -> AsyncIterator[EachLabsDouble]:
    async with EachLabsDouble() as d:
        yield d


def eachlabs(double: EachLabsDouble) -> Callable[[ProviderHttp], dict[str, VideoProvider]]:
    def build(http: ProviderHttp) -> dict[str, VideoProvider]:
        settings = EachLabsSettings(api_key=SecretStr(API_KEY), base_url=double.api_base)
        return {"eachlabs": EachLabsProvider(settings, http)}

    return build


async def failed_job(
    tmp_path: Path,
    providers: Callable[[ProviderHttp], dict[str, VideoProvider]],
    default_provider: str = "eachlabs",
) -> str:
    """Run one job through the pipeline; it must fail (hold voided, nothing posted, no clip
    kept). Returns why, as recorded with the failure."""
    async with pipeline(tmp_path, providers, default_provider=default_provider, public=False) as p:
        await p.ledger.issue_to_member(1, 7, 100, key="seed")
        receipt = await p.service.submit(member(), {"prompt": "a fox", "duration_s": 5})
        job = await p.wait_for_state(receipt.job.id, JobState.FAILED, JobState.DELIVERED)
        assert job.state is JobState.FAILED, f"the clip was delivered ({job.delivered_via})"
        assert p.sink.deliveries == []
        assert not p.service.media.clip_path(job.id).exists()
        assert (await p.ledger.balance(AccountRef.member(1, 7))).available == 100
        events = await p.service.jobs.events(job.id)
        return events[-1].detail or ""


class OutsideFileProvider(LocalProvider):
    """The local adapter, but its results link to a file outside its own work directory (what
    any adapter could be led to hand over)."""

    def __init__(self, http: ProviderHttp, work_dir: Path, target: Path) -> None:
        super().__init__(LocalSettings(render_s=0), http, work_dir=work_dir)
        self.target = target

    async def poll(self, job: ProviderJob) -> ProviderStatus:
        status = await super().poll(job)
        if status.state is not ProviderState.SUCCEEDED:
            return status
        return ProviderStatus(ProviderState.SUCCEEDED, "succeeded", video_url=self.target.as_uri())


async def test_a_redirect_to_a_loopback_only_service_is_not_followed(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    async with internal_server() as (internal, hits):
        double.redirects[f"{FIRST_JOB}.mp4"] = f"{internal}/admin-export.mp4"
        why = await failed_job(tmp_path, eachlabs(double))
    assert hits == [], "the internal service was reached"
    assert "refused to download the clip" in why and internal in why


async def test_a_file_link_outside_the_providers_own_files_is_not_copied(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere" / "secret.mp4"
    secret.parent.mkdir()
    secret.write_bytes(tiny_clip())  # a real video: only the file rule can stop it

    def providers(http: ProviderHttp) -> dict[str, VideoProvider]:
        return {"local": OutsideFileProvider(http, tmp_path / "local-work", secret)}

    why = await failed_job(tmp_path / "bot", providers, "local")
    assert "file:// link outside the provider's own directory" in why


async def test_a_link_that_gives_no_video_is_not_posted(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    double.video_bytes = b"<html><body>Sign in to continue</body></html>"
    why = await failed_job(tmp_path, eachlabs(double))
    assert "did not give a video" in why


# -- the policy, link by link ---------------------------------------------------------------------


async def fetch(
    session: aiohttp.ClientSession, url: str, dest: Path, policy: DownloadPolicy
) -> int:
    return await download(session, url, dest, max_bytes=10**7, timeout_s=10, policy=policy)


async def refusal(
    session: aiohttp.ClientSession, url: str, dest: Path, policy: DownloadPolicy
) -> str:
    """Why the download of `url` was refused (it must be, with nothing kept)."""
    with pytest.raises(ProviderError) as info:
        await fetch(session, url, dest, policy)
    assert info.value.kind is ErrorKind.UNKNOWN, info.value
    assert not dest.exists()
    return info.value.detail


@asynccontextmanager
async def redirector() -> AsyncIterator[str]:
    """A trusted origin: /hop/{n} redirects to /hop/{n-1} (relative), /hop/0 is a video."""

    async def hop(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(body=tiny_clip(), content_type="video/mp4")
        raise web.HTTPFound(request.query.get("to", f"{n - 1}") if n == 1 else f"{n - 1}")

    app = web.Application()
    app.router.add_get("/hop/{n}", hop)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_at_most_three_redirects_each_checked(tmp_path: Path) -> None:
    async with (
        redirector() as base,
        internal_server() as (internal, hits),
        aiohttp.ClientSession() as session,
    ):
        policy = DownloadPolicy.trusting([f"{base}/api"])
        assert await fetch(session, f"{base}/hop/3", tmp_path / "a.mp4", policy) == len(tiny_clip())
        why = await refusal(session, f"{base}/hop/4", tmp_path / "b.mp4", policy)
        assert "more than 3 redirects" in why
        why = await refusal(session, f"{base}/hop/1?to={internal}/x.mp4", tmp_path / "c", policy)
        assert "http link outside a provider's base URL" in why
        assert hits == []
        assert sorted(os.listdir(tmp_path)) == ["a.mp4"]


async def test_untrusted_links_must_be_https_at_public_addresses(tmp_path: Path) -> None:
    resolved: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        return {
            "mixed.example": ["93.184.216.34", "10.1.2.3"],
            "meta.example": ["169.254.169.254"],
        }[host]

    policy = DownloadPolicy(resolve=resolve)
    async with internal_server() as (internal, hits), aiohttp.ClientSession() as session:
        refusals = {
            f"{internal}/a.mp4": "http link outside a provider's base URL",
            internal.replace("http://", "https://") + "/a.mp4": "non-public address (127.0.0.1)",
            "https://localhost/a.mp4": "non-public address",
            "https://mixed.example/a.mp4": "non-public address (10.1.2.3)",
            "https://meta.example/latest": "non-public address (169.254.169.254)",
            "https://[::ffff:127.0.0.1]/a.mp4": "non-public address",
            "ftp://example.com/a.mp4": "ftp link outside a provider's base URL",
        }
        for link, reason in refusals.items():
            # localhost goes to the system resolver (no network: it is in /etc/hosts)
            policy_here = DownloadPolicy() if "localhost" in link else policy
            assert reason in await refusal(session, link, tmp_path / "v.mp4", policy_here), link
        assert hits == [] and resolved == ["mixed.example", "meta.example"]
    assert os.listdir(tmp_path) == []


async def test_file_links_only_under_the_providers_own_directory(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "clip.mp4").write_bytes(tiny_clip())
    (tmp_path / "secret.mp4").write_bytes(tiny_clip())
    (work / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    policy = DownloadPolicy(file_root=work)
    out = tmp_path / "out"
    async with aiohttp.ClientSession() as session:
        assert await fetch(session, (work / "clip.mp4").as_uri(), out / "ok.mp4", policy) > 0
        for link in (
            f"file://{work}/../secret.mp4",
            (work / "link.mp4").as_uri(),
            (tmp_path / "secret.mp4").as_uri(),
            f"file://other-host{work}/clip.mp4",
        ):
            why = await refusal(session, link, out / "no.mp4", policy)
            assert "refused to download the clip" in why, link
        link = (work / "clip.mp4").as_uri()
        assert "keeps no files" in await refusal(session, link, out / "no.mp4", DownloadPolicy())
    assert os.listdir(out) == ["ok.mp4"]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("224.0.0.251", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("not an address", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    link=st.text(max_size=60)
    | st.builds(
        lambda host, rest: f"https://{host}/{rest}",
        st.text(max_size=20),
        st.text(max_size=20),
    )
)
def test_any_link_is_refused_or_pinned_to_a_public_address(link: str) -> None:
    """The checks never connect anywhere: the resolver answers private addresses only."""

    async def private(host: str, port: int) -> list[str]:
        host.encode("idna")  # what the system resolver does first (UnicodeError on bad names)
        return ["10.9.8.7"]

    policy = DownloadPolicy(resolve=private)
    try:
        url = URL(link)
    except (ValueError, TypeError):
        return
    try:
        address = asyncio.run(policy.address_for(url, "test"))
    except ProviderError:
        return
    assert is_public_address(address) and url.scheme == "https"


def self_signed(host: str) -> tuple[bytes, bytes]:
    """A certificate (PEM) for `host` only, and its key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


async def test_a_checked_https_link_is_fetched_from_the_checked_address(tmp_path: Path) -> None:
    """The request goes to the address that was checked (no second lookup), still verified as
    the link's host (TLS server name) and asking for it (Host header). Here 127.0.0.1 stands in
    for a public address: the test's policy counts it as one."""
    cert_pem, key_pem = self_signed("cdn.test")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_tls = ssl.create_default_context(cadata=cert_pem.decode())
    hosts: list[str] = []

    async def clip(request: web.Request) -> web.Response:
        hosts.append(request.headers["Host"])
        return web.Response(body=tiny_clip(), content_type="video/mp4")

    app = web.Application()
    app.router.add_get("/v/{name}", clip)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls).start()
    port = runner.addresses[0][1]
    lookups: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append((host, port))
        return ["127.0.0.1"]

    policy = DownloadPolicy(resolve=resolve, address_allowed=lambda a: a == "127.0.0.1")
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls)) as s:
            url = f"https://cdn.test:{port}/v/clip.mp4"
            assert await fetch(s, url, tmp_path / "out" / "v.mp4", policy) == len(tiny_clip())
    finally:
        await runner.cleanup()
    assert lookups == [("cdn.test", port)]
    assert hosts == [f"cdn.test:{port}"]
    assert (tmp_path / "out" / "v.mp4").read_bytes() == tiny_clip()
