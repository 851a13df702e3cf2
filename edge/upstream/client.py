"""A pooled HTTP/1.1 client for the upstream (shield or origin).

Why our own: a transparent proxy must relay every status (599 included),
interim 1xx responses such as 103 Early Hints, repeated header lines and the
exact body bytes, and must tell a complete body from a truncated one. General
clients hide some of that. Parsing is llhttp through httptools, never by hand.

Guarantees:
- connect, head and per-read timeouts are bounded and raise UpstreamTimeout;
- a response is ``complete`` only when the parser saw its end (or a clean EOF
  for a close-delimited body); a reset mid-body raises UpstreamError from the
  body iterator, so callers never mistake a truncated body for a whole one;
- an idle pooled connection that the upstream closed is retried once on a
  fresh connection for requests that had not been answered at all.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from edge.http.fields import Headers, read_until_close
from edge.http.message import NO_BODY_STATUSES

HIGH_WATER = 1 << 20
"""Bytes buffered from upstream before the connection stops reading (backpressure)."""


_FIELD_NAMES: dict[bytes, bytes] = {}
"""One bytes object per response field name seen (as spelled): stored entries share them
instead of holding a copy each (about 300 bytes per cached object for a typical origin)."""
_FIELD_NAMES_LIMIT = 2048
"""Distinct names kept; names past it are stored as they come (an origin inventing names)."""


class UpstreamError(Exception):
    """The upstream could not be reached or broke the response."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the configured time."""


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where misses go: host and port of the shield or origin, or a Unix socket (a sibling worker)."""

    host: str
    port: int
    host_header: bytes
    unix: str = ""
    """Path of a Unix stream socket to connect to instead of host and port."""

    @classmethod
    def unix_socket(cls, path: str) -> UpstreamTarget:
        return cls("localhost", 0, b"localhost", path)

    def __str__(self) -> str:
        return f"unix:{self.unix}" if self.unix else f"{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str) -> UpstreamTarget:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"upstream URL must be http://HOST[:PORT], got {url!r}")
        if not parts.hostname:
            raise ValueError(f"upstream URL has no host: {url!r}")
        port = parts.port or 80
        return cls(parts.hostname, port, parts.netloc.encode("idna"))


InterimCallback = Callable[[int, Headers], None]


class UpstreamResponse:
    """Head of an upstream response; the body is read with :meth:`chunks`."""

    def __init__(self, conn: _Connection, status: int, reason: bytes, headers: Headers) -> None:
        self._conn = conn
        self.status = status
        self.reason = reason
        self.headers = headers
        """Fields as received, hop-by-hop ones included (callers strip them)."""

    @property
    def close_delimited(self) -> bool:
        """The body ends when the upstream closes the connection (RFC 9112 §6.3 items 4 and 7)."""
        return self._conn.eof_delimited

    @property
    def transfer_coded(self) -> bool:
        """The upstream applied a transfer coding other than chunked (RFC 9112 §6.3 item 4):
        the body is read until the close and its bytes are still in that coding."""
        return self._conn.transfer_coded

    @property
    def complete(self) -> bool:
        """True once the whole body has been received."""
        return self._conn.body_done

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield body chunks as they arrive; raises UpstreamError on truncation."""
        async for chunk in self._conn.body_chunks():
            yield chunk

    def close(self) -> None:
        """Abandon the response; the connection is not reused unless the body finished."""
        self._conn.release()


