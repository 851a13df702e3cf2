"""The ASGI adapter Hypercorn runs for HTTP/2 and HTTP/1.1 over TLS.

It only translates: an ASGI ``http`` scope becomes one :class:`Request`, built and
checked by :mod:`edge.fronts.request` like every front's (414, 431, 413, 405, 400 with
the same text), a fresh hit is answered straight from the entry (head memoised per
entry and second, :class:`edge.fronts.hit.FieldHitHead`; body sent as the stored
``bytes`` so Hypercorn does not copy it), and everything else goes to
:meth:`EdgeCore.serve` through :class:`ASGISink`.

Why a sink that buffers the head: the core's sink calls ``start`` and ``end``
synchronously while ASGI's ``send`` is a coroutine, so the head leaves with
the first body chunk (or when the core returns), and 103 Early Hints are sent
by a task that the head always waits for, keeping the order on the wire.

Known limit (Hypercorn): ASGI has no way to reset a stream. When the
upstream body breaks after the head was sent, the adapter raises and
Hypercorn ends the HTTP/1.1 connection; on HTTP/2 the stream is left without
END_STREAM and a client sees a short body against Content-Length.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from edge.cache.entry import Entry
from edge.config import Config
from edge.core import EdgeCore
from edge.core.observe import PROTOCOL_LABELS, FrontTally
from edge.core.sink import serve_guarded
from edge.fronts.hit import FieldHitHead, lower_fields, remember
from edge.fronts.request import Refusal, RequestRules, body_too_large
from edge.http.fields import Headers
from edge.http.message import NO_BODY_STATUSES, Request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyAborted(Exception):
    """The response body could not be completed; Hypercorn must not end it cleanly."""


class EdgeASGI:
    """ASGI 3 application: one per node, shared by every TLS connection."""

    def __init__(self, core: EdgeCore, config: Config) -> None:
        self.core = core
        self.clock = core.clock
        self.rules = RequestRules(config, b"https", core.clients)
        self.max_body = config.max_request_body
        lower = [(k.lower(), v) for k, v in core.hit_fields]
        self.alt_svc: Headers = [(b"alt-svc", config.alt_svc.encode())] if config.alt_svc else []
        self.hit_fields: Headers = lower + self.alt_svc
        self.requests = core.requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    def request_of(self, scope: Scope) -> Request:
        """The scope's request, checked as every front checks one; raises :class:`Refusal`.

        Hypercorn hands HTTP/2's ``:authority`` over as the first field, ``host``.
        """
        headers: Headers = [(bytes(k), bytes(v)) for k, v in scope["headers"]]
        query = scope.get("query_string") or b""
        target = scope.get("raw_path") or scope["path"].encode()
        if query:
            target += b"?" + query
        client = scope.get("client")
        return self.rules.from_pseudo(
            scope["method"].encode(),
            target,
            None,
            headers,
            client[0] if client else "",
            scope.get("http_version", "2"),
        )

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            req = self.request_of(scope)
        except Refusal as refusal:
            head = scope["method"] == "HEAD"
            protocol = PROTOCOL_LABELS.get(scope.get("http_version", ""), "h1")
            client = scope.get("client")
            self.requests.refused(
                protocol, client[0] if client else "", scope["method"].encode(), scope.get("raw_path", b""),
                refusal.status, 0 if head else len(refusal.body),
            )  # fmt: skip
            await self.refuse(refusal, head, _has_body(scope), receive, send)
            return
        now = self.clock()
        entry = self.core.fresh_hit(req, now)
        if entry is not None:
            tally = self.requests.front(PROTOCOL_LABELS.get(req.http_version, "h1"))
            await self.send_hit(entry, req, now, send, tally)
            return
        if not await self.read_body(req, receive, send):
            return
        sink = ASGISink(send, req, self.alt_svc, "http.response.early_hint" in scope.get("extensions", {}))
        await serve_guarded(self.core.serve, req, sink, self.requests)
        await sink.finish()

    async def read_body(self, req: Request, receive: Receive, send: Send) -> bool:
        """Buffer the request body (bounded); False when a 413 was sent instead."""
        if req.method in (b"GET", b"HEAD") and b"content-length" not in req.fields:
            return True  # nothing to read; do not wait for the end-of-body message
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return False
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body:
                more = bool(message.get("more_body", False))
                refusal = body_too_large()
                self.requests.refused(
                    PROTOCOL_LABELS.get(req.http_version, "h1"), req.client, req.method, req.target,
                    refusal.status, 0 if req.method == b"HEAD" else len(refusal.body),
                )  # fmt: skip
                await self.refuse(refusal, req.method == b"HEAD", more, receive, send)
                return False
            if body:
                chunks.append(body)
            if not message.get("more_body", False):
                break
        req.body = b"".join(chunks)
        return True

    async def refuse(self, refusal: Refusal, head: bool, body: bool, receive: Receive, send: Send) -> None:
        """Answer a request the core never sees with its refusal's text (no body to HEAD).

        A request body still on its way is read to its end (and dropped) first:
        Hypercorn's HTTP/2 drops the whole connection on DATA for a stream the
        app already answered (pgjones/hypercorn#329, fix pending in #334).
        """
        if body:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                if not message.get("more_body", False):
                    break
        text = refusal.body
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(text)),
            *refusal.fields,
        ]
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else text, "more_body": False})

    async def send_hit(self, entry: Entry, req: Request, now: float, send: Send, tally: FrontTally) -> None:
        age = entry.age(now)
        memo: FieldHitHead | None = entry.wire.get("asgi")
        if memo is None:
            fields = lower_fields(entry.headers)
            memo = remember(
                entry, "asgi", FieldHitHead(entry, fields, self.hit_fields, status_field=False, tally=tally)
            )
        if memo.age != age:
            # Age and Cache-Status's ttl change once a second: rebuild the list then, not per hit.
            memo.refresh(age, self.core.hit_status(int(entry.fresh_until - now)))
        await send({"type": "http.response.start", "status": entry.status, "headers": memo.head})
        body = entry.body if req.method != b"HEAD" else b""
        memo.hits += 1
        if not body:
            memo.heads += 1
        if tally.access is not None:
            tally.logged_hit(req, memo)
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _has_body(scope: Scope) -> bool:
    """Whether a request may still be sending a body the adapter has to read (see ``refuse``)."""
    if scope["method"] not in ("GET", "HEAD"):
        return True
    return any(bytes(name).lower() == b"content-length" for name, _ in scope["headers"])


class ASGISink:
    """ResponseSink over ASGI ``send``: the head leaves with the first body bytes."""

    __slots__ = ("aborted", "alt_svc", "early_hints", "ended", "head", "head_only", "interims", "req", "send",
                 "started")  # fmt: skip

    def __init__(self, send: Send, req: Request, alt_svc: Headers, early_hints: bool) -> None:
        self.send = send
        self.req = req
        self.alt_svc = alt_svc
        self.early_hints = early_hints
        self.head: Message | None = None
        self.head_only = req.method == b"HEAD"
        self.interims: list[asyncio.Future[None]] = []
        self.started = False
        self.ended = False
        self.aborted = False

    def interim(self, status: int, headers: Headers) -> None:
        # ASGI carries only 103 Early Hints, and only their Link fields.
        if self.started or status != 103 or not self.early_hints:
            return
        links = [v for k, v in headers if k.lower() == b"link"]
        if links:
            message = {"type": "http.response.early_hint", "links": links}
            self.interims.append(asyncio.ensure_future(self.send(message)))

    def start(self, status: int, reason: bytes, headers: Headers, length: int | None) -> None:
        self.started = True
        out = [(k.lower(), v) for k, v in headers]
        if length is not None and status not in NO_BODY_STATUSES and status >= 200:
            out.append((b"content-length", b"%d" % length))
        out += self.alt_svc
        self.head = {"type": "http.response.start", "status": status, "headers": out}

    async def _flush_head(self) -> None:
        for task in self.interims:
            await task
        self.interims.clear()
        if self.head is not None:
            head, self.head = self.head, None
            await self.send(head)

    async def write(self, data: bytes | memoryview) -> None:
        if self.head is not None or self.interims:
            await self._flush_head()
        if self.head_only or not data:
            return
        await self.send({"type": "http.response.body", "body": bytes(data), "more_body": True})

    def end(self) -> None:
        self.ended = True

    def abort(self) -> None:
        self.aborted = True

    async def finish(self) -> None:
        """After the core returns: send what is pending, then end the body or refuse to."""
        await self._flush_head()
        if self.aborted:
            raise BodyAborted("upstream body incomplete")
        if self.started:
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
