"""WebSocket over HTTP/2 (RFC 8441) and HTTP/3 (RFC 9220): one extended CONNECT stream bridged
to an HTTP/1.1 ``Upgrade: websocket`` towards the origin.

A client's ``CONNECT`` with ``:protocol websocket`` (offered by SETTINGS_ENABLE_CONNECT_PROTOCOL)
is not a cache request: the front builds the :class:`Request` the origin gets (a GET of
``:path``, by :func:`tunnel_request`, so every request rule applies) and hands the stream to a
:class:`StreamTunnel`. The tunnel asks the origin on a connection of its own with the HTTP/1.1
tunnel's code (:func:`edge.fronts.tunnel.origin_handshake`: never a shield or a sibling, so
never pinned to a node that may leave), with a ``Sec-WebSocket-Key`` of its own whose
``Sec-WebSocket-Accept`` it checks. After the origin's 101 the client gets ``:status 200``
(the origin's ``Sec-WebSocket-Protocol``/``-Extensions`` with it) and bytes flow both ways
unread: WebSocket frames as DATA. Any other answer reaches the client as the origin's
status and body.

Engine-neutral: the front gives the tunnel a :class:`TunnelSink` for the stream (the
response sink it already has, plus ``consumed`` and ``reset``) and calls
:meth:`StreamTunnel.from_client`, :meth:`~StreamTunnel.client_ended` and
:meth:`~StreamTunnel.client_closed` as its events arrive. The h2-library front
(``edge/fronts/h2.py``) and the HTTP/3 front (``edge/fronts/h3.py``) both do.

Guarantees:
- flow control both ways: towards the client ``TunnelSink.write`` returns only once the
  engine sent the bytes within the peer's windows (HTTP/2) or below ``quic_send_buffer``
  (HTTP/3), and until then the origin is not read (its StreamReader pauses the socket
  beyond 128 KiB, and TCP holds the origin); towards the origin the client's bytes are
  credited back (``consumed``: WINDOW_UPDATE on HTTP/2) only once the origin's socket buffer
  is below ``TOWARD_ORIGIN`` (else after it drained). HTTP/3: the QUIC libraries grant stream
  credit as bytes arrive, so ``consumed`` is a no-op there and more than ``ORIGIN_BACKLOG``
  waiting for the origin resets the stream;
- client bytes before the origin's 101 are held (at most 64 KiB, else the stream is reset),
  never forwarded: a refused handshake carries nothing past the node's request rules;
  once the tunnel stops forwarding (refusal, reset, end) all credit still owed is given back
  (HTTP/2: the connection's window is shared, a stream must not take it along);
- the same caps, idle timeout and accounting as the HTTP/1.1 tunnel: ``max_tunnels``,
  ``max_client_tunnels`` (503), ``tunnel_idle_timeout`` (the stream is reset with CANCEL),
  logged and counted once it ends (status 200 and the bytes sent to the client);
- stream end maps to connection end: the origin closing is END_STREAM (the client's
  END_STREAM half-closes the origin connection); a client reset, a closed client connection
  or an idle timeout closes the origin connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from edge.fronts.request import Refusal
from edge.fronts.tunnel import HEAD_LIMIT, HandshakeRefused, close_origin, origin_handshake
from edge.http.message import reason_phrase

if TYPE_CHECKING:
    from edge.core import EdgeCore
    from edge.fronts.request import RequestRules
    from edge.http.fields import Headers
    from edge.http.message import Request

__all__ = ["StreamTunnel", "TunnelSink", "connect_protocol", "tunnel_request"]

log = logging.getLogger("edge.fronts.stream_tunnel")

TOWARD_ORIGIN = 256 * 1024
"""Bytes waiting in the origin's socket buffer above which client DATA is not credited back."""
ORIGIN_BACKLOG = 4 * 1024 * 1024
"""Bytes waiting for the origin beyond which the stream is reset (HTTP/3, which cannot withhold credit)."""
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455 §1.3: what Sec-WebSocket-Accept hashes with the key."""
NOT_FORWARDED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"sec-websocket-accept",
        b"te",
        b"trailer",
    }
)
"""Fields of the origin's answer the HTTP/2 or HTTP/3 client does not get (connection-specific,
or the HTTP/1.1 handshake's own; a length is passed as the sink's ``length``)."""


class TunnelSink(Protocol):
    """What a front gives a :class:`StreamTunnel` for its stream: its response sink plus two."""

    def start(self, status: int, reason: bytes, headers: Headers, length: int | None) -> None:
        """Send the response head (no END_STREAM)."""

    async def write(self, data: bytes | memoryview) -> None:
        """Send ``data`` as DATA; returns once the engine could send it (flow control)."""

    def end(self) -> None:
        """END_STREAM after what was written."""

    def abort(self) -> None:
        """Reset the stream: the tunnel failed."""

    def reset(self) -> None:
        """Reset the stream with CANCEL (HTTP/2) / H3_REQUEST_CANCELLED: the tunnel was closed."""

    def consumed(self, size: int) -> None:
        """``size`` bytes of client DATA were handed on: give the client that credit back."""


def connect_protocol(pairs: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The ``:protocol`` of an HTTP/2 or HTTP/3 field list (extended CONNECT), or None."""
    for name, value in pairs:
        if name[:1] != b":":
            return None
        if name == b":protocol":
            return value
    return None


