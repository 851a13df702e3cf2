"""The HTTPS front: HTTP/2 over TLS on uvloop, driving ``h2``'s sans-I/O connection.

Why it exists: Hypercorn's HTTP/2 over TLS served 2.1k req/s for a 1 KiB hit where
nginx served 38.5k and this front 5.4k when it was written (h2load -c8 -m8, one core;
benchmarks/README.md has the current figures). This protocol answers fresh hits inside
``data_received`` (head memoised per entry and second, :class:`edge.fronts.hit.FieldHitHead`,
body pushed straight into the flow-control windows) and hands everything else to
:meth:`EdgeCore.serve` through :class:`H2Sink`. When ALPN picks http/1.1 (or
nothing), the connection is handed to :class:`H1Protocol` with scheme https.

Guarantees:
- DATA never exceeds the peer's flow-control windows; the rest waits for WINDOW_UPDATE
  and writers wait (backpressure) until their bytes left, also while the socket is full;
- concurrent streams, the request target, header fields and body are bounded (SETTINGS;
  414, 431, 413 by :mod:`edge.fronts.request`, which builds every request after the RFC 9113
  checks of :mod:`edge.http.h2_request`); a refused request is answered on its stream; a field
  list over the advertised SETTINGS_MAX_HEADER_LIST_SIZE is the h2 library's connection
  error; an h2 protocol error sends GOAWAY and closes the connection;
- a body that cannot be completed resets its stream (RST_STREAM), never ends it cleanly;
- floods cost the client, not the node: every frame is metered before h2 parses it
  (:class:`edge.fronts.h2_limits.FrameMeter`: rapid reset, control frames, acknowledgements
  owed to a client that does not read, CONTINUATION) and a spent budget is GOAWAY
  (ENHANCE_YOUR_CALM) and close; a read is handled at most ``TURN_BYTES`` / ``TURN_STREAMS``
  per event-loop turn; a response that cannot move for ``STALL_TIMEOUT`` closes its
  connection; a closed connection whose client does not read is aborted after ``CLOSE_GRACE``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import socket
import ssl
import struct
import time
from typing import cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h2.stream

from edge.cache.entry import Entry
from edge.config import Config
from edge.core import EdgeCore
from edge.core.sink import serve_guarded
from edge.fronts.h1 import H1Protocol
from edge.fronts.h2_limits import FrameMeter
from edge.fronts.hit import FieldHitHead, remember
from edge.fronts.hpack_requests import RequestDecoder
from edge.fronts.hpack_responses import ResponseEncoder
from edge.fronts.request import Refusal, RequestRules, body_too_large
from edge.fronts.stream_tunnel import StreamTunnel, connect_protocol, tunnel_request
from edge.http.fields import Headers
from edge.http.h2_request import malformed_request, malformed_trailers
from edge.http.message import NO_BODY_STATUSES, Request, split_pseudo

__all__ = ["H2Protocol", "H2Sink", "serve_own_tls", "tls_context"]

log = logging.getLogger("edge.fronts.h2")

MAX_STREAMS = 128
"""Concurrent streams a client may open per connection (SETTINGS_MAX_CONCURRENT_STREAMS)."""

SLICE = 16384
"""Bytes of a read handed to h2 at once; the frame budgets are checked before each slice."""
TURN_BYTES = 65536
"""Bytes of input handled per event-loop turn; the rest of a read waits for the next turn."""
TURN_STREAMS = 32
"""HEADERS frames started per event-loop turn (hits are answered inside the turn; one more may
complete whose header came in the turn before). Below MAX_STREAMS, so that a client writing
requests faster than their answers reach it still finds its earlier streams closed."""
STALL_TIMEOUT = 30.0
"""Seconds a response may wait with no DATA sent (zero window, or a client not reading)."""
GOAWAY_LINGER = 0.5
"""Seconds a refused connection stays open after its GOAWAY, reading and dropping what the
client still sends: closing at once would answer that data with a TCP reset (and OpenSSL
fails on data after close_notify), which can destroy the GOAWAY before the client reads it."""
CLOSE_GRACE = 2.0
"""Seconds after closing before a connection whose client does not read is aborted."""

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
"""Connection-specific fields HTTP/2 forbids (RFC 9113 §8.2.2)."""


def _h2_fields(headers: Headers) -> Headers:
    """End-to-end fields as HTTP/2 sends them: lower-case names, no connection-specific ones."""
    out: Headers = []
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or (lower == b"te" and value.strip().lower() != b"trailers"):
            continue
        out.append((lower, value))
    return out


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """Server-side TLS offering h2 and http/1.1 by ALPN."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


Buffer = bytes | bytearray | memoryview

