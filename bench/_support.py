"""Shared pieces of the benchmarks: a vendor double and an HTTP load generator, each in a process
of its own (so their CPU stays out of the process being measured), and small measuring helpers.

    python -m bench._support vendor [--preload N]    EachLabs double; prints {"url": ...}, runs
                                                     until SIGTERM
    python -m bench._support load SPEC.json          fires the requests of SPEC (HTTP/1.1,
                                                     keep-alive); prints the latencies

The vendor is the test suite's `EachLabsDouble` (tests/provider_doubles/eachlabs.py) with these
changes for long runs: jobs it creates stay "processing" (nothing finishes, so nothing downloads
or delivers), it can hold `--preload` running jobs from the start (ids from `preload_id`), it
keeps no log of every request (memory would grow with every poll), and it answers
`GET /_bench/jobs` (id and webhook URL of each job) and `GET /_bench/stats` (counts, its CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from aiohttp import web
from yarl import URL

from tests.provider_doubles.base import FakeJob
from tests.provider_doubles.eachlabs import EachLabsDouble

ROOT = Path(__file__).resolve().parent.parent
# Where benchmarks may create and drop PostgreSQL databases (--database-url changes it).
DEFAULT_SERVER_URL = os.environ.get(
    "KLINGBOT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def preload_id(n: int) -> str:
    """The vendor id of the n-th job the vendor process holds from the start."""
    return f"bench-{n:06d}"


# -- measuring ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of unsorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def proc_status_kb(field: str, pid: int | str = "self") -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS: resident now, VmHWM: resident peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    t = os.times()
    return t.user + t.system


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far per thread of this process, by kind: "event loop" (the main thread),
    "sqlite" (aiosqlite's connection threads), "other" (executor and the rest)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    main = threading.main_thread().native_id
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {"event loop": 0.0, "sqlite": 0.0, "other": 0.0}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        seconds = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        tid = int(task.name)
        name = names.get(tid, "")
        sqlite = "_connection_worker_thread" in name or "aiosqlite" in name
        kind = "event loop" if tid == main else "sqlite" if sqlite else "other"
        totals[kind] += seconds
    return totals


def cpu_split(before: dict[str, float], after: dict[str, float]) -> str:
    """ "event loop 1.2 s, sqlite 0.8 s, other 0.0 s" between two `thread_cpu()` readings."""
    return ", ".join(f"{k} {after[k] - before.get(k, 0.0):.2f} s" for k in after)


# -- scratch PostgreSQL databases --------------------------------------------------------------


async def scratch_database(server_url: str) -> str:
    """A new, empty database on the server at `server_url`; its URL."""
    admin = await asyncpg.connect(server_url)
    name = f"klingbot_bench_{secrets.token_hex(4)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


async def drop_database(server_url: str, url: str) -> None:
    """Drop the database at `url` (made by `scratch_database`), connected through `server_url`."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{urlsplit(url).path[1:]}" WITH (FORCE)')
    finally:
        await admin.close()


# -- the vendor double in its own process ------------------------------------------------------


class BenchVendor(EachLabsDouble):
    def __init__(self, preload: int = 0) -> None:
        super().__init__()
        self.default_script = ["created", "processing"]
        self.polls = 0
        for n in range(preload):
            job_id = preload_id(n)
            request = {"model": "kling", "input": {"prompt": "bench", "duration": "5"}}
            self.jobs[job_id] = FakeJob(job_id, request, ["processing"])

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            *super().routes(),
            ("GET", "/_bench/jobs", self.list_jobs),
            ("GET", "/_bench/stats", self.stats),
        ]

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)  # no request log: runs are long
        return response

    async def get(self, request: web.Request) -> web.Response:
        self.polls += 1
        return await super().get(request)

    async def list_jobs(self, request: web.Request) -> web.Response:
        return self.json([{"id": j.id, "webhook_url": j.webhook_url} for j in self.jobs.values()])

    async def stats(self, request: web.Request) -> web.Response:
        return self.json(
            {
                "creates": self.creates,
                "polls": self.polls,
                "jobs": len(self.jobs),
                "cpu_s": cpu_seconds(),
                "rss_kb": proc_status_kb("VmRSS"),
            }
        )


