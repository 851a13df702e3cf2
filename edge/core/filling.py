"""Fills: the one upstream fetch per key that every waiting client reads as it arrives.

Guarantees:
- concurrent misses for one key make one upstream request; when the response
  turns out not storable or its Vary does not match, the others go upstream
  on their own, and the key is remembered as pass for ``pass_ttl`` seconds;
- a stale entry is revalidated with its validators; a 304 freshens it and its
  stored body is served (RFC 9111 §4.3.4);
- stale content is served only where ``edge.cache.stale`` allows;
- a large object's fill is cut into stored slices as it passes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from edge.cache import stale as stale_rules
from edge.cache.encoded import encoded_sibling, may_compress, with_vary_accept_encoding
from edge.cache.entry import ENTRY_OVERHEAD, Entry
from edge.cache.freshness import corrected_initial_age
from edge.cache.key import secondary_key, vary_names
from edge.cache.reuse import request_directives
from edge.cache.slices import SliceMeta, meta_key
from edge.cache.storability import fields_to_strip, why_not_storable
from edge.cache.validation import conditional_fields, merge_not_modified, validators_match
from edge.core.base import (
    FILL_DROPPED_FIELDS,
    GET,
    HEAD,
    RESPONSE_DEPENDENT,
    CoreBase,
    declared_length,
)
from edge.core.sink import ResponseSink
from edge.http.cache_control import Directives
from edge.http.fields import Headers, get_all, get_one
from edge.http.message import Request
from edge.http.ranges import (
    content_range,
)
from edge.upstream.client import UpstreamError, UpstreamResponse, UpstreamTimeout
from edge.upstream.fill import Fill, Reader


def _no_interim(status: int, headers: Headers) -> None:
    """Background refreshes have no client to relay 1xx responses to."""


class FillMixin(CoreBase):
    """Starting, running and reading fills."""

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
        position: Reader,
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
            *(() if collapsed else fill.leader_fields),
            (b"Age", b"%d" % fill.age),
            (b"Cache-Status", status),
            (b"X-Cache", b"MISS"),
        ]
        if self._answer_not_modified(req, sink, fill.status, fill.headers, headers):
            return
        plan = None if fill.length is None else self._range_plan(req, fill.status, fill.length, fill.headers)
        if plan is not None and plan.unsatisfiable and fill.length is not None:
            fill.detach(position)
            await self._send_ranges(sink, plan, fill.reason, headers, memoryview(b""), fill.length)
            return
        if plan is not None and len(plan.ranges) > 1:
            plan = None  # several ranges on a miss: the whole 200 streams (RFC 9110 allows it)
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
        if resp.status == 304:
            resp.close()
            if stale is not None and validators_match(stale, stored):
                self._refresh_from_304(fill, req, stale, stored, date, response_time, age0)
            elif stale is not None:
                # The 304 does not describe what we hold: ask again without preconditions.
                fill.stale = None
                await self._fetch_into(fill, req, interim, None)
            else:
                fill.fail_head(UpstreamError("upstream answered 304 to an unconditional request"))
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
        fill.length = declared_length(resp.headers)
        compressible = (
            why is None
            and bool(self.compressor.codings)
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
        if why is None or sliced:
            # A cookie belongs to the client whose request set it: never stored, never shared.
            fill.leader_fields = [(k, v) for k, v in stored if k.lower() == b"set-cookie"]
            if fill.leader_fields:
                stored = [(k, v) for k, v in stored if k.lower() != b"set-cookie"]
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
                    # Every reader left and nothing is being stored: stop fetching.
                    fill.fail(UpstreamError("every reader left"))
                    return
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

    async def _slice_from_stream(self, fill: Fill, resp: UpstreamResponse, meta: SliceMeta) -> None:
        """Relay a whole 200 to its readers while cutting it into stored slices.

        Only the slice being cut is announced in ``_slice_waits``: a client that
        wants a later slice fetches it with Range rather than wait for a stream
        paced by someone else's slow reader.
        """
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        index = 0
        current: asyncio.Future[bytes | None] | None = None

        def announce(i: int) -> asyncio.Future[bytes | None] | None:
            key = meta.slice_key(i)
            if i >= meta.count() or key in self._slice_waits:
                return None
            future: asyncio.Future[bytes | None] = loop.create_future()
            self._slice_waits[key] = future
            return future

        def retire(i: int, future: asyncio.Future[bytes | None] | None, data: bytes | None) -> None:
            if future is None:
                return
            if not future.done():
                future.set_result(data)
            if self._slice_waits.get(meta.slice_key(i)) is future:
                del self._slice_waits[meta.slice_key(i)]

        current = announce(0)
        try:
            async for chunk in resp.chunks():
                fill.append(chunk)
                buffer += chunk
                while index < meta.count():
                    first, last = meta.span(index)
                    size = last - first + 1
                    if len(buffer) < size:
                        break
                    data = bytes(buffer[:size])
                    del buffer[:size]
                    self._store_slice(meta, index, data, None)
                    retire(index, current, data)
                    index += 1
                    current = announce(index)
                if not await fill.room() and index >= meta.count():
                    break
            fill.finish()
        except UpstreamError as exc:
            fill.fail(exc)
        finally:
            resp.close()
            retire(index, current, None)

    def _store_slice(
        self, meta: SliceMeta, index: int, data: bytes, future: asyncio.Future[bytes | None] | None
    ) -> None:
        if self.store.peek(meta_key(meta.entry.key)) is meta:
            with contextlib.suppress(ValueError):  # a slice larger than the cache is served, not kept
                self.store.put(meta.slice_key(index), data, len(data) + ENTRY_OVERHEAD)
        if future is not None and not future.done():
            future.set_result(data)
