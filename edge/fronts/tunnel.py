"""WebSocket over HTTP/1.1 through the edge: the Upgrade handshake forwarded, then a byte tunnel.

A client's ``GET`` with ``Connection: upgrade`` and ``Upgrade: websocket`` is not a cache
request: :class:`Tunnel` opens a connection of its own to the origin (never a shield or a
sibling worker, so a tunnel is never pinned to a node that may leave), sends the request
with the node's forwarding fields plus the upgrade, and relays the answer. After a
``101 Switching Protocols`` it relays bytes both ways without reading frames (RFC 6455
needs no help from an intermediary) until either side closes or nothing moves for
``tunnel_idle_timeout`` seconds. Any other answer is relayed as it is and the connection
is closed.

Guarantees:
- never cached, never collapsed: each tunnel is its own upstream connection;
- bounded: at most ``max_tunnels`` per worker and ``max_client_tunnels`` per client
  address (503 with a reason beyond), a response head of at most 64 KiB within
  ``read_timeout``, a connect within ``connect_timeout`` (502/504 otherwise);
- backpressure both ways: a slow client pauses reading from the origin, a slow origin
  pauses reading from the client;
- counted and logged once it ends, status 101 and the bytes sent to the client; the end
  never waits for an origin that stopped reading (:func:`close_origin`);
- interim answers to the handshake (100, 103) are skipped, never relayed as the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from edge.http.message import reason_phrase

if TYPE_CHECKING:
    from edge.core import EdgeCore
    from edge.fronts.h1 import H1Protocol
    from edge.http.message import Request

__all__ = ["HandshakeRefused", "Tunnel", "close_origin", "origin_handshake", "wants_websocket"]

HEAD_LIMIT = 64 * 1024
"""Largest response head accepted from the origin."""

PAUSE_ABOVE = 1024 * 1024
"""Bytes buffered towards the origin before the client is paused."""

CLOSE_WAIT = 1.0
"""Seconds a tunnel's end waits for its origin connection to close before aborting it."""

INTERIM_LIMIT = 16
"""Interim (1xx other than 101) answers to a handshake skipped before the origin is a 502."""


def wants_websocket(req: Request) -> bool:
    """A GET asking to upgrade to WebSocket (RFC 6455 §4.1): the only upgrade tunnelled."""
    if req.method != b"GET":
        return False
    upgrade = req.fields.get(b"upgrade", b"")
    tokens = {t.strip().lower() for t in upgrade.split(b",")}
    connection = {t.strip().lower() for t in req.fields.get(b"connection", b"").split(b",")}
    return b"websocket" in tokens and b"upgrade" in connection


class Tunnel:
    """One WebSocket handshake and tunnel, on behalf of one client connection."""

    def __init__(self, proto: H1Protocol, req: Request) -> None:
        self.proto = proto
        self.req = req
        self.pending = bytearray()
        """Client bytes that arrived before the origin connection was up."""
        self.writer: asyncio.StreamWriter | None = None
        self.sent = 0
        """Bytes sent to the client (the origin's head and what followed it)."""
        self.last = time.monotonic()
        self.done = asyncio.Event()
        self.status = 0
        """The status the client got (101 once the tunnel opened); 0 until then."""
        self.switched = False
        """The origin answered 101: bytes flow both ways from now on."""

    # -- client side (called by the HTTP/1.1 front) ------------------------------------------------
    def from_client(self, data: bytes) -> None:
        self.last = time.monotonic()
        writer = self.writer
        if writer is None or not self.switched:
            # Until the origin switched protocols, client bytes are held, never forwarded: a
            # refused handshake must not carry raw requests past the node's request rules.
            if len(self.pending) + len(data) > HEAD_LIMIT:
                transport = self.proto.transport
                if transport is not None:
                    transport.pause_reading()
                return
            self.pending += data
            return
        writer.write(data)
        transport = self.proto.transport
        if writer.transport.get_write_buffer_size() > PAUSE_ABOVE and transport is not None:
            transport.pause_reading()
            asyncio.get_running_loop().create_task(self._resume_client(writer))

    async def _resume_client(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        transport = self.proto.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def client_closed(self) -> None:
        """The client's connection is gone: the relay ends."""
        self.done.set()

    # -- the tunnel --------------------------------------------------------------------------------
    async def run(self) -> int:
        """Handshake and relay; the status the client got (101 for a tunnel that opened)."""
        config = self.proto.core.config
        try:
            reader, writer, head, status = await origin_handshake(self.proto.core, self.req)
        except HandshakeRefused as refused:
            return self._refuse(refused.status, refused.why)
        self.writer = writer
        try:
            self._to_client(head)
            self.status = status
            if status != 101:
                # Not switched: relay the answer (its Content-Length, else until the origin
                # closes), drop what the client sent meanwhile, and close.
                self.pending.clear()
                await self._relay_answer(reader, head, config.read_timeout)
                return status
            self.switched = True
            if self.pending:
                writer.write(bytes(self.pending))
                self.pending.clear()
            transport = self.proto.transport
            if transport is not None and not transport.is_closing():
                transport.resume_reading()
            await self._relay(reader, config.tunnel_idle_timeout)
            return status
        finally:
            await close_origin(writer)

    async def _relay(self, reader: asyncio.StreamReader, idle: float) -> None:
        down = asyncio.get_running_loop().create_task(self._relay_from_origin(reader, None))
        closed = asyncio.get_running_loop().create_task(self.done.wait())
        try:
            while True:
                finished, _ = await asyncio.wait(
                    {down, closed}, timeout=max(0.05, idle / 4), return_when=asyncio.FIRST_COMPLETED
                )
                if finished:
                    return
                if time.monotonic() - self.last > idle:
                    return  # idle both ways: the tunnel is closed
        finally:
            for task in (down, closed):
                task.cancel()

    async def _relay_from_origin(self, reader: asyncio.StreamReader, timeout: float | None) -> None:
        proto = self.proto
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), timeout)
            except (TimeoutError, ConnectionError):
                return
            if not data:
                return
            self.last = time.monotonic()
            self._to_client(data)
            if proto.write_paused:
                await proto.drain()

    async def _relay_answer(self, reader: asyncio.StreamReader, head: bytes, timeout: float) -> None:
        """The body of an answer that did not switch: as long as its Content-Length says."""
        length = _content_length(head)
        if length is None:
            await self._relay_from_origin(reader, timeout)
            return
        while length > 0:
            try:
                data = await asyncio.wait_for(reader.read(min(length, 65536)), timeout)
            except (TimeoutError, ConnectionError):
                return
            if not data:
                return
            length -= len(data)
            self._to_client(data)
            if self.proto.write_paused:
                await self.proto.drain()

    def _to_client(self, data: bytes) -> None:
        transport = self.proto.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            self.sent += len(data)

    def _refuse(self, status: int, why: str) -> int:
        self.status = status
        body = f"{status} {reason_phrase(status).decode()}: {why}\n".encode()
        self._to_client(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (status, reason_phrase(status), len(body)) + body
        )
        return status