class _Connection(asyncio.Protocol):
    """One upstream connection carrying one request at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reset_for_request(None, None)

    # -- lifecycle ----------------------------------------------------------
    def reset_for_request(self, method: bytes | None, on_interim: InterimCallback | None) -> None:
        self.released = False
        self.parser = httptools.HttpResponseParser(self)
        self.method = method
        self.on_interim = on_interim
        self.status = 0
        self.reason = b""
        self.headers: Headers = []
        self.head: asyncio.Future[None] | None = None
        self.got_bytes = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.body_done = False
        self.eof_delimited = False
        self.transfer_coded = False
        self.error: UpstreamError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.reading_paused = False
        self.keep_alive = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head is not None and not self.head.done():
            err = UpstreamError(f"upstream closed the connection before answering ({exc or 'EOF'})")
            err.retryable = not self.got_bytes  # type: ignore[attr-defined]
            self.head.set_exception(err)
        elif self.head is not None and not self.body_done:
            if self.eof_delimited and exc is None:
                self.body_done = True
            else:
                self.error = UpstreamError("upstream connection lost mid-body")
        self._wake()

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self.head is None:
            # Bytes on an idle connection: the upstream is confused; drop the connection.
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"invalid response from upstream: {exc}"))
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError("upstream switched protocols"))

    def _fail(self, err: UpstreamError) -> None:
        if self.head is not None and not self.head.done():
            self.head.set_exception(err)
        else:
            self.error = err
        self.abort()
        self._wake()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def release(self) -> None:
        """Give the connection back (body complete) or close it; idempotent per request."""
        if self.released:
            return
        self.released = True
        if self.body_done and self.keep_alive and not self.closed and self.error is None:
            self.head = None  # idle: bytes arriving now are unsolicited and close the connection
            self.pool._return(self)
        else:
            self.abort()

    # -- httptools callbacks -------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        known = _FIELD_NAMES.get(name)
        if known is None and len(_FIELD_NAMES) < _FIELD_NAMES_LIMIT:
            _FIELD_NAMES[name] = known = name
        self.headers.append((known or name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            if self.on_interim is not None:
                try:
                    self.on_interim(status, self.headers)
                except Exception:  # the client that wanted it is gone; the response goes on
                    self.on_interim = None
            self.headers = []
            self.reason = b""
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        if self.method == b"HEAD" or status in NO_BODY_STATUSES:
            self.body_done = True
        else:
            # llhttp reads such a body until the close too; EOF is then its end, not a loss.
            self.eof_delimited, self.transfer_coded = read_until_close(self.headers)
        assert self.head is not None
        if not self.head.done():
            self.head.set_result(None)
        if self.method == b"HEAD":
            # llhttp cannot be told that a HEAD response has no body; start afresh.
            self.parser = httptools.HttpResponseParser(self)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status == 0:
            return  # end of an interim 1xx message
        self.body_done = True
        self._wake()

    # -- reading -------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def body_chunks(self) -> AsyncIterator[bytes]:
        read_timeout = self.pool.read_timeout
        while True:
            while self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self.reading_paused and self.buffered < HIGH_WATER // 2 and self.transport:
                    self.reading_paused = False
                    self.transport.resume_reading()
                yield chunk
            if self.error is not None:
                raise self.error
            if self.body_done:
                self.release()
                return
            if self.closed:
                raise UpstreamError("upstream connection lost mid-body")
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(read_timeout):
                    await self.waiter
            except TimeoutError:
                self.abort()
                raise UpstreamTimeout(f"upstream sent nothing for {read_timeout:g}s") from None
            finally:
                self.waiter = None


class UpstreamPool:
    """Keep-alive connections to one upstream, reused across requests."""

    def __init__(
        self,
        target: UpstreamTarget,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_idle: int = 64,
    ) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self.closed = False
        """Closed by its router's retirement: connections given back are closed, not kept."""
        self._idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        target = self.target
        try:
            async with asyncio.timeout(self.connect_timeout):
                if target.unix:
                    _, conn = await loop.create_unix_connection(lambda: _Connection(self), target.unix)
                else:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(self), target.host, target.port
                    )
        except TimeoutError:
            timeout = UpstreamTimeout(f"connect to {target} timed out")
            timeout.connect = True  # type: ignore[attr-defined]  # nothing was sent: safe to try elsewhere
            raise timeout from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect to {target}: {exc.strerror or exc}") from None
        return conn

    def _return(self, conn: _Connection) -> None:
        if self.closed:  # a router retired by a reload: a response that ended late closes its connection
            conn.abort()
            return
        if len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.abort()

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes = b"",
        on_interim: InterimCallback | None = None,
    ) -> UpstreamResponse:
        """Send a request and wait for the response head (interim 1xx go to ``on_interim``)."""
        head = _serialise(method, target, headers, body)
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                continue
            try:
                return await self._exchange(conn, method, head, body, on_interim)
            except UpstreamError as exc:
                if not getattr(exc, "retryable", False):
                    raise
                # The idle connection was already closed by the upstream: try a fresh one.
                break
        conn = await self._connect()
        return await self._exchange(conn, method, head, body, on_interim)

    async def _exchange(
        self,
        conn: _Connection,
        method: bytes,
        head: bytes,
        body: bytes,
        on_interim: InterimCallback | None,
    ) -> UpstreamResponse:
        conn.reset_for_request(method, on_interim)
        conn.head = asyncio.get_running_loop().create_future()
        assert conn.transport is not None
        if body and len(body) > 65536:
            conn.transport.writelines([head, body])
        else:
            conn.transport.write(head + body if body else head)
        try:
            async with asyncio.timeout(self.read_timeout):
                await conn.head
        except TimeoutError:
            conn.abort()
            raise UpstreamTimeout(f"upstream sent no response head within {self.read_timeout:g}s") from None
        except BaseException:
            conn.abort()  # the caller went away (cancelled): the connection is in an unknown state
            raise
        return UpstreamResponse(conn, conn.status, conn.reason, conn.headers)

    def close(self) -> None:
        """Close the idle connections; one still carrying a response closes when it ends."""
        self.closed = True
        for conn in self._idle:
            conn.abort()
        self._idle.clear()


def _serialise(method: bytes, target: bytes, headers: Headers, body: bytes) -> bytes:
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    if body or method in (b"POST", b"PUT", b"PATCH"):
        lines += (b"Content-Length: ", str(len(body)).encode(), b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)