def tunnel_request(
    rules: RequestRules,
    protocol: bytes,
    path: bytes | None,
    authority: bytes | None,
    headers: Headers,
    client: str,
    http_version: str,
) -> Request:
    """The request an extended CONNECT becomes towards the origin: a GET of ``:path`` through
    every request rule (host, rate limit, sizes). Raises :class:`Refusal`: 501 for a
    ``:protocol`` other than websocket (the only one bridged)."""
    if protocol.lower() != b"websocket":
        raise Refusal(501, f"extended CONNECT is offered for websocket only, not {protocol[:40]!r}")
    # Sec-WebSocket-Key is the bridge's own (RFC 8441 §5: none on HTTP/2 or HTTP/3).
    kept = [(name, value) for name, value in headers if name != b"sec-websocket-key"]
    return rules.from_pseudo(b"GET", path, authority, kept, client, http_version)


class StreamTunnel:
    """One extended CONNECT stream bridged to a WebSocket handshake and tunnel to the origin."""

    __slots__ = (
        "admitted", "closed", "core", "done", "ended", "last", "owed", "pending", "req", "sent",
        "sink", "status", "writer",
    )  # fmt: skip

    def __init__(self, core: EdgeCore, req: Request, sink: TunnelSink) -> None:
        self.core = core
        self.req = req
        self.sink = sink
        self.pending = bytearray()
        """Client bytes that arrived before the origin's 101 (held, not forwarded)."""
        self.writer: asyncio.StreamWriter | None = None
        """The origin connection, once it switched protocols."""
        self.owed = 0
        """Client bytes handed to the origin and not yet credited back (waiting for a drain)."""
        self.sent = 0
        """Bytes sent to the client (body bytes: the refusal's text or the tunnel's)."""
        self.status = 0
        """The status the client got (200 once the tunnel opened); 0 until then."""
        self.last = time.monotonic()
        self.done = asyncio.Event()
        """The client side is gone (reset, or its connection closed)."""
        self.admitted = False
        self.closed = False
        self.ended = False
        """The client sent END_STREAM."""

    # -- called by the front -------------------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        """Run the tunnel in a task of its own (the front keeps it to cancel it); the place under
        the caps is given back and the tunnel counted and logged when the task ends."""
        started = time.perf_counter()
        task = asyncio.get_running_loop().create_task(self._run())

        def ended(_: asyncio.Task[None]) -> None:
            # A done callback, not a finally: it runs even for a task cancelled before it started.
            self._stop_forwarding()
            if self.admitted:
                self.core.clients.tunnel_closed(self.req.client)
            self.core.requests.tunnelled(self.req, self.status, self.sent, started)

        task.add_done_callback(ended)
        return task

    def from_client(self, data: bytes, credit: int | None = None) -> None:
        """DATA from the client; ``credit`` is its flow-controlled length (padding included)."""
        credit = len(data) if credit is None else credit
        if self.closed:
            self.sink.consumed(credit)  # nowhere to go: dropped, and the window kept open
            return
        self.last = time.monotonic()
        writer = self.writer
        if writer is None:
            # Until the origin switched protocols, client bytes are held, never forwarded.
            self.pending += data
            self.owed += credit
            if len(self.pending) > HEAD_LIMIT:
                self._fail()
            return
        if writer.transport.is_closing():
            self.sink.consumed(credit)
            return
        writer.write(data)
        self._credit(writer, credit)

    def client_ended(self) -> None:
        """END_STREAM from the client: no more bytes towards the origin (its write side closes)."""
        self.ended = True
        writer = self.writer
        if writer is not None:
            _write_eof(writer)
        # (before the origin's 101: its write side is closed once the held bytes went, in run)

    def client_closed(self) -> None:
        """The client reset the stream or its connection is gone: the tunnel ends."""
        self.done.set()

    # -- the tunnel ----------------------------------------------------------------------------
    async def _run(self) -> None:
        await self.run()

    async def run(self) -> int:
        """Handshake and relay; the status the client got (200 for a tunnel that opened)."""
        core = self.core
        if not core.clients.tunnel_opened(self.req.client):
            return await self._refuse(503, "too many WebSocket tunnels")
        self.admitted = True
        key = base64.b64encode(os.urandom(16))
        try:
            reader, writer, head, status = await origin_handshake(
                core, self.req, b"Sec-WebSocket-Key: %s\r\n" % key
            )
        except HandshakeRefused as refused:
            return await self._refuse(refused.status, refused.why)
        try:
            if self.done.is_set():
                return self.status  # failed or reset meanwhile: nothing goes out, nothing is forwarded
            headers = _fields_of(head)
            if status != 101:
                self._stop_forwarding()
                await self._relay_answer(reader, status, headers)
                return status
            expected = base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())
            if _field(headers, b"sec-websocket-accept") != expected:
                return await self._refuse(502, "the origin's WebSocket handshake answer is not valid")
            self.status = 200
            self.sink.start(200, b"OK", [(n, v) for n, v in headers if n.lower() not in NOT_FORWARDED], None)
            self.writer = writer
            if self.pending:
                writer.write(bytes(self.pending))
                self.pending.clear()
            if self.owed:
                owed, self.owed = self.owed, 0
                self._credit(writer, owed)
            if self.ended:
                _write_eof(writer)
            await self._relay(reader)
            return self.status
        finally:
            self._stop_forwarding()
            await close_origin(writer)

    async def _relay(self, reader: asyncio.StreamReader) -> None:
        idle = self.core.config.tunnel_idle_timeout
        loop = asyncio.get_running_loop()
        down = loop.create_task(self._relay_from_origin(reader))
        closed = loop.create_task(self.done.wait())
        try:
            while True:
                finished, _ = await asyncio.wait(
                    {down, closed}, timeout=max(0.05, idle / 4), return_when=asyncio.FIRST_COMPLETED
                )
                if down in finished:
                    failed = down.exception()
                    if failed is None and down.result():
                        self.sink.end()  # the origin closed: END_STREAM
                    else:
                        if failed is not None:
                            log.debug("WebSocket tunnel to the origin failed: %r", failed)
                        self.sink.abort()  # the origin failed (or the stream went under the write)
                    return
                if finished:
                    return  # the client is gone: nothing to tell it
                if time.monotonic() - self.last > idle:
                    self.sink.reset()  # idle both ways: the tunnel is closed
                    return
        finally:
            for task in (down, closed):
                task.cancel()

    async def _relay_from_origin(self, reader: asyncio.StreamReader) -> bool:
        """Origin bytes to the client until the origin closes (True) or fails (False)."""
        sink = self.sink
        while True:
            try:
                data = await reader.read(65536)
            except ConnectionError:
                return False
            if not data:
                return True
            self.last = time.monotonic()
            self.sent += len(data)
            await sink.write(data)  # flow control: the next read waits for the client's window

    async def _relay_answer(self, reader: asyncio.StreamReader, status: int, headers: Headers) -> None:
        """An answer that did not switch, as a response: its Content-Length, else until the
        origin closes (within ``read_timeout`` per read)."""
        self.status = status
        length = _content_length(headers)
        kept = [(n, v) for n, v in headers if n.lower() not in NOT_FORWARDED]
        self.sink.start(status, reason_phrase(status), kept, length)
        timeout = self.core.config.read_timeout
        remaining = length if length is not None else -1
        while remaining:
            try:
                data = await asyncio.wait_for(
                    reader.read(65536 if remaining < 0 else min(remaining, 65536)), timeout
                )
            except (TimeoutError, ConnectionError):
                self.sink.abort()
                return
            if not data:
                if remaining > 0:
                    self.sink.abort()  # shorter than its Content-Length: never ended cleanly
                    return
                break
            remaining -= len(data) if remaining > 0 else 0
            self.sent += len(data)
            await self.sink.write(data)
        self.sink.end()

    async def _refuse(self, status: int, why: str) -> int:
        self._stop_forwarding()
        self.status = status
        body = f"{status} {reason_phrase(status).decode()}: {why}\n".encode()
        sink = self.sink
        sink.start(
            status, reason_phrase(status), [(b"content-type", b"text/plain; charset=utf-8")], len(body)
        )
        self.sent += len(body)
        await sink.write(body)
        sink.end()
        return status

    def _credit(self, writer: asyncio.StreamWriter, credit: int) -> None:
        """Give the client credit for bytes handed to the origin, now or once it drained."""
        buffered = writer.transport.get_write_buffer_size()
        if buffered > ORIGIN_BACKLOG:
            self._fail()
            return
        if buffered <= TOWARD_ORIGIN and not self.owed:
            self.sink.consumed(credit)
            return
        first = not self.owed
        self.owed += credit
        if first:
            asyncio.get_running_loop().create_task(self._credit_after_drain(writer))

    async def _credit_after_drain(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        owed, self.owed = self.owed, 0
        if owed:
            self.sink.consumed(owed)  # even once closed: the connection's window needs it back

    def _fail(self) -> None:
        """Too much held for the origin: the stream is reset and the tunnel ends."""
        self.sink.abort()
        self.done.set()
        self._stop_forwarding()

    def _stop_forwarding(self) -> None:
        """Nothing more goes to the origin: held bytes are dropped and every byte of credit
        still owed is given back (HTTP/2: the connection's window is shared by all streams,
        and both engines credit it even for a stream already closed)."""
        self.closed = True
        self.pending.clear()
        owed, self.owed = self.owed, 0
        if owed:
            self.sink.consumed(owed)


def _write_eof(writer: asyncio.StreamWriter) -> None:
    if not writer.transport.is_closing() and writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()


def _fields_of(head: bytes) -> Headers:
    """The fields of an HTTP/1.1 response head (status line and blank line dropped)."""
    out: Headers = []
    for line in head.split(b"\r\n")[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if sep and name and name == name.strip():
            out.append((name.lower(), value.strip()))
    return out


def _field(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _content_length(headers: Headers) -> int | None:
    value = _field(headers, b"content-length")
    return int(value) if value is not None and value.isdigit() and len(value) <= 18 else None
