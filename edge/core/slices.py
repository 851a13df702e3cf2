"""Large objects served from slices fetched with Range on demand (the rules: ``edge.cache.slices``).

Guarantees:
- a Range request for an object not in cache fetches one slice-aligned piece, not
  the object; the object's description (a ``SliceMeta``) is stored from that answer;
- a slice is fetched upstream once however many clients want it at the same moment:
  the others wait for the fetch under way (``waits``);
- a slice whose answer does not match the stored description (the object changed
  upstream) is never served: the description is dropped, so the next request starts
  afresh;
- a response from slices starts only once the first slice it needs that is not in the
  store has arrived and matched: a change found then is no cut connection but an
  answer afresh (``send`` returns False with nothing sent); only a change found later,
  in a slice after bytes went out, cuts the client's response short;
- a stale description is revalidated at the cost of one byte (a conditional
  ``Range: bytes=0-0``); an unchanged object keeps its slices.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import cachetools

from edge.cache.admission import stored_fields
from edge.cache.entry import Entry
from edge.cache.freshness import DefaultTtls, corrected_initial_age
from edge.cache.key import vary_names
from edge.cache.memory import MemoryTier
from edge.cache.slices import SliceMeta, aligned_spec
from edge.cache.status import CacheStatus, Fwd
from edge.cache.storability import why_not_storable
from edge.cache.validation import conditional_fields, merge_not_modified, validators_match
from edge.config import Config
from edge.core.disk import DiskTier
from edge.core.gateway import Gateway
from edge.core.respond import Responder
from edge.core.sink import ResponseSink
from edge.http.fields import get_all, get_one
from edge.http.message import Request
from edge.http.ranges import parse_content_range
from edge.upstream.client import UpstreamError, UpstreamResponse
from edge.upstream.fill import Fill

__all__ = ["Slices"]

GET, HEAD = b"GET", b"HEAD"

SliceWait = asyncio.Future[bytes | None]


class Changed:
    """What :meth:`Slices.fetch` returns when the upstream's answer was not this object's."""


CHANGED = Changed()


class Slices:
    """Fetching, storing and sending the slices of large objects."""

    def __init__(
        self,
        config: Config,
        memory: MemoryTier,
        gateway: Gateway,
        responder: Responder,
        ttls: DefaultTtls,
        clock: Callable[[], float],
    ) -> None:
        self.size = config.slice_size
        self.memory = memory
        self.gateway = gateway
        self.responder = responder
        self.ttls = ttls
        self.clock = clock
        self.disk: DiskTier | None = None
        """The disk tier, asked for a slice memory does not hold (set by ``EdgeCore``)."""
        self.waits: dict[bytes, SliceWait] = {}
        """Slices being fetched (by a Range request or a sliced fill): followers wait here."""
        self.unsliceable: cachetools.TTLCache[bytes, bool] = cachetools.TTLCache(
            maxsize=65536, ttl=config.pass_ttl, timer=clock
        )
        """Keys whose upstream answered a Range request with 200: not sliced again for a while."""

    # -- one slice ---------------------------------------------------------------------
    async def fetch(self, req: Request, meta: SliceMeta, index: int) -> bytes | Changed | None:
        """Slice ``index`` from the store, from a fetch under way, or from upstream with Range.

        ``CHANGED`` when the upstream's answer is not a slice of this object (the description
        is dropped), None when the upstream failed.
        """
        slice_key = meta.slice_key(index)
        for _ in range(2):
            data = self.memory.slice_data(meta, index)
            if data is not None:
                return data
            if self.disk is not None and (data := await self.disk.find_slice(slice_key)) is not None:
                self.memory.put_slice(meta, index, data)  # promoted, as a slice fetched upstream
                return data
            waiting = self.waits.get(slice_key)
            if waiting is None:
                break
            awaited: bytes | None = await asyncio.shield(waiting)
            if awaited is not None:
                return awaited
        future: SliceWait = asyncio.get_running_loop().create_future()
        self.waits[slice_key] = future
        result: bytes | None = None
        answer: bytes | Changed | None = None
        try:
            start, end = meta.span(index)
            resp = await self.gateway.fetch(req, meta.entry.key, [(b"Range", b"bytes=%d-%d" % (start, end))])
            try:
                if not meta.accepts(index, resp.status, resp.headers):
                    # The object changed upstream: forget it; the next request starts afresh.
                    self.memory.drop_sliced(meta.entry.key, only=meta)
                    return CHANGED
                body = b"".join([chunk async for chunk in resp.chunks()])
            finally:
                resp.close()
            if len(body) == end - start + 1:
                answer = result = body
                self.memory.put_slice(meta, index, body)
            return answer
        except UpstreamError:
            return None
        finally:
            if not future.done():
                future.set_result(result)
            if self.waits.get(slice_key) is future:
                del self.waits[slice_key]

    # -- a Range request for an object not in cache --------------------------------------
    async def range_miss(
        self, req: Request, sink: ResponseSink, key: bytes, fwd: Fwd
    ) -> tuple[UpstreamResponse, float] | None:
        """Answer from one slice-sized upstream Range request, not the whole object.

        Returns the upstream's answer (and when it was asked) when it ignored the Range
        and sent a whole 200: the caller makes that the key's ordinary fill.
        """
        value = req.fields[b"range"]
        first = value.partition(b"=")[2].split(b",")[0].strip()
        start_text = first.partition(b"-")[0].strip()
        # A start offset gives an aligned slice; a suffix range is asked as is (the length is unknown yet).
        spec = aligned_spec(int(start_text), self.size)[1] if start_text.isdigit() else b"bytes=" + first
        request_time = self.clock()
        try:
            resp = await self.gateway.fetch(req, key, [(b"Range", spec)], on_interim=sink.interim)
        except UpstreamError as exc:
            await self.responder.send_upstream_error(sink, req, fwd, exc)
            return None
        response_time = self.clock()
        if resp.status == 200:
            self.unsliceable[key] = True
            return resp, request_time
        span = parse_content_range(get_one(resp.headers, b"content-range"))
        if resp.status != 206 or span is None:
            await self.responder.relay(req, sink, resp, fwd)
            return None
        try:
            body = b"".join([chunk async for chunk in resp.chunks()])
        except UpstreamError:
            resp.close()
            await self.responder.send_upstream_error(sink, req, fwd, UpstreamError("upstream body truncated"))
            return None
        resp.close()
        first_byte, _, length = span
        fields, date = stored_fields(resp.headers, response_time, self.responder.via)
        fields = [(k, v) for k, v in fields if k.lower() != b"content-range"]
        policy = self.ttls.policy(200, fields, date, req.target)
        age0 = corrected_initial_age(get_one(resp.headers, b"age"), date, request_time, response_time)
        meta = SliceMeta(Entry(key, 200, b"OK", fields, b"", policy, response_time, age0), length, self.size)
        why = why_not_storable(req, 200, fields, policy)
        if why is None and not vary_names(get_all(fields, b"vary")):
            self.memory.put_sliced(meta)
            index = first_byte // self.size
            if (first_byte, first_byte + len(body) - 1) == meta.span(index):
                self.memory.put_slice(meta, index, body)
            status = self.responder.forwarded(fwd, 206, stored=True)
        else:
            status = self.responder.forwarded(fwd, 206, detail=(why or "vary").encode())
        if not await self.send(req, sink, meta, self.clock(), status, loose=(first_byte, body)):
            # The next slice it needed was not this object's: it changed between two requests.
            error = UpstreamError("the object changed upstream while its slices were fetched")
            await self.responder.send_upstream_error(sink, req, fwd, error)
        return None

    # -- answering from slices -----------------------------------------------------------
    async def send(
        self,
        req: Request,
        sink: ResponseSink,
        meta: SliceMeta,
        now: float,
        status: CacheStatus,
        loose: tuple[int, bytes] | None = None,
    ) -> bool:
        """Answer from slices: 200 whole, a 206 (one range, or multipart/byteranges), or 416.

        Only the slices holding the bytes sent are fetched. ``loose`` is a piece already in
        hand (the answer of a range miss), sent without looking it up again. Nothing is
        sent before the first of those slices missing from the store has arrived; when it
        shows the object changed, the answer is False and nothing was sent (the caller
        answers afresh); True once answered.
        """
        entry = meta.entry
        headers = [
            *entry.headers,
            (b"Age", b"%d" % entry.age(now)),
            (b"Cache-Status", bytes(status)),
            (b"X-Cache", b"HIT" if status.hit else b"MISS"),
        ]
        if self.responder.not_modified(req, sink, 200, entry.headers, headers):
            return True
        length = meta.length
        plan = self.responder.range_plan(req, 200, length, entry.headers)
        held: list[tuple[int, bytes]] = []  # the last slice fetched: the next part may need it too
        ready: dict[int, bytes] = {}  # the slice fetched before the response started
        spans = () if req.method == HEAD else ((0, length - 1),) if plan is None else plan.ranges
        missing = self._first_missing(meta, spans, loose)
        if missing is not None:
            first_missing = await self.fetch(req, meta, missing)
            if isinstance(first_missing, Changed):
                return False
            if first_missing is None:
                error = UpstreamError("the upstream failed to send a slice")
                await self.responder.send_upstream_error(sink, req, b"partial", error)
                return True
            ready[missing] = first_missing

        async def write(start: int, end: int) -> bool:
            for index in meta.covering(start, end):
                first, last = meta.span(index)
                lo, hi = max(start, first), min(end, last)
                if loose is not None and loose[0] <= lo and hi < loose[0] + len(loose[1]):
                    await sink.write(memoryview(loose[1])[lo - loose[0] : hi - loose[0] + 1])
                    continue
                data: bytes | Changed | None = ready.pop(index, None)
                if data is None and held and held[0][0] == index:
                    data = held[0][1]
                if data is None:
                    data = self.memory.slice_data(meta, index)
                if data is None and self.disk is not None:
                    body = await self.disk.slice_body(meta.slice_key(index))
                    if body is not None:  # a large slice: sent from its file, not promoted
                        try:
                            sent = await body.send(sink, lo - first, hi - first)
                        finally:
                            body.close()
                        if not sent:
                            sink.abort()  # the disk failed mid-slice: the record is dropped
                            return False
                        continue
                if data is None:
                    data = await self.fetch(req, meta, index)
                if not isinstance(data, bytes):
                    sink.abort()  # the object changed or the upstream failed mid-object
                    return False
                held[:] = [(index, data)]
                await sink.write(memoryview(data)[lo - first : hi - first + 1])
            return True

        if plan is not None:
            await self.responder.send_parts(sink, plan, headers, length, write)
            return True
        sink.start(200, entry.reason, headers, length)
        if req.method == HEAD or await write(0, length - 1):
            sink.end()
        return True

    def _first_missing(
        self, meta: SliceMeta, spans: tuple[tuple[int, int], ...], loose: tuple[int, bytes] | None
    ) -> int | None:
        """The first slice, in sending order, that the spans need and neither the store nor
        ``loose`` holds."""
        for start, end in spans:
            for index in meta.covering(start, end):
                first, last = meta.span(index)
                lo, hi = max(start, first), min(end, last)
                if loose is not None and loose[0] <= lo and hi < loose[0] + len(loose[1]):
                    continue
                if self.memory.slice_data(meta, index) is None and not (
                    self.disk is not None and self.disk.has_slice(meta.slice_key(index))
                ):
                    return index  # (a slice the disk sends from its file is not fetched first)
        return None

    async def revalidate(self, req: Request, meta: SliceMeta) -> SliceMeta | None:
        """Ask whether a sliced object is unchanged, at the cost of one byte.

        Returns the freshened description (stored in place of ``meta``) when it is,
        None when it changed or the upstream could not say. A browser reload
        (``no-cache``) or an expired description must not refetch a large object
        whose slices are still right.
        """
        if meta.entry.etag is None and meta.entry.last_modified is None:
            return None
        request_time = self.clock()
        try:
            resp = await self.gateway.fetch(
                req, meta.entry.key, [*conditional_fields(meta.entry), (b"Range", b"bytes=0-0")]
            )
        except UpstreamError:
            return None
        try:
            response_time = self.clock()
            fields, date = stored_fields(resp.headers, response_time, self.responder.via)
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
            return None
        finally:
            resp.close()
        if not same:
            return None
        fields = [(k, v) for k, v in fields if k.lower() not in (b"content-range", b"set-cookie")]
        merged = merge_not_modified(meta.entry.headers, fields)
        policy = self.ttls.policy(200, merged, date, req.target)
        age0 = corrected_initial_age(get_one(resp.headers, b"age"), date, request_time, response_time)
        entry = meta.entry
        fresh = meta.with_entry(Entry(entry.key, 200, entry.reason, merged, b"", policy, response_time, age0))
        self.memory.replace_sliced(fresh)
        return fresh

    # -- a whole 200 cut into slices as it passes ----------------------------------------
    async def cut_stream(self, fill: Fill, resp: UpstreamResponse, meta: SliceMeta) -> None:
        """Relay a whole 200 to the fill's readers while cutting it into stored slices.

        Only the slice being cut is announced in ``waits``: a client that wants a later
        slice fetches it with Range rather than wait for a stream paced by someone
        else's slow reader.
        """
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        index = 0

        def announce(i: int) -> SliceWait | None:
            key = meta.slice_key(i)
            if i >= meta.count() or key in self.waits:
                return None
            future: SliceWait = loop.create_future()
            self.waits[key] = future
            return future

        def retire(i: int, future: SliceWait | None, data: bytes | None) -> None:
            if future is None:
                return
            if not future.done():
                future.set_result(data)
            if self.waits.get(meta.slice_key(i)) is future:
                del self.waits[meta.slice_key(i)]

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
                    self.memory.put_slice(meta, index, data)
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