_FRAME_HEAD = struct.Struct(">HBBBL")
"""A frame header: length (24 bits, as 16 + 8), type, flags, stream id (RFC 9113 §4.1)."""
_DATA, _HEADERS = 0x0, 0x1
_END_STREAM, _END_HEADERS = 0x1, 0x4
_CONN_SEND_DATA = h2.connection.ConnectionInputs.SEND_DATA
_CONN_SEND_HEADERS = h2.connection.ConnectionInputs.SEND_HEADERS
_SEND_DATA = h2.stream.StreamInputs.SEND_DATA
_SEND_HEADERS = h2.stream.StreamInputs.SEND_HEADERS
_SEND_END_STREAM = h2.stream.StreamInputs.SEND_END_STREAM


_DIRECT = 4096
"""DATA payloads from this size on are handed to the transport as they are, not copied."""


def _send_data(
    conn: h2.connection.H2Connection,
    h2_stream: h2.stream.H2Stream,
    data: memoryview,
    end: bool,
    out: list[Buffer],
) -> None:
    """``conn.send_data(stream_id, data, end_stream=end)`` without h2's frame objects and copies.

    The caller has checked ``data`` against the flow-control windows and the peer's frame
    size. The same state machine inputs as h2's (so a closed stream or connection raises as
    there), the same window accounting. A small frame goes into h2's output buffer (one
    copy, where h2 makes three: bytes of the view, the serialised frame, the buffer); from
    ``_DIRECT`` bytes on, h2's buffer with the frame header is moved to ``out`` followed by
    the payload itself (no copy; TLS encrypts it from the stored body), and
    :meth:`H2Protocol.flush` writes ``out`` and then h2's buffer, in order.
    """
    conn.state_machine.process_input(_CONN_SEND_DATA)
    machine = h2_stream.state_machine
    machine.process_input(_SEND_DATA)
    if end:
        machine.process_input(_SEND_END_STREAM)
    size = len(data)
    h2_stream.outbound_flow_control_window -= size
    conn.outbound_flow_control_window -= size
    buf = conn._data_to_send
    buf += _FRAME_HEAD.pack(size >> 8, size & 0xFF, _DATA, _END_STREAM if end else 0, h2_stream.stream_id)
    if size < _DIRECT:
        buf += data
    else:
        conn._data_to_send = bytearray()
        out.append(buf)
        out.append(data)


def _send_block(
    conn: h2.connection.H2Connection, h2_stream: h2.stream.H2Stream, block: bytes, end: bool
) -> None:
    """``conn.send_headers`` of a response whose field block is already encoded (a hit's, by
    :class:`ResponseEncoder`, which never touches the dynamic table), in one HEADERS frame.

    The caller has checked that ``block`` fits one frame, that the encoder owes no table size
    update and that the fields are a final response (``:status`` >= 200). The same state
    machine inputs as h2's ``send_headers``; as there, the stream forgets a request method.
    """
    conn.state_machine.process_input(_CONN_SEND_HEADERS)
    machine = h2_stream.state_machine
    machine.process_input(_SEND_HEADERS)
    flags = _END_HEADERS
    if end:
        machine.process_input(_SEND_END_STREAM)
        flags |= _END_STREAM
    h2_stream.request_method = None
    size = len(block)
    out = conn._data_to_send
    out += _FRAME_HEAD.pack(size >> 8, size & 0xFF, _HEADERS, flags, h2_stream.stream_id)
    out += block


class _H2HitHead(FieldHitHead):
    """A hit's fields for HTTP/2 and their HPACK block, encoded on the first hit of each second."""

    __slots__ = ("block",)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.block: bytes | None = None

    def refresh(self, age: int, cache_status: bytes) -> None:
        super().refresh(age, cache_status)
        self.block = None


