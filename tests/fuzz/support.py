"""What the fuzz tests share: bounded hypothesis settings, a node on a loop of its own, strict readers.

Settings: every fuzz test is derandomized (the same examples on every run, so CI is
deterministic) and uses no example database. ``FUZZ_SCALE=N`` multiplies every
``max_examples`` for a longer local run; ``FUZZ_SEED=N`` switches derandomization off and
seeds hypothesis with N instead, to draw other examples (each seed reproducible).

The live tests (HTTP/1.1 and HTTP/2 fronts) share one node per module: a scripted origin
and an edge running on an event loop in a background thread (:class:`NodeThread`), so the
tests themselves are plain synchronous hypothesis tests with blocking sockets and hard
timeouts, and the node lives through every example (which is the point: after any input,
it must keep serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

from edge.http.fields import is_token

T = TypeVar("T")

SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1") or 1))
SEED = os.environ.get("FUZZ_SEED")


def fuzz_settings(max_examples: int) -> settings:
    """Bounded, deterministic, database-less settings for one fuzz test."""
    return settings(
        max_examples=max_examples * SCALE,
        deadline=None,
        derandomize=SEED is None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=True,
    )


def seeded(test: Callable[..., Any]) -> Callable[..., Any]:
    """Apply ``@seed(FUZZ_SEED)`` when the variable is set (see the module docstring)."""
    if SEED is None:
        return test
    from hypothesis import seed

    return seed(int(SEED))(test)


# -- a node on a loop of its own -----------------------------------------------------------------


class ErrorRecords(logging.Handler):
    """ERROR (and worse) records logged by the node's modules meanwhile."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(f"{r.name}: {r.getMessage()}" for r in self.records)


