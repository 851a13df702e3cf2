"""WebSocket and Server-Sent Events through the edge, on HTTP/1.1, HTTP/2 and HTTP/3: echo round
trips against the origin direct (and nginx, HTTP/1.1 only: it has no RFC 8441/9220), the
memory of idle tunnels, and SSE event latency. Run (one benchmark at a time on a shared box):

    flock /tmp/bench.lock python -m benchmarks.websocket [--messages 1000] [--idle 1000]

Starts an origin (its own process: a WebSocket echo server on the `websockets` library's
sans-I/O protocol, and ``/events``: Server-Sent Events stamped with the origin's clock),
``edge serve`` in front of it (HTTP/1.1, HTTPS with HTTP/2, HTTP/3 on qh3; HTTP/2 on each
engine: ngh2, the default, and the h2 library) and nginx when it is installed, all on 127.0.0.1. Prints:

- p50/p99 of ``--messages`` sequential echo round trips (64-byte text) direct and through
  the edge on each protocol (clients: `websockets` over HTTP/1.1; h2 / aioquic carrying the
  same library's framing over extended CONNECT, benchmarks/ws_clients.py);
- the edge's RSS before and after opening ``--idle`` tunnels that then stay idle, per
  protocol (a fresh edge each; HTTP/2: 100 streams per connection, HTTP/3: 50);
- p50/p99 of the delay from the origin stamping an event to the client reading it (200
  events, 10 ms apart), direct and through the edge on each protocol.

Bounded: every connection and process is closed at the end; nothing leaves loopback.
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
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from benchmarks.ws_clients import WsStream, h2_client, h3_client

ROOT = Path(__file__).resolve().parents[1]
EVENTS = 200
EVENT_GAP = 0.01

ORIGIN = """
import asyncio, sys, time
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

EVENTS, GAP = int(sys.argv[2]), float(sys.argv[3])

async def events(writer):
    writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: text/event-stream\\r\\nCache-Control: no-store\\r\\n"
                 b"Transfer-Encoding: chunked\\r\\n\\r\\n")
    for _ in range(EVENTS):
        await asyncio.sleep(GAP)
        event = b"data: %r\\n\\n" % time.time()
        writer.write(b"%x\\r\\n%s\\r\\n" % (len(event), event))
        await writer.drain()
    writer.write(b"0\\r\\n\\r\\n")

async def websocket(reader, writer, head):
    ws = ServerProtocol(max_size=None)
    ws.receive_data(head)
    request = ws.events_received()[0]
    ws.send_response(ws.accept(request))
    writer.write(b"".join(ws.data_to_send()))
    while data := await reader.read(65536):
        ws.receive_data(data)
        for frame in ws.events_received():
            if isinstance(frame, Frame) and frame.opcode is Opcode.TEXT:
                ws.send_text(frame.data)
            elif isinstance(frame, Frame) and frame.opcode is Opcode.BINARY:
                ws.send_binary(frame.data)
        out = ws.data_to_send()
        if out:
            writer.write(b"".join(out))
            await writer.drain()
        if ws.close_expected():
            break

async def serve(reader, writer):
    try:
        head = await reader.readuntil(b"\\r\\n\\r\\n")
        if head.startswith(b"GET /events"):
            await events(writer)
        else:
            await websocket(reader, writer, head)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""

NGINX_CONF = """
{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://127.0.0.1:{origin_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;  # what a site streaming events configures
            proxy_read_timeout 300s;
        }}
    }}
}}
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


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else values[0]


async def timed(
    count: int, send: Callable[[], Awaitable[Any]], recv: Callable[[], Awaitable[Any]]
) -> list[float]:
    for _ in range(20):  # warm up
        await send()
        await recv()
    times: list[float] = []
    cpu = time.process_time()
    for _ in range(count):
        started = time.perf_counter()
        await send()
        await recv()
        times.append((time.perf_counter() - started) * 1000)
    CLIENT_CPU.append((time.process_time() - cpu) * 1000 / max(1, count))
    return times


CLIENT_CPU: list[float] = []
"""Milliseconds of the client process's own CPU per round trip, one per timed run."""


PAYLOAD = "x" * 64


async def echo_h1(url: str, count: int) -> list[float]:
    async with connect(url) as ws:
        return await timed(count, lambda: ws.send(PAYLOAD), ws.recv)


async def echo_stream(stream: WsStream, count: int) -> list[float]:
    assert stream.status == 200, stream.status
    return await timed(count, lambda: stream.send(PAYLOAD), stream.recv)


