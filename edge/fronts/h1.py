"""The cleartext HTTP/1.1 fast front: an asyncio protocol on uvloop parsing with httptools.

Why it exists: Hypercorn's h11 front caps a node at a fraction of nginx; this one
answers a 1 KiB hit level with nginx's proxy_cache (docs/architecture.md,
"Measurements"). It answers fresh hits inside the parser callback with one
``transport.write`` of a head prepared once per entry and second
(:class:`edge.fronts.hit.WireHitHead`), and hands everything else to
:meth:`EdgeCore.serve` through :class:`H1Sink`. A read that repeats the exact bytes of
an earlier request with a fast hit is answered without parsing (:class:`Replay`), after
:meth:`EdgeCore.replay` has re-checked the hit against the store.

Guarantees:
- responses leave in request order, also when pipelined requests mix hits and misses;
- request target, header block, header count and body are bounded (414, 431, 413) as
  the bytes arrive, by the limits and refusals of :mod:`edge.fronts.request`, whose
  ``finish`` builds every request; a malformed request gets 400 with a reason, and every
  refusal a closed connection;
- a body that cannot be completed closes the connection (never a clean short message);
- a replayed request gets exactly what the parse and ``fresh_hit`` would give it now;
- a body from a disk record (``edge.core.disk.FileBody``) goes out with ``os.sendfile``
  on a plain socket (:meth:`H1Protocol.send_file`), never through the transport's buffer,
  so a client that does not read holds the kernel's socket buffer, not the body; a fresh
  large record whose head is known is answered in the parser callback like a memory hit
  (:meth:`H1Protocol._try_disk_hit`); a record failing under ``sendfile`` cuts that response
  and closes the connection.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import time
import weakref
from typing import cast

import httptools

from edge.cache.entry import Entry
from edge.config import Config
from edge.core import EdgeCore
from edge.core.clients import ClientLimits
from edge.core.disk import DiskBodyError, FileBody
from edge.core.node import HitRoute
from edge.core.observe import RequestLog
from edge.core.sink import serve_guarded
from edge.fronts.hit import WireHitHead, remember
from edge.fronts.request import (
    Refusal,
    RequestRules,
    block_size,
    block_too_large,
    body_too_large,
    combine_repeated,
    target_too_long,
    too_many_fields,
)
from edge.fronts.tunnel import Tunnel, wants_websocket
from edge.http.fields import Headers, is_token
from edge.http.message import NO_BODY_STATUSES, Request, reason_phrase

LLHTTP_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH SEARCH "
    b"UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY SUBSCRIBE "
    b"UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY".split()
)
"""Request methods llhttp parses; any other token method is parsed as POST and restored after."""

log = logging.getLogger("edge.fronts.h1")

LIVE: weakref.WeakSet[H1Protocol] = weakref.WeakSet()
"""Open HTTP/1.1 connections of this process, for a graceful shutdown."""

MAX_PIPELINE = 32
"""Queued requests per connection before the front stops reading from it."""

WRITE_PIECE = 256 * 1024
"""Most body bytes a connection hands its transport in one event-loop turn: a larger body
goes in pieces, the next one when the socket has drained below the low water mark (or, when
it took the piece at once, after the loop has run every other ready connection once)."""
WRITE_HIGH, WRITE_LOW = 256 * 1024, 64 * 1024
"""The transport's write buffer marks: pause_writing above the high one, resume below the low one."""

SENDFILE_PIECE = 1024 * 1024
"""Most bytes of a file body one ``os.sendfile`` call is asked for; after a piece the socket
took whole, the loop runs every other ready connection once (as ``WRITE_PIECE``). 1 MiB:
a 4 MiB disk hit cost 1,716 µs of CPU with 256 KiB pieces, 977 with 1 MiB and 916 with 4 MiB
(p99 52, 69 and 72 ms; benchmarks.disk_tier --phase nginx, one run each); nginx's
``sendfile_max_chunk`` is 2 MiB."""

SOCKET_ERRNOS = frozenset(
    (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED,
     errno.ETIMEDOUT, errno.EBADF)
)  # fmt: skip
"""``os.sendfile`` errors that are the client's socket's; any other is the file's (the disk)."""

