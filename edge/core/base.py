"""State every part of the core shares, and the response helpers they all use.

Guarantees:
- a body is stored only when it arrived whole;
- every response built here carries Age, Cache-Status (RFC 9211) and X-Cache;
- upstream failures become 502 (unreachable, broken) or 504 (timeout).
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import urlsplit

import cachetools

from edge.cache.conditional import NOT_MODIFIED_FIELDS, is_not_modified
from edge.cache.entry import Entry, Variants
from edge.cache.freshness import Policy, freshness_policy
from edge.cache.key import primary_key, secondary_key
from edge.cache.store import Store, make_store
from edge.config import Config, parse_ttl_rules
from edge.core.codings import Compressor
from edge.core.sink import ResponseSink
from edge.http.dates import format_http_date, parse_http_date
from edge.http.fields import HOP_BY_HOP, Headers, connection_tokens, get_all, get_one
from edge.http.message import Request
from edge.http.ranges import (
    RangeResult,
    content_range,
    if_range_allows,
    multipart_byteranges,
    multipart_length,
    new_boundary,
    parse_range,
    unsatisfied_range,
)
from edge.upstream.client import (
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTarget,
    UpstreamTimeout,
)
from edge.upstream.fill import Fill

GET, HEAD = b"GET", b"HEAD"
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})

SLOW_PATH_FIELDS = frozenset(
    {
        b"cache-control",
        b"pragma",
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"range",
    }
)
"""Request fields whose rules live in :meth:`EdgeCore.serve`; their presence skips the fast hit."""

FILL_DROPPED_FIELDS = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range", b"range"}
)
"""Client preconditions and ranges are answered here; a fill wants the whole 200 to store."""

NOT_STORED_FIELDS = HOP_BY_HOP | {b"content-length", b"age"}

RESPONSE_DEPENDENT = frozenset({"private", "no-store", "set-cookie", "vary-star", "no-freshness"})
"""Reasons that hold for every client asking for the key, so the key becomes hit-for-pass."""

MAX_VARIANTS = 32
NEVER = float("-inf")


class CoreBase:
    """One node's store, upstream pool, fills and settings."""

    def __init__(
        self,
        config: Config,
        store: Store | None = None,
        pool: UpstreamPool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store: Store = store if store is not None else make_store(config.cache_size)
        target = UpstreamTarget.from_url(config.upstream)
        self.pool = pool or UpstreamPool(
            target, connect_timeout=config.connect_timeout, read_timeout=config.read_timeout
        )
        self.upstream_host = (config.upstream_host or "").encode() or None
        self.default_host = target.host_header
        self.name = config.name.encode()
        self.via = b"1.1 " + self.name
        self.hit_fields: Headers = [(b"X-Cache", b"HIT")]
        """Fields every fresh hit carries besides Age and Cache-Status (see :meth:`hit_status`)."""
        self.ttl_rules = parse_ttl_rules(config.default_ttl)
        self.fills: dict[bytes, Fill] = {}
        self.pass_keys: cachetools.TTLCache[bytes, str] = cachetools.TTLCache(
            maxsize=65536, ttl=config.pass_ttl, timer=clock
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self.upstream_requests = 0
        self.slice_size = config.slice_size
        self._slice_waits: dict[bytes, asyncio.Future[bytes | None]] = {}
        """Slices being fetched (by a Range request or a sliced fill): followers wait here."""
        self.unsliceable: cachetools.TTLCache[bytes, bool] = cachetools.TTLCache(
            maxsize=65536, ttl=config.pass_ttl, timer=clock
        )
        """Keys whose upstream answered a Range request with 200: not sliced again for a while."""
        self.compressor = Compressor(config, self.store)

    @property
    def compressions(self) -> Counter[bytes]:
        """How many times each coding was produced (see :class:`Compressor`)."""
        return self.compressor.counts

    def hit_status(self, ttl: int) -> bytes:
        """Cache-Status value of a fresh hit with ``ttl`` seconds of freshness left."""
        return self.name + b"; hit; ttl=%d" % ttl

    def _lookup(self, req: Request, key: bytes) -> tuple[Entry | None, bool]:
        """The stored response matching ``req``, and whether the URL has variants at all."""
        obj = self.store.get(key)
        if obj is None:
            return None, False
        if type(obj) is Variants:
            return obj.by_secondary.get(secondary_key(req, obj.names)), True
        return obj, False

    def _policy(self, status: int, fields: Headers, date: float, target: bytes) -> Policy:
        """Freshness from the response, or the operator's per-path TTL when it gives none."""
        policy = freshness_policy(status, fields, date)
        if policy.explicit or not self.ttl_rules:
            return policy
        path = target.split(b"?", 1)[0].decode("latin-1")
        for glob, seconds in self.ttl_rules:
            if fnmatch.fnmatchcase(path, glob):
                return replace(policy, lifetime=seconds, explicit=True)
        return policy

    def discard_in_flight(self) -> None:
        """After a purge: fills already under way finish for their readers but store nothing."""
        for fill in self.fills.values():
            fill.discard = True

    def _drop_fill(self, fill: Fill) -> None:
        if self.fills.get(fill.key) is fill:
            del self.fills[fill.key]

    def _store_entry(self, entry: Entry, secondary: bytes) -> None:
        if not entry.vary:
            self.store.put(entry.key, entry, entry.charge)
            return
        current = self.store.peek(entry.key)
        if type(current) is Variants and current.names == entry.vary:
            variants = current
        else:
            variants = Variants(entry.vary)
        variants.by_secondary.pop(secondary, None)
        variants.by_secondary[secondary] = entry
        while len(variants.by_secondary) > MAX_VARIANTS:
            del variants.by_secondary[next(iter(variants.by_secondary))]
        self.store.put(entry.key, variants, variants.charge)

    async def _send_entry(
        self, req: Request, sink: ResponseSink, entry: Entry, now: float, status: bytes
    ) -> None:
        entry = self.compressor.representation(entry, req)
        headers = [
            *entry.headers,
            (b"Age", b"%d" % entry.age(now)),
            (b"Cache-Status", status),
            (b"X-Cache", b"HIT"),
        ]
        if self._answer_not_modified(req, sink, entry.status, entry.headers, headers):
            return
        body = entry.body
        plan = self._range_plan(req, entry.status, len(body), entry.headers)
        if plan is not None:
            await self._send_ranges(sink, plan, entry.reason, headers, memoryview(body), len(body))
            return
        sink.start(entry.status, entry.reason, headers, len(body))
        if req.method != HEAD:
            await sink.write(body)
        sink.end()

    def _range_plan(self, req: Request, status: int, length: int, fields: Headers) -> RangeResult | None:
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

    async def _send_ranges(
        self,
        sink: ResponseSink,
        plan: RangeResult,
        reason: bytes,
        headers: Headers,
        body: memoryview,
        length: int,
    ) -> None:
        """206 (one part or multipart/byteranges) or 416, as zero-copy slices of ``body``."""
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
            await sink.write(body[start : end + 1])
            sink.end()
            return
        boundary = new_boundary()
        content_type = get_one(headers, b"content-type")
        multipart_type, pieces = multipart_byteranges(plan.ranges, body, length, content_type, boundary)
        fields = [(k, v) for k, v in headers if k.lower() != b"content-type"]
        fields.append((b"Content-Type", multipart_type))
        sink.start(
            206, b"Partial Content", fields, multipart_length(plan.ranges, length, content_type, boundary)
        )
        for piece in pieces:
            await sink.write(piece)
        sink.end()

    def _answer_not_modified(
        self, req: Request, sink: ResponseSink, status: int, stored: Headers, out: Headers
    ) -> bool:
        """Answer 304 when the client's own validator matches; True if it did."""
        if status != 200 or (b"if-none-match" not in req.fields and b"if-modified-since" not in req.fields):
            return False
        etag = get_one(stored, b"etag")
        last_modified = get_one(stored, b"last-modified")
        if not is_not_modified(req, etag, last_modified):
            return False
        keep = NOT_MODIFIED_FIELDS | {b"age", b"cache-status", b"x-cache", b"via"}
        sink.start(304, b"Not Modified", [(k, v) for k, v in out if k.lower() in keep], None)
        sink.end()
        return True

    async def _forward(self, req: Request, sink: ResponseSink, fwd: bytes) -> None:
        """Send ``req`` upstream as is and relay the answer; nothing is stored."""
        headers = self._upstream_headers(req, drop=frozenset())
        self.upstream_requests += 1
        try:
            resp = await self.pool.request(req.method, req.target, headers, req.body, on_interim=sink.interim)
        except UpstreamError as exc:
            await self._send_upstream_error(sink, req, fwd, exc)
            return
        await self._relay(req, sink, resp, fwd)
        if req.method not in SAFE_METHODS and 200 <= resp.status < 400:
            self._invalidate_after_unsafe(req, resp.headers)

    def _invalidate_after_unsafe(self, req: Request, headers: Headers) -> None:
        """RFC 9111 §4.4: drop the target and same-origin Location / Content-Location."""
        self.store.pop(primary_key(req), None)
        for name in (b"location", b"content-location"):
            value = get_one(headers, name)
            if not value:
                continue
            parts = urlsplit(value.decode("latin-1"))
            if parts.netloc and parts.netloc.lower().encode() != req.host:
                continue
            if parts.scheme and parts.scheme.encode() != req.scheme:
                continue
            if not parts.path.startswith("/"):
                continue
            target = parts.path + ("?" + parts.query if parts.query else "")
            self.store.pop(req.scheme + b"://" + req.host + target.encode("latin-1"), None)

    def _stored_fields(self, upstream: Headers, response_time: float) -> tuple[Headers, float]:
        """End-to-end fields to keep and relay, with Date ensured and our Via added."""
        named = connection_tokens(upstream)
        fields = [
            (k, v) for k, v in upstream if (lk := k.lower()) not in NOT_STORED_FIELDS and lk not in named
        ]
        date_raw = get_one(fields, b"date")
        date = parse_http_date(date_raw) if date_raw is not None else None
        if date is None:
            # RFC 9110 §6.6.1: a recipient with a clock adds Date when it caches or forwards.
            date = response_time
            if date_raw is None:
                fields.append((b"Date", format_http_date(response_time)))
        fields.append((b"Via", self.via))
        return fields, date

    def _upstream_headers(self, req: Request, drop: frozenset[bytes]) -> Headers:
        named = connection_tokens(req.headers)
        out: Headers = []
        forwarded_for = None
        for name, value in req.headers:
            lname = name.lower()
            if lname in HOP_BY_HOP or lname in named or lname in drop:
                continue
            if lname == b"host":
                if self.upstream_host:
                    value = self.upstream_host
            elif lname == b"x-forwarded-for":
                forwarded_for = value
                continue
            elif lname == b"content-length":
                continue  # re-framed by the client from the buffered body
            out.append((name, value))
        if b"host" not in req.fields:
            out.insert(0, (b"Host", self.upstream_host or req.host or self.default_host))
        client = req.client.encode()
        out.append((b"X-Forwarded-For", forwarded_for + b", " + client if forwarded_for else client))
        if b"x-forwarded-proto" not in req.fields:
            out.append((b"X-Forwarded-Proto", req.scheme))
        out.append((b"Via", (req.http_version.encode() + b" " + self.name)))
        return out

    async def _relay(self, req: Request, sink: ResponseSink, resp: UpstreamResponse, fwd: bytes) -> None:
        """Pass an upstream response through unchanged (apart from hop-by-hop fields)."""
        try:
            fields, _ = self._stored_fields(resp.headers, self.clock())
            status = self.name + b"; " + fwd + b"; fwd-status=%d" % resp.status
            fields += [(b"Cache-Status", status), (b"X-Cache", b"MISS")]
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

    async def _send_upstream_error(
        self, sink: ResponseSink, req: Request, fwd: bytes, exc: UpstreamError
    ) -> None:
        if isinstance(exc, UpstreamTimeout):
            await self._send_error(sink, req, 504, fwd + b"; detail=upstream-timeout", str(exc))
        else:
            await self._send_error(sink, req, 502, fwd + b"; detail=upstream-error", str(exc))

    async def _send_error(
        self, sink: ResponseSink, req: Request, status: int, cache_status: bytes, why: str
    ) -> None:
        body = f"{status} {_REASONS[status].decode()}: {why}\n".encode()
        headers = [
            (b"Content-Type", b"text/plain; charset=utf-8"),
            (b"Cache-Control", b"no-store"),
            (b"Date", format_http_date(self.clock())),
            (b"Cache-Status", self.name + b"; " + cache_status),
            (b"X-Cache", b"MISS"),
        ]
        sink.start(status, _REASONS[status], headers, len(body))
        if req.method != HEAD:
            await sink.write(body)
        sink.end()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.pool.close()
        self.compressor.close()


_REASONS = {502: b"Bad Gateway", 504: b"Gateway Timeout"}


def declared_length(headers: Headers) -> int | None:
    if get_one(headers, b"transfer-encoding") is not None:
        return None
    values = get_all(headers, b"content-length")
    if not values:
        return None
    distinct = {v.strip() for value in values for v in value.split(b",")}
    if len(distinct) != 1:
        return None
    raw = distinct.pop()
    return int(raw) if raw.isdigit() else None
