"""WebSocket through the edge (HTTP/1.1): echo round trips against the origin direct, and
the memory of idle tunnels. Run:

    python -m benchmarks.websocket [--messages 1000] [--idle 1000]

Starts a `websockets` echo server (its own process) and `edge serve` in front of it, both on
127.0.0.1. Prints p50/p99 of ``--messages`` sequential echo round trips (64-byte text) direct
and through the edge, and the edge's RSS before and after opening ``--idle`` tunnels that
then stay idle (bounded: every connection is closed at the end; nothing leaves loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[1]

ECHO_SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for message in ws:
        await ws.send(message)
async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), max_queue=None):
        await asyncio.Future()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def round_trips(url: str, count: int) -> list[float]:
    times: list[float] = []
    async with connect(url) as ws:
        payload = "x" * 64
        for _ in range(20):  # warm up
            await ws.send(payload)
            await ws.recv()
        for _ in range(count):
            started = time.perf_counter()
            await ws.send(payload)
            await ws.recv()
            times.append((time.perf_counter() - started) * 1000)
    return times


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else values[0]


async def idle_tunnels(url: str, count: int, edge_pid: int) -> tuple[int, int]:
    before = rss_kib(edge_pid)
    conns: list[ClientConnection] = []
    try:
        for start in range(0, count, 100):
            batch = [connect(url, ping_interval=None) for _ in range(start, min(count, start + 100))]
            conns += await asyncio.gather(*batch)
        await asyncio.sleep(1.0)  # let the edge settle
        after = rss_kib(edge_pid)
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    return before, after


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--idle", type=int, default=1000)
    args = ap.parse_args()
    origin_port, edge_port = free_port(), free_port()
    procs = [subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(origin_port)])]
    try:
        wait_port(origin_port)
        edge = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", "--upstream", f"http://127.0.0.1:{origin_port}",
             "--listen", f"127.0.0.1:{edge_port}", "--admin-listen", "", "--tls-listen", "",
             "--access-log", "off", "--max-client-tunnels", str(args.idle + 10),
             "--max-client-connections", str(args.idle + 10), "--max-tunnels", str(args.idle + 10)],
            cwd=ROOT,
        )  # fmt: skip
        procs.append(edge)
        wait_port(edge_port)
        direct = asyncio.run(round_trips(f"ws://127.0.0.1:{origin_port}/echo", args.messages))
        through = asyncio.run(round_trips(f"ws://127.0.0.1:{edge_port}/echo", args.messages))
        print(f"echo round trip, {args.messages} messages of 64 bytes, ms:")
        print(f"  direct to the origin   p50 {pct(direct, 50):.3f}  p99 {pct(direct, 99):.3f}")
        print(f"  through the edge       p50 {pct(through, 50):.3f}  p99 {pct(through, 99):.3f}")
        before, after = asyncio.run(idle_tunnels(f"ws://127.0.0.1:{edge_port}/idle", args.idle, edge.pid))
        per = (after - before) * 1024 / max(1, args.idle)
        print(
            f"{args.idle} idle tunnels: edge RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB ({per:,.0f} bytes each)"
        )
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