class HandshakeRefused(Exception):
    """The origin could not be asked, or did not answer with an HTTP/1.1 head: ``status`` and
    ``why`` are the answer the client gets."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


async def origin_handshake(
    core: EdgeCore, req: Request, extra: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes, int]:
    """Open a connection of its own to the origin, send ``req``'s WebSocket handshake (the
    node's forwarding fields, ``extra`` header lines, the upgrade) and read the answer's head.

    The upstream side of every tunnel (HTTP/1.1 here, HTTP/2 and HTTP/3 in
    :mod:`edge.fronts.stream_tunnel`): always the origin, never a shield or a sibling, so a
    tunnel is never pinned to a node that may leave. Returns the reader, the writer (the
    caller closes it), the head up to its blank line and its status; raises
    :class:`HandshakeRefused` (502 unreachable or not HTTP, 504 no answer in ``read_timeout``).
    """
    config = core.config
    origin = core.gateway.router.origin
    target = origin.pool.target
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(target.host, target.port, limit=HEAD_LIMIT), config.connect_timeout
        )
    except (OSError, TimeoutError):
        raise HandshakeRefused(502, "cannot reach the origin for this WebSocket") from None
    try:
        fields = core.gateway.fields_for(req, origin)
        lines = [b"%s %s HTTP/1.1\r\n" % (req.method, req.target)]
        lines += [name + b": " + value + b"\r\n" for name, value in fields]
        lines.append(extra + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        writer.write(b"".join(lines))
        try:
            head = await asyncio.wait_for(_final_head(reader), config.read_timeout)
        except TimeoutError:
            raise HandshakeRefused(504, "the origin did not answer the WebSocket handshake") from None
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            raise HandshakeRefused(
                502, "the origin's answer to the WebSocket handshake is not HTTP"
            ) from None
        req.upstream_time = time.perf_counter() - started
        status = _status_of(head)
        if status is None:
            raise HandshakeRefused(502, "the origin's answer to the WebSocket handshake is not HTTP")
        if _interim(status):
            raise HandshakeRefused(502, "the origin's answers to the WebSocket handshake were all interim")
    except BaseException:
        writer.close()
        raise
    return reader, writer, head, status


async def _final_head(reader: asyncio.StreamReader) -> bytes:
    """The head of the handshake's answer; interim answers (100, 103: not the handshake's,
    never relayed) are skipped, at most ``INTERIM_LIMIT`` of them."""
    for _ in range(INTERIM_LIMIT):
        head = await reader.readuntil(b"\r\n\r\n")
        status = _status_of(head)
        if status is None or not _interim(status):
            break
    return head


def _interim(status: int) -> bool:
    return 100 <= status < 200 and status != 101


async def close_origin(writer: asyncio.StreamWriter) -> None:
    """Close a tunnel's origin connection. Bytes still buffered for an origin that stopped
    reading are dropped (abort): waiting for them would hold the tunnel, its place under the
    caps and its log line, for ever."""
    transport = writer.transport
    if transport.get_write_buffer_size():
        transport.abort()
    else:
        writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_WAIT)
    except TimeoutError:
        transport.abort()
    except Exception:
        pass  # the connection's own error: it is closed either way


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


def _status_of(head: bytes) -> int | None:
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return None
    return int(parts[1])
