"""A scriptable upstream for edge tests: each test says what each path answers.

Real HTTP/1.1 on a loopback socket, parsed with httptools. A route returns the
exact response bytes, so tests can send what well-behaved servers never do:
interim 103s, truncated bodies, stalls, odd statuses, repeated fields.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httptools


@dataclass
class Seen:
    """One request as the origin received it."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


Writer = Callable[[bytes], None]
Route = Callable[[Seen, "OriginConnection"], Awaitable[None]]


def response(
    status: int = 200,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    reason: str = "OK",
    length: bool = True,
) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def fixed(
    status: int = 200,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    delay: float = 0.0,
) -> Route:
    async def route(seen: Seen, conn: OriginConnection) -> None:
        if delay:
            await asyncio.sleep(delay)
        raw = response(status, body, headers)
        if seen.method == b"HEAD":
            raw = raw[: len(raw) - len(body)]
        conn.write(raw)

    return route


class OriginConnection(asyncio.Protocol):
    def __init__(self, server: ScriptedOrigin) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[Seen] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1
        self.server.live.add(self)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.live.discard(self)
        if self.task:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        from edge.fronts.h1 import LLHTTP_METHODS

        method, space, _ = data.partition(b" ")
        if space and method.isupper() and method not in LLHTTP_METHODS:
            # Extension methods reach this origin too; llhttp knows a fixed list.
            self._method_override = method
            data = b"POST" + data[len(method) :]
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        method = getattr(self, "_method_override", b"") or self.parser.get_method()
        self._method_override = b""
        self.queue.put_nowait(Seen(method, self._url, self._headers, self._body))

    async def _run(self) -> None:
        while True:
            seen = await self.queue.get()
            self.server.seen.append(seen)
            path = seen.target.split(b"?")[0].decode()
            route = self.server.routes.get(seen.target.decode()) or self.server.routes.get(path)
            if route is None:
                self.write(response(404, b"no route\n"))
            else:
                await route(seen, self)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.server.sent += len(data)

    async def send(self, data: bytes) -> None:
        """Write and wait while the peer is not reading (the origin feels backpressure)."""
        self.write(data)
        while self.transport is not None and not self.transport.is_closing():
            if self.transport.get_write_buffer_size() < 256 * 1024:
                return
            await asyncio.sleep(0.005)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


@dataclass
class ScriptedOrigin:
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    sent: int = 0
    live: set[OriginConnection] = field(default_factory=set)
    port: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: OriginConnection(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, target: str, method: bytes | None = None) -> int:
        return sum(
            1 for s in self.seen if s.target.decode() == target and (method is None or s.method == method)
        )

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