class _LazyRepr:
    """``repr(obj)`` computed only if it is formatted (``%s``)."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __str__(self) -> str:
        return repr(self.obj)


# h2 formats every received frame for its trace log whether or not anything logs it
# (``logger.trace("Received frame: %s", repr(frame))`` in H2Connection._receive_frame, its
# only use of ``repr``): ≈ 5 % of the front's CPU for a 1 KiB hit. The name resolves in the
# module's globals first, so the repr is made lazy there; a trace log still shows it.
h2.connection.repr = _LazyRepr  # type: ignore[attr-defined]

_STREAM_GONE = (h2.exceptions.StreamClosedError, h2.exceptions.StreamIDTooLowError)
"""What h2 raises on a send to a stream it has already closed and dropped (reset by the
client in the read being handled): StreamIDTooLowError once the stream left its table."""


class _Stream:
    """One request/response exchange on an HTTP/2 connection."""

    __slots__ = ("body", "body_size", "closed", "end", "ended", "pending", "req", "task", "tunnel", "waiter")

    def __init__(self) -> None:
        self.req: Request | None = None
        self.body: list[bytes] = []
        self.body_size = 0
        self.pending: collections.deque[memoryview] = collections.deque()
        """Response bytes waiting for window (or for the socket to drain)."""
        self.end = False
        """The response is complete once ``pending`` is sent."""
        self.ended = False
        """END_STREAM (or RST_STREAM) has been sent: nothing more goes out."""
        self.closed = False
        """Reset by either side or the connection is gone."""
        self.task: asyncio.Task[None] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.tunnel: StreamTunnel | None = None
        """The WebSocket bridged on this stream (extended CONNECT), if it is one."""

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class H2Protocol(asyncio.Protocol):
    """One TLS connection: HTTP/2 when ALPN says h2, else handed to :class:`H1Protocol`."""

    def __init__(self, core: EdgeCore, config: Config, connections: set[H2Protocol] | None = None) -> None:
        self.core = core
        self.config = config
        self.clock = core.clock
        self.rules = rules = RequestRules(config, b"https", core.clients)
        self.max_body = rules.max_body
        self.alt_svc: Headers = [(b"alt-svc", config.alt_svc.encode())] if config.alt_svc else []
        self.hit_fields: Headers = [(k.lower(), v) for k, v in core.hit_fields] + self.alt_svc
        self.counted = False
        """This connection holds a place under its address's cap (edge.core.clients)."""
        self.requests = core.requests
        self.tally = core.requests.front("h2")
        """Sums the fast hits counted on hit heads (edge.core.observe); the rest goes through
        serve_guarded."""
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.streams: dict[int, _Stream] = {}
        self.closing = False
        self.write_paused = False
        self.out: list[Buffer] = []
        """Output before h2's buffer: large DATA payloads and what preceded them (see flush)."""
        self.backlog = b""
        """The part of a read left for a later event-loop turn (reading is paused meanwhile)."""
        self.sent_frames = 0
        """DATA frames sent: a stalled connection is one where this stops moving."""
        self.stall_timer: asyncio.TimerHandle | None = None
        self.abort_timer: asyncio.TimerHandle | None = None
        header_list = rules.max_block + 32 * (rules.max_count + 4)  # RFC 9113 §6.5.2: 32 per field
        self.meter = FrameMeter(time.monotonic(), 2 * header_list)
        self.make_engine(header_list)

    # -- the HTTP/2 engine: h2 here, ngh2 in edge.fronts.h2_ngh2 (config h2_engine) -----
    def make_engine(self, header_list: int) -> None:
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                validate_outbound_headers=False,  # built here: lower-case, no connection-specific fields
                normalize_outbound_headers=False,
                validate_inbound_headers=False,  # checked in one pass: edge.http.h2_request
                normalize_inbound_headers=True,
            )
        )
        self.encoder = self.conn.encoder = ResponseEncoder()  # before any SETTINGS: see hpack_responses
        self.conn.decoder = RequestDecoder()  # indexed-only request blocks decoded once: see hpack_requests
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,  # RFC 8441: WebSockets
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: header_list,
            },
        )
        # h2 applies our MAX_HEADER_LIST_SIZE to its HPACK decoder only once the client has
        # acknowledged it (64 KiB until then): enforce it from the first HEADERS frame.
        self.conn.decoder.max_header_list_size = header_list

    def initiate(self) -> None:
        """Queue the server preface (SETTINGS)."""
        self.conn.initiate_connection()

    def send_head(self, stream_id: int, head: Headers, end: bool = False) -> None:
        """Send a response's (or an interim response's) field list on a stream."""
        self.conn.send_headers(stream_id, head, end_stream=end)

    def reset(self, stream_id: int, error_code: int) -> None:
        """RST_STREAM, if the stream is still there to reset."""
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.reset_stream(stream_id, error_code)

    def goaway(self, error_code: int) -> None:
        """Queue GOAWAY with ``error_code`` (nothing if the connection is already closed)."""
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.close_connection(error_code=error_code)

    # -- asyncio.Protocol --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if alpn != "h2":
            # HTTP/1.1 over TLS: the cleartext fast front, speaking https.
            h1 = H1Protocol(self.core, self.config, scheme=b"https")
            transport.set_protocol(h1)
            h1.connection_made(transport)
            self.transport = None
            return
        if self.connections is not None:
            self.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else ""
        if not self.core.clients.opened(self.client):
            self.closing = True
            self.transport.abort()  # over the per-address connection cap (edge.core.clients)
            return
        self.counted = True
        self.initiate()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted:
            self.counted = False
            self.core.clients.closed(self.client)
        self.closing = True
        self.backlog = b""
        for timer in (self.stall_timer, self.abort_timer):
            if timer is not None:
                timer.cancel()
        self.stall_timer = self.abort_timer = None
        self.transport = None
        if self.connections is not None:
            self.connections.discard(self)
        for stream in self.streams.values():
            stream.closed = True
            if stream.task is not None:
                stream.task.cancel()
            stream.wake()
        self.streams.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.meter.paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.meter.resumed()
        self.pump_all()
        self.flush()

    def flush(self) -> None:
        # conn.data_to_send() without its copy: the buffer itself is handed to the transport
        # and h2 starts a new one (h2 only ever appends to ``_data_to_send`` by rebinding it).
        # Large DATA payloads wait in ``self.out`` (see _send_data), written with one call.
        conn = self.conn
        data = conn._data_to_send
        out = self.out
        if out:
            if data:
                out.append(data)
                conn._data_to_send = bytearray()
            self.out = []
            if self.transport is not None and not self.closing:
                self.transport.writelines(out)
        elif data:
            conn._data_to_send = bytearray()
            if self.transport is not None and not self.closing:
                self.transport.write(data)

    def close(self, error_code: int = h2.errors.ErrorCodes.NO_ERROR) -> None:
        """Send GOAWAY and close (also used at shutdown)."""
        if self.closing or self.transport is None:
            return
        self.goaway(error_code)
        self.flush()
        self.closing = True
        self.transport.close()
        self.abort_later()

    def abort_later(self) -> None:
        """A closed transport waits for its buffer to drain, which a client that does not read
        never lets happen: drop the connection after ``CLOSE_GRACE`` seconds."""
        if self.abort_timer is None and self.transport is not None:
            self.abort_timer = asyncio.get_running_loop().call_later(CLOSE_GRACE, self.abort)

    def abort(self) -> None:
        self.abort_timer = None
        if self.transport is not None:
            self.transport.abort()

    def refuse_flood(self, error_code: int) -> None:
        """A budget of :class:`FrameMeter` is spent: GOAWAY with its code, then close once
        the client had ``GOAWAY_LINGER`` seconds to read it (its input is dropped meanwhile)."""
        log.info("h2 connection from %s closed: %s", self.client, self.meter.reason)
        self.backlog = b""
        if self.closing or self.transport is None:
            return
        self.goaway(error_code)
        self.flush()
        self.closing = True
        self.transport.resume_reading()  # paused while a backlog waited: read and drop from now on
        self.abort_timer = asyncio.get_running_loop().call_later(GOAWAY_LINGER, self.close_transport)

    def close_transport(self) -> None:
        self.abort_timer = None
        if self.transport is not None:
            self.transport.close()
            self.abort_later()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.backlog:
            self.backlog += data  # read while the rest of an earlier one waits its turn
            return
        self.take(data)

    def take(self, data: bytes) -> None:
        """Handle at most ``TURN_BYTES`` and ``TURN_STREAMS`` of ``data`` in this turn.

        Every slice is scanned by the frame meter before h2 sees it, so a flood costs a
        bounded number of frames; what is left of the read waits for a later turn with
        reading paused, so one connection cannot hold the event loop for a whole read.
        """
        meter = self.meter
        now = time.monotonic()
        size = len(data)
        view = memoryview(data)
        pos = 0
        streams = TURN_STREAMS
        while pos < size and not self.closing:
            end = min(size, pos + SLICE)
            cut, error, streams = meter.scan(view, pos, end, now, streams)
            if error:
                self.refuse_flood(error)
                return
            if cut > pos:
                self.receive(bytes(view[pos:cut]) if pos or cut < size else data)
            pos = cut
            if cut < end or pos >= TURN_BYTES:
                break  # the turn's budget is spent: the rest waits
        if pos < size and not self.closing and self.transport is not None:
            self.backlog = bytes(view[pos:])
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self.take_backlog)

    def take_backlog(self) -> None:
        data, self.backlog = self.backlog, b""
        if not data or self.closing or self.transport is None:
            return
        self.take(data)
        if not self.backlog and not self.closing and self.transport is not None:
            self.transport.resume_reading()

    def receive(self, data: bytes) -> None:
        """Hand one slice of input to h2 and act on its events."""
        if self.closing:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.debug("h2 protocol error from %s: %s", self.client, exc)
            self.close(getattr(exc, "error_code", h2.errors.ErrorCodes.PROTOCOL_ERROR))
            return
        try:
            self.dispatch(events)
        except h2.exceptions.ProtocolError as exc:
            if self.conn.state_machine.state is not h2.connection.ConnectionState.CLOSED:
                log.warning("h2 connection from %s failed: %r", self.client, exc)
                self.close(h2.errors.ErrorCodes.INTERNAL_ERROR)
                return
            # h2 applies every frame of a read before we see its events: a GOAWAY behind
            # requests in the same read has already closed the state machine, so those
            # requests can no longer be answered. Close quietly, as after the GOAWAY itself.
            log.debug("h2 connection from %s closed while answering: %s", self.client, exc)
            self.flush()
            self.closing = True
            if self.transport is not None:
                self.transport.close()
            return
        self.flush()

    def dispatch(self, events: list[h2.events.Event]) -> None:
        """Act on the events of one read, in order.

        h2 applies every frame of the read first, so a stream the client reset in the same
        read is already closed when its request (or a window update for it) comes up here:
        that stream is forgotten and the others are served.
        """
        for event in events:
            try:
                if self.handle(event):
                    return
            except _STREAM_GONE as exc:
                self.on_reset(exc.stream_id or 0)

    def handle(self, event: h2.events.Event) -> bool:
        """Act on one event; True when the connection is done."""
        kind = type(event)
        if kind is h2.events.RequestReceived:
            self.on_request(cast(h2.events.RequestReceived, event))
        elif kind is h2.events.DataReceived:
            self.on_data(cast(h2.events.DataReceived, event))
        elif kind is h2.events.StreamEnded:
            self.on_stream_ended(cast(h2.events.StreamEnded, event).stream_id or 0)
        elif kind is h2.events.WindowUpdated:
            stream_id = cast(h2.events.WindowUpdated, event).stream_id
            if stream_id:
                stream = self.streams.get(stream_id)
                if stream is not None:
                    self.pump(stream_id, stream)
            else:
                self.pump_all()
        elif kind is h2.events.RemoteSettingsChanged:
            self.pump_all()
        elif kind is h2.events.TrailersReceived:
            self.on_trailers(cast(h2.events.TrailersReceived, event))
        elif kind is h2.events.StreamReset:
            self.on_reset(cast(h2.events.StreamReset, event).stream_id or 0)
        elif kind is h2.events.ConnectionTerminated:
            self.flush()
            self.closing = True
            if self.transport is not None:
                self.transport.close()
            return True
        return False

    # -- requests ----------------------------------------------------------------
    def on_request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id or 0
        h2_stream = self.conn.streams.get(stream_id)
        if h2_stream is None or h2_stream.closed:
            return  # reset by the client in the same read: no work for a request nobody awaits
        stream = _Stream()
        ended = event.stream_ended is not None
        req = self.open_request(stream_id, stream, cast(Headers, event.headers or []), ended)
        if req is not None and ended and not self.try_hit(stream_id, stream, req):
            self.start(stream_id, stream, req)

    def open_request(self, stream_id: int, stream: _Stream, pairs: Headers, ended: bool) -> Request | None:
        """Check and parse a new stream's field block (``pairs``, cookie crumbs joined) into
        the request on ``stream``, now in the front's table; None when it was refused (its
        answer is under way) or opened a WebSocket tunnel. Shared by both engines."""
        self.streams[stream_id] = stream
        method, path, authority, headers = split_pseudo(pairs)
        malformed = malformed_request(pairs)
        if method == b"CONNECT" and malformed is None and (protocol := connect_protocol(pairs)) is not None:
            self.open_tunnel(stream_id, stream, protocol, path, authority, headers, ended)
            return None
        try:
            if malformed is not None:
                raise Refusal(400, f"malformed request: {malformed}")
            req = self.rules.from_pseudo(method, path, authority, headers, self.client, "2")
        except Refusal as refusal:
            self.refuse(stream_id, stream, refusal, method, path, authority or dict(headers).get(b"host"))
            return None
        stream.req = req
        return req

    def on_data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id or 0
        size = event.flow_controlled_length or 0
        stream = self.streams.get(stream_id)
        if stream is not None and stream.tunnel is not None:
            stream.tunnel.from_client(event.data or b"", size)  # credited back as the origin takes it
            return
        if size:
            self.conn.acknowledge_received_data(size, stream_id)
        if stream is None or stream.req is None or stream.task is not None:
            return  # already answered (e.g. 413): the rest is read and dropped
        data = event.data or b""
        stream.body_size += len(data)
        if stream.body_size > self.max_body:
            stream.body.clear()
            self.refuse(
                stream_id, stream, body_too_large(), stream.req.method, stream.req.target, stream.req.host
            )
            return
        stream.body.append(data)

    def on_trailers(self, event: h2.events.TrailersReceived) -> None:
        """Trailers are not forwarded, but a malformed block still makes the request malformed."""
        stream_id = event.stream_id or 0
        malformed = malformed_trailers(event.headers or ())
        if malformed is None:
            return
        log.debug("malformed trailers from %s: %s", self.client, malformed)
        self.reset(stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
        self.on_reset(stream_id)

    def on_stream_ended(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and stream.tunnel is not None:
            stream.tunnel.client_ended()
            return
        if stream is None or stream.req is None or stream.task is not None:
            return
        req = stream.req
        if stream.body:
            req.body = b"".join(stream.body)
            stream.body.clear()
        if not self.try_hit(stream_id, stream, req):
            self.start(stream_id, stream, req)

    def on_reset(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        stream.closed = True
        stream.ended = True
        stream.pending.clear()
        if stream.task is not None:
            stream.task.cancel()
        stream.wake()

    # -- answering ---------------------------------------------------------------
    def fresh_hit(self, req: Request) -> tuple[Entry, _H2HitHead] | None:
        """The fresh hit for ``req`` and its memoised head (Age and Cache-Status of this
        second), counted and logged; None when the core's full path must answer. Shared
        by both engines, which differ only in how they frame it."""
        now = self.clock()
        entry = self.core.fresh_hit(req, now)
        if entry is None:
            return None
        return entry, self.hit_head(entry, req, now)

    def hit_head(self, entry: Entry, req: Request, now: float) -> _H2HitHead:
        """``entry``'s memoised hit head for this second, the hit counted and logged."""
        age = int(entry.corrected_initial_age + (now - entry.response_time))
        memo: _H2HitHead | None = entry.wire.get("h2")
        if memo is None:
            memo = remember(
                entry, "h2", _H2HitHead(entry, _h2_fields(entry.headers), self.hit_fields, tally=self.tally)
            )
        if memo.age != age:
            # Age and the ttl in Cache-Status change once a second: rebuild then, not per hit.
            memo.refresh(age, self.core.hit_status(int(entry.fresh_until - now)))
        memo.hits += 1  # the request counters (edge.core.observe)
        if self.tally.access is not None:
            self.tally.logged_hit(req, memo)
        return memo

    def try_hit(self, stream_id: int, stream: _Stream, req: Request) -> bool:
        found = self.fresh_hit(req)
        if found is None:
            return False
        entry, memo = found
        body = entry.body
        end = req.method == b"HEAD" or not body
        conn = self.conn
        block = memo.block
        if block is None:
            encoder = self.encoder
            encoder.memoise = True  # a hit's fields repeat until the next second: keep the block
            try:
                memo.block = block = encoder.encode_plain(memo.head)
            finally:
                encoder.memoise = False
        h2_stream = conn.streams.get(stream_id)
        if (
            h2_stream is not None
            and len(block) <= conn.max_outbound_frame_size
            and not self.encoder.header_table.resized
        ):
            _send_block(conn, h2_stream, block, end)
        else:  # a table size update owed, a block over one frame, a stream h2 has dropped
            conn.send_headers(stream_id, memo.head, end_stream=end)
        if end:
            memo.heads += 1
            self.streams.pop(stream_id, None)
            return True
        stream.pending.append(memoryview(body))
        stream.end = True
        self.pump(stream_id, stream)
        if not stream.ended:
            stream.req = None  # waiting for window; mark as answered for on_data/on_stream_ended
            stream.body.clear()
        return True

    def start(self, stream_id: int, stream: _Stream, req: Request) -> None:
        stream.task = asyncio.get_running_loop().create_task(self.serve(stream_id, stream, req))

    def open_tunnel(
        self,
        stream_id: int,
        stream: _Stream,
        protocol: bytes,
        path: bytes | None,
        authority: bytes | None,
        headers: Headers,
        ended: bool,
    ) -> None:
        """Extended CONNECT (RFC 8441): a WebSocket bridged to the origin (edge.fronts.stream_tunnel)."""
        try:
            req = tunnel_request(self.rules, protocol, path, authority, headers, self.client, "2")
        except Refusal as refusal:
            self.refuse(stream_id, stream, refusal, b"CONNECT", path, authority or dict(headers).get(b"host"))
            return
        stream.req = req
        tunnel = stream.tunnel = StreamTunnel(self.core, req, H2TunnelSink(self, stream_id, stream, req))
        stream.task = tunnel.start()
        if ended:
            tunnel.client_ended()

    def tunnel_credit(self, stream_id: int, size: int) -> None:
        """Give a tunnel's client ``size`` bytes of flow-control credit back (WINDOW_UPDATE),
        if its stream is still there; the engine call another engine overrides."""
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.acknowledge_received_data(size, stream_id)

    def tunnel_reset(self, stream_id: int) -> None:
        """RST_STREAM(CANCEL) on a tunnel the node closed; the engine call another engine overrides."""
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)

    async def serve(self, stream_id: int, stream: _Stream, req: Request) -> None:
        sink = H2Sink(self, stream_id, stream, req)
        try:
            await serve_guarded(self.core.serve, req, sink, self.requests)
        finally:
            if not stream.closed and not stream.end:
                # The core returned without end() or abort(): end what was sent.
                sink.end()

    def refuse(
        self,
        stream_id: int,
        stream: _Stream,
        refusal: Refusal,
        method: bytes | None,
        target: bytes | None = None,
        host: bytes | None = None,
    ) -> None:
        """Answer a request the core never sees with its refusal's text (no body to HEAD).

        The rest of a request body still on its way is read and dropped, not refused with
        RST_STREAM(NO_ERROR) as RFC 9113 §8.1 would allow: curl and httpx then report a
        failed transfer instead of the 413 (measured), and flow control paces the upload.
        """
        body = refusal.body
        sent = 0 if method == b"HEAD" else len(body)
        self.requests.refused("h2", self.client, method, target or b"", refusal.status, sent, host)
        head: Headers = [
            (b":status", b"%d" % refusal.status),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            *refusal.fields,
            *self.alt_svc,
        ]
        stream.req = None
        stream.task = None
        if method == b"HEAD":
            self.send_head(stream_id, head, True)
            stream.end = stream.ended = True
            self.streams.pop(stream_id, None)
        else:
            self.send_head(stream_id, head)
            stream.pending.append(memoryview(body))
            stream.end = True
            self.pump(stream_id, stream)

    def pump(self, stream_id: int, stream: _Stream) -> None:
        """Send what the windows allow of the stream's pending bytes, then END_STREAM when due."""
        if stream.ended or self.closing:
            return
        if not self.write_paused and stream.pending:
            conn = self.conn
            pending = stream.pending
            h2_stream = conn.streams.get(stream_id)
            if h2_stream is None:
                conn.local_flow_control_window(stream_id)  # h2's error for a stream it dropped
                raise h2.exceptions.StreamClosedError(stream_id)
            max_frame = conn.max_outbound_frame_size
            while pending:
                window = min(conn.outbound_flow_control_window, h2_stream.outbound_flow_control_window)
                if window <= 0:
                    break
                chunk = pending[0]
                size = min(window, max_frame, len(chunk))
                last = size == len(chunk)
                if last:
                    pending.popleft()
                else:
                    pending[0] = chunk[size:]
                end = last and stream.end and not pending
                _send_data(conn, h2_stream, chunk[:size] if not last else chunk, end, self.out)
                self.sent_frames += 1
                self.meter.sent_data()
                if end:
                    stream.ended = True
        if stream.pending and self.stall_timer is None:
            self.watch_stall(self.sent_frames)
        if not stream.pending:
            if stream.end and not stream.ended:
                self.conn.end_stream(stream_id)
                stream.ended = True
            stream.wake()
        if stream.ended:
            self.streams.pop(stream_id, None)

    def watch_stall(self, sent: int) -> None:
        """Close the connection if no DATA frame goes out for ``STALL_TIMEOUT`` seconds while a
        response waits (a zero window never opened, or a client that stopped reading): each
        waiting stream holds its response, and MAX_STREAMS of them per connection add up."""
        self.stall_timer = asyncio.get_running_loop().call_later(STALL_TIMEOUT, self.check_stall, sent)

    def check_stall(self, sent: int) -> None:
        self.stall_timer = None
        if self.closing:
            return
        if not any(stream.pending for stream in self.streams.values()):
            return
        if self.sent_frames != sent:
            self.watch_stall(self.sent_frames)
            return
        self.meter.reason = f"no DATA sent for {STALL_TIMEOUT:g} s with responses waiting"
        self.refuse_flood(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    def pump_all(self) -> None:
        for stream_id, stream in list(self.streams.items()):
            if stream.pending or (stream.end and not stream.ended):
                try:
                    self.pump(stream_id, stream)
                except _STREAM_GONE:
                    self.on_reset(stream_id)  # reset by the client in the read being handled


class H2Sink:
    """ResponseSink for one HTTP/2 stream: fields, flow control, backpressure, RST_STREAM."""

    __slots__ = ("head_only", "no_body", "proto", "req", "started", "stream", "stream_id")

    def __init__(self, proto: H2Protocol, stream_id: int, stream: _Stream, req: Request) -> None:
        self.proto = proto
        self.stream_id = stream_id
        self.stream = stream
        self.req = req
        self.started = False
        self.head_only = req.method == b"HEAD"
        self.no_body = False

    def _usable(self) -> bool:
        return not (self.stream.closed or self.stream.ended or self.proto.closing)

    def interim(self, status: int, headers: Headers) -> None:
        if self.started or not 100 <= status < 200 or status == 101 or not self._usable():
            return
        self.proto.send_head(self.stream_id, [(b":status", b"%d" % status), *_h2_fields(headers)])
        self.proto.flush()

    def start(self, status: int, reason: bytes, headers: Headers, length: int | None) -> None:
        self.started = True
        if not self._usable():
            return
        out: Headers = [(b":status", b"%d" % status), *_h2_fields(headers)]
        self.no_body = status in NO_BODY_STATUSES or status < 200
        if length is not None and not self.no_body:
            out.append((b"content-length", b"%d" % length))
        out += self.proto.alt_svc
        if self.head_only or self.no_body:
            self.proto.send_head(self.stream_id, out, True)
            self.stream.end = self.stream.ended = True
            self.proto.streams.pop(self.stream_id, None)
        else:
            self.proto.send_head(self.stream_id, out)
        self.proto.flush()

    async def write(self, data: bytes | memoryview) -> None:
        stream = self.stream
        if self.head_only or self.no_body or not data or not self._usable():
            return
        stream.pending.append(memoryview(data))
        self.proto.pump(self.stream_id, stream)
        self.proto.flush()
        while stream.pending and not stream.closed and not self.proto.closing:
            stream.waiter = asyncio.get_running_loop().create_future()
            await stream.waiter
            stream.waiter = None

    def end(self) -> None:
        if not self._usable():
            return
        self.stream.end = True
        self.proto.pump(self.stream_id, self.stream)
        self.proto.flush()

    def abort(self) -> None:
        stream = self.stream
        if stream.closed or stream.ended or self.proto.closing:
            return
        stream.pending.clear()
        stream.ended = stream.closed = True
        self.proto.streams.pop(self.stream_id, None)
        self.proto.reset(self.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        self.proto.flush()


class H2TunnelSink(H2Sink):
    """The sink of an extended CONNECT stream (edge.fronts.stream_tunnel.TunnelSink): the
    client's DATA is credited back (WINDOW_UPDATE) only as the origin takes it, and a tunnel
    closed by the node is RST_STREAM(CANCEL)."""

    __slots__ = ()

    def consumed(self, size: int) -> None:
        if size and not self.proto.closing:
            self.proto.tunnel_credit(self.stream_id, size)
            self.proto.flush()

    def reset(self) -> None:
        stream = self.stream
        if stream.closed or stream.ended or self.proto.closing:
            return
        stream.pending.clear()
        stream.ended = stream.closed = True
        self.proto.streams.pop(self.stream_id, None)
        self.proto.tunnel_reset(self.stream_id)
        self.proto.flush()


async def serve_own_tls(
    core: EdgeCore,
    config: Config,
    ctx: ssl.SSLContext,
    socks: list[socket.socket],
    shutdown: asyncio.Event,
    draining: asyncio.Event | None = None,
) -> None:
    """Serve HTTP/2 and HTTP/1.1 over TLS on ``socks`` with ``ctx`` (see :func:`tls_context`)
    until ``shutdown`` is set. Loading another chain into ``ctx`` applies to new handshakes.

    Once ``draining`` is set the listeners stop accepting (a load balancer moves new
    connections elsewhere) while open connections are served until ``shutdown``.
    """
    loop = asyncio.get_running_loop()
    connections: set[H2Protocol] = set()
    protocol: type[H2Protocol] = H2Protocol
    if config.h2_engine == "ngh2":
        from edge.fronts.h2_ngh2 import NgH2Protocol

        protocol = NgH2Protocol
    create = loop.create_server
    if config.tls_transport == "aiofastnet":
        # aiofastnet's TLS transport (C, OpenSSL without asyncio's SSLObject plumbing): 7-10 %
        # less CPU per request at 1 KiB and 256 KiB (docs/architecture.md); HTTP/1.1 over TLS
        # is handed the same transport.
        import aiofastnet

        create = functools.partial(aiofastnet.create_server, loop)
    servers = [
        await create(lambda: protocol(core, config, connections), sock=sock, ssl=ctx, backlog=1024)
        for sock in socks
    ]
    try:
        if draining is not None:
            await draining.wait()
            for server in servers:
                server.close()
        await shutdown.wait()
    finally:
        for server in servers:
            server.close()
        for proto in list(connections):
            proto.close()
