"""The protocol-neutral request handler every adapter calls.

It joins the sans-I/O rules in ``edge.cache`` with the I/O of
``edge.upstream``: look up, serve a hit, or join/start the one fill for a key.

Guarantees:
- a fresh hit is answered synchronously through :meth:`EdgeCore.fresh_hit`
  (no await, no per-request framework objects);
- concurrent misses for one key make one upstream request; when the response
  turns out not storable or its Vary does not match, the others go upstream
  on their own, and the key is remembered as pass for ``pass_ttl`` seconds;
- a stale entry is revalidated with its validators; a 304 freshens it and
  its stored body is served; stale content is served only where
  ``edge.cache.stale`` allows (stale-while-revalidate, stale-if-error, grace);
- a body is stored only when it arrived whole; a truncated upstream body
  aborts the client connections instead of ending them cleanly;
- upstream failures become 502 (unreachable, broken) or 504 (timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from urllib.parse import urlsplit

import cachetools

from edge.cache import stale as stale_rules
from edge.cache.conditional import NOT_MODIFIED_FIELDS, is_not_modified
from edge.cache.encoded import encoded_sibling, may_compress, with_vary_accept_encoding
from edge.cache.entry import ENTRY_OVERHEAD, Entry, Variants
from edge.cache.freshness import Policy, corrected_initial_age, freshness_policy
from edge.cache.key import primary_key, secondary_key, vary_names
from edge.cache.reuse import Reuse, decide_reuse, request_directives
from edge.cache.slices import SliceMeta, aligned_spec, meta_key
from edge.cache.storability import fields_to_strip, why_not_storable
from edge.cache.store import Store, make_store
from edge.cache.validation import conditional_fields, merge_not_modified, validators_match
from edge.codecs import compress
from edge.config import Config, parse_ttl_rules
from edge.http.accept_encoding import normalise_for_key
from edge.http.cache_control import EMPTY, Directives
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
    parse_content_range,
    parse_range,
    unsatisfied_range,
)
from edge.serve.sink import ResponseSink
from edge.upstream.client import UpstreamError, UpstreamPool, UpstreamResponse, UpstreamTimeout
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
IDENTITY = b"identity"
INLINE_COMPRESS_LIMIT = 16384
"""Bodies up to this size are compressed on the loop (well under a millisecond); larger in a thread."""

log = logging.getLogger("edge.core")


def _no_interim(status: int, headers: Headers) -> None:
    """Background refreshes have no client to relay 1xx responses to."""


class EdgeCore:
    """One node's cache and upstream, shared by every protocol adapter."""

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
        target = config.upstream_target()
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
        self.codings = config.codings()
        self.levels = {b"br": config.brotli_level, b"zstd": config.zstd_level, b"gzip": config.gzip_level}
        self._coding_choice: dict[bytes | None, bytes] = {}
        """Accept-Encoding value → coding this node would send; a handful of distinct values in practice."""
        self._compressing: set[tuple[int, bytes]] = set()
        self._compress_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-compress")
        self.slice_size = config.slice_size
        self._slice_waits: dict[bytes, asyncio.Future[bytes | None]] = {}
        """Slices being fetched (by a Range request or a sliced fill): followers wait here."""
        self.unsliceable: cachetools.TTLCache[bytes, bool] = cachetools.TTLCache(
            maxsize=65536, ttl=config.pass_ttl, timer=clock
        )
        """Keys whose upstream answered a Range request with 200: not sliced again for a while."""
        self.compressions: Counter[bytes] = Counter()
        """How many times each coding was produced: once per object and coding."""

    def hit_status(self, ttl: int) -> bytes:
        """Cache-Status value of a fresh hit with ``ttl`` seconds of freshness left."""
        return self.name + b"; hit; ttl=%d" % ttl

    # -- lookup --------------------------------------------------------------
    def _lookup(self, req: Request, key: bytes) -> tuple[Entry | None, bool]:
        """The stored response matching ``req``, and whether the URL has variants at all."""
        obj = self.store.get(key)
        if obj is None:
            return None, False
        if type(obj) is Variants:
            return obj.by_secondary.get(secondary_key(req, obj.names)), True
        return obj, False

    def fresh_hit(self, req: Request, now: float) -> Entry | None:
        """The entry to send as is, or None when :meth:`serve` must decide. Never awaits."""
        method = req.method
        if (method != GET and method != HEAD) or not req.fields.keys().isdisjoint(SLOW_PATH_FIELDS):
            return None
        obj = self.store.get(req.scheme + b"://" + req.host + req.target)
        if obj is None:
            return None
        if type(obj) is Variants:
            obj = obj.by_secondary.get(secondary_key(req, obj.names))
            if obj is None:
                return None
        entry: Entry = obj
        if now >= entry.fresh_until:
            return None
        if entry.encodings is not None:
            return self._representation(entry, req)
        return entry

    # -- content codings -----------------------------------------------------
    def _coding_for(self, req: Request) -> bytes:
        accept = req.fields.get(b"accept-encoding")
        coding = self._coding_choice.get(accept)
        if coding is None:
            # No Accept-Encoding: identity, as nginx and curl users expect (RFC 9110 allows either).
            coding = IDENTITY if accept is None else normalise_for_key(accept, self.codings)
            if len(self._coding_choice) >= 1024:
                self._coding_choice.clear()
            self._coding_choice[accept] = coding
        return coding

    def _representation(self, entry: Entry, req: Request) -> Entry:
        """The stored representation to send: a compressed sibling when the client takes one.

        Range requests get identity, as nginx does: a range of a compressed body is
        rarely what a client wants. A sibling still being made is not waited for.
        """
        encodings = entry.encodings
        if encodings is None or b"range" in req.fields:
            return entry
        coding = self._coding_for(req)
        if coding == IDENTITY:
            return entry
        sibling = encodings.get(coding)
        if sibling is not None:
            return sibling
        return self._compress(entry, coding)

    def _compress(self, entry: Entry, coding: bytes) -> Entry:
        """Start making ``coding`` for ``entry`` once; return the sibling if it is ready now."""
        token = (id(entry), coding)
        if token in self._compressing:
            return entry
        body = entry.body
        level = self.levels[coding]
        if len(body) <= INLINE_COMPRESS_LIMIT:
            self._attach(entry, coding, compress(coding, body, level))
            return (entry.encodings or {}).get(coding, entry)
        self._compressing.add(token)
        future = self._compress_pool.submit(compress, coding, body, level)
        loop = asyncio.get_running_loop()

        def done(f: Future[bytes]) -> None:
            loop.call_soon_threadsafe(self._compressed, entry, coding, token, f)

        future.add_done_callback(done)
        return entry

    def _compressed(self, entry: Entry, coding: bytes, token: tuple[int, bytes], f: Future[bytes]) -> None:
        self._compressing.discard(token)
        try:
            data = f.result()
        except Exception:
            log.exception("compressing %r as %s failed", entry.key, coding.decode())
            return
        self._attach(entry, coding, data)

    def _attach(self, entry: Entry, coding: bytes, data: bytes) -> None:
        self.compressions[coding] += 1
        if entry.encodings is None:
            return
        # A coding that does not shrink the body is not worth a second copy: send identity.
        entry.encodings[coding] = (
            entry if len(data) >= len(entry.body) else encoded_sibling(entry, coding, data)
        )
        current = self.store.peek(entry.key)
        holds = current is entry or (type(current) is Variants and entry in current.by_secondary.values())
        if holds:
            try:
                self.store.put(entry.key, current, current.charge)
            except ValueError:
                self.store.pop(entry.key, None)

    # -- the full path -------------------------------------------------------
    async def serve(self, req: Request, sink: ResponseSink) -> None:
        """Answer ``req`` on ``sink``: hit, stale, revalidation, collapsed fill or pass."""
        if req.method not in (GET, HEAD):
            await self._forward(req, sink, b"fwd=request")
            return
        now = self.clock()
        key = primary_key(req)
        request_cc = request_directives(req)
        entry, has_variants = self._lookup(req, key)
        if entry is not None:
            reuse = decide_reuse(entry, request_cc, now)
            ttl = b"; ttl=%d" % int(entry.fresh_until - now) if entry.fresh_until != NEVER else b""
            if reuse is Reuse.FRESH:
                await self._send_entry(req, sink, entry, now, self.name + b"; hit" + ttl)
                return
            if reuse is Reuse.STALE_ALLOWED:
                await self._send_entry(req, sink, entry, now, self.name + b"; hit" + ttl)
                return
            if stale_rules.while_revalidate(entry, request_cc, now):
                self._refresh_in_background(req, key, entry)
                status = self.name + b"; hit" + ttl + b"; detail=stale-while-revalidate"
                await self._send_entry(req, sink, entry, now, status)
                return
        elif not has_variants:
            meta = self.store.get(meta_key(key))
            if meta is not None:
                if decide_reuse(meta.entry, request_cc, now) is Reuse.FRESH:
                    status = self.name + b"; hit; ttl=%d" % int(meta.entry.fresh_until - now)
                    await self._send_sliced(req, sink, meta, now, status)
                    return
                self.store.pop(meta_key(key), None)  # stale: slices are fetched afresh
        if b"only-if-cached" in request_cc:
            await self._send_error(sink, req, 504, b"fwd=miss; detail=only-if-cached", "not in cache")
            return
        if entry is None and req.method == GET and b"range" in req.fields and key not in self.unsliceable:
            await self._range_miss(req, sink, key, b"fwd=uri-miss")
            return
        if entry is not None:
            asked = b"no-cache" in request_cc or b"max-age" in request_cc or b"min-fresh" in request_cc
            fwd = b"fwd=request" if asked else b"fwd=stale"
        else:
            fwd = b"fwd=vary-miss" if has_variants else b"fwd=uri-miss"
            if key in self.pass_keys:
                await self._forward(req, sink, fwd + b"; detail=pass")
                return
        await self._via_fill(req, sink, key, fwd, entry, request_cc)

    def _start_fill(
        self,
        req: Request,
        key: bytes,
        stale: Entry | None,
        interim: Callable[[int, Headers], None],
        adopted: tuple[UpstreamResponse, float] | None = None,
    ) -> Fill:
        """Register the one fill for ``key`` and run it in its own task.

        ``adopted`` is a response already received (with its request time) that
        the fill takes over instead of sending a request of its own.
        """
        fill = Fill(key, stale)
        self.fills[key] = fill
        task = asyncio.get_running_loop().create_task(self._run_fill(fill, req, interim, adopted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fill

    def _refresh_in_background(self, req: Request, key: bytes, stale: Entry) -> None:
        """stale-while-revalidate: one validation per key, whoever asks meanwhile."""
        if key not in self.fills:
            self._start_fill(req, key, stale, _no_interim)

    async def _via_fill(
        self,
        req: Request,
        sink: ResponseSink,
        key: bytes,
        fwd: bytes,
        stale: Entry | None,
        request_cc: Directives,
    ) -> None:
        fill = self.fills.get(key)
        collapsed = fill is not None
        if fill is None:
            fill = self._start_fill(req, key, stale, sink.interim)
        position = fill.attach()
        try:
            await self._read_fill(req, sink, fill, position, collapsed, fwd, stale, request_cc)
        finally:
            fill.detach(position)

    async def _read_fill(
        self,
        req: Request,
        sink: ResponseSink,
        fill: Fill,
        position: list[int],
        collapsed: bool,
        fwd: bytes,
        stale: Entry | None,
        request_cc: Directives,
    ) -> None:
        try:
            await asyncio.shield(fill.head)
        except UpstreamError as exc:
            fill.detach(position)
            now = self.clock()
            if stale is not None and stale_rules.if_error(stale, request_cc, now, self.config.stale_grace):
                detail = b"upstream-timeout" if isinstance(exc, UpstreamTimeout) else b"upstream-error"
                status = self.name + b"; fwd=stale; detail=stale-if-error-" + detail
                await self._send_entry(req, sink, stale, now, status)
                return
            await self._send_upstream_error(sink, req, fwd, exc)
            return
        now = self.clock()
        if (
            fill.upstream_status >= 500
            and stale is not None
            and stale_rules.if_error(stale, request_cc, now, self.config.stale_grace)
        ):
            fill.detach(position)
            status = self.name + b"; fwd=stale; fwd-status=%d; detail=stale-if-error" % fill.upstream_status
            await self._send_entry(req, sink, stale, now, status)
            return
        if collapsed and (
            fill.not_storable is not None
            or fill.vary is None
            or (fill.vary and secondary_key(req, fill.vary) != fill.secondary)
        ):
            fill.detach(position)  # not ours to read: never hold the fill's buffer meanwhile
            await self._forward(req, sink, fwd)
            return
        status = self.name + b"; " + fwd + b"; fwd-status=%d" % fill.upstream_status
        if fill.not_storable is None:
            status += b"; stored"
        else:
            status += b"; detail=" + fill.not_storable.encode()
        if collapsed:
            status += b"; collapsed"
        headers = [
            *fill.headers,
            (b"Age", b"%d" % fill.age),
            (b"Cache-Status", status),
            (b"X-Cache", b"MISS"),
        ]
        if self._answer_not_modified(req, sink, fill.status, fill.headers, headers):
            return
        plan = None if fill.length is None else self._range_plan(req, fill.status, fill.length, fill.headers)
        if plan is not None and fill.length is not None and len(plan.ranges) != 1:
            # 416, or several ranges: answer from the whole body once it is here.
            try:
                body = b"".join([chunk async for chunk in fill.tail(position)])
            except UpstreamError:
                await self._send_upstream_error(sink, req, fwd, UpstreamError("upstream body truncated"))
                return
            await self._send_ranges(sink, plan, fill.reason, headers, memoryview(body), fill.length)
            return
        if plan is not None and fill.length is not None:
            # One range on a miss: send its bytes as they pass, without waiting for the rest.
            start, end = plan.ranges[0]
            headers.append((b"Content-Range", content_range(start, end, fill.length)))
            sink.start(206, b"Partial Content", headers, end - start + 1)
        else:
            start, end = 0, -1
            sink.start(fill.status, fill.reason, headers, fill.length)
        if req.method == HEAD:
            fill.detach(position)
            sink.end()
            return
        offset = 0
        try:
            async for chunk in fill.tail(position):
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

    async def _run_fill(
        self,
        fill: Fill,
        req: Request,
        interim: Callable[[int, Headers], None],
        adopted: tuple[UpstreamResponse, float] | None = None,
    ) -> None:
        """Fetch ``fill.key`` once (conditionally when revalidating), stream it and store it if allowed."""
        try:
            await self._fetch_into(fill, req, interim, adopted)
        except Exception as exc:  # never leave readers waiting on a broken fill
            fill.fail_head(exc if isinstance(exc, UpstreamError) else UpstreamError(repr(exc)))
            fill.fail(UpstreamError(repr(exc)))
            raise
        finally:
            self._drop_fill(fill)

    async def _fetch_into(
        self,
        fill: Fill,
        req: Request,
        interim: Callable[[int, Headers], None],
        adopted: tuple[UpstreamResponse, float] | None,
    ) -> None:
        key, stale = fill.key, fill.stale
        if adopted is not None:
            resp, request_time = adopted
        else:
            headers = self._upstream_headers(req, drop=FILL_DROPPED_FIELDS)
            if stale is not None:
                headers += conditional_fields(stale)
            request_time = self.clock()
            self.upstream_requests += 1
            try:
                resp = await self.pool.request(GET, req.target, headers, on_interim=interim)
            except UpstreamError as exc:
                fill.fail_head(exc)
                return
        response_time = self.clock()
        stored, date = self._stored_fields(resp.headers, response_time)
        age0 = corrected_initial_age(get_one(resp.headers, b"age"), date, request_time, response_time)
        fill.upstream_status, fill.age = resp.status, int(age0)
        if resp.status == 304 and stale is not None and validators_match(stale, stored):
            resp.close()
            self._refresh_from_304(fill, req, stale, stored, date, response_time, age0)
            return
        policy = self._policy(resp.status, stored, date, req.target)
        why = why_not_storable(req, resp.status, stored, policy)
        if (
            why is None
            and resp.status >= 500
            and stale is not None
            and stale_rules.if_error(stale, request_directives(req), response_time, self.config.stale_grace)
        ):
            why = "stale-if-error"  # keep serving the stored response rather than replace it
        fill.vary = vary_names(get_all(stored, b"vary"))
        if fill.vary:
            fill.secondary = secondary_key(req, fill.vary)
        fill.length = _declared_length(resp.headers)
        compressible = (
            why is None
            and bool(self.codings)
            and may_compress(
                resp.status, stored, policy.directives, fill.length, self.config.compress_min_size
            )
        )
        if compressible:
            # Vary is ours to add (the upstream did not vary); it does not make this a Variants key.
            stored = with_vary_accept_encoding(stored)
        sliced = (
            why is None
            and resp.status == 200
            and not fill.vary
            and fill.length is not None
            and fill.length > self.slice_size
            and not (compressible and fill.length <= self.config.max_object_size)
        )
        if (
            not sliced
            and why is None
            and fill.length is not None
            and fill.length > self.config.max_object_size
        ):
            why = "too-large"
        strip = fields_to_strip(policy)
        if strip:
            stored = [(k, v) for k, v in stored if k.lower() not in strip]
        fill.status, fill.reason, fill.headers = resp.status, resp.reason, stored
        fill.not_storable = why
        if why is not None:
            self._drop_fill(fill)
            fill.stop_keeping()
            if why in RESPONSE_DEPENDENT:
                self.pass_keys[key] = why
        if sliced:
            assert fill.length is not None
            stored_meta = SliceMeta(
                Entry(key, resp.status, resp.reason, stored, b"", policy, response_time, age0),
                fill.length,
                self.slice_size,
            )
            # Followers read slices (stored as they complete); nobody joins this fill.
            self._drop_fill(fill)
            fill.stop_keeping()
            fill.set_head()
            self.store.put(meta_key(key), stored_meta, stored_meta.charge)
            await self._slice_from_stream(fill, resp, stored_meta)
            return
        fill.set_head()
        try:
            async for chunk in resp.chunks():
                fill.append(chunk)
                if why is None and fill.size > self.config.max_object_size:
                    why = "too-large"
                    self._drop_fill(fill)
                    fill.stop_keeping()
                if not fill.keep and not await fill.room():
                    return  # every reader left and nothing is being stored: stop fetching
        except UpstreamError as exc:
            fill.fail(exc)
            return
        finally:
            resp.close()
        fill.finish()
        if why is None and not fill.discard:
            body = fill.body()
            if fill.length is None or len(body) == fill.length:
                entry = Entry(
                    key, resp.status, resp.reason, stored, body, policy, response_time, age0, fill.vary or ()
                )
                if compressible and len(body) >= self.config.compress_min_size:
                    entry.encodings = {}
                self._store_entry(entry, fill.secondary)

    def _refresh_from_304(
        self,
        fill: Fill,
        req: Request,
        stale: Entry,
        fields_304: Headers,
        date: float,
        response_time: float,
        age0: float,
    ) -> None:
        """RFC 9111 §4.3.4: freshen the stored fields and serve the stored body."""
        merged = merge_not_modified(stale.headers, fields_304)
        if stale.encodings is not None:
            merged = with_vary_accept_encoding(merged)  # a 304's own Vary must not drop ours
        policy = self._policy(stale.status, merged, date, req.target)
        why = why_not_storable(req, stale.status, merged, policy)
        fill.status, fill.reason, fill.headers = stale.status, stale.reason, merged
        fill.length = len(stale.body)
        fill.vary = stale.vary
        if stale.vary:
            fill.secondary = secondary_key(req, stale.vary)
        fill.not_storable = why
        fill.append(stale.body)
        fill.finish()
        fill.set_head()
        if why is None and not fill.discard:
            entry = Entry(
                fill.key,
                stale.status,
                stale.reason,
                merged,
                stale.body,
                policy,
                response_time,
                age0,
                stale.vary,
            )
            if stale.encodings is not None:
                # The body did not change: keep the siblings, with the freshened fields.
                entry.encodings = {
                    coding: entry if sibling is stale else encoded_sibling(entry, coding, sibling.body)
                    for coding, sibling in stale.encodings.items()
                }
            self._store_entry(entry, fill.secondary)
        elif why is not None:
            self.store.pop(fill.key, None)  # the upstream withdrew permission to keep it

    # -- slices of large objects ----------------------------------------------
    async def _slice_from_stream(self, fill: Fill, resp: UpstreamResponse, meta: SliceMeta) -> None:
        """Relay a whole 200 to its readers while cutting it into stored slices."""
        loop = asyncio.get_running_loop()
        pending: dict[int, asyncio.Future[bytes | None]] = {}
        for index in range(meta.count()):
            slice_key = meta.slice_key(index)
            if slice_key not in self._slice_waits:
                pending[index] = self._slice_waits[slice_key] = loop.create_future()
        buffer = bytearray()
        index = 0
        try:
            async for chunk in resp.chunks():
                fill.append(chunk)
                buffer += chunk
                while index < meta.count() and len(buffer) >= meta.span(index)[1] - meta.span(index)[0] + 1:
                    size = meta.span(index)[1] - meta.span(index)[0] + 1
                    self._store_slice(meta, index, bytes(buffer[:size]), pending.get(index))
                    del buffer[:size]
                    index += 1
                if not await fill.room() and index >= meta.count():
                    break
            fill.finish()
        except UpstreamError as exc:
            fill.fail(exc)
        finally:
            resp.close()
            for i, future in pending.items():
                if not future.done():
                    future.set_result(None)
                if self._slice_waits.get(meta.slice_key(i)) is future:
                    del self._slice_waits[meta.slice_key(i)]

    def _store_slice(
        self, meta: SliceMeta, index: int, data: bytes, future: asyncio.Future[bytes | None] | None
    ) -> None:
        if self.store.peek(meta_key(meta.entry.key)) is meta:
            with contextlib.suppress(ValueError):  # a slice larger than the cache is served, not kept
                self.store.put(meta.slice_key(index), data, len(data) + ENTRY_OVERHEAD)
        if future is not None and not future.done():
            future.set_result(data)

    async def _slice(self, req: Request, meta: SliceMeta, index: int) -> bytes | None:
        """Slice ``index`` from the store, from a fetch under way, or from upstream with Range."""
        slice_key = meta.slice_key(index)
        for _ in range(2):
            data = self.store.get(slice_key)
            if data is not None:
                return bytes(data)
            waiting = self._slice_waits.get(slice_key)
            if waiting is None:
                break
            awaited: bytes | None = await asyncio.shield(waiting)
            if awaited is not None:
                return awaited
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._slice_waits[slice_key] = future
        result: bytes | None = None
        try:
            start, end = meta.span(index)
            headers = [
                *self._upstream_headers(req, drop=FILL_DROPPED_FIELDS),
                (b"Range", b"bytes=%d-%d" % (start, end)),
            ]
            self.upstream_requests += 1
            resp = await self.pool.request(GET, req.target, headers)
            try:
                if not meta.accepts(index, resp.status, resp.headers):
                    # The object changed upstream: forget it; the next request starts afresh.
                    if self.store.peek(meta_key(meta.entry.key)) is meta:
                        self.store.pop(meta_key(meta.entry.key), None)
                    return None
                body = b"".join([chunk async for chunk in resp.chunks()])
            finally:
                resp.close()
            if len(body) == end - start + 1:
                result = body
                self._store_slice(meta, index, body, None)
            return result
        except UpstreamError:
            return None
        finally:
            if not future.done():
                future.set_result(result)
            if self._slice_waits.get(slice_key) is future:
                del self._slice_waits[slice_key]

    async def _range_miss(self, req: Request, sink: ResponseSink, key: bytes, fwd: bytes) -> None:
        """A Range request for an object not in cache: fetch one slice-sized piece, not the object."""
        value = req.fields[b"range"]
        first = value.partition(b"=")[2].split(b",")[0].strip()
        start_text = first.partition(b"-")[0].strip()
        # A start offset gives an aligned slice; a suffix range is asked as is (the length is unknown yet).
        spec = (
            aligned_spec(int(start_text), self.slice_size)[1] if start_text.isdigit() else b"bytes=" + first
        )
        headers = [*self._upstream_headers(req, drop=FILL_DROPPED_FIELDS), (b"Range", spec)]
        request_time = self.clock()
        self.upstream_requests += 1
        try:
            resp = await self.pool.request(GET, req.target, headers, on_interim=sink.interim)
        except UpstreamError as exc:
            await self._send_upstream_error(sink, req, fwd, exc)
            return
        response_time = self.clock()
        span = parse_content_range(get_one(resp.headers, b"content-range"))
        if resp.status == 200 and key not in self.fills:
            # The upstream ignores ranges: this 200 becomes the key's ordinary fill,
            # and the range is cut from it as it streams.
            self.unsliceable[key] = True
            fill = self._start_fill(req, key, None, sink.interim, adopted=(resp, request_time))
            position = fill.attach()
            try:
                await self._read_fill(req, sink, fill, position, False, fwd, None, EMPTY)
            finally:
                fill.detach(position)
            return
        if resp.status != 206 or span is None:
            await self._relay(req, sink, resp, fwd)
            return
        try:
            body = b"".join([chunk async for chunk in resp.chunks()])
        except UpstreamError:
            resp.close()
            await self._send_upstream_error(sink, req, fwd, UpstreamError("upstream body truncated"))
            return
        resp.close()
        first_byte, _, length = span
        fields, date = self._stored_fields(resp.headers, response_time)
        fields = [(k, v) for k, v in fields if k.lower() != b"content-range"]
        policy = self._policy(200, fields, date, req.target)
        age0 = corrected_initial_age(get_one(resp.headers, b"age"), date, request_time, response_time)
        meta = SliceMeta(
            Entry(key, 200, b"OK", fields, b"", policy, response_time, age0), length, self.slice_size
        )
        why = why_not_storable(req, 200, fields, policy)
        if why is None and not vary_names(get_all(fields, b"vary")):
            self.store.put(meta_key(key), meta, meta.charge)
            index = first_byte // self.slice_size
            if (first_byte, first_byte + len(body) - 1) == meta.span(index):
                self._store_slice(meta, index, body, None)
            status = self.name + b"; " + fwd + b"; fwd-status=206; stored"
        else:
            status = self.name + b"; " + fwd + b"; fwd-status=206; detail=" + (why or "vary").encode()
        await self._send_sliced(req, sink, meta, self.clock(), status, loose=(first_byte, body))

    async def _send_sliced(
        self,
        req: Request,
        sink: ResponseSink,
        meta: SliceMeta,
        now: float,
        cache_status: bytes,
        loose: tuple[int, bytes] | None = None,
    ) -> None:
        """Answer from slices: 200 whole, one range as 206, or 416 (several ranges get the whole)."""
        entry = meta.entry
        headers = [
            *entry.headers,
            (b"Age", b"%d" % entry.age(now)),
            (b"Cache-Status", cache_status),
            (b"X-Cache", b"HIT" if b"; hit" in cache_status else b"MISS"),
        ]
        if self._answer_not_modified(req, sink, 200, entry.headers, headers):
            return
        length = meta.length
        plan = self._range_plan(req, 200, length, entry.headers)
        if plan is not None and plan.unsatisfiable:
            await self._send_ranges(sink, plan, b"OK", headers, memoryview(b""), length)
            return
        if plan is not None and len(plan.ranges) == 1:
            start, end = plan.ranges[0]
            headers.append((b"Content-Range", content_range(start, end, length)))
            sink.start(206, b"Partial Content", headers, end - start + 1)
        else:
            start, end = 0, length - 1
            sink.start(200, entry.reason, headers, length)
        if req.method == HEAD:
            sink.end()
            return
        for index in meta.covering(start, end):
            first, last = meta.span(index)
            lo, hi = max(start, first), min(end, last)
            if loose is not None and loose[0] <= lo and hi < loose[0] + len(loose[1]):
                await sink.write(memoryview(loose[1])[lo - loose[0] : hi - loose[0] + 1])
                continue
            data = await self._slice(req, meta, index)
            if data is None:
                sink.abort()  # the object changed or the upstream failed mid-object
                return
            await sink.write(memoryview(data)[lo - first : hi - first + 1])
        sink.end()

    async def _relay(self, req: Request, sink: ResponseSink, resp: UpstreamResponse, fwd: bytes) -> None:
        """Pass an upstream response through unchanged (apart from hop-by-hop fields)."""
        try:
            fields, _ = self._stored_fields(resp.headers, self.clock())
            status = self.name + b"; " + fwd + b"; fwd-status=%d" % resp.status
            fields += [(b"Cache-Status", status), (b"X-Cache", b"MISS")]
            sink.start(resp.status, resp.reason, fields, _declared_length(resp.headers))
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

    # -- pass-through --------------------------------------------------------
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

    # -- response building ---------------------------------------------------
    async def _send_entry(
        self, req: Request, sink: ResponseSink, entry: Entry, now: float, status: bytes
    ) -> None:
        entry = self._representation(entry, req)
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

    # -- byte ranges (RFC 9110 §14) -------------------------------------------
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
        self._compress_pool.shutdown(wait=False, cancel_futures=True)


_REASONS = {502: b"Bad Gateway", 504: b"Gateway Timeout"}


def _declared_length(headers: Headers) -> int | None:
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
