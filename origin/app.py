"""The origin: a Starlette app that serves a directory of static files like a real origin.

What every response for a file carries: a strong ``ETag`` (SHA-256 of the bytes
sent), ``Last-Modified``, ``Content-Type`` by extension, ``Content-Length``,
``Cache-Control`` from ``origin.rules``, ``Accept-Ranges: bytes``, and
``Vary: Accept-Encoding`` when the file has precompressed siblings (on every
response for that file, identity, 206 and 304 included).

Decisions, in order:

1. Method: GET and HEAD only; anything else → 405 with ``Allow: GET, HEAD``.
2. Target → file (``origin._files``): malformed → 400, hidden or missing → 404,
   a directory → its ``index.html`` or 404.
3. Encoding: ``x.js.br`` / ``x.js.zst`` / ``x.js.gz`` next to ``x.js`` are sent
   with ``Content-Encoding`` when Accept-Encoding allows (``origin._http``).
   Each has its own ETag, since its bytes differ.
4. Conditionals: If-None-Match (weak comparison, lists, ``*``) wins over
   If-Modified-Since; either can yield 304.
5. Range: one ``bytes`` range → 206 (``a-b``, ``a-``, ``-n``); unsatisfiable → 416
   with ``Content-Range: bytes */len``; ``If-Range`` must match (strong ETag or
   exact date) or the full body is sent. Several ranges in one request are
   answered with 200 and the full body (allowed by RFC 9110 §14.2).

Bodies are streamed from the open file in 256 KiB chunks read off the event loop,
and streaming stops when the client disconnects.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from origin import _http
from origin._files import BadTarget, EtagCache, Root, content_type_for, hash_fd, resolve_target
from origin.rules import CacheRules

__all__ = ["AccessLogMiddleware", "OriginFiles", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CHUNK = 256 * 1024
#: Files up to this size are hashed and read on the event loop (page cache, µs);
#: larger ones go to a worker thread.
INLINE_LIMIT = 256 * 1024
ALLOW = b"GET, HEAD"

log = logging.getLogger("origin.access")


def _request_headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


async def _send_simple(
    send: Send,
    status: int,
    body: bytes,
    head: bool,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or ()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


class OriginFiles:
    """The ASGI endpoint that answers every path from files under ``root``."""

    def __init__(self, root: Path, rules: CacheRules) -> None:
        self.root = Root(root)
        self.rules = rules
        self.etags = EtagCache()

    async def _etag(self, fd: int, path: str, st: os.stat_result) -> str:
        key = EtagCache.key(path, st)
        etag = self.etags.get(key)
        if etag is None:
            if st.st_size <= INLINE_LIMIT:
                etag = hash_fd(fd, st.st_size)
            else:
                etag = await anyio.to_thread.run_sync(hash_fd, fd, st.st_size)
            self.etags.put(key, etag)
        return etag

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            await _drain_body(receive)
            await _send_simple(send, 405, b"Method Not Allowed\n", False, [(b"allow", ALLOW)])
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        raw_path = raw_path.split(b"?", 1)[0]
        if raw_path[:7].lower() == b"http://" or raw_path[:8].lower() == b"https://":
            # absolute-form target (RFC 9112 §3.2.2): keep only the path.
            after_scheme = raw_path.split(b"//", 1)[1]
            slash = after_scheme.find(b"/")
            raw_path = after_scheme[slash:] if slash >= 0 else b"/"
        try:
            resolved = resolve_target(self.root, raw_path)
        except BadTarget:
            await _send_simple(send, 400, b"Bad Request\n", head)
            return
        if resolved is None:
            await _send_simple(send, 404, b"Not Found\n", head)
            return

        request = _request_headers(scope)
        siblings: dict[str, str] = {}
        for coding, suffix in _http.ENCODING_PREFERENCE:
            sibling = self.root.real_file(resolved.path + suffix)
            if sibling is not None:
                siblings[coding] = sibling
        coding = _http.choose_encoding(request.get("accept-encoding"), siblings)
        path = siblings.get(coding, resolved.path)

        try:
            # ``path`` is a real path: O_NOFOLLOW turns a symlink swapped in since the
            # containment check into a 404 instead of following it.
            flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(path, flags)
        except OSError:
            await _send_simple(send, 404, b"Not Found\n", head)
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                await _send_simple(send, 404, b"Not Found\n", head)
                return
            etag = await self._etag(fd, path, st)
            await self._respond(
                scope, receive, send, request, resolved.rel, siblings, coding, fd, st, etag, head
            )
        finally:
            os.close(fd)

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: dict[str, str],
        rel: str,
        siblings: dict[str, str],
        coding: str,
        fd: int,
        st: os.stat_result,
        etag: str,
        head: bool,
    ) -> None:
        total = st.st_size
        last_modified = _http.format_http_date(st.st_mtime)
        validators: list[tuple[bytes, bytes]] = [
            (b"etag", etag.encode("latin-1")),
            (b"last-modified", last_modified.encode("latin-1")),
            (b"cache-control", self.rules.cache_control(rel).encode("latin-1")),
        ]
        if siblings:
            validators.append((b"vary", b"Accept-Encoding"))

        inm = request.get("if-none-match")
        ims = request.get("if-modified-since")
        if (inm is not None and _http.etag_matches_any(inm, etag)) or (
            inm is None and ims is not None and _http.not_modified_since(ims, st.st_mtime)
        ):
            await send({"type": "http.response.start", "status": 304, "headers": validators})
            await send({"type": "http.response.body", "body": b""})
            return

        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", content_type_for(rel).encode("latin-1")),
            *validators,
            (b"accept-ranges", b"bytes"),
        ]
        if coding != "identity":
            headers.append((b"content-encoding", coding.encode("latin-1")))

        start, length, status = 0, total, 200
        range_header = request.get("range")
        if range_header is not None and _http.if_range_allows(request.get("if-range"), etag, last_modified):
            try:
                byte_range = _http.parse_range(range_header, total)
            except _http.RangeNotSatisfiable:
                await _send_simple(
                    send,
                    416,
                    b"Range Not Satisfiable\n",
                    head,
                    [(b"content-range", f"bytes */{total}".encode()), *validators[:2]]
                    + ([(b"vary", b"Accept-Encoding")] if siblings else []),
                )
                return
            if byte_range is not None:
                start, length, status = byte_range.start, byte_range.length, 206
                headers.append((b"content-range", byte_range.content_range(total).encode("latin-1")))
        headers.append((b"content-length", str(length).encode("latin-1")))

        await send({"type": "http.response.start", "status": status, "headers": headers})
        if head or length == 0:
            await send({"type": "http.response.body", "body": b""})
            return
        if length <= INLINE_LIMIT:
            body = os.pread(fd, length, start)
            await send({"type": "http.response.body", "body": body})
            return
        await _stream(receive, send, fd, start, length)


async def _stream(receive: Receive, send: Send, fd: int, start: int, length: int) -> None:
    """Send ``length`` bytes from ``start`` in chunks; stop if the client goes away."""

    async with anyio.create_task_group() as tg:

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch_disconnect)
        offset, end = start, start + length
        while offset < end:
            chunk = await anyio.to_thread.run_sync(os.pread, fd, min(CHUNK, end - offset), offset)
            if not chunk:
                # The file shrank under us: we cannot keep the promised length.
                raise RuntimeError("file truncated while streaming")
            offset += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": offset < end})
        tg.cancel_scope.cancel()


def _printable(raw: bytes) -> str:
    text = raw.decode("latin-1")
    return "".join(c if 0x20 < ord(c) < 0x7F else f"\\x{ord(c):02x}" for c in text)


class AccessLogMiddleware:
    """Logs one line per HTTP request to the ``origin.access`` logger, at INFO.

    Format (the ``range=`` field only when the request had a Range header)::

        127.0.0.1:51234 "GET /app.3f9a1c.js HTTP/1.1" 206 1024 0.4ms range="bytes=0-1023"

    i.e. client, quoted request line (raw target, control bytes escaped), status,
    body bytes sent, time to last byte.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 0
        sent = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if log.isEnabledFor(logging.INFO):
                log.info(_access_line(scope, status or 500, sent, began))