async def echo_h2(port: int, count: int, ca: str) -> list[float]:
    async with h2_client("127.0.0.1", port, ca) as client:
        return await echo_stream(await client.websocket("/echo"), count)


async def echo_h3(port: int, count: int, ca: str) -> list[float]:
    async with h3_client("127.0.0.1", port, ca) as client:
        return await echo_stream(await client.websocket("/echo"), count)


async def idle_h1(port: int, count: int, pid: int) -> tuple[int, int]:
    before = rss_kib(pid)
    conns: list[ClientConnection] = []
    try:
        for start in range(0, count, 100):
            batch = [
                connect(f"ws://127.0.0.1:{port}/idle", ping_interval=None)
                for _ in range(min(100, count - start))
            ]
            conns += await asyncio.gather(*batch)
        await asyncio.sleep(1.0)  # let the edge settle
        return before, rss_kib(pid)
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


async def idle_streams(opener: Any, port: int, ca: str, count: int, per: int, pid: int) -> tuple[int, int]:
    before = rss_kib(pid)
    clients = [opener("127.0.0.1", port, ca) for _ in range((count + per - 1) // per)]
    opened = [await c.__aenter__() for c in clients]
    try:
        for i, client in enumerate(opened):
            streams = await asyncio.gather(
                *(client.websocket("/idle") for _ in range(min(per, count - i * per)))
            )
            assert all(s.status == 200 for s in streams), [s.status for s in streams if s.status != 200][:3]
        await asyncio.sleep(1.0)
        return before, rss_kib(pid)
    finally:
        for c in clients:
            await c.__aexit__(None, None, None)


async def sse_h1(port: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
    delays: list[float] = []
    buf = b""
    try:
        while len(delays) < EVENTS:
            data = await asyncio.wait_for(reader.read(65536), 10)
            if not data:
                break
            now = time.time()
            buf += data
            delays += _stamps(buf, now)
            buf = buf[buf.rfind(b"\n\n") + 2 :] if b"\n\n" in buf else buf
    finally:
        writer.close()
    return delays


def _stamps(buf: bytes, now: float) -> list[float]:
    out = []
    for part in buf.split(b"\n\n")[:-1]:
        at = part.find(b"data: ")
        if at >= 0:
            out.append((now - float(part[at + 6 :].split(b"\r\n")[0])) * 1000)
    return out


async def sse_h2(port: int, ca: str) -> list[float]:
    import httpx

    delays: list[float] = []
    async with (
        httpx.AsyncClient(http2=True, verify=ca, timeout=20) as client,
        client.stream("GET", f"https://localhost:{port}/events") as resp,
    ):
        assert resp.http_version == "HTTP/2"
        buf = b""
        async for chunk in resp.aiter_raw():
            buf += chunk
            delays += _stamps(buf, time.time())
            buf = buf[buf.rfind(b"\n\n") + 2 :] if b"\n\n" in buf else buf
    return delays


async def sse_h3(port: int, ca: str) -> list[float]:
    delays: list[float] = []
    async with h3_client("127.0.0.1", port, ca) as client:
        stream = await client.stream_get("/events")
        buf = b""
        while (chunk := await stream.recv(20)) is not None:
            assert isinstance(chunk, bytes)
            buf += chunk
            delays += _stamps(buf, time.time())
            buf = buf[buf.rfind(b"\n\n") + 2 :] if b"\n\n" in buf else buf
    return delays


class Edge:
    """``edge serve`` on HTTP/1.1, HTTPS (HTTP/2) and HTTP/3 (qh3), in front of ``origin_port``."""

    def __init__(self, origin_port: int, cert: Any, caps: int, engine: str = "ngh2") -> None:
        self.h1, self.tls = free_port(), free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", "--upstream", f"http://127.0.0.1:{origin_port}",
             "--listen", f"127.0.0.1:{self.h1}", "--tls-listen", f"127.0.0.1:{self.tls}",
             "--quic-listen", f"127.0.0.1:{self.tls}", "--cert", str(cert.cert), "--key", str(cert.key),
             "--admin-listen", "", "--access-log", "off", "--max-client-tunnels", str(caps),
             "--max-client-connections", str(caps), "--max-tunnels", str(caps), "--h2-engine", engine],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.h1)
        wait_port(self.tls)

    def stop(self) -> None:
        stop(self.proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def start_nginx(prefix: Path, origin_port: int) -> tuple[subprocess.Popen[bytes], int] | None:
    binary = "/usr/sbin/nginx"
    if not Path(binary).exists():
        return None
    port = free_port()
    conf = prefix / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""  # workers that can read the prefix
    conf.write_text(NGINX_CONF.format(user=user, prefix=prefix, port=port, origin_port=origin_port))
    proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf)])
    wait_port(port)
    return proc, port


