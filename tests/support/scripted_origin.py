"""A scriptable upstream for edge tests: each test says what each path answers.

Real HTTP/1.1 on a loopback socket, parsed with httptools. A route returns the
exact response bytes, so tests can send what well-behaved servers never do:
interim 103s, truncated bodies, stalls, odd statuses, repeated fields.

Tests wait on the origin's events, never on the clock: a :class:`Gate` holds a
route at a point until the test opens it (so the test knows what the origin has
and has not sent yet), and :meth:`ScriptedOrigin.requested`,
:meth:`ScriptedOrigin.responded`, :meth:`ScriptedOrigin.until` and
:meth:`ScriptedOrigin.held_back` return when requests arrive, routes finish,
connections come and go, or the edge stops reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import httptools

from tests.support.waiting import STUCK_TURNS, WAIT, unchanged_for, within

SEND_HIGH_WATER = 256 * 1024
"""Bytes a connection buffers before :meth:`OriginConnection.send` waits for the peer to read."""


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


class Gate:
    """A point in a route where the origin holds back until the test opens it.

    Everything a route writes after ``await gate.hold()`` is provably not sent
    before the test calls :meth:`open`, so a test can assert what a client got
    while the origin is still holding the rest: an ordering, not a race.
    A gate stays open once opened; a gate never opened holds its routes until
    their connection closes (an origin that never answers).
    """

    def __init__(self) -> None:
        self._reached = asyncio.Event()
        self._opened = asyncio.Event()

    async def hold(self) -> None:
        """For routes: announce the gate is reached, then wait until it is opened."""
        self._reached.set()
        await self._opened.wait()

    async def reached(self, timeout: float = WAIT) -> None:
        """Return once a route has reached the gate; an AssertionError after ``timeout`` s."""
        await within(self._reached.wait(), "no request reached the origin's gate", timeout)

    def open(self) -> None:
        """Let every route holding here (and every later one) go on."""
        self._opened.set()

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()


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
    gate: Gate | None = None,
) -> Route:
    """A route answering every request with one whole response (headers only for HEAD).

    ``gate``: hold each request there, before anything is written. ``delay``: a slow
    origin on purpose (only for a test whose scenario is slowness; to wait for the
    edge, use a gate).
    """

    async def route(seen: Seen, conn: OriginConnection) -> None:
        if gate is not None:
            await gate.hold()
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
        self.serving: Seen | None = None
        """The request whose route is running on this connection, if any."""
        self.writing_paused = False
        """The peer is not reading: the write buffer is over SEND_HIGH_WATER."""
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=SEND_HIGH_WATER)  # type: ignore[attr-defined]
        self.server.connections += 1
        self.server.live.add(self)
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.server.notify()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.live.discard(self)
        self._writable.set()
        if self.task:
            self.task.cancel()
        self.server.notify()

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._writable.clear()
        self.server.notify()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._writable.set()
        self.server.notify()

    def data_received(self, data: bytes) -> None:
        from edge.fronts.h1 import LLHTTP_METHODS

        method, space, _ = data.partition(b" ")
        if space and method.isupper() and method not in LLHTTP_METHODS:
            # Extension methods reach this origin too; llhttp knows a fixed list.
            self._method_override = method
            data = b"POST" + data[len(method) :]
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # An Upgrade request (a WebSocket handshake) is answered as plain HTTP here, and
            # what followed it is parsed as the next requests (llhttp stops at an upgrade).
            offset = upgrade.args[0] if upgrade.args else len(data)
            self.parser = httptools.HttpRequestParser(self)
            if offset < len(data):
                self.data_received(data[offset:])

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
            self.serving = seen
            self.server.notify()
            path = seen.target.split(b"?")[0].decode()
            route = self.server.routes.get(seen.target.decode()) or self.server.routes.get(path)
            if route is None:
                self.write(response(404, b"no route\n"))
            else:
                await route(seen, self)
            self.serving = None
            self.server.answered.append(seen)
            self.server.notify()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.server.sent += len(data)

    async def send(self, data: bytes) -> None:
        """Write, then wait while the peer is not reading (the origin feels backpressure).

        Returns at once while the write buffer is under SEND_HIGH_WATER; otherwise when the
        transport resumes writing (the buffer drained to a quarter of it) or the connection closes.
        """
        self.write(data)
        while self.writing_paused and self.transport is not None and not self.transport.is_closing():
            await self._writable.wait()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _send_state(conn: OriginConnection) -> tuple[bool, int]:
    """What changes while the peer reads: paused or not, and the bytes waiting to go out."""
    transport = conn.transport
    return conn.writing_paused, transport.get_write_buffer_size() if transport is not None else 0


@dataclass
class ScriptedOrigin:
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    """Every request, in the order its route started."""
    answered: list[Seen] = field(default_factory=list)
    """Every request whose route has finished (written all it was going to write)."""
    connections: int = 0
    sent: int = 0
    live: set[OriginConnection] = field(default_factory=set)
    port: int = 0
    server: asyncio.Server | None = None
    _waiters: list[asyncio.Future[None]] = field(default_factory=list, repr=False)

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

    def notify(self) -> None:
        """Wake :meth:`until`: a request arrived, a route finished, a connection changed state."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Return as soon as ``predicate()`` (about this origin's state) holds.

        Re-checked on every origin event (no polling), so it returns in the same loop
        turn as the change. An AssertionError saying ``what`` after ``timeout`` s.
        """

        async def wait() -> None:
            while not predicate():
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter

        await within(wait(), what, timeout)

    async def requested(self, target: str, count: int = 1, timeout: float = WAIT) -> Seen:
        """The ``count``-th request for ``target``, once it has arrived (its route has started)."""
        await self.until(lambda: self.count(target) >= count, f"request #{count} for {target}", timeout)
        return [s for s in self.seen if s.target.decode() == target][count - 1]

    async def responded(self, target: str, count: int = 1, timeout: float = WAIT) -> None:
        """Return once routes for ``target`` have finished ``count`` times (all written, maybe unread)."""
        await self.until(
            lambda: sum(1 for s in self.answered if s.target.decode() == target) >= count,
            f"response #{count} for {target} written",
            timeout,
        )

    async def held_back(
        self, target: str, turns: int = STUCK_TURNS, timeout: float = WAIT
    ) -> OriginConnection:
        """Wait until the peer has stopped reading the response to ``target``; its connection.

        Guarantees, when it returns: the route for ``target`` is blocked in
        :meth:`OriginConnection.send` (the transport paused writing: its buffer is over
        SEND_HIGH_WATER) and not one byte left that buffer during ``turns`` consecutive
        event-loop turns. For a peer on this same loop (an in-process edge), each turn
        gave it the chance to read and the origin's transport the chance to write, so the
        peer is not slow but has stopped reading. The count is of turns, not seconds: a
        busy machine makes this take longer, not return early.

        An AssertionError at once if the route finished instead (nothing held it back),
        or after ``timeout`` s.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def finished() -> bool:
            return any(s.target.decode() == target for s in self.answered)

        def blocked() -> OriginConnection | None:
            for conn in self.live:
                serving = conn.serving
                if serving is not None and serving.target.decode() == target and conn.writing_paused:
                    return conn
            return None

        while True:
            await self.until(
                lambda: blocked() is not None or finished(),
                f"the response to {target} never felt backpressure",
                max(0.0, deadline - loop.time()),
            )
            if finished():
                raise AssertionError(f"the origin wrote the whole response to {target}: nothing held it back")
            conn = blocked()
            assert conn is not None and conn.transport is not None
            if await unchanged_for(partial(_send_state, conn), turns):
                return conn
            if loop.time() > deadline:
                raise AssertionError(f"the peer kept reading the response to {target} for {timeout:g} s")

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
