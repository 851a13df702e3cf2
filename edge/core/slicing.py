"""Serving large objects from slices fetched with Range on demand (see edge.cache.slices)."""

from __future__ import annotations

import asyncio

from edge.cache.entry import Entry
from edge.cache.freshness import corrected_initial_age
from edge.cache.key import vary_names
from edge.cache.slices import SliceMeta, aligned_spec, meta_key
from edge.cache.storability import why_not_storable
from edge.cache.validation import conditional_fields, merge_not_modified, validators_match
from edge.core.base import FILL_DROPPED_FIELDS, GET, HEAD
from edge.core.filling import FillMixin
from edge.core.sink import ResponseSink
from edge.http.cache_control import EMPTY
from edge.http.fields import get_all, get_one
from edge.http.message import Request
from edge.http.ranges import (
    content_range,
    parse_content_range,
)
from edge.upstream.client import UpstreamError


class SliceMixin(FillMixin):
    """Range misses and answers assembled from slices."""

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

    async def _revalidate_slices(self, req: Request, meta: SliceMeta) -> bool:
        """Ask whether a sliced object is unchanged, at the cost of one byte; freshen it if so.

        A browser reload (``no-cache``) or an expired description must not
        refetch a large object whose slices are still right.
        """
        if meta.entry.etag is None and meta.entry.last_modified is None:
            return False
        headers = [
            *self._upstream_headers(req, drop=FILL_DROPPED_FIELDS),
            *conditional_fields(meta.entry),
            (b"Range", b"bytes=0-0"),
        ]
        request_time = self.clock()
        self.upstream_requests += 1
        try:
            resp = await self.pool.request(GET, req.target, headers)
        except UpstreamError:
            return False
        try:
            response_time = self.clock()
            fields, date = self._stored_fields(resp.headers, response_time)
            span = parse_content_range(get_one(resp.headers, b"content-range"))
            same = (resp.status == 304 and validators_match(meta.entry, fields)) or (
                resp.status == 206
                and span is not None
                and span[2] == meta.length
                and meta.entry.etag is not None
                and get_one(fields, b"etag") == meta.entry.etag
            )
            if resp.status == 206:
                async for _ in resp.chunks():
                    pass  # one byte: read it so the connection can be reused
        except UpstreamError:
            return False
        finally:
            resp.close()
        if not same:
            return False
        fields = [(k, v) for k, v in fields if k.lower() not in (b"content-range", b"set-cookie")]
        merged = merge_not_modified(meta.entry.headers, fields)
        policy = self._policy(200, merged, date, req.target)
        age0 = corrected_initial_age(get_one(resp.headers, b"age"), date, request_time, response_time)
        meta.entry = Entry(meta.entry.key, 200, meta.entry.reason, merged, b"", policy, response_time, age0)
        if self.store.peek(meta_key(meta.entry.key)) is meta:
            self.store.put(meta_key(meta.entry.key), meta, meta.charge)
        return True
