"""The HTTP/3 adapter: the QUIC library's sans-I/O H3 API driven directly, calling the core.

Why our own and not Hypercorn's h3: measured here (docs/architecture.md, "Why our
own HTTP/3 adapter"), Hypercorn's h3 answered ≈0.8k req/s for 1 KiB where a responder
on the H3 API answers ≈1.8k on aioquic and ≈7-8k on qh3 (same API, Rust core). So the QUIC backend
is a setting (``quic_backend``) and this module touches only the API the two
share: ``QuicConnectionProtocol``, ``QuicServer``, ``H3Connection``
(``HeadersReceived``/``DataReceived`` in, ``send_headers``/``send_data`` out).

Guarantees:
- every request stream becomes one :class:`Request`, built and checked when its field
  block arrives by :mod:`edge.fronts.request` (414, 431, 413, 405, 400 as on every front;
  a refused request still sending its body is answered and asked to stop with
  STOP_SENDING); a fresh hit is answered inside the event callback (no task) when its
  body fits in one chunk;
- response bodies are fed to the library only while the connection's unsent
  (qh3) or unacknowledged (aioquic) stream bytes are below ``quic_send_buffer``;
  writers wait and are resumed after each received datagram (ACKs) and timer.
  aioquic would otherwise buffer a whole body (aiortc/aioquic#328);
- one connection has one timer, the library's: no per-stream timers or tasks
  spinning on it (the failure mode of pgjones/hypercorn#201);
- a stream the client resets or stops cancels its task; a body that cannot be
  completed resets the stream (H3_INTERNAL_ERROR), never ends it cleanly.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.cache.entry import Entry
from edge.config import Config
from edge.core import EdgeCore
from edge.core.sink import serve_guarded
from edge.fronts import qh3_io, quic_guard
from edge.fronts.hit import FieldHitHead, lower_fields, remember
from edge.fronts.quic_sni import QuicCertificates, choose_by_sni
from edge.fronts.request import Refusal, RequestRules, body_too_large
from edge.fronts.stream_tunnel import StreamTunnel, connect_protocol, tunnel_request
from edge.http.fields import Headers
from edge.http.message import NO_BODY_STATUSES, Request, split_pseudo

__all__ = [
    "BACKENDS",
    "QuicBackend",
    "QuicListener",
    "QuicStats",
    "load_backend",
    "quic_configuration",
    "start_quic",
]

BACKENDS = ("qh3", "aioquic")
CHUNK = 64 * 1024
"""Largest DATA frame handed to the library at once."""
H3_INTERNAL_ERROR = 0x102
H3_REQUEST_CANCELLED = 0x10C
SETTINGS_ENABLE_CONNECT_PROTOCOL = 0x8
"""RFC 9220 §3 (the RFC 8441 setting's HTTP/3 code)."""


@dataclass(frozen=True)
class QuicBackend:
    """The parts of aioquic / qh3 the adapter uses; both expose the same names."""

    name: str
    QuicConfiguration: Any
    QuicConnectionProtocol: Any
    QuicServer: Any
    H3Connection: Any
    H3_ALPN: list[str]
    HeadersReceived: Any
    DataReceived: Any
    ProtocolNegotiated: Any
    StreamReset: Any
    StopSendingReceived: Any
    ConnectionTerminated: Any


def load_backend(name: str) -> QuicBackend:
    """Import the QUIC library ``name`` (``qh3`` or ``aioquic``)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown QUIC backend {name!r}")
    conf = importlib.import_module(f"{name}.quic.configuration")
    qev = importlib.import_module(f"{name}.quic.events")
    proto = importlib.import_module(f"{name}.asyncio.protocol")
    server = importlib.import_module(f"{name}.asyncio.server")
    h3 = importlib.import_module(f"{name}.h3.connection")
    hev = importlib.import_module(f"{name}.h3.events")
    return QuicBackend(
        name,
        conf.QuicConfiguration,
        proto.QuicConnectionProtocol,
        server.QuicServer,
        _extended_connect(h3.H3Connection),
        list(h3.H3_ALPN),
        hev.HeadersReceived,
        hev.DataReceived,
        qev.ProtocolNegotiated,
        qev.StreamReset,
        qev.StopSendingReceived,
        qev.ConnectionTerminated,
    )


def _extended_connect(base: Any) -> Any:
    """``base`` (the library's H3Connection) announcing SETTINGS_ENABLE_CONNECT_PROTOCOL, so
    clients may open WebSockets by extended CONNECT (RFC 9220). aioquic 1.x announces it
    already; qh3 2.1 does not (its settings are built by ``_get_local_settings``, the one
    place this touches). Both accept ``:protocol`` in a request's field section."""

    class EdgeH3Connection(base):  # type: ignore[misc]
        def _get_local_settings(self) -> dict[int, int]:
            settings: dict[int, int] = super()._get_local_settings()
            settings[SETTINGS_ENABLE_CONNECT_PROTOCOL] = 1
            return settings

    return EdgeH3Connection


def quic_configuration(backend: QuicBackend, config: Config, cert: str, key: str) -> Any:
    """Server-side QUIC settings from the node's config (flow control, idle timeout, certificate)."""
    qc = backend.QuicConfiguration(
        is_client=False,
        alpn_protocols=backend.H3_ALPN,
        max_data=config.quic_max_data,
        max_stream_data=config.quic_max_stream_data,
        idle_timeout=config.quic_idle_timeout,
        # qh3's H3Connection announces SETTINGS_H3_DATAGRAM, which RFC 9297 §2.1.1 only allows
        # with this transport parameter; aioquic clients close the connection without it.
        max_datagram_frame_size=65536,
    )
    qc.load_cert_chain(cert, key)
    return qc


class _Stream:
    """One request stream whose head was accepted while its body is still arriving."""

    __slots__ = ("body", "req", "size")

    def __init__(self, req: Request) -> None:
        self.req = req
        self.body: list[bytes] = []
        self.size = 0


class H3Session:
    """The HTTP/3 side of one QUIC connection: requests in, responses out, backpressure."""

    def __init__(
        self, protocol: Any, backend: QuicBackend, core: EdgeCore, config: Config, stats: QuicStats
    ) -> None:
        self.protocol = protocol
        self.stats = stats
        self.quic = protocol._quic
        self.backend = backend
        self.core = core
        self.clock = core.clock
        self.rules = RequestRules(config, b"https", core.clients)
        self.max_body = config.max_request_body
        self.bound = config.quic_send_buffer
        self.h3: Any = None
        self.loop = asyncio.get_running_loop()
        self.partial: dict[int, _Stream | None] = {}
        """Streams still sending their body; None for one refused at its head (body dropped)."""
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.tunnels: dict[int, StreamTunnel] = {}
        """WebSockets bridged on request streams (extended CONNECT, edge.fronts.stream_tunnel)."""
        self.sending: set[int] = set()
        """Streams whose response body is being written (what aioquic's buffer size sums)."""
        self.waiters: list[asyncio.Future[None]] = []
        self.transmit_scheduled = False
        self.closed = False
        self.hit_fields: Headers = [(k.lower(), v) for k, v in core.hit_fields]
        self.requests = core.requests
        self.tally = core.requests.front("h3")
        """Sums the fast hits counted on hit heads (edge.core.observe); the rest goes through
        serve_guarded."""
        self.copy_free = backend.name == "qh3"
        if backend.name == "qh3":
            self.buffered: Callable[[], int] = self._buffered_qh3
        else:
            self.buffered = self._buffered_aioquic

    # -- backpressure --------------------------------------------------------------
    def _buffered_qh3(self) -> int:
        return int(self.quic.get_send_buffer_size())

    def _buffered_aioquic(self) -> int:
        # Bytes not yet acknowledged on our response streams (aioquic has no public size).
        streams = self.quic._streams
        total = 0
        for sid in self.sending:
            stream = streams.get(sid)
            if stream is not None:
                total += len(stream.sender._buffer)
        return total

    async def writable(self) -> None:
        """Wait until the library holds less than ``quic_send_buffer`` of our bytes."""
        while not self.closed and self.buffered() >= self.bound:
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            await waiter

    def after_io(self) -> None:
        """Called after datagrams were received (ACKs) or sent, and after timers: wake writers."""
        if self.waiters and (self.closed or self.buffered() < self.bound):
            waiters, self.waiters = self.waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def transmit_soon(self) -> None:
        if not self.transmit_scheduled:
            self.transmit_scheduled = True
            self.loop.call_soon(self._transmit)

    def _transmit(self) -> None:
        self.transmit_scheduled = False
        self.protocol.transmit()

    # -- QUIC events ---------------------------------------------------------------
    def quic_event(self, event: Any) -> None:
        backend = self.backend
        if isinstance(event, backend.ProtocolNegotiated):
            if event.alpn_protocol in backend.H3_ALPN and self.h3 is None:
                self.h3 = backend.H3Connection(self.quic)
        elif isinstance(event, backend.StreamReset | backend.StopSendingReceived):
            self.partial.pop(event.stream_id, None)
            task = self.tasks.pop(event.stream_id, None)
            if task is not None:
                task.cancel()
        elif isinstance(event, backend.ConnectionTerminated):
            self.closed = True
            self.partial.clear()
            for task in self.tasks.values():
                task.cancel()
            self.tasks.clear()
            self.after_io()
        if self.h3 is None:
            return
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, backend.HeadersReceived):
                self._on_headers(h3_event.stream_id, h3_event.headers, h3_event.stream_ended)
            elif isinstance(h3_event, backend.DataReceived):
                self._on_data(h3_event.stream_id, h3_event.data, h3_event.stream_ended)

    def _on_headers(self, stream_id: int, headers: Headers, ended: bool) -> None:
        if stream_id in self.partial:
            # Trailers: nothing a cache reads, but they may end the request.
            if ended:
                self._on_data(stream_id, b"", True)
            return
        if stream_id in self.tasks:
            return
        method, path, authority, regular = split_pseudo(headers)
        if method == b"CONNECT" and (protocol := connect_protocol(headers)) is not None:
            self._open_tunnel(stream_id, protocol, path, authority, regular, ended)
            return
        try:
            req = self.rules.from_pseudo(method, path, authority, regular, self._client(), "3")
        except Refusal as refusal:
            self._refuse(stream_id, refusal, method, ended, path, authority or dict(regular).get(b"host"))
            return
        if ended:
            self._request(stream_id, req)
        else:
            self.partial[stream_id] = _Stream(req)

    def _on_data(self, stream_id: int, data: bytes, ended: bool) -> None:
        if stream_id not in self.partial:
            tunnel = self.tunnels.get(stream_id)
            if tunnel is not None:
                tunnel.from_client(data)
                if ended:
                    tunnel.client_ended()
            return
        stream = self.partial[stream_id]
        if stream is None:  # refused at its head: the rest is dropped
            if ended:
                del self.partial[stream_id]
            return
        stream.size += len(data)
        if stream.size > self.max_body:
            del self.partial[stream_id]
            self._refuse(
                stream_id, body_too_large(), stream.req.method, ended, stream.req.target, stream.req.host
            )
            return
        if data:
            stream.body.append(data)
        if ended:
            del self.partial[stream_id]
            stream.req.body = b"".join(stream.body)
            self._request(stream_id, stream.req)

    # -- requests --------------------------------------------------------------------
    def _request(self, stream_id: int, req: Request) -> None:
        method = req.method
        now = self.clock()
        entry = self.core.fresh_hit(req, now)
        if entry is not None and (len(entry.body) <= CHUNK or method == b"HEAD"):
            self._send_small_hit(stream_id, entry, req, now)
            return
        task = self.loop.create_task(self._serve(stream_id, req, entry, now))
        self.tasks[stream_id] = task
        task.add_done_callback(lambda _: self._done(stream_id, task))

    def _open_tunnel(
        self,
        stream_id: int,
        protocol: bytes,
        path: bytes | None,
        authority: bytes | None,
        headers: Headers,
        ended: bool,
    ) -> None:
        """Extended CONNECT (RFC 9220): a WebSocket bridged to the origin (edge.fronts.stream_tunnel)."""
        try:
            req = tunnel_request(self.rules, protocol, path, authority, headers, self._client(), "3")
        except Refusal as refusal:
            self._refuse(stream_id, refusal, b"CONNECT", ended, path, authority or dict(headers).get(b"host"))
            return
        tunnel = self.tunnels[stream_id] = StreamTunnel(self.core, req, H3TunnelSink(self, stream_id, req))
        task = self.tasks[stream_id] = tunnel.start()

        def done(_: asyncio.Task[None]) -> None:
            if self.tunnels.get(stream_id) is tunnel:
                del self.tunnels[stream_id]
            self._done(stream_id, task)

        task.add_done_callback(done)
        if ended:
            tunnel.client_ended()

    def _done(self, stream_id: int, task: asyncio.Task[None]) -> None:
        if self.tasks.get(stream_id) is task:
            del self.tasks[stream_id]
        self.sending.discard(stream_id)
        if not task.cancelled() and task.exception() is not None:
            self.loop.call_exception_handler(
                {"message": "HTTP/3 request failed", "exception": task.exception()}
            )

    def _client(self) -> str:
        get_peer = getattr(self.quic, "get_peer_address", None)  # aioquic
        addr = get_peer() if get_peer is not None else getattr(self.quic, "_remote_addr", None)
        return str(addr[0]) if addr else ""

    def _hit_head(self, entry: Entry, now: float, req: Request) -> Headers:
        """The head of a fresh hit on ``entry``, the hit counted (edge.core.observe)."""
        age = entry.age(now)
        memo: FieldHitHead | None = entry.wire.get("h3")
        if memo is None:
            head = FieldHitHead(entry, lower_fields(entry.headers), self.hit_fields, tally=self.tally)
            memo = remember(entry, "h3", head)
        if memo.age != age:
            # Age and the ttl in Cache-Status change once a second: rebuild then, not per hit.
            memo.refresh(age, self.core.hit_status(int(entry.fresh_until - now)))
        memo.hits += 1
        if req.method == b"HEAD" or not entry.body:
            memo.heads += 1
        if self.tally.access is not None:
            self.tally.logged_hit(req, memo)
        return memo.head

    def _send_small_hit(self, stream_id: int, entry: Entry, req: Request, now: float) -> None:
        head = self._hit_head(entry, now, req)
        body = entry.body
        if req.method == b"HEAD" or not body:
            self.h3.send_headers(stream_id, head, end_stream=True)
        else:
            self.h3.send_headers(stream_id, head, end_stream=False)
            self.h3.send_data(stream_id, body, end_stream=True)
        self.transmit_soon()

    def _refuse(
        self,
        stream_id: int,
        refusal: Refusal,
        method: bytes | None,
        ended: bool,
        target: bytes | None = None,
        host: bytes | None = None,
    ) -> None:
        """Answer a request the core never sees with its refusal's text (no body to HEAD).

        A client still sending its body is asked to stop (STOP_SENDING); what arrives
        meanwhile is dropped.
        """
        body = refusal.body
        sent = 0 if method == b"HEAD" else len(body)
        self.requests.refused("h3", self._client(), method, target or b"", refusal.status, sent, host)
        head = [
            (b":status", b"%d" % refusal.status),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            *refusal.fields,
        ]
        if method == b"HEAD":
            self.h3.send_headers(stream_id, head, end_stream=True)
        else:
            self.h3.send_headers(stream_id, head, end_stream=False)
            self.h3.send_data(stream_id, body, end_stream=True)
        if not ended:
            self.partial[stream_id] = None
            self.quic.stop_stream(stream_id, H3_REQUEST_CANCELLED)
        self.transmit_soon()

    async def _serve(self, stream_id: int, req: Request, entry: Entry | None, now: float) -> None:
        if entry is not None:
            self.sending.add(stream_id)
            self.h3.send_headers(stream_id, self._hit_head(entry, now, req), end_stream=False)
            await self.send_body(stream_id, entry.body, end=True)
            return
        sink = H3Sink(self, stream_id, req)
        await serve_guarded(self.core.serve, req, sink, self.requests)

    async def send_body(self, stream_id: int, data: bytes | memoryview, end: bool) -> None:
        """Hand ``data`` to the library in chunks, each only when the backlog is below the bound."""
        view = memoryview(data)
        size = len(view)
        offset = 0
        while offset < size and not self.closed:
            await self.writable()
            if self.closed:
                break
            chunk = view[offset : offset + CHUNK]
            offset += len(chunk)
            last = end and offset >= size
            # aioquic's C Buffer accepts only bytes; qh3 takes the memoryview without a copy.
            self.h3.send_data(stream_id, chunk if self.copy_free else bytes(chunk), last)
            buffered = self.buffered()
            if buffered > self.stats.peak_buffered:
                self.stats.peak_buffered = buffered
            self.transmit_soon()
        if end and size == 0 and not self.closed:
            self.h3.send_data(stream_id, b"", True)
            self.transmit_soon()


class H3Sink:
    """ResponseSink for one request stream."""

    __slots__ = ("deferred", "head_only", "no_body", "req", "session", "started", "stream_id")

    def __init__(self, session: H3Session, stream_id: int, req: Request) -> None:
        self.session = session
        self.stream_id = stream_id
        self.req = req
        self.started = False
        self.head_only = req.method == b"HEAD"
        self.no_body = False
        self.deferred: Headers | None = None

    def interim(self, status: int, headers: Headers) -> None:
        if self.started or self.session.closed:
            return
        head = [(b":status", b"%d" % status), *((k.lower(), v) for k, v in headers)]
        self.session.h3.send_headers(self.stream_id, head, end_stream=False)
        self.session.transmit_soon()

    def start(self, status: int, reason: bytes, headers: Headers, length: int | None) -> None:
        self.started = True
        head: Headers = [(b":status", b"%d" % status), *((k.lower(), v) for k, v in headers)]
        self.no_body = status in NO_BODY_STATUSES or status < 200
        if length is not None and not self.no_body:
            head.append((b"content-length", b"%d" % length))
        if self.head_only or self.no_body:
            self.deferred = head  # sent by end() with END_STREAM: no DATA frame at all
            return
        self.session.sending.add(self.stream_id)
        if not self.session.closed:
            self.session.h3.send_headers(self.stream_id, head, end_stream=False)
            self.session.transmit_soon()

    async def write(self, data: bytes | memoryview) -> None:
        if self.head_only or self.no_body or not data:
            return
        await self.session.send_body(self.stream_id, data, end=False)

    def end(self) -> None:
        session = self.session
        if session.closed:
            return
        if self.deferred is not None:
            session.h3.send_headers(self.stream_id, self.deferred, end_stream=True)
        else:
            session.h3.send_data(self.stream_id, b"", end_stream=True)
        session.transmit_soon()

    def abort(self) -> None:
        if not self.session.closed:
            self.session.quic.reset_stream(self.stream_id, H3_INTERNAL_ERROR)
            self.session.transmit_soon()


class H3TunnelSink(H3Sink):
    """The sink of an extended CONNECT stream (edge.fronts.stream_tunnel.TunnelSink). The QUIC
    libraries credit stream data as it arrives, so there is nothing to give back here."""

    __slots__ = ()

    def consumed(self, size: int) -> None:
        pass

    def reset(self) -> None:
        if not self.session.closed:
            self.session.quic.reset_stream(self.stream_id, H3_REQUEST_CANCELLED)
            self.session.transmit_soon()


def protocol_class(
    backend: QuicBackend,
    core: EdgeCore,
    config: Config,
    stats: QuicStats,
    certs: QuicCertificates | None = None,
) -> Any:
    """A QuicConnectionProtocol subclass of ``backend`` that hands events to an :class:`H3Session`;
    with several ``certs``, each connection's certificate is chosen by SNI (``quic_sni``)."""
    base = backend.QuicConnectionProtocol
    max_streams = config.quic_max_streams
    edge_connection = qh3_io.connection_class() if backend.name == "qh3" else None

    class EdgeH3Protocol(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if edge_connection is not None and type(self._quic) is edge_connection.__base__:
                self._quic.__class__ = edge_connection  # before its first datagram (Chromium)
            if certs is not None and certs.wanted():
                choose_by_sni(self._quic, certs)
            limit = getattr(self._quic, "_local_max_streams_bidi", None)
            if limit is not None:  # aioquic: the library's own default is 128
                limit.value = limit.sent = max_streams
            self.session = H3Session(self, backend, core, config, stats)
            stats.connections += 1

        def quic_event_received(self, event: Any) -> None:
            self.session.quic_event(event)

        def transmit(self) -> None:
            super().transmit()
            self.session.after_io()

    return EdgeH3Protocol


@dataclass
class QuicStats:
    """Counters shared by the connections of one listener."""

    connections: int = 0
    peak_buffered: int = 0
    """Largest per-connection send backlog seen right after queueing body bytes."""


@dataclass
class QuicListener:
    """The HTTP/3 servers of one process, one per bound UDP socket."""

    servers: list[Any]
    stats: QuicStats
    configuration: Any = None
    """The QuicConfiguration every new connection starts from (certificate reload)."""
    certs: QuicCertificates | None = None
    """The certificates past the default one, chosen by SNI."""

    def stop_accepting(self) -> None:
        """A graceful shutdown: no new connection from now on; open ones are served on."""
        for server in self.servers:
            server.draining = True

    def load_cert_chain(self, cert: str, key: str) -> None:
        """Use ``cert``/``key`` for connections from now on (open ones keep theirs)."""
        self.configuration.load_cert_chain(cert, key)

    def load_certificates(self, table: Any, pairs: list[tuple[str, str]]) -> None:
        """Serve ``pairs`` (cert, key) to connections from now on, the first by default and
        each other to the names ``table`` gives it (``index(server_name)``); all load or
        nothing changes."""
        assert self.certs is not None
        backend = load_backend(self.certs.backend)
        probe = backend.QuicConfiguration(is_client=False)
        probe.load_cert_chain(*pairs[0])  # the default loads before anything is replaced
        self.certs.set(backend.QuicConfiguration, table, pairs)
        self.configuration.load_cert_chain(*pairs[0])

    def close(self) -> None:
        for server in self.servers:
            server.close()


async def start_quic(
    core: EdgeCore,
    config: Config,
    cert: str,
    key: str,
    socks: list[socket.socket],
    table: Any = None,
    pairs: list[tuple[str, str]] | None = None,
) -> QuicListener:
    """Serve HTTP/3 on each bound UDP socket with ``cert``/``key``; with ``pairs`` (cert, key:
    the first is ``cert``/``key``) and their name ``table``, each by SNI (``quic_sni``)."""
    backend = load_backend(config.quic_backend)
    configuration = quic_configuration(backend, config, cert, key)
    stats = QuicStats()
    certs = QuicCertificates(backend.name)
    if pairs and len(pairs) > 1:
        certs.set(backend.QuicConfiguration, table, pairs)
    factory = protocol_class(backend, core, config, stats, certs)
    loop = asyncio.get_running_loop()
    servers = []
    # New connections are bounded before address validation (Retry above a threshold), see quic_guard.
    guarded = quic_guard.guarded_server_class(backend.QuicServer)
    batched = qh3_io.batched_server_class(guarded) if backend.name == "qh3" else None
    for sock in socks:
        if batched is not None:  # batched UDP I/O (GSO/GRO), see qh3_io
            _, server = await qh3_io.open_endpoint(
                lambda: batched(configuration=configuration, create_protocol=factory), sock
            )
        else:
            _, server = await loop.create_datagram_endpoint(
                lambda: guarded(configuration=configuration, create_protocol=factory), sock=sock
            )
        servers.append(server)
    return QuicListener(servers, stats, configuration, certs)
