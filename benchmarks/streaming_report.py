"""Streaming, slicing and compression figures for a miss, measured through a real edge.

Runs on loopback only, bounded in time. Three measurements:

1. A 64 MiB object from an origin throttled to 10 MB/s, fetched by two clients
   at once: time to first byte and total time for each, and how many requests
   the origin saw (collapsing).
2. The last MiB of a 256 MiB object on a cold cache: the origin's requests and
   bytes sent (slices).
3. The sample site's JS and CSS through the edge: bytes per coding, ratio to
   identity, and how many times each coding was produced after 20 hits each.

    python -m benchmarks.streaming_report [--rate 10e6] [--size-mib 64]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import time
from pathlib import Path

import httpx

from edge import config as edge_config
from edge.core import EdgeCore
from edge.wiring.process import bind_tcp, start_h1

MiB = 1024 * 1024
BLOCK = bytes(range(251)) * (64 * 1024 // 251 + 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrottledOrigin:
    """An origin that serves /big-N.bin of N MiB at ``rate`` bytes/s and honours single ranges."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.requests: list[tuple[str, str | None]] = []
        self.bytes_sent = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ")[1].decode()
                m = re.search(rb"\r\nrange: *bytes=(\d*)-(\d*)", head, re.I)
                self.requests.append((target, m.group(0).decode().split(":", 1)[1].strip() if m else None))
                size = int(re.findall(r"\d+", target)[0]) * MiB
                start, end = 0, size - 1
                status = b"200 OK"
                extra = b""
                if m:
                    first, last = m.group(1), m.group(2)
                    start, end = (
                        (size - int(last), size - 1)
                        if not first
                        else (int(first), min(size - 1, int(last or size - 1)))
                    )
                    status = b"206 Partial Content"
                    extra = b"Content-Range: bytes %d-%d/%d\r\n" % (start, end, size)
                writer.write(
                    b"HTTP/1.1 " + status + b'\r\nCache-Control: max-age=600\r\nETag: "big"\r\n'
                    b"Content-Type: application/octet-stream\r\n"
                    + extra
                    + b"Content-Length: %d\r\n\r\n" % (end - start + 1)
                )
                pos, began = start, time.monotonic()
                while pos <= end:
                    chunk = BLOCK[: min(len(BLOCK), end - pos + 1)]
                    writer.write(chunk)
                    await writer.drain()
                    pos += len(chunk)
                    self.bytes_sent += len(chunk)
                    ahead = (pos - start) / self.rate - (time.monotonic() - began)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def start_edge(upstream: str) -> tuple[EdgeCore, str]:
    port = free_port()
    config = edge_config.load(
        None,
        {},
        {"upstream": upstream, "listen": f"127.0.0.1:{port}", "admin_listen": "", "cache_size": "1GiB"},
    )
    core = EdgeCore(config)
    await start_h1(core, config, bind_tcp(config.listen, reuse_port=False))
    return core, f"http://127.0.0.1:{port}"


async def timed_get(client: httpx.AsyncClient, url: str, **headers: str) -> tuple[float, float, int]:
    start = time.monotonic()
    first = None
    size = 0
    async with client.stream("GET", url, headers=headers) as resp:
        async for chunk in resp.aiter_raw():
            if first is None:
                first = time.monotonic() - start
            size += len(chunk)
    return first or 0.0, time.monotonic() - start, size


async def throttled_miss(rate: float, size_mib: int) -> None:
    origin = ThrottledOrigin(rate)
    server = await asyncio.start_server(origin.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    core, base = await start_edge(f"http://127.0.0.1:{port}")
    # Cached whole up to max_object_size; above slice_size it is cut into slices as it passes.
    async with httpx.AsyncClient(timeout=120) as client:
        results = await asyncio.gather(*(timed_get(client, f"{base}/big-{size_mib}.bin") for _ in range(2)))
    for i, (ttfb, total, size) in enumerate(results, 1):
        print(f"  client {i}: TTFB {ttfb * 1000:.0f} ms, total {total:.2f} s, {size / MiB:.0f} MiB")
    print(
        f"  origin requests: {len(origin.requests)} {origin.requests}, origin bytes {origin.bytes_sent / MiB:.1f} MiB"
    )
    server.close()
    await core.aclose()


async def tail_range(size_mib: int = 256) -> None:
    origin = ThrottledOrigin(rate=1e12)
    server = await asyncio.start_server(origin.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    core, base = await start_edge(f"http://127.0.0.1:{port}")
    async with httpx.AsyncClient(timeout=60) as client:
        resp = await client.get(f"{base}/big-{size_mib}.bin", headers={"Range": f"bytes=-{MiB}"})
        again = await client.get(f"{base}/big-{size_mib}.bin", headers={"Range": f"bytes=-{MiB}"})
    print(f"  first: {resp.status_code} {resp.headers['content-range']} ({len(resp.content)} bytes); "
          f"second: X-Cache {again.headers['x-cache']}")  # fmt: skip
    print(f"  origin requests: {origin.requests}, origin bytes {origin.bytes_sent / MiB:.2f} MiB")
    server.close()
    await core.aclose()


async def compression_table(root: Path, label: str) -> None:
    origin_port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "python", "-m", "origin", "serve", "--root", str(root), "--listen", f"127.0.0.1:{origin_port}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(1.5)
    core, base = await start_edge(f"http://127.0.0.1:{origin_port}")
    assets = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix in (".js", ".css"))
    print(f"  {label}")
    async with httpx.AsyncClient(timeout=30) as client:
        for path in assets:
            identity = await client.get(f"{base}/{path}", headers={"Accept-Encoding": "identity"})
            row = [f"{Path(path).name:20s} identity {len(identity.content):6d}"]
            for coding in ("br", "zstd", "gzip"):
                for _ in range(20):
                    resp = await client.get(f"{base}/{path}", headers={"Accept-Encoding": coding})
                    await asyncio.sleep(0.005)
                raw = int(resp.headers["content-length"])
                row.append(f"{coding} {raw:5d} ({raw / len(identity.content):.2f})")
            print("    " + "  ".join(row))
    print(f"    compressions made by the edge (20 requests per coding per file): {dict(core.compressions)}")
    await core.aclose()
    proc.terminate()
    await proc.wait()


async def compression() -> None:
    import shutil
    import tempfile

    from origin.sample import ensure_sample_site

    root = ensure_sample_site()
    await compression_table(
        root, "origin with precompressed .br/.zst/.gz siblings (the edge keeps them as they are)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp)
        for path in (root / "assets").iterdir():
            if path.suffix in (".js", ".css"):
                shutil.copy(path, bare / path.name)
        await compression_table(
            bare, "origin with identity files only (the edge compresses, once per coding)"
        )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=10e6, help="origin bytes/s for the throttled miss")
    ap.add_argument("--size-mib", type=int, default=64)
    args = ap.parse_args()
    print(f"1. {args.size_mib} MiB miss at {args.rate / 1e6:.0f} MB/s, two concurrent clients")
    await throttled_miss(args.rate, args.size_mib)
    print("2. last MiB of a 256 MiB object, cold cache")
    await tail_range()
    print(
        "3. sample site JS/CSS through the edge (the origin's own .br/.gz/.zst siblings are used when it has them)"
    )
    await compression()


if __name__ == "__main__":
    asyncio.run(main())