def line(label: str, values: list[float], base: list[float] | None = None) -> str:
    text = f"  {label:<40} p50 {pct(values, 50):7.3f}  p99 {pct(values, 99):7.3f}"
    if base is not None:
        text += f"  (p50 {pct(values, 50) / pct(base, 50):.2f}x direct)"
    if CLIENT_CPU:
        text += f"  client CPU {CLIENT_CPU.pop():.3f}"
    return text


def main() -> None:
    from edge.wiring.devcert import ensure_dev_cert

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--idle", type=int, default=1000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ws-bench-"))
    cert = ensure_dev_cert(work / "certs")
    ca = str(cert.ca)
    caps = args.idle + 50
    origin_port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", ORIGIN, str(origin_port), str(EVENTS), str(EVENT_GAP)])]
    edge: Edge | None = None
    other: Edge | None = None
    try:
        wait_port(origin_port)
        nginx = start_nginx(work, origin_port)
        if nginx is not None:
            procs.append(nginx[0])
        edge = Edge(origin_port, cert, caps)
        other = Edge(origin_port, cert, caps, "h2")  # the HTTPS front on the h2 library
        n = args.messages
        direct = asyncio.run(echo_h1(f"ws://127.0.0.1:{origin_port}/echo", n))
        print(f"echo round trip, {n} sequential messages of 64 bytes, ms (origin: websockets sans-I/O echo;")
        print("  client CPU: the client process's own CPU per round trip, part of each figure):")
        print(line("direct to the origin (h1)", direct))
        if nginx is not None:
            print(
                line("through nginx (h1)", asyncio.run(echo_h1(f"ws://127.0.0.1:{nginx[1]}/echo", n)), direct)
            )
        print(line("through the edge, h1", asyncio.run(echo_h1(f"ws://127.0.0.1:{edge.h1}/echo", n)), direct))
        print(line("through the edge, h2 ngh2 (RFC 8441)", asyncio.run(echo_h2(edge.tls, n, ca)), direct))
        print(line("through the edge, h2 h2-lib (RFC 8441)", asyncio.run(echo_h2(other.tls, n, ca)), direct))
        print(line("through the edge, h3 qh3 (RFC 9220)", asyncio.run(echo_h3(edge.tls, n, ca)), direct))

        print(f"SSE: origin stamp -> client read, {EVENTS} events {EVENT_GAP * 1000:.0f} ms apart, ms:")
        direct_sse = asyncio.run(sse_h1(origin_port))
        print(line("direct to the origin (h1)", direct_sse))
        if nginx is not None:
            print(line("through nginx (h1)", asyncio.run(sse_h1(nginx[1]))))
        print(line("through the edge, h1", asyncio.run(sse_h1(edge.h1))))
        print(line("through the edge, h2 ngh2", asyncio.run(sse_h2(edge.tls, ca))))
        print(line("through the edge, h2 h2-lib", asyncio.run(sse_h2(other.tls, ca))))
        print(line("through the edge, h3 qh3", asyncio.run(sse_h3(edge.tls, ca))))
        edge.stop()
        other.stop()
        edge = other = None

        print(f"{args.idle} idle tunnels (a fresh edge each), edge RSS:")
        measures: list[tuple[str, str, Callable[[Edge], Coroutine[Any, Any, tuple[int, int]]]]] = [
            ("h1", "ngh2", lambda e: idle_h1(e.h1, args.idle, e.proc.pid)),
            ("h2 ngh2", "ngh2", lambda e: idle_streams(h2_client, e.tls, ca, args.idle, 100, e.proc.pid)),
            ("h2 h2-lib", "h2", lambda e: idle_streams(h2_client, e.tls, ca, args.idle, 100, e.proc.pid)),
            ("h3 qh3", "ngh2", lambda e: idle_streams(h3_client, e.tls, ca, args.idle, 50, e.proc.pid)),
        ]
        for label, engine, measure in measures:
            edge = Edge(origin_port, cert, caps, engine)
            before, after = asyncio.run(measure(edge))
            edge.stop()
            edge = None
            per = (after - before) * 1024 / max(1, args.idle)
            print(
                f"  {label:<10} {before / 1024:6.1f} -> {after / 1024:6.1f} MiB ({per:,.0f} bytes per tunnel)"
            )
    finally:
        for running in (edge, other):
            if running is not None:
                running.stop()
        for proc in reversed(procs):
            stop(proc)


if __name__ == "__main__":
    main()
