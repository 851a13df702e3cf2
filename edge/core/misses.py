"""Answering a miss from the key's fill: join the fetch under way or start it, then read it.

Guarantees:
- a client that joins a fill reads its response from the first byte as it arrives;
  when the response turns out not to be shareable (not storable, or its Vary does
  not match this client's request) the client goes upstream on its own and never
  holds the fill's buffer meanwhile;
- an upstream failure (error, timeout, 5xx) is answered with the stale entry being
  revalidated where ``edge.cache.stale`` allows, else with 502/504;
- only the client whose request started the fill gets its Set-Cookie;
- the client's own preconditions are answered (304) and a single Range is cut from
  the stream as it passes; several ranges on a miss get the whole 200;
- a response the node may compress reaches a client that takes a coding encoded as it
  streams (the coding a hit would get, ``edge.core.codings``), each upstream chunk flushed,
  with the encoded variant's fields (Content-Encoding, a weak ETag of its own); Range
  requests and clients taking no coding get identity.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edge.cache import stale as stale_rules
from edge.cache.encoded import encoded_fields
from edge.cache.entry import Entry
from edge.cache.key import accepts_coding, negotiated_coding, secondary_key
from edge.cache.status import Fwd
from edge.codecs import STREAM_LEVELS, StreamEncoder
from edge.core.fills import Adopted, Fills
from edge.core.forward import Forwarder
from edge.core.respond import Responder
from edge.core.sink import ResponseSink
from edge.http.cache_control import Directives
from edge.http.fields import Headers
from edge.http.message import Request
from edge.http.ranges import content_range
from edge.upstream.client import UpstreamError, UpstreamTimeout
from edge.upstream.fill import Fill, Reader

__all__ = ["Misses"]

HEAD = b"HEAD"


MAX_STREAM_ENCODERS = 64
"""Misses encoded as they stream at once, per worker: a brotli or zstd encoder holds 0.5 to
2 MiB and its CPU runs on the loop, so slow readers of new objects cannot pile them up."""


class Misses:
    """Clients reading fills."""

    def __init__(
        self,
        fills: Fills,
        responder: Responder,
        forwarder: Forwarder,
        stale_grace: float,
        clock: Callable[[], float],
    ) -> None:
        self.fills = fills
        self.responder = responder
        self.forwarder = forwarder
        self.stale_grace = stale_grace
        self.clock = clock
        self.encoding = 0
        """Readers encoding a miss as it streams now (each holds an encoder: bounded by
        ``MAX_STREAM_ENCODERS``; past it a reader gets identity, as before compressed misses)."""

    async def serve(
        self,
        req: Request,
        sink: ResponseSink,
        key: bytes,
        fwd: Fwd,
        stale: Entry | None,
        request_cc: Directives,
    ) -> None:
        """Answer ``req`` from the key's fill, joining the one under way or starting it."""
        fill = self.fills.in_flight.get(key)
        collapsed = fill is not None
        if fill is None:
            fill = self.fills.start(req, key, stale, sink.interim)
        reader = fill.attach()
        try:
            await self._read(req, sink, fill, reader, collapsed, fwd, stale, request_cc)
        finally:
            fill.detach(reader)

    async def serve_adopted(
        self, req: Request, sink: ResponseSink, key: bytes, adopted: Adopted, fwd: Fwd, request_cc: Directives
    ) -> None:
        """Make a response already received (a 200 to a Range request) the key's fill, and answer from it."""
        fill = self.fills.start(req, key, None, sink.interim, adopted)
        reader = fill.attach()
        try:
            await self._read(req, sink, fill, reader, False, fwd, None, request_cc)
        finally:
            fill.detach(reader)

    async def _read(
        self,
        req: Request,
        sink: ResponseSink,
        fill: Fill,
        reader: Reader,
        collapsed: bool,
        fwd: Fwd,
        stale: Entry | None,
        request_cc: Directives,
    ) -> None:
        """Wait for the head, then answer: stale on error where allowed, on our own when the
        fill is not ours to share, else the fill's response as it streams."""
        respond = self.responder
        try:
            await asyncio.shield(fill.head)
        except UpstreamError as exc:
            fill.detach(reader)
            now = self.clock()
            if stale is not None and stale_rules.if_error(stale, request_cc, now, self.stale_grace):
                detail = b"upstream-timeout" if isinstance(exc, UpstreamTimeout) else b"upstream-error"
                status = respond.forwarded(b"stale", detail=b"stale-if-error-" + detail)
                await respond.send_entry(req, sink, stale, now, status)
                return
            await respond.send_upstream_error(sink, req, fwd, exc)
            return
        now = self.clock()
        if (
            fill.upstream_status >= 500
            and stale is not None
            and stale_rules.if_error(stale, request_cc, now, self.stale_grace)
        ):
            fill.detach(reader)
            status = respond.forwarded(b"stale", fill.upstream_status, detail=b"stale-if-error")
            await respond.send_entry(req, sink, stale, now, status)
            return
        if collapsed and (
            fill.not_storable is not None
            or fill.vary is None
            or (
                fill.vary
                and (
                    secondary_key(req, fill.vary) != fill.secondary
                    or not accepts_coding(req, negotiated_coding(fill.headers, fill.vary))
                )
            )
        ):
            fill.detach(reader)  # not ours to read: never hold the fill's buffer meanwhile
            await self.forwarder.forward(req, sink, fwd)
            return
        not_storable = fill.not_storable
        status = respond.forwarded(
            fwd,
            fill.upstream_status,
            stored=not_storable is None,
            detail=None if not_storable is None else not_storable.encode(),
            collapsed=collapsed,
        )
        fields = fill.headers
        coding = None
        if fill.compressible and fill.status == 200 and self.encoding < MAX_STREAM_ENCODERS:
            coding = respond.compressor.stream_coding(req)
        if coding is not None:
            fields = encoded_fields(fields, coding, weak=True)
        headers = [
            *fields,
            *(() if collapsed else fill.leader_fields),
            (b"Age", b"%d" % fill.age),
            (b"Cache-Status", bytes(status)),
            (b"X-Cache", b"MISS"),
        ]
        if respond.not_modified(req, sink, fill.status, fields, headers):
            return
        if coding is not None:
            self.encoding += 1
            try:
                await self._stream_encoded(req, sink, fill, reader, headers, coding, collapsed)
            finally:
                self.encoding -= 1
            return
        await self._stream(req, sink, fill, reader, headers)

    async def _stream_encoded(
        self,
        req: Request,
        sink: ResponseSink,
        fill: Fill,
        reader: Reader,
        headers: Headers,
        coding: bytes,
        collapsed: bool,
    ) -> None:
        """The fill's response encoded in ``coding`` as it arrives, each chunk flushed (an
        event stream never waits for a block); the leader's encoded body is offered to the
        stored entry as its sibling until the configured level's is made (kept only while
        the fill keeps its own body: past ``max_object_size`` nothing is kept)."""
        sink.start(fill.status, fill.reason, headers, None)
        if req.method == HEAD:
            fill.detach(reader)
            sink.end()
            return
        encoder = StreamEncoder(coding, STREAM_LEVELS[coding])
        parts: list[bytes] | None = [] if fill.keep and not collapsed else None
        try:
            async for chunk in fill.tail(reader):
                data = encoder.encode(chunk)
                if parts is not None:
                    if fill.keep:
                        parts.append(data)
                    else:
                        parts = None  # the fill stopped keeping (too large): nothing is stored
                await sink.write(data)
        except UpstreamError:
            sink.abort()
            return
        data = encoder.finish()
        await sink.write(data)
        sink.end()
        if parts is not None and fill.stored is not None:
            parts.append(data)
            self.responder.compressor.streamed(fill.stored, coding, b"".join(parts))

    async def _stream(
        self, req: Request, sink: ResponseSink, fill: Fill, reader: Reader, headers: Headers
    ) -> None:
        """The fill's response as it arrives: whole, or the one range asked for (cut as it passes)."""
        length = fill.length
        plan = None if length is None else self.responder.range_plan(req, fill.status, length, fill.headers)
        if plan is not None and plan.unsatisfiable and length is not None:
            fill.detach(reader)
            await self.responder.send_ranges(sink, plan, fill.reason, headers, memoryview(b""), length)
            return
        if plan is not None and len(plan.ranges) > 1:
            plan = None  # several ranges on a miss: the whole 200 streams (RFC 9110 allows it)
        if plan is not None and length is not None:
            # One range on a miss: send its bytes as they pass, without waiting for the rest.
            start, end = plan.ranges[0]
            headers.append((b"Content-Range", content_range(start, end, length)))
            sink.start(206, b"Partial Content", headers, end - start + 1)
        else:
            start, end = 0, -1
            sink.start(fill.status, fill.reason, headers, length)
        if req.method == HEAD:
            fill.detach(reader)
            sink.end()
            return
        offset = 0
        try:
            async for chunk in fill.tail(reader):
                if end < 0:
                    await sink.write(chunk)
                    continue
                size = len(chunk)
                if offset + size > start:
                    await sink.write(memoryview(chunk)[max(0, start - offset) : end + 1 - offset])
                offset += size
                if offset > end:
                    break
        except UpstreamError:
            sink.abort()
            return
        sink.end()