async def serve_vendor(preload: int) -> None:
    vendor = BenchVendor(preload)
    await vendor.start()
    print(json.dumps({"url": vendor.base_url}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await vendor.stop()


@dataclass
class VendorProcess:
    """A running `bench._support vendor` process."""

    process: asyncio.subprocess.Process
    url: str

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1"

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession() as session, session.get(self.url + path) as response:
            return await response.json()


@asynccontextmanager
async def vendor_process(preload: int = 0) -> AsyncIterator[VendorProcess]:
    """Start the EachLabs double in a child process; stop it (by its pid) on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._support",
        "vendor",
        "--preload",
        str(preload),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if not line:
            raise RuntimeError("the vendor process exited before it listened")
        yield VendorProcess(process, json.loads(line)["url"])
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


# -- the load generator in its own process -----------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    statuses: dict[int, int]
    latencies_ms: list[float]
    elapsed_s: float

    @property
    def count(self) -> int:
        return len(self.latencies_ms)

    @property
    def per_s(self) -> float:
        return self.count / self.elapsed_s

    def pct(self, p: float) -> float:
        return percentile(self.latencies_ms, p)


async def due_time(started: float, index: int, rate: float | None) -> float:
    """Closed loop (rate None): now. Open loop: sleep until request `index` is due; its due time."""
    if rate is None:
        return time.perf_counter()
    due = started + index / rate
    wait = due - time.perf_counter()
    if wait > 0:
        await asyncio.sleep(wait)
    return due


async def fire_aiohttp(
    requests: Sequence[tuple[str, dict[str, str], bytes]],
    concurrency: int,
    warmup_urls: Sequence[str],
    rate: float | None = None,
) -> LoadResult:
    """`fire_raw` with aiohttp's client: its CPU cost per request is several times higher."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    latencies: list[float] = [0.0] * len(requests)
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def warm(url: str) -> None:
            async with session.get(url) as response:
                await response.read()

        await asyncio.gather(*(warm(warmup_urls[n % len(warmup_urls)]) for n in range(concurrency)))
        work = iter(range(len(requests)))
        started = time.perf_counter()

        async def worker() -> None:
            for index in work:
                url, headers, body = requests[index]
                due = await due_time(started, index, rate)
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
                latencies[index] = (time.perf_counter() - due) * 1000
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return LoadResult(statuses, latencies, elapsed)


def http_request(method: str, url: URL, headers: dict[str, str], body: bytes) -> bytes:
    """One HTTP/1.1 keep-alive request, as bytes on the wire."""
    lines = [f"{method} {url.raw_path_qs} HTTP/1.1", f"Host: {url.host}:{url.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "content-length"]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length framed); return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for raw in head.split(b"\r\n")[1:]:
        name, _, value = raw.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            raise RuntimeError("chunked responses are not supported by this load generator")
    if length:
        await reader.readexactly(length)
    return status


def origin(url: URL) -> tuple[str, int]:
    return str(url.host), int(url.port or 80)


async def fire_raw(
    requests: Sequence[tuple[str, dict[str, str], bytes]],
    concurrency: int,
    warmup_urls: Sequence[str],
    rate: float | None = None,
) -> LoadResult:
    """POST every request over `concurrency` keep-alive connections, one request in flight on
    each, with a minimal HTTP/1.1 client on asyncio streams: requests are serialized before the
    clock starts and answers are only framed, so the client costs little per request (aiohttp's
    client saturates its own core well before a bare aiohttp server does). Each connection is
    opened (one GET of a warm-up URL) before the clock starts.

    Several servers: the connections are spread evenly over the origins of `warmup_urls`
    (connection n to origin n mod count), and each request goes over a connection to its own
    URL's origin, in the order given.

    rate None: closed loop, each connection sends its next request as soon as it has an answer
    (throughput at saturation). rate r: open loop, request i is due at start + i/r and is sent on
    the next free connection to its server; its latency counts from when it was due, so a server
    that falls behind shows the queueing (no coordinated omission).
    """
    warm_urls = [URL(u) for u in warmup_urls]
    origins = [origin(u) for u in warm_urls]
    wire = [http_request("POST", URL(u), h, b) for u, h, b in requests]
    indices: dict[tuple[str, int], list[int]] = {o: [] for o in origins}
    for index, (url, _, _) in enumerate(requests):
        indices[origin(URL(url))].append(index)  # KeyError: a request for no warmed-up server
    work = {o: iter(i) for o, i in indices.items()}
    latencies: list[float] = [0.0] * len(requests)
    statuses: dict[int, int] = {}
    streams = []
    for n in range(concurrency):
        warm = warm_urls[n % len(warm_urls)]
        reader, writer = await asyncio.open_connection(warm.host, warm.port)
        writer.write(http_request("GET", warm, {}, b""))
        streams.append((origin(warm), reader, writer))
    for _, reader, _ in streams:
        await read_response(reader)
    started = time.perf_counter()

    async def worker(
        server: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        for index in work[server]:
            due = await due_time(started, index, rate)
            writer.write(wire[index])
            status = await read_response(reader)
            latencies[index] = (time.perf_counter() - due) * 1000
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(worker(o, r, w) for o, r, w in streams))
    elapsed = time.perf_counter() - started
    for _, _, writer in streams:
        writer.close()
    return LoadResult(statuses, latencies, elapsed)


CLIENTS = {"raw": fire_raw, "aiohttp": fire_aiohttp}


async def load_from_spec(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    requests = [(u, h, b.encode()) for u, h, b in spec["requests"]]
    fire = CLIENTS[spec["client"]]
    result = await fire(requests, spec["concurrency"], spec["warmup_urls"], spec["rate"])
    print(
        json.dumps(
            {
                "statuses": result.statuses,
                "latencies_ms": result.latencies_ms,
                "elapsed_s": result.elapsed_s,
            }
        )
    )


async def load_in_process(
    requests: Sequence[tuple[str, dict[str, str], bytes]],
    concurrency: int,
    warmup_urls: Sequence[str],
    client: str = "raw",
    rate: float | None = None,
) -> LoadResult:
    """Fire `requests` from a child process (its CPU stays out of the server's process)."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "concurrency": concurrency,
                    "client": client,
                    "rate": rate,
                    "warmup_urls": list(warmup_urls),
                    "requests": [(u, h, b.decode()) for u, h, b in requests],
                }
            )
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench._support",
            "load",
            str(spec),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed (exit {process.returncode})")
    data = json.loads(out)
    return LoadResult(
        {int(k): v for k, v in data["statuses"].items()}, data["latencies_ms"], data["elapsed_s"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    vendor = sub.add_parser("vendor")
    vendor.add_argument("--preload", type=int, default=0)
    load = sub.add_parser("load")
    load.add_argument("spec", type=Path)
    args = parser.parse_args()
    if args.command == "vendor":
        asyncio.run(serve_vendor(args.preload))
    else:
        asyncio.run(load_from_spec(args.spec))


if __name__ == "__main__":
    main()