REPLAY_MAX_BYTES = 2048
"""Longest request (head, as one read) whose fast hit is replayed by its bytes (see Replay)."""

REPLAY_TABLE_SIZE = 1024
"""Request byte strings remembered per listener kind; the table is emptied when full."""


class Replay:
    """A fast hit decided for one exact request, answered again without parsing it.

    Load tools, caches one tier down and many apps send the same bytes for the same
    object again and again. When a read is exactly one complete request without a body,
    the second time those bytes arrive their hit is remembered here, under the bytes, as
    a :class:`HitRoute` (which the core re-checks against the store, freshness and the
    compressed siblings on every use) and what the request said about the connection.
    Everything the parse and the request rules would decide is a function of the bytes,
    but the per-address rate limit and a trusted proxy's scheme: with a rate limit a
    listener keeps no table, and a request carrying ``X-Forwarded-Proto`` is never
    remembered (the same bytes mean another scheme from a trusted proxy than from anyone
    else). A route holds its objects: only small ones are kept (``HitRoute``), and a purge
    empties the tables, so a purged or evicted body is not held for long.
    """

    __slots__ = ("keep_alive", "req", "route")

    def __init__(self, route: HitRoute, req: Request, keep_alive: bool) -> None:
        self.route = route
        self.req = req
        self.keep_alive = keep_alive


SEEN_ONCE = Replay.__new__(Replay)
"""The table's mark for bytes seen once with a fast hit: their route is made if they come
again, so hits that never repeat cost a dict insert, not a route (and misses not even that)."""

NOT_REPLAYED = Replay.__new__(Replay)
"""The table's mark for bytes that are not one request with a fast hit that could be kept
(pipelined, a body, ``X-Forwarded-Proto``)."""


