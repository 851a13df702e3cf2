"""CPU cost of one HTTP/1.1 cache hit inside the fast front, without sockets.

Feeds a keep-alive GET for a cached 1 KiB object into H1Protocol.data_received
with a transport that discards writes, and reports microseconds per hit. It
isolates our Python from the kernel and wrk, so before/after comparisons of a
hot-path change are stable even on a noisy machine. Usage:

    python -m benchmarks.hit_path_micro [--requests 200000] [--headers browser] [--access-log /dev/null]
        [--eviction s3fifo]

``--access-log DEST`` turns the access log on (what a hit costs with it; the writer
thread's work counts, as it shares the GIL with the loop).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from edge import config as edge_config
from edge.cache.entry import Entry
from edge.cache.freshness import freshness_policy
from edge.core import EdgeCore
from edge.fronts.h1 import H1Protocol
from edge.http.dates import format_http_date

BROWSER_HEADERS = (
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126 Safari/537.36\r\n"
    b"Accept: */*\r\nAccept-Language: en-GB,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Referer: http://127.0.0.1:8080/index.html\r\nSec-Fetch-Dest: script\r\nSec-Fetch-Mode: no-cors\r\n"
    b"Sec-Fetch-Site: same-origin\r\nConnection: keep-alive\r\n"
)


class NullTransport:
    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)

    def writelines(self, chunks: list[bytes]) -> None:
        self.bytes += sum(len(c) for c in chunks)

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 5555) if name == "peername" else None

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


async def run(
    requests: int, headers: str, access_log: str | None = None, eviction: str = "s3fifo", per_read: int = 10
) -> float:
    config = edge_config.load(None, {}, {"upstream": "http://127.0.0.1:9", "eviction": eviction})
    core = EdgeCore(config)
    access = None
    if access_log is not None:
        from edge.wiring.accesslog import AccessLog

        access = AccessLog(access_log)
        core.requests.set_access(access)
    now = time.time()
    stored = [(b"Date", format_http_date(now)), (b"Cache-Control", b"max-age=3600"),
              (b"Content-Type", b"application/octet-stream"), (b"ETag", b'"abc"')]  # fmt: skip
    policy = freshness_policy(200, stored, now)
    entry = Entry(b"http://127.0.0.1:8080/1k.bin", 200, b"OK", stored, b"x" * 1024, policy, now, 0.0)
    core.store.put(entry.key, entry, entry.charge)
    proto = H1Protocol(core, config)
    transport = NullTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    extra = BROWSER_HEADERS if headers == "browser" else b""
    one = b"GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n" + extra + b"\r\n"
    batch = one * per_read
    start = time.perf_counter()
    for _ in range(requests // per_read):
        proto.data_received(batch)
    if access is not None:
        access.close()
    elapsed = time.perf_counter() - start
    assert transport.bytes > 1024 * requests, "hits were not served"
    return elapsed / requests * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--headers", choices=["wrk", "browser"], default="wrk")
    ap.add_argument("--access-log", help="turn the access log on, writing to this file (e.g. /dev/null)")
    ap.add_argument("--eviction", choices=["lru", "s3fifo"], default="s3fifo", help="the store's policy")
    ap.add_argument(
        "--per-read", type=int, default=10,
        help="requests per data_received: 10 pipelined (the default), or 1 as wrk sends them",
    )  # fmt: skip
    args = ap.parse_args()
    per_hit = asyncio.run(run(args.requests, args.headers, args.access_log, args.eviction, args.per_read))
    logged = f", access log to {args.access_log}" if args.access_log else ""
    print(
        f"{per_hit:.2f} us per hit ({args.headers} headers{logged}, {args.eviction}, {args.per_read} per read), "
        f"{1e6 / per_hit:,.0f} hits/s of CPU"
    )


if __name__ == "__main__":
    main()
