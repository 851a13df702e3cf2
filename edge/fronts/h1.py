"""The cleartext HTTP/1.1 fast front: an asyncio protocol on uvloop parsing with httptools.

Why it exists: Hypercorn's h11 front caps a node at a fraction of nginx
(DESIGN.md). This protocol answers fresh hits inside the parser callback with
one ``transport.write`` of a head prepared once per entry and second, and hands
everything else to :meth:`EdgeCore.serve` through :class:`H1Sink`.

Guarantees:
- responses leave in request order, also when pipelined requests mix hits and misses;
- request line, header block, header count and body are bounded (414, 431, 413)
  and a malformed request gets 400 with a reason and a closed connection;
- a body that cannot be completed closes the connection (never a clean short message).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from http import HTTPStatus
from typing import cast

import httptools

from edge.cache.entry import Entry
from edge.config import Config
from edge.core import EdgeCore
from edge.core.sink import serve_guarded
from edge.http.fields import Headers, is_token
from edge.http.message import Request, fields_of, normalize_host, valid_authority

LLHTTP_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH SEARCH "
    b"UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY SUBSCRIBE "
    b"UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY".split()
)
"""Request methods llhttp parses; any other token method is parsed as POST and restored after."""

log = logging.getLogger("edge.fronts.h1")

MAX_PIPELINE = 32
"""Queued requests per connection before the front stops reading from it."""


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


_HOSTS: dict[bytes, bytes] = {}
"""Raw Host value → normalised; a node sees few distinct hosts, so this stays small."""


_HTTPS_HOSTS: dict[bytes, bytes] = {}
"""The same for connections over TLS (the default port there is 443)."""


def _normal_host(host: bytes, hosts: dict[bytes, bytes] = _HOSTS) -> bytes:
    normal = normalize_host(host, b"http" if hosts is _HOSTS else b"https")
    if len(hosts) >= 4096:
        hosts.clear()
    hosts[host] = normal
    return normal


class _Reject(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


class H1Protocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, core: EdgeCore, config: Config, scheme: bytes = b"http"):
        self.core = core
        self.scheme = scheme
        """b"https" when the TLS front hands over a connection whose ALPN chose http/1.1."""
        self.hosts = _HOSTS if scheme == b"http" else _HTTPS_HOSTS
        self.clock = core.clock
        self.max_line = config.max_request_line
        self.max_head = config.max_header_bytes + config.max_request_line
        self.max_count = config.max_header_count
        self.max_body = config.max_request_body
        self.hit_fields = b"".join(k + b": " + v + b"\r\n" for k, v in core.hit_fields)
        self.extra_fields = b"Alt-Svc: %s\r\n" % config.alt_svc.encode() if config.alt_svc else b""
        """Fields every response on this listener carries (Alt-Svc advertising HTTP/3)."""
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

    def connection_lost(self, exc: Exception | None) -> None:
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

    def data_received(self, data: bytes) -> None:
        if self.closing or self.pending_reject:
            return
        self.chunk_size = len(data)
        if self.at_boundary:
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
            if isinstance(reject, _Reject):
                self._reject(reject.status, reject.why)
            else:
                log.error("request handling failed", exc_info=reject)
                self._reject(500, "internal error")
            return
        except httptools.HttpParserInvalidMethodError:
            first = data.split(b" ", 1)[0]
            if is_token(first) and first.isupper():
                self._reject(501, "method not implemented")
            else:
                self._reject(400, "invalid request method")
            return
        except httptools.HttpParserInvalidURLError:
            self._reject(400, "invalid request target")
            return
        except httptools.HttpParserUpgrade:
            # Upgrade is hop-by-hop and not offered: the request was taken as plain
            # HTTP and llhttp resumes parsing after it. CONNECT is refused earlier.
            pass
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed request: {exc}")
            return
        if self.in_head and not self.at_boundary and not self.closing:
            # This chunk ends inside a head. If the same head was already open when the
            # chunk arrived, all of it is head: count it, so a field sent forever in
            # pieces is bounded. A head that began in this chunk is bounded by the chunk.
            if mid_head and self.messages_begun == begun:
                self.head_bytes += len(data)
                if self.head_bytes > self.max_head:
                    self._reject(431, "request header block too large")
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
            raise _Reject(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if len(self.headers) > self.max_count:
            raise _Reject(431, "too many header fields")

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        headers = self.headers
        fields = {name.lower(): value for name, value in headers}
        if len(fields) != len(headers):
            # Repeated fields: rare, so checked after the fact.
            if sum(1 for name, _ in headers if name.lower() == b"host") > 1:
                raise _Reject(400, "more than one Host field")
            fields = fields_of(headers)
        if self.head_bytes + self.chunk_size > self.max_head:
            # Only a head that could be too large is measured field by field.
            size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in headers)
            if size > self.max_head:
                raise _Reject(431, "request header block too large")
        method = parser.get_method()
        if self.method_override:
            method, self.method_override = self.method_override, b""
        if method == b"CONNECT":
            raise _Reject(405, "CONNECT is not supported: this is a cache, not a tunnel")
        version = parser.get_http_version()
        target = self.url
        host = fields.get(b"host")
        if target[:1] != b"/":
            if target == b"*" and method == b"OPTIONS":
                pass
            else:
                try:
                    parsed = httptools.parse_url(target)
                except httptools.HttpParserInvalidURLError:
                    raise _Reject(400, "invalid request target") from None
                if not parsed.host:
                    raise _Reject(400, "invalid request target")
                host = parsed.host + (b":%d" % parsed.port if parsed.port else b"")
                target = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
                # RFC 9112 §3.2.2: the target's authority replaces any Host field, upstream too.
                headers = [(k, v) for k, v in headers if k.lower() != b"host"]
                headers.insert(0, (b"Host", host))
                fields[b"host"] = host
        if host is None:
            if version != "1.0":
                raise _Reject(400, "missing Host field")
            host = b""
        elif host not in self.hosts and not valid_authority(host):
            raise _Reject(400, "invalid Host field")
        content_length = fields.get(b"content-length")
        if content_length is not None and content_length.isdigit():
            if int(content_length) > self.max_body:
                raise _Reject(413, "request body too large")
            if (
                fields.get(b"expect", b"").lower() == b"100-continue"
                and version == "1.1"
                and self.active is None
                and not self.queue
                and self.transport
            ):
                # Only when no earlier response is still being written: never inside another body.
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.request = Request(
            method,
            target,
            headers,
            fields,
            scheme=self.scheme,
            host=self.hosts.get(host) or _normal_host(host, self.hosts),
            client=self.client,
            http_version=version,
        )

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.max_body:
            raise _Reject(413, "request body too large")
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

    # -- answering ---------------------------------------------------------------
    def _try_hit(self, req: Request, keep_alive: bool) -> bool:
        now = self.clock()
        entry = self.core.fresh_hit(req, now)
        if entry is None:
            return False
        transport = self.transport
        assert transport is not None
        age = int(entry.corrected_initial_age + (now - entry.response_time))
        wire = entry.wire.get("h1")
        if wire is None:
            wire = entry.wire["h1"] = [self._hit_prefix(entry), -1, b""]
        if wire[1] != age:
            # Age and the ttl in Cache-Status change once a second: rebuild then, not per hit.
            status = self.core.hit_status(int(entry.fresh_until - now))
            wire[2] = wire[0] + b"Age: %d\r\nCache-Status: %s\r\n\r\n" % (age, status)
            wire[1] = age
        if keep_alive and req.http_version == "1.1":
            head = wire[2]
        else:
            connection = b"keep-alive" if keep_alive else b"close"
            head = wire[2][:-2] + b"Connection: %s\r\n\r\n" % connection
        body = entry.body
        if req.method == b"HEAD" or not body:
            transport.write(head)
        elif len(body) <= 16384:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        if not keep_alive:
            self.closing = True
            transport.close()
        return True

    def _hit_prefix(self, entry: Entry) -> bytes:
        lines = [b"HTTP/1.1 %d %s\r\n" % (entry.status, entry.reason or _reason(entry.status))]
        for name, value in entry.headers:
            lines.append(name + b": " + value + b"\r\n")
        if entry.status not in (204, 304) and entry.status >= 200:
            lines.append(b"Content-Length: %d\r\n" % len(entry.body))
        lines.append(self.hit_fields)
        lines.append(self.extra_fields)
        return b"".join(lines)  # Age, Cache-Status and the blank line follow per second

    def _start(self, req: Request, keep_alive: bool) -> None:
        self.active = asyncio.get_running_loop().create_task(self._serve(req, keep_alive))

    async def _serve(self, req: Request, keep_alive: bool) -> None:
        sink = H1Sink(self, req, keep_alive)
        try:
            await serve_guarded(self.core.serve, req, sink)
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
        if self.pending_reject and self.active is None and not self.queue:
            self._flush_reject()
        self._update_reading()

    def _reject(self, status: int, why: str) -> None:
        """Answer a request we will not parse further, then close (nginx does the same).

        Requests that arrived before the bad one are answered first, in order.
        """
        if self.closing or self.pending_reject or self.transport is None:
            return
        body = f"{status} {_reason(status).decode()}: {why}\n".encode()
        self.pending_reject = (
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (status, _reason(status), len(body))
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
    )

    def __init__(self, proto: H1Protocol, req: Request, keep_alive: bool) -> None:
        self.proto = proto
        self.req = req
        self.keep_alive = keep_alive
        self.started = False
        self.chunked = False
        self.head_only = req.method == b"HEAD"
        self.no_body = False
        self.clean = True

    def interim(self, status: int, headers: Headers) -> None:
        transport = self.proto.transport
        if self.started or self.req.http_version == "1.0" or transport is None or self.proto.closing:
            return
        if transport.is_closing():
            return
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _reason(status))]
        lines += [k + b": " + v + b"\r\n" for k, v in headers]
        lines.append(b"\r\n")
        transport.write(b"".join(lines))

    def start(self, status: int, reason: bytes, headers: Headers, length: int | None) -> None:
        self.started = True
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason or _reason(status))]
        lines += [k + b": " + v + b"\r\n" for k, v in headers]
        self.no_body = status in (204, 304) or status < 200
        if not self.no_body:
            if length is not None:
                lines.append(b"Content-Length: %d\r\n" % length)
            elif not self.head_only:
                if self.req.http_version == "1.1":
                    self.chunked = True
                    lines.append(b"Transfer-Encoding: chunked\r\n")
                else:
                    self.keep_alive = False  # close-delimited body for HTTP/1.0
        lines.append(self.proto.extra_fields)
        if not self.keep_alive:
            lines.append(b"Connection: close\r\n")
        elif self.req.http_version == "1.0":
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        if self.proto.transport is not None:
            self.proto.transport.write(b"".join(lines))

    async def write(self, data: bytes | memoryview) -> None:
        transport = self.proto.transport
        if self.head_only or self.no_body or not data or transport is None:
            return
        if self.chunked:
            transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            transport.write(data)
        if self.proto.write_paused:
            await self.proto.drain()

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