def _access_line(scope: Scope, status: int, sent: int, began: float) -> str:
    client = scope.get("client")
    who = f"{client[0]}:{client[1]}" if client else "-"
    target = scope.get("raw_path") or scope.get("path", "").encode("utf-8")
    if scope.get("query_string"):
        target = target + b"?" + scope["query_string"]
    ms = (time.perf_counter() - began) * 1000
    line = (
        f'{who} "{scope["method"]} {_printable(target)} HTTP/{scope.get("http_version", "1.1")}" '
        f"{status} {sent} {ms:.1f}ms"
    )
    for name, value in scope.get("headers", ()):
        if name.lower() == b"range":
            line += f' range="{_printable(value)}"'
    return line


def create_app(
    root: Path,
    rules: list[tuple[str, str]] | None = None,
    *,
    access_log: bool = False,
) -> Starlette:
    """A Starlette app serving the files under ``root``.

    ``rules`` are (glob, Cache-Control) pairs tried before the defaults (see
    ``origin.rules``). With ``access_log`` each request is logged to the
    ``origin.access`` logger (see ``AccessLogMiddleware`` for the format).
    Raises ``NotADirectoryError`` / ``FileNotFoundError`` / ``PermissionError``
    when the root cannot be served, and ``origin.rules.RulesError`` for bad rules.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"root {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"root {root} is not a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise PermissionError(f"root {root} is not readable")
    files = OriginFiles(root, CacheRules(rules))
    middleware = [Middleware(AccessLogMiddleware)] if access_log else []
    app = Starlette(routes=[Route("/{path:path}", endpoint=files)], middleware=middleware)
    # Targets the route cannot match (absolute-form "http://host/path", a decoded
    # newline that Starlette's ".*" stops at, "*") go to the same endpoint, which
    # answers them itself (200/400/404) instead of the router's bare 404.
    app.router.default = files
    app.state.files = files
    return app


async def _drain_body(receive: Receive, limit: int = 1 << 20) -> None:
    """Read a refused request's body (bounded), so the connection can carry the next request.

    An unread body makes the server close the connection after answering; a
    client reusing it at that moment sees "disconnected without a response".
    """
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
