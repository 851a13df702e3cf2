"""Writing responses to a sink: stored entries, ranges, 304s, relayed upstream answers and errors.

Guarantees:
- every response written here carries Cache-Status (RFC 9211, this node's member)
  and X-Cache; a stored response also carries Age (RFC 9111 §4.2.3);
- a client's own If-None-Match / If-Modified-Since that matches a stored 200 gets a
  304 with the fields RFC 9110 §15.4.5 lists (``edge.cache.conditional``);
- a Range on a stored 200 gets a 206 (one part or multipart/byteranges) or a 416,
  sent as zero-copy slices of the stored body; If-Range decides whether it applies;
- an upstream response is relayed with its status and end-to-end fields; a body
  that breaks mid-way aborts the client's response, never ends it cleanly;
- upstream failures become 502 (unreachable, broken) or 504 (timeout).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from edge.cache.admission import stored_fields
from edge.cache.conditional import NOT_MODIFIED_FIELDS, is_not_modified
from edge.cache.entry import Entry
from edge.cache.status import CacheStatus, Fwd
from edge.core.codings import Compressor
from edge.core.disk import FileBody
from edge.core.sink import ResponseSink
from edge.http.dates import format_http_date
from edge.http.fields import Headers, declared_length, get_one
from edge.http.message import Request
from edge.http.ranges import (
    RangeResult,
    content_range,
    if_range_allows,
    multipart_frame,
    new_boundary,
    parse_range,
    unsatisfied_range,
)
from edge.upstream.client import UpstreamError, UpstreamResponse, UpstreamTimeout

__all__ = ["PartWriter", "Responder"]

GET, HEAD = b"GET", b"HEAD"

_REASONS = {502: b"Bad Gateway", 504: b"Gateway Timeout", 508: b"Loop Detected"}

ALLOW = b"GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"
"""What a node answers OPTIONS with when it is the final recipient: it caches GET and
HEAD and forwards the other methods."""

PartWriter = Callable[[int, int], Awaitable[bool]]
"""Writes bytes ``start``..``end`` (inclusive) of the representation to the sink; False when
they could not be had and the sink was aborted."""

NOT_MODIFIED_KEEPS = NOT_MODIFIED_FIELDS | {b"age", b"cache-status", b"x-cache", b"via"}
"""What a 304 answered from cache carries of the 200's fields."""