class NodeThread:
    """An asyncio loop in a daemon thread: start servers on it, run coroutines on it, stop it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_error)
        self.loop_errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="fuzz-node", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        loop.default_exception_handler(context)
        protocol = context.get("protocol")
        if protocol is not None and type(protocol).__module__.startswith("tests."):
            return  # the scripted origin's own parser refusing what the edge relayed: not the node
        self.loop_errors.append(str(context.get("message")) + ": " + repr(context.get("exception")))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        async def wrapper() -> T:
            return await fn()

        return self.run(wrapper(), timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


# -- blocking clients with hard bounds ---------------------------------------------------------------

IO_BOUND = 5.0
"""Seconds the node may take to answer or close after an input; more is a hang."""


class Hang(AssertionError):
    """The node neither answered nor closed within :data:`IO_BOUND`."""


def read_until_closed(sock: socket.socket, bound: float = IO_BOUND) -> tuple[bytes, str]:
    """Everything the peer sends until it closes: (bytes, ``"eof"`` or ``"reset"``); Hang past ``bound``."""
    end = time.monotonic() + bound
    chunks = []
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise Hang(f"not closed within {bound:g} s; received {b''.join(chunks)[:300]!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return b"".join(chunks), "reset"
        if not chunk:
            return b"".join(chunks), "eof"
        chunks.append(chunk)


IDLE = 0.1
"""Seconds of silence after which a connection the node keeps open is half-closed by the client."""


def read_then_half_close(
    sock: socket.socket, idle: float = IDLE, bound: float = IO_BOUND
) -> tuple[bytes, str]:
    """Read until the node closes; once it has been silent for ``idle`` seconds with the
    connection open (a keep-alive, or a request it waits to see the rest of), half-close
    and read until it closes. Hang when either phase passes ``bound``.

    Not half-closing at once matters: the HTTP/1.1 front takes a client's EOF as the end of
    the connection, so a response still being fetched (a miss) would never be seen."""
    end = time.monotonic() + bound
    chunks = []
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise Hang(f"still sending after {bound:g} s; received {b''.join(chunks)[:300]!r}")
        sock.settimeout(min(idle, left))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except (ConnectionResetError, BrokenPipeError):
            return b"".join(chunks), "reset"
        if not chunk:
            return b"".join(chunks), "eof"
        chunks.append(chunk)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    rest, how = read_until_closed(sock, bound)
    return b"".join(chunks) + rest, how


def send_all(sock: socket.socket, data: bytes) -> bool:
    """Send ``data``; False when the peer closed or reset meanwhile (it may refuse early)."""
    sock.settimeout(IO_BOUND)
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        return False
    except TimeoutError as exc:
        raise Hang("the node stopped reading for 5 s") from exc
    return True


# -- HTTP/1.1 responses, strictly ------------------------------------------------------------------------

_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [\t\x20-\x7e\x80-\xff]*")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")


class Malformed(AssertionError):
    """The node sent bytes that are not a sequence of well-formed HTTP/1.1 responses."""


def h1_responses(data: bytes, complete: bool) -> list[tuple[int, dict[bytes, list[bytes]], bytes]]:
    """Parse ``data`` as consecutive HTTP/1.1 responses (no response to HEAD among them).

    ``complete``: the connection ended cleanly, so every response must be whole; otherwise
    (a reset, which may drop bytes the peer sent before it) the last may be cut short.
    Interim (1xx) responses are included. Raises :class:`Malformed`.
    """
    out: list[tuple[int, dict[bytes, list[bytes]], bytes]] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            if complete:
                raise Malformed(f"response head without its end: {data[pos : pos + 300]!r}")
            return out
        lines = data[pos:end].split(b"\r\n")
        m = _STATUS_LINE.fullmatch(lines[0])
        if m is None:
            raise Malformed(f"bad status line {lines[0][:200]!r}")
        status = int(m.group(1))
        fields: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not is_token(name) or _BAD_VALUE.search(value):
                raise Malformed(f"bad field line {line[:200]!r}")
            fields.setdefault(name.lower(), []).append(value.strip(b" \t"))
        pos = end + 4
        if 100 <= status < 200 or status in (204, 304):
            out.append((status, fields, b""))
            continue
        if b"transfer-encoding" in fields:
            if fields[b"transfer-encoding"] != [b"chunked"] or b"content-length" in fields:
                raise Malformed(f"framing fields {fields}")
            body = bytearray()
            while True:
                line_end = data.find(b"\r\n", pos)
                if line_end < 0:
                    if complete:
                        raise Malformed("chunk size line cut short")
                    return out
                size_text = data[pos:line_end].split(b";")[0].strip()
                if not re.fullmatch(rb"[0-9a-fA-F]{1,16}", size_text):
                    raise Malformed(f"bad chunk size {size_text[:50]!r}")
                size = int(size_text, 16)
                pos = line_end + 2
                if size == 0:
                    trailer_end = data.find(b"\r\n\r\n", pos - 2)
                    if trailer_end < 0:
                        if complete:
                            raise Malformed("last chunk without its end")
                        return out
                    pos = trailer_end + 4
                    break
                if pos + size + 2 > len(data):
                    if complete:
                        raise Malformed("chunk cut short")
                    return out
                body += data[pos : pos + size]
                if data[pos + size : pos + size + 2] != b"\r\n":
                    raise Malformed("chunk data not followed by CRLF")
                pos += size + 2
            out.append((status, fields, bytes(body)))
            continue
        lengths = fields.get(b"content-length")
        if lengths is None:
            out.append((status, fields, data[pos:]))  # close-delimited
            return out
        if len(lengths) != 1 or not lengths[0].isdigit():
            raise Malformed(f"Content-Length {lengths}")
        size = int(lengths[0])
        if pos + size > len(data):
            if complete:
                raise Malformed(f"body cut short: {len(data) - pos} of {size} bytes")
            return out
        out.append((status, fields, data[pos : pos + size]))
        pos += size
    return out


# -- HTTP/2 frames, strictly --------------------------------------------------------------------------------

FRAME_TYPES = {
    0x0: "DATA",
    0x1: "HEADERS",
    0x2: "PRIORITY",
    0x3: "RST_STREAM",
    0x4: "SETTINGS",
    0x5: "PUSH_PROMISE",
    0x6: "PING",
    0x7: "GOAWAY",
    0x8: "WINDOW_UPDATE",
    0x9: "CONTINUATION",
}


def h2_frames(data: bytes, complete: bool) -> list[tuple[int, int, int, bytes]]:
    """Split ``data`` into frames (type, flags, stream id, payload); Malformed when one is not
    a frame a server may send, or (``complete``) the bytes end inside a frame."""
    frames = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 9:
            if complete:
                raise Malformed("bytes after the last frame")
            break
        length = int.from_bytes(data[pos : pos + 3], "big")
        kind, flags = data[pos + 3], data[pos + 4]
        stream = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        if pos + 9 + length > len(data):
            if complete:
                raise Malformed(f"frame cut short: {FRAME_TYPES.get(kind, kind)} of {length} bytes")
            break
        if kind not in FRAME_TYPES or kind == 0x5:
            raise Malformed(f"the server sent frame type {kind:#x}")
        if length > 16384:
            raise Malformed(f"a {length}-byte frame above the client's SETTINGS_MAX_FRAME_SIZE")
        frames.append((kind, flags, stream, data[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    return frames


def h2_responses(frames: list[tuple[int, int, int, bytes]]) -> dict[int, list[tuple[bytes, bytes]]]:
    """Decode every field block the server sent (HPACK, in order, one decoder as on a
    connection); each stream's first block must start with a valid ``:status``. Returns
    the first block per stream. Malformed otherwise."""
    import hpack

    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 65536
    heads: dict[int, list[tuple[bytes, bytes]]] = {}
    block = b""
    block_stream: int | None = None
    for kind, flags, stream, payload in frames:
        if block_stream is not None and (kind != 0x9 or stream != block_stream):
            raise Malformed("a field block interrupted before END_HEADERS")
        if kind == 0x1:
            if stream == 0:
                raise Malformed("HEADERS on stream 0")
            pad = 0
            body = payload
            if flags & 0x8:
                pad = body[0]
                body = body[1:]
            if flags & 0x20:
                body = body[5:]
            if pad > len(body):
                raise Malformed("padding longer than the frame")
            block = body[: len(body) - pad]
            block_stream = stream
        elif kind == 0x9:
            if block_stream is None:
                raise Malformed("CONTINUATION without HEADERS")
            block += payload
        else:
            continue
        if flags & 0x4:  # END_HEADERS
            try:
                fields = decoder.decode(block, raw=True)
            except Exception as exc:  # any HPACK failure is a malformed block
                raise Malformed(f"HPACK: {exc!r}") from exc
            if stream not in heads:
                if not fields or fields[0][0] != b":status" or not re.fullmatch(rb"[1-5]\d\d", fields[0][1]):
                    raise Malformed(f"response without a leading :status: {fields[:3]}")
                if any(name.startswith(b":") for name, _ in fields[1:]):
                    raise Malformed(f"a second pseudo-field: {fields}")
                heads[stream] = fields
            block_stream = None
    return heads


def tls_context(cafile: str, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(alpn)
    return ctx


class TLSPipe:
    """TLS over a plain socket through memory BIOs, so the client can half-close TCP
    (``shutdown(SHUT_WR)``) and still read what the server sends after it."""

    def __init__(self, port: int, ctx: ssl.SSLContext, bound: float = IO_BOUND) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=bound)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.bound = bound
        end = time.monotonic() + bound
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                if time.monotonic() > end:
                    raise Hang("TLS handshake") from None
                self.sock.settimeout(max(0.01, end - time.monotonic()))
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed during the TLS handshake") from None
                self.incoming.write(data)
        self._flush()

    @property
    def alpn(self) -> str | None:
        return self.tls.selected_alpn_protocol()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def send(self, data: bytes) -> bool:
        """Encrypt and send; False when the server closed or reset meanwhile."""
        try:
            self.tls.write(data)
        except ssl.SSLError:
            return False
        return send_all(self.sock, self.outgoing.read())

    def half_close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def read_until_closed(self, bound: float | None = None) -> tuple[bytes, str]:
        """Plaintext until the server closes: (bytes, ``"eof"`` / ``"close_notify"`` / ``"reset"``)."""
        end = time.monotonic() + (bound or self.bound)
        out = bytearray()
        while True:
            out += self._drain()
            if self.tls_closed:
                return bytes(out), "close_notify"
            left = end - time.monotonic()
            if left <= 0:
                raise Hang(f"not closed within {bound or self.bound:g} s; received {bytes(out)[:300]!r}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return bytes(out), "reset"
            if not data:
                return bytes(out) + self._drain(), "eof"
            self.incoming.write(data)

    def read_for(self, idle: float) -> tuple[bytes, str]:
        """Plaintext until the server has been silent for ``idle`` seconds (``"open"``) or
        closes (``"eof"`` / ``"close_notify"`` / ``"reset"``); Hang if it keeps sending past the bound."""
        end = time.monotonic() + self.bound
        out = bytearray(self._drain())
        while not self.tls_closed:
            if time.monotonic() > end:
                raise Hang(f"still sending after {self.bound:g} s")
            self.sock.settimeout(idle)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return bytes(out), "open"
            except (ConnectionResetError, BrokenPipeError):
                return bytes(out), "reset"
            if not data:
                return bytes(out) + self._drain(), "eof"
            self.incoming.write(data)
            out += self._drain()
        return bytes(out), "close_notify"

    def read_some(self, timeout: float) -> tuple[bytes, str]:
        """The first plaintext to arrive within ``timeout`` (``"open"``), or how the server closed."""
        end = time.monotonic() + timeout
        while not self.tls_closed:
            out = self._drain()
            if out:
                return out, "open"
            left = end - time.monotonic()
            if left <= 0:
                return b"", "open"
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return b"", "open"
            except (ConnectionResetError, BrokenPipeError):
                return b"", "reset"
            if not data:
                return self._drain(), "eof"
            self.incoming.write(data)
        return b"", "close_notify"

    tls_closed = False

    def _drain(self) -> bytes:
        out = bytearray()
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                return bytes(out)
            except ssl.SSLZeroReturnError:
                self.tls_closed = True
                return bytes(out)
            except ssl.SSLError:
                # a record the server cut off by closing: the bytes before it count
                self.tls_closed = True
                return bytes(out)
            if not chunk:
                self.tls_closed = True
                return bytes(out)
            out += chunk

    def close(self) -> None:
        self.sock.close()