class H1Protocol(asyncio.Protocol):
    """One client connection."""

    sink_class: type[H1Sink]
    """What the slow path writes its response to (a sibling worker's front filters it)."""

    def __init__(self, core: EdgeCore, config: Config, scheme: bytes = b"http"):
        self.core = core
        self.scheme = scheme
        """b"https" when the TLS front hands over a connection whose ALPN chose http/1.1."""
        rules = RequestRules(config, scheme, core.clients)
        self.finish = rules.finish
        self.clock = core.clock
        self.max_line = rules.max_target
        self.max_head = rules.max_block
        self.max_count = rules.max_count
        self.max_body = rules.max_body
        self.clients: ClientLimits | None = core.clients
        """Counts this connection against its address's cap (None: not counted)."""
        self.requests: RequestLog | None = core.requests
        self.tally = core.requests.front("h1")
        """Sums the fast hits counted on hit heads (edge.core.observe); the rest goes
        through serve_guarded."""
        self.logged = self.tally.access is not None
        """The access log is on (read once per connection: it is set before serving)."""
        self.hit_fields = b"".join(k + b": " + v + b"\r\n" for k, v in core.hit_fields)
        self.extra_fields = b"Alt-Svc: %s\r\n" % config.alt_svc.encode() if config.alt_svc else b""
        """Fields every response on this listener carries (Alt-Svc advertising HTTP/3)."""
        self.replays: dict[bytes, Replay] | None = None
        """Fast hits by request bytes (:class:`Replay`), shared by the listener's connections;
        None where requests are never replayed (a rate limit, a sibling worker's socket)."""
        if rules.rate is None:
            # The core owns the tables (EdgeCore.replay_tables): a purge empties them.
            self.replays = core.replay_tables.setdefault((scheme, self.extra_fields), {})
        self.replay_wanted = 0
        """Per read: 1, bytes not in the table (mark them SEEN_ONCE if they get a fast hit);
        2, bytes seen once (keep their fast hit); 0, neither."""
        self.replay_offer: Replay | None = None
        """The hit :meth:`_try_hit` decided during this read, to remember under its bytes."""
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client = ""
        self.queue: collections.deque[tuple[Request, bool]] = collections.deque()
        self.active: asyncio.Task[None] | None = None
        self.closing = False
        self.paused_reading = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.pending_reject = b""
        self.chunk_size = 0
        self.method_override = b""
        self.at_boundary = True
        """No part of a message has been received since the last one ended."""
        self.messages_begun = 0
        self.tunnel: Tunnel | None = None
        """The WebSocket tunnel this connection became, if it did."""
        self.tunnels = True
        """Whether a WebSocket upgrade is tunnelled here (not on a sibling worker's socket)."""
        self.file_sent = 0
        """Body bytes this connection sent with ``os.sendfile``."""
        self.file_socket = 0
        """The socket's descriptor for ``os.sendfile`` (file bodies); -1 when the transport is
        TLS (or has no socket); 0 until first asked (:meth:`_file_socket`)."""
        self._reset_message()

    def _reset_message(self) -> None:
        self.url = b""
        self.headers: Headers = []
        self.head_bytes = 0
        self.in_head = True
        self.body: list[bytes] = []
        self.body_size = 0
        self.request: Request | None = None

    # -- asyncio.Protocol --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else ""
        if self.clients is not None and not self.clients.opened(self.client):
            self.clients = None  # not counted: nothing to give back when it closes
            self.closing = True
            self.transport.abort()  # over the per-address cap: refused before a byte is read
            return
        self.transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        LIVE.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tunnel is not None:
            self.tunnel.client_closed()
        if self.clients is not None:
            self.clients.closed(self.client)
            self.clients = None
        LIVE.discard(self)
        self.closing = True
        if self.active is not None:
            self.active.cancel()
        self.queue.clear()
        self._wake_drain()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()
        self._update_reading()

    def _update_reading(self) -> None:
        """Read only while the client reads what we write and the pipeline queue has room.

        Hits are written inside the parser callback; without this a client that
        pipelines requests and never reads would grow the write buffer without bound.
        """
        transport = self.transport
        if transport is None or self.closing:
            return
        should_pause = self.write_paused or len(self.queue) >= MAX_PIPELINE or bool(self.pending_reject)
        if should_pause and not self.paused_reading:
            self.paused_reading = True
            transport.pause_reading()
        elif not should_pause and self.paused_reading:
            self.paused_reading = False
            transport.resume_reading()

    def _wake_drain(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        if self.write_paused and not self.closing:
            self.drain_waiter = asyncio.get_running_loop().create_future()
            await self.drain_waiter

    async def send(self, data: bytes | memoryview) -> None:
        """Write body bytes fairly: at most ``WRITE_PIECE`` per loop turn, waiting while paused.

        One ``transport.write`` of a whole large body would copy what the socket does not
        take into the transport's buffer and leave the loop to flush it in one go whenever
        this socket is writable, ahead of every other connection.
        """
        transport = self.transport
        if transport is None:
            return
        size = len(data)
        if size <= WRITE_PIECE:
            transport.write(data)
            if self.write_paused:
                await self.drain()
            return
        view = memoryview(data)
        for offset in range(0, size, WRITE_PIECE):
            if self.closing or transport.is_closing():
                return  # the client went away: the task is being cancelled
            transport.write(view[offset : offset + WRITE_PIECE])
            if self.write_paused:
                await self.drain()
            elif offset + WRITE_PIECE < size:
                await asyncio.sleep(0)  # the socket took it: let the other connections write too

    def _file_socket(self) -> int:
        fd = self.file_socket
        if fd == 0:
            transport = self.transport
            sock = transport.get_extra_info("socket") if transport is not None else None
            fd = -1
            if sock is not None and transport is not None and transport.get_extra_info("ssl_object") is None:
                fd = sock.fileno()
            self.file_socket = fd
        return fd

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        """Send ``count`` bytes at ``offset`` of file ``fd`` with ``os.sendfile`` (zero copy).

        uvloop has no ``loop.sendfile`` (NotImplementedError) and refuses ``add_writer`` on a
        transport's socket, so: the transport's own buffer (the head) must be empty first (its
        high water mark is set to 0 for the wait, so ``resume_writing`` says when); then
        non-blocking ``sendfile`` straight to the socket, at most ``SENDFILE_PIECE`` per call;
        when the socket is full, the wait for writability is an ``add_writer`` on a duplicate
        of its descriptor (closed after each wait, so it never keeps a closed connection
        open). A client that does not read holds only the kernel's socket buffer. The file
        ending early or failing to read raises DiskBodyError; the client going away returns.
        """
        transport = self.transport
        sock = self._file_socket()
        if transport is None or sock < 0:
            raise RuntimeError("no socket to sendfile to")
        if transport.get_write_buffer_size():
            transport.set_write_buffer_limits(0, 0)  # pause_writing now, resume_writing once empty
            try:
                while transport.get_write_buffer_size() and not self.closing:
                    if not self.write_paused:
                        await asyncio.sleep(0)
                    await self.drain()
            finally:
                if not transport.is_closing():
                    transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        end = offset + count
        while offset < end:
            if self.closing or transport.is_closing():
                return  # the client went away (the task is being cancelled)
            piece = min(SENDFILE_PIECE, end - offset)
            try:
                sent = os.sendfile(sock, fd, offset, piece)
            except BlockingIOError:
                await self._writable(sock)
                continue
            except OSError as exc:
                if exc.errno in SOCKET_ERRNOS:
                    self.closing = True
                    transport.abort()
                    return
                raise DiskBodyError(exc.errno, f"sendfile from the record failed: {exc.strerror}") from None
            if sent == 0:
                raise DiskBodyError(f"the record ends early ({end - offset} bytes missing)")
            offset += sent
            self.file_sent += sent
            if offset < end:
                if sent < piece:
                    await self._writable(sock)  # the socket took what it could
                else:
                    await asyncio.sleep(0)  # it took a whole piece: let the others write too

    async def _writable(self, sock: int) -> None:
        loop = asyncio.get_running_loop()
        waiter = self.drain_waiter = loop.create_future()
        dup = os.dup(sock)
        try:
            loop.add_writer(dup, _wake, waiter)
            await waiter
        finally:
            loop.remove_writer(dup)
            os.close(dup)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_client(data)  # a WebSocket: bytes, not HTTP, from here on
            return
        if self.closing or self.pending_reject:
            return
        replays = self.replays
        self.chunk_size = size = len(data)
        if self.at_boundary:
            if replays is not None and size <= REPLAY_MAX_BYTES and self.active is None and not self.queue:
                replay = replays.get(data)
                if replay is None:
                    self.replay_wanted = 1  # first seen: marked SEEN_ONCE if it gets a fast hit
                elif replay is SEEN_ONCE:
                    self.replay_wanted = 2  # its fast hit is kept this time
                elif replay is NOT_REPLAYED:
                    pass
                elif self._replay(replay):
                    return
                else:
                    del replays[data]
            # A message starts here: an extension method (RFC 9110 §9.1) llhttp does not know is
            # parsed as POST (same framing rules) and restored in on_headers_complete.
            space = data.find(b" ", 0, 64)
            if space > 0:
                method = data[:space]
                if method not in LLHTTP_METHODS and is_token(method):
                    self.method_override = method
                    data = b"POST" + data[space:]
        mid_head = self.in_head and not self.at_boundary
        begun = self.messages_begun
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            reject = exc.__context__
            if isinstance(reject, Refusal):
                self._reject(reject)
            else:
                log.error("request handling failed", exc_info=reject)
                self._reject(Refusal(500, "internal error"))
            return
        except httptools.HttpParserInvalidMethodError:
            first = data.split(b" ", 1)[0]
            if is_token(first) and first.isupper():
                self._reject(Refusal(501, "method not implemented"))
            else:
                self._reject(Refusal(400, "invalid request method"))
            return
        except httptools.HttpParserInvalidURLError:
            self._reject(Refusal(400, "invalid request target"))
            return
        except httptools.HttpParserUpgrade as upgrade:
            if self.tunnel is not None:
                # A WebSocket handshake: what followed its head belongs to the tunnel.
                offset = upgrade.args[0] if upgrade.args else len(data)
                if offset < len(data):
                    self.tunnel.from_client(data[offset:])
                return
            # Any other upgrade is hop-by-hop and not offered: the request was taken as
            # plain HTTP and llhttp resumes parsing after it. CONNECT is refused earlier.
            # A WebSocket handshake queued behind a response in progress cannot switch.
            if self.queue and wants_websocket(self.queue[-1][0]):
                self.queue.pop()
                self._reject(Refusal(400, "a WebSocket upgrade must not be pipelined"))
                return
        except httptools.HttpParserError as exc:
            self._reject(Refusal(400, f"malformed request: {exc}"))
            return
        wanted = self.replay_wanted
        if wanted:
            # Remember the hit only if this read was the whole of one request (see Replay).
            self.replay_wanted = 0
            offer = self.replay_offer
            self.replay_offer = None
            if replays is not None and offer is not None:  # (a miss, or a sibling being made: no)
                if wanted == 1 and len(replays) >= REPLAY_TABLE_SIZE:
                    replays.clear()
                if self.messages_begun != begun + 1 or not self.at_boundary:
                    replays[data] = NOT_REPLAYED  # not one whole request: never will be
                else:
                    replays[data] = offer
        if self.in_head and not self.at_boundary and not self.closing:
            # This chunk ends inside a head. If the same head was already open when the
            # chunk arrived, all of it is head: count it, so a field sent forever in
            # pieces is bounded. A head that began in this chunk is bounded by the chunk.
            if mid_head and self.messages_begun == begun:
                self.head_bytes += len(data)
                if self.head_bytes > self.max_head:
                    self._reject(block_too_large())
            else:
                self.head_bytes = 0

    # -- httptools callbacks -------------------------------------------------------
    def on_message_begin(self) -> None:
        self.at_boundary = False
        self.messages_begun += 1
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.max_line:
            raise target_too_long()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if len(self.headers) > self.max_count:
            raise too_many_fields()

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        headers = self.headers
        fields = {name.lower(): value for name, value in headers}
        if len(fields) != len(headers):
            fields = combine_repeated(headers)  # repeated fields: rare, so checked after the fact
        # Only a head that could be too large is measured field by field.
        if (
            self.head_bytes + self.chunk_size > self.max_head
            and block_size(self.url, headers) > self.max_head
        ):
            raise block_too_large()
        method = parser.get_method()
        if self.method_override:
            method, self.method_override = self.method_override, b""
        version = parser.get_http_version()
        target = self.url
        host = fields.get(b"host")
        if target[:1] != b"/" and method != b"CONNECT":  # CONNECT: refused by finish()
            if target == b"*" and method == b"OPTIONS":
                pass
            else:
                try:
                    parsed = httptools.parse_url(target)
                except httptools.HttpParserInvalidURLError:
                    raise Refusal(400, "invalid request target") from None
                if not parsed.host:
                    raise Refusal(400, "invalid request target")
                host = parsed.host + (b":%d" % parsed.port if parsed.port else b"")
                target = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
                # RFC 9112 §3.2.2: the target's authority replaces any Host field, upstream too.
                headers = [(k, v) for k, v in headers if k.lower() != b"host"]
                headers.insert(0, (b"Host", host))
                fields[b"host"] = host
        self.request = self.finish(method, target, headers, fields, host, self.client, version)
        expect = fields.get(b"expect")
        if (
            expect is not None
            and expect.lower() == b"100-continue"
            and version == "1.1"
            and fields.get(b"content-length", b"").isdigit()
            and self.active is None
            and not self.queue
            and self.transport
        ):
            # Only when no earlier response is still being written: never inside another body.
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.max_body:
            raise body_too_large()
        self.body.append(body)

    def on_message_complete(self) -> None:
        req = self.request
        assert req is not None
        if self.body:
            req.body = b"".join(self.body)
        keep_alive = self.parser.should_keep_alive()
        self.at_boundary = True
        self.in_head = True
        self.head_bytes = 0
        if self.active is None and not self.queue:
            if not self._try_hit(req, keep_alive):
                self._start(req, keep_alive)
            return
        self.queue.append((req, keep_alive))
        self._update_reading()

    # -- WebSocket -----------------------------------------------------------------
    def _open_tunnel(self, req: Request) -> None:
        """Start the WebSocket tunnel of ``req`` (edge.fronts.tunnel), or refuse it."""
        if self.queue:  # bytes after the handshake were read as requests: it cannot switch now
            self._reject(Refusal(400, "a WebSocket upgrade must not be pipelined"))
            return
        if not self.core.clients.tunnel_opened(self.client):
            self._reject(Refusal(503, "too many WebSocket tunnels"))
            return
        tunnel = self.tunnel = Tunnel(self, req)
        started = time.perf_counter()
        task = self.active = asyncio.get_running_loop().create_task(_run(tunnel))

        def ended(_: asyncio.Task[None]) -> None:
            # A done callback, not a finally: it runs even for a task cancelled before it started.
            self.core.clients.tunnel_closed(self.client)
            if self.requests is not None:
                self.requests.tunnelled(req, tunnel.status, tunnel.sent, started)
            self.active = None
            self.closing = True
            if self.transport is not None:
                self.transport.close()

        task.add_done_callback(ended)

    # -- answering ---------------------------------------------------------------
    def _replay(self, replay: Replay) -> bool:
        """Answer a request by its bytes (:class:`Replay`); False when its route no longer holds."""
        now = self.clock()
        entry = self.core.replay(replay.route, now)
        if entry is None:
            return False
        req = replay.req
        if self.logged and req.client != self.client:
            req = Request(
                req.method, req.target, req.headers, req.fields, req.scheme, req.host, self.client,
                req.http_version,
            )  # fmt: skip
        return self._answer_hit(entry, now, req, replay.keep_alive)

    def _try_hit(self, req: Request, keep_alive: bool) -> bool:
        now = self.clock()
        entry = self.core.fresh_hit(req, now)
        if entry is None:
            if self.core.disk is not None and self.file_socket >= 0:
                return self._try_disk_hit(req, keep_alive, now)
            return False
        if self.replay_wanted and self.replay_offer is None:
            fields = req.fields
            if (
                req.body
                or b"x-forwarded-proto" in fields  # the scheme may depend on who sent it
                or b"content-length" in fields
                or b"transfer-encoding" in fields
                or b"expect" in fields
            ):
                self.replay_offer = NOT_REPLAYED
            elif self.replay_wanted == 1:
                self.replay_offer = SEEN_ONCE
            else:
                route = self.core.hit_route(req, entry)
                if route is not None:
                    self.replay_offer = Replay(route, req, keep_alive)
        return self._answer_hit(entry, now, req, keep_alive)

    def _answer_hit(self, entry: Entry, now: float, req: Request, keep_alive: bool) -> bool:
        """Write ``entry`` as the fresh hit answering ``req`` (memoised head, one write)."""
        transport = self.transport
        assert transport is not None
        age = int(entry.corrected_initial_age + (now - entry.response_time))
        memo: WireHitHead | None = entry.wire.get("h1")
        if memo is None:
            memo = remember(entry, "h1", WireHitHead(entry, self.hit_fields + self.extra_fields, self.tally))
        if memo.age != age:
            # Age and the ttl in Cache-Status change once a second: rebuild then, not per hit.
            memo.refresh(age, self.core.hit_status(int(entry.fresh_until - now)))
        if keep_alive and req.http_version == "1.1":
            head = memo.head
        else:
            connection = b"keep-alive" if keep_alive else b"close"
            head = memo.head[:-2] + b"Connection: %s\r\n\r\n" % connection
        body = entry.body
        memo.hits += 1  # the request counters (edge.core.observe)
        if req.method == b"HEAD" or not body:
            transport.write(head)
            memo.heads += 1
        elif len(body) <= 16384:
            transport.write(head + body)
        elif len(body) <= WRITE_PIECE:
            transport.writelines((head, body))
        else:
            # A large body goes out in pieces as the socket drains (send), from a task that
            # holds the connection's place in the pipeline like a slow-path response.
            transport.write(head)
            self.active = asyncio.get_running_loop().create_task(self._send_hit(body, keep_alive))
            if self.logged:
                self.tally.logged_hit(req, memo)
            return True
        if self.logged:
            self.tally.logged_hit(req, memo)
        if not keep_alive:
            self.closing = True
            transport.close()
        return True

    def _try_disk_hit(self, req: Request, keep_alive: bool, now: float) -> bool:
        """A fresh large record on disk (``EdgeCore.disk_hit``): its memoised head written now,
        its body sent from the file by a task holding the connection's place (:meth:`send_file`)."""
        if self._file_socket() < 0:
            return False
        found = self.core.disk_hit(req, now)
        if found is None:
            return False
        entry, body = found
        transport = self.transport
        assert transport is not None
        # The head as _answer_hit makes it, written out again: one shared method for both cost
        # the memory hit 9 % more instructions (11,262 -> 12,308, benchmarks.hit_path_micro).
        age = int(entry.corrected_initial_age + (now - entry.response_time))
        memo: WireHitHead | None = entry.wire.get("h1")
        if memo is None:
            tail = self.hit_fields + self.extra_fields
            memo = remember(entry, "h1", WireHitHead(entry, tail, self.tally, length=body.length))
        if memo.age != age:
            memo.refresh(age, self.core.hit_status(int(entry.fresh_until - now)))
        if keep_alive and req.http_version == "1.1":
            head = memo.head
        else:
            connection = b"keep-alive" if keep_alive else b"close"
            head = memo.head[:-2] + b"Connection: %s\r\n\r\n" % connection
        memo.hits += 1
        transport.write(head)
        if self.logged:
            self.tally.logged_hit(req, memo)
        if req.method == b"HEAD":
            memo.heads += 1
            body.close()
        elif not transport.get_write_buffer_size():
            # The head went out: the first piece is sent now, and most bodies need no task.
            try:
                sent = os.sendfile(self.file_socket, body.fd, body.offset, min(SENDFILE_PIECE, body.length))
            except OSError:
                sent = 0  # the task sends it again and tells the socket's errors from the disk's
            if sent:
                self.file_sent += sent
                body.offset += sent
                body.length -= sent
                body.tier.counts["sendfile_bytes"] += sent
            if body.length:
                self.active = asyncio.get_running_loop().create_task(self._send_disk_hit(body, keep_alive))
                return True
            body.close()
        else:
            self.active = asyncio.get_running_loop().create_task(self._send_disk_hit(body, keep_alive))
            return True
        if not keep_alive:
            self.closing = True
            transport.close()
        return True

    async def _send_disk_hit(self, body: FileBody, keep_alive: bool) -> None:
        try:
            if not await body.send_file_to(self.send_file):
                keep_alive = False  # the disk failed: the response is cut, the record dropped
                if self.transport is not None:
                    self.transport.abort()
        finally:
            body.close()
            self.active = None
            if not keep_alive:
                self.closing = True
                if self.transport is not None:
                    self.transport.close()
        self._next()

    async def _send_hit(self, body: bytes, keep_alive: bool) -> None:
        try:
            await self.send(body)
        finally:
            self.active = None
            if not keep_alive:
                self.closing = True
                if self.transport is not None:
                    self.transport.close()
        self._next()

    def _start(self, req: Request, keep_alive: bool) -> None:
        if self.tunnels and b"upgrade" in req.fields and wants_websocket(req):
            self._open_tunnel(req)  # (Upgrade keeps a request off the fast hit: FAST_HIT_BLOCKERS)
            return
        self.active = asyncio.get_running_loop().create_task(self._serve(req, keep_alive))

    async def _serve(self, req: Request, keep_alive: bool) -> None:
        sink = self.sink_class(self, req, keep_alive)
        try:
            await serve_guarded(self.core.serve, req, sink, self.requests)
        finally:
            self.active = None
            if not sink.clean or not keep_alive:
                self.closing = True
                if self.transport is not None:
                    self.transport.close()
        self._next()

    def _next(self) -> None:
        while self.queue and not self.closing:
            req, keep_alive = self.queue.popleft()
            if not self._try_hit(req, keep_alive):
                self._start(req, keep_alive)
                break
            if self.active is not None:
                break  # a large hit is being written
        if self.pending_reject and self.active is None and not self.queue:
            self._flush_reject()
        self._update_reading()

    def close_when_idle(self) -> bool:
        """Shutdown: close the connection if no response is under way (bytes already written
        still go out first); True when it was closed or is closing."""
        if self.closing or self.transport is None:
            return True
        if self.tunnel is not None:  # a WebSocket has no end to wait for: it is closed now
            self.closing = True
            self.transport.close()
            return True
        if self.active is not None or self.queue:
            return False
        self.closing = True
        self.transport.close()
        return True

    def _reject(self, refusal: Refusal) -> None:
        """Answer a request we will not parse further, then close (nginx does the same).

        Requests that arrived before the bad one are answered first, in order.
        """
        if self.closing or self.pending_reject or self.transport is None:
            return
        status = refusal.status
        body = refusal.body
        if self.requests is not None:
            method = host = None
            if not self.in_head:  # refused once its head was parsed (429, 421, 405, ...)
                method = self.parser.get_method()
                host = next((v for k, v in self.headers if k.lower() == b"host"), None)
            self.requests.refused("h1", self.client, method, self.url, status, len(body), host)
        extra = b"".join(b"%s: %s\r\n" % field for field in refusal.fields)
        self.pending_reject = (
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n%sContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (status, reason_phrase(status), extra, len(body))
        ) + body
        if self.active is None and not self.queue:
            self._flush_reject()
        else:
            self._update_reading()

    def _flush_reject(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.pending_reject)
            self.transport.close()


class H1Sink:
    """ResponseSink for one HTTP/1.1 request: framing, Connection, backpressure."""

    __slots__ = (
        "chunked",
        "clean",
        "head_only",
        "keep_alive",
        "no_body",
        "proto",
        "req",
        "started",
        "wire",
    )

    def __init__(self, proto: H1Protocol, req: Request, keep_alive: bool) -> None:
        self.proto = proto
        self.req = req
        self.wire = req.http_version
        """The HTTP version spoken on this connection (framing, 1xx, Connection)."""
        self.keep_alive = keep_alive
        self.started = False
        self.chunked = False
        self.head_only = req.method == b"HEAD"
        self.no_body = False
        self.clean = True

    def interim(self, status: int, headers: Headers) -> None:
        transport = self.proto.transport
        if self.started or self.wire == "1.0" or transport is None or self.proto.closing:
            return
        if transport.is_closing():
            return
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status))]
        lines += [k + b": " + v + b"\r\n" for k, v in headers]
        lines.append(b"\r\n")
        transport.write(b"".join(lines))

    def start(self, status: int, reason: bytes, headers: Headers, length: int | None) -> None:
        self.started = True
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason or reason_phrase(status))]
        lines += [k + b": " + v + b"\r\n" for k, v in headers]
        self.no_body = status in NO_BODY_STATUSES or status < 200
        if not self.no_body:
            if length is not None:
                lines.append(b"Content-Length: %d\r\n" % length)
            elif not self.head_only:
                if self.wire == "1.1":
                    self.chunked = True
                    lines.append(b"Transfer-Encoding: chunked\r\n")
                else:
                    self.keep_alive = False  # close-delimited body for HTTP/1.0
        lines.append(self.proto.extra_fields)
        if not self.keep_alive:
            lines.append(b"Connection: close\r\n")
        elif self.wire == "1.0":
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        if self.proto.transport is not None:
            self.proto.transport.write(b"".join(lines))

    async def write(self, data: bytes | memoryview) -> None:
        transport = self.proto.transport
        if self.head_only or self.no_body or not data or transport is None:
            return
        if self.chunked:
            if len(data) <= WRITE_PIECE:
                transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
                if self.proto.write_paused:
                    await self.proto.drain()
                return
            transport.write(b"%x\r\n" % len(data))
            await self.proto.send(data)
            if self.proto.transport is not None and not self.proto.closing:
                transport.write(b"\r\n")
            return
        await self.proto.send(data)

    @property
    def can_send_file(self) -> bool:
        """Whether body bytes may come from a file (``send_file``): a plain socket, not TLS."""
        return not self.chunked and self.proto._file_socket() >= 0

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        """Body bytes from a file, with ``os.sendfile`` (``H1Protocol.send_file``)."""
        if self.head_only or self.no_body or count <= 0 or self.proto.transport is None:
            return
        await self.proto.send_file(fd, offset, count)

    def end(self) -> None:
        if self.chunked and self.proto.transport is not None:
            self.proto.transport.write(b"0\r\n\r\n")
        if not self.keep_alive:
            self.clean = False

    def abort(self) -> None:
        self.clean = False
        self.keep_alive = False
        if self.proto.transport is not None:
            self.proto.transport.abort()


H1Protocol.sink_class = H1Sink


async def _run(tunnel: Tunnel) -> None:
    await tunnel.run()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