class Responder:
    """Sends what the core decided, on any protocol's sink."""

    def __init__(self, name: bytes, via: bytes, compressor: Compressor, clock: Callable[[], float]) -> None:
        self.name = name
        """This node's name as written in Cache-Status."""
        self.via = via
        self.compressor = compressor
        self.clock = clock

    # -- Cache-Status members ------------------------------------------------------------
    def hit(self, ttl: int | None, detail: bytes | None = None) -> CacheStatus:
        return CacheStatus(self.name, hit=True, ttl=ttl, detail=detail)

    def forwarded(
        self,
        fwd: Fwd,
        fwd_status: int | None = None,
        *,
        stored: bool = False,
        detail: bytes | None = None,
        collapsed: bool = False,
    ) -> CacheStatus:
        return CacheStatus(
            self.name, fwd=fwd, fwd_status=fwd_status, stored=stored, detail=detail, collapsed=collapsed
        )

    # -- stored responses ----------------------------------------------------------------
    async def send_entry(
        self, req: Request, sink: ResponseSink, entry: Entry, now: float, status: CacheStatus
    ) -> None:
        """A stored response (the coding the client takes), as a 200, 304, 206 or 416."""
        entry = self.compressor.representation(entry, req)
        headers = [
            *entry.headers,
            (b"Age", b"%d" % entry.age(now)),
            (b"Cache-Status", bytes(status)),
            (b"X-Cache", b"HIT"),
        ]
        if self.not_modified(req, sink, entry.status, entry.headers, headers):
            return
        body = entry.body
        plan = self.range_plan(req, entry.status, len(body), entry.headers)
        if plan is not None:
            await self.send_ranges(sink, plan, entry.reason, headers, memoryview(body), len(body))
            return
        sink.start(entry.status, entry.reason, headers, len(body))
        if req.method != HEAD:
            await sink.write(body)
        sink.end()

    async def send_file_entry(
        self, req: Request, sink: ResponseSink, entry: Entry, body: FileBody, now: float, status: CacheStatus
    ) -> None:
        """A stored response whose body is in a file (``entry`` has none; ``body`` is sent by
        ``FileBody.send``: sendfile or pieces), as a 200, 304, 206 or 416, in identity (disk
        records have no compressed siblings). A body the disk fails to give cuts the response."""
        headers = [
            *entry.headers,
            (b"Age", b"%d" % entry.age(now)),
            (b"Cache-Status", bytes(status)),
            (b"X-Cache", b"HIT"),
        ]
        if self.not_modified(req, sink, entry.status, entry.headers, headers):
            return
        length = body.length
        plan = self.range_plan(req, entry.status, length, entry.headers)

        async def write(start: int, end: int) -> bool:
            if await body.send(sink, start, end):
                return True
            sink.abort()
            return False

        if plan is not None:
            await self.send_parts(sink, plan, headers, length, write)
            return
        sink.start(entry.status, entry.reason, headers, length)
        if req.method == HEAD or not length or await write(0, length - 1):
            sink.end()

    def range_plan(self, req: Request, status: int, length: int, fields: Headers) -> RangeResult | None:
        """The ranges to send instead of the whole 200, or None to send it whole."""
        value = req.fields.get(b"range")
        if value is None or status != 200 or req.method != GET:
            return None
        if_range = req.fields.get(b"if-range")
        if if_range is not None and not if_range_allows(
            if_range,
            get_one(fields, b"etag"),
            get_one(fields, b"last-modified"),
            date=get_one(fields, b"date"),
        ):
            return None
        result = parse_range(value, length)
        return None if result.ignore else result

    async def send_ranges(
        self,
        sink: ResponseSink,
        plan: RangeResult,
        reason: bytes,
        headers: Headers,
        body: memoryview,
        length: int,
    ) -> None:
        """206 (one part or multipart/byteranges) or 416, as zero-copy slices of ``body``."""

        async def write(start: int, end: int) -> bool:
            await sink.write(body[start : end + 1])
            return True

        await self.send_parts(sink, plan, headers, length, write)

    async def send_parts(
        self, sink: ResponseSink, plan: RangeResult, headers: Headers, length: int, write: PartWriter
    ) -> None:
        """206 (one part or multipart/byteranges) or 416; ``write`` sends each range's bytes.

        The one writer of both framings, whether the bytes are in memory (a stored body) or
        fetched as they are needed (the slices of a large object).
        """
        if plan.unsatisfiable:
            fields = [(k, v) for k, v in headers if k.lower() != b"content-type"]
            sink.start(
                416, b"Range Not Satisfiable", [*fields, (b"Content-Range", unsatisfied_range(length))], 0
            )
            sink.end()
            return
        if len(plan.ranges) == 1:
            start, end = plan.ranges[0]
            sink.start(
                206,
                b"Partial Content",
                [*headers, (b"Content-Range", content_range(start, end, length))],
                end - start + 1,
            )
            if await write(start, end):
                sink.end()
            return
        frame = multipart_frame(plan.ranges, length, get_one(headers, b"content-type"), new_boundary())
        fields = [(k, v) for k, v in headers if k.lower() != b"content-type"]
        fields.append((b"Content-Type", frame.content_type))
        sink.start(206, b"Partial Content", fields, frame.length)
        for head, (start, end) in zip(frame.heads, frame.ranges, strict=True):
            await sink.write(head)
            if not await write(start, end):
                return
        await sink.write(frame.closing)
        sink.end()

    def not_modified(
        self, req: Request, sink: ResponseSink, status: int, stored: Headers, out: Headers
    ) -> bool:
        """Answer 304 when the client's own validator matches a 200; True if it did."""
        if status != 200 or (b"if-none-match" not in req.fields and b"if-modified-since" not in req.fields):
            return False
        if not is_not_modified(req, get_one(stored, b"etag"), get_one(stored, b"last-modified")):
            return False
        sink.start(304, b"Not Modified", [(k, v) for k, v in out if k.lower() in NOT_MODIFIED_KEEPS], None)
        sink.end()
        return True

    # -- upstream answers ----------------------------------------------------------------
    async def relay(
        self, req: Request, sink: ResponseSink, resp: UpstreamResponse, fwd: Fwd, detail: bytes | None = None
    ) -> None:
        """Pass an upstream response through unchanged (apart from hop-by-hop fields); nothing is stored."""
        try:
            fields, _ = stored_fields(resp.headers, self.clock(), self.via)
            status = self.forwarded(fwd, resp.status, detail=detail)
            fields += [(b"Cache-Status", bytes(status)), (b"X-Cache", b"MISS")]
            sink.start(resp.status, resp.reason, fields, declared_length(resp.headers))
            if req.method != HEAD:
                try:
                    async for chunk in resp.chunks():
                        await sink.write(chunk)
                except UpstreamError:
                    sink.abort()
                    return
            sink.end()
        finally:
            resp.close()

    async def send_upstream_error(
        self, sink: ResponseSink, req: Request, fwd: Fwd, exc: UpstreamError
    ) -> None:
        """504 when the upstream timed out, 502 when it could not be reached or broke the response."""
        if isinstance(exc, UpstreamTimeout):
            await self.send_error(sink, req, 504, self.forwarded(fwd, detail=b"upstream-timeout"), str(exc))
        else:
            await self.send_error(sink, req, 502, self.forwarded(fwd, detail=b"upstream-error"), str(exc))

    async def send_loop_detected(self, sink: ResponseSink, req: Request) -> None:
        """508: the request's CDN-Loop shows it already passed this node; it goes no further."""
        await self.send_error(
            sink, req, 508, self.forwarded(b"bypass", detail=b"loop"), "this request already passed this node"
        )

    async def send_final_options(self, sink: ResponseSink, req: Request) -> None:
        """OPTIONS or TRACE with ``Max-Forwards: 0``: answered here (RFC 9110 §7.6.2), never forwarded.

        Health probes between tiers use ``OPTIONS *`` this way: the answer says this node
        is up without involving the ones above it. TRACE is not echoed (405).
        """
        status = bytes(self.forwarded(b"method", detail=b"max-forwards"))
        headers = [(b"Allow", ALLOW), (b"Cache-Status", status), (b"Date", format_http_date(self.clock()))]
        if req.method == b"OPTIONS":
            sink.start(200, b"OK", headers, 0)
        else:
            sink.start(405, b"Method Not Allowed", headers, 0)
        sink.end()

    async def send_error(
        self, sink: ResponseSink, req: Request, code: int, status: CacheStatus, why: str
    ) -> None:
        """A short text error the node itself makes (never stored)."""
        body = f"{code} {_REASONS[code].decode()}: {why}\n".encode()
        headers = [
            (b"Content-Type", b"text/plain; charset=utf-8"),
            (b"Cache-Control", b"no-store"),
            (b"Date", format_http_date(self.clock())),
            (b"Cache-Status", bytes(status)),
            (b"X-Cache", b"MISS"),
        ]
        sink.start(code, _REASONS[code], headers, len(body))
        if req.method != HEAD:
            await sink.write(body)
        sink.end()
