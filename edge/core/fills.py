"""Fills: the one upstream fetch per key that every waiting client reads as it arrives.

Guarantees:
- concurrent misses for one key make one upstream request (request collapsing); when
  the response turns out not storable, or its Vary does not match a joined client's
  request, that client goes upstream on its own, and a key refused for a reason that
  holds for everyone is remembered as hit-for-pass for ``pass_ttl`` seconds;
- a stale entry is revalidated with its validators; a 304 freshens it and its stored
  body is served (RFC 9111 §4.3.4); stale content is served only where
  ``edge.cache.stale`` allows;
- what is kept is decided from the head alone by ``edge.cache.admission``; a body is
  stored only when it arrived whole, and a purge during the fetch keeps it out of
  the cache (``discard_in_flight``);
- a fill runs in its own task, not a client's: a client that goes away never stops it
  for the others, and readers never wait on a fill that failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import cachetools

from edge.cache import stale as stale_rules
from edge.cache.admission import AdmissionRules, StorePlan, plan_admission, plan_refresh, stored_fields
from edge.cache.encoded import freshened
from edge.cache.entry import Entry
from edge.cache.freshness import corrected_initial_age
from edge.cache.key import secondary_key
from edge.cache.memory import MemoryTier
from edge.cache.slices import SliceMeta
from edge.cache.status import Fwd
from edge.cache.validation import conditional_fields, validators_match
from edge.config import Config
from edge.core.forward import Forwarder
from edge.core.gateway import FILL_DROPPED_FIELDS, Gateway
from edge.core.respond import Responder
from edge.core.sink import ResponseSink
from edge.core.slices import Slices
from edge.http.cache_control import Directives
from edge.http.fields import Headers, declared_length, get_one
from edge.http.message import Request
from edge.http.ranges import content_range
from edge.upstream.client import UpstreamError, UpstreamResponse, UpstreamTimeout
from edge.upstream.fill import Fill, Reader

__all__ = ["Fills"]

GET, HEAD = b"GET", b"HEAD"

Adopted = tuple[UpstreamResponse, float]
"""An upstream response already received, with the time its request was sent."""


def _no_interim(status: int, headers: Headers) -> None:
    """Background refreshes have no client to relay 1xx responses to."""


class Fills:
    """The fills in flight, keyed by primary key, and the keys known to be uncacheable."""

    def __init__(
        self,
        config: Config,
        memory: MemoryTier,
        gateway: Gateway,
        responder: Responder,
        forwarder: Forwarder,
        slices: Slices,
        rules: AdmissionRules,
        clock: Callable[[], float],
    ) -> None:
        self.memory = memory
        self.gateway = gateway
        self.responder = responder
        self.forwarder = forwarder
        self.slices = slices
        self.rules = rules
        self.clock = clock
        self.stale_grace = config.stale_grace
        self.in_flight: dict[bytes, Fill] = {}
        self.pass_keys: cachetools.TTLCache[bytes, str] = cachetools.TTLCache(
            maxsize=65536, ttl=config.pass_ttl, timer=clock
        )
        """Keys whose response was refused for everyone: their misses skip collapsing a while."""
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """Fills in flight."""
        return len(self.in_flight)

    def discard_in_flight(self) -> None:
        """After a purge: fills already under way finish for their readers but store nothing."""
        for fill in self.in_flight.values():
            fill.discard = True

    # -- clients -------------------------------------------------------------------------
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
        fill = self.in_flight.get(key)
        collapsed = fill is not None
        if fill is None:
            fill = self._start(req, key, stale, sink.interim)
        reader = fill.attach()
        try:
            await self._read(req, sink, fill, reader, collapsed, fwd, stale, request_cc)
        finally:
            fill.detach(reader)

    async def serve_adopted(
        self, req: Request, sink: ResponseSink, key: bytes, adopted: Adopted, fwd: Fwd, request_cc: Directives
    ) -> None:
        """Make a response already received (a 200 to a Range request) the key's fill, and answer from it."""
        fill = self._start(req, key, None, sink.interim, adopted)
        reader = fill.attach()
        try:
            await self._read(req, sink, fill, reader, False, fwd, None, request_cc)
        finally:
            fill.detach(reader)

    def refresh_in_background(self, req: Request, key: bytes, stale: Entry) -> None:
        """stale-while-revalidate: one validation per key, whoever asks meanwhile."""
        if key not in self.in_flight:
            self._start(req, key, stale, _no_interim)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # -- reading a fill ------------------------------------------------------------------
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
            or (fill.vary and secondary_key(req, fill.vary) != fill.secondary)
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
        headers = [
            *fill.headers,
            *(() if collapsed else fill.leader_fields),
            (b"Age", b"%d" % fill.age),
            (b"Cache-Status", bytes(status)),
            (b"X-Cache", b"MISS"),
        ]
        if respond.not_modified(req, sink, fill.status, fill.headers, headers):
            return
        await self._stream(req, sink, fill, reader, headers)

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

    # -- running a fill ------------------------------------------------------------------
    def _start(
        self,
        req: Request,
        key: bytes,
        stale: Entry | None,
        interim: Callable[[int, Headers], None],
        adopted: Adopted | None = None,
    ) -> Fill:
        """Register the one fill for ``key`` and run it in its own task."""
        fill = Fill(key, stale)
        self.in_flight[key] = fill
        task = asyncio.get_running_loop().create_task(self._run(fill, req, interim, adopted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fill

    def _drop(self, fill: Fill) -> None:
        """Nobody joins ``fill`` any more (its readers go on reading)."""
        if self.in_flight.get(fill.key) is fill:
            del self.in_flight[fill.key]

    async def _run(
        self, fill: Fill, req: Request, interim: Callable[[int, Headers], None], adopted: Adopted | None
    ) -> None:
        try:
            await self._fetch(fill, req, interim, adopted)
        except Exception as exc:  # never leave readers waiting on a broken fill
            fill.fail_head(exc if isinstance(exc, UpstreamError) else UpstreamError(repr(exc)))
            fill.fail(UpstreamError(repr(exc)))
            raise
        finally:
            self._drop(fill)

    async def _fetch(
        self, fill: Fill, req: Request, interim: Callable[[int, Headers], None], adopted: Adopted | None
    ) -> None:
        """Fetch ``fill.key`` once (conditionally when revalidating), then admit what came."""
        stale = fill.stale
        if adopted is not None:
            resp, request_time = adopted
        else:
            headers = self.gateway.fields_for(req, drop=FILL_DROPPED_FIELDS)
            if stale is not None:
                headers += conditional_fields(stale)
            request_time = self.clock()
            try:
                resp = await self.gateway.request(GET, req.target, headers, on_interim=interim)
            except UpstreamError as exc:
                fill.fail_head(exc)
                return
        response_time = self.clock()
        fields, date = stored_fields(resp.headers, response_time, self.responder.via)
        age = corrected_initial_age(get_one(resp.headers, b"age"), date, request_time, response_time)
        fill.upstream_status, fill.age = resp.status, int(age)
        if resp.status == 304:
            resp.close()
            if stale is not None and validators_match(stale, fields):
                self._refresh(fill, req, stale, fields, date, response_time, age)
            elif stale is not None:
                # The 304 does not describe what we hold: ask again without preconditions.
                fill.stale = None
                await self._fetch(fill, req, interim, None)
            else:
                fill.fail_head(UpstreamError("upstream answered 304 to an unconditional request"))
            return
        plan = plan_admission(
            req, resp.status, fields, date, declared_length(resp.headers), stale, response_time, self.rules
        )
        fill.status, fill.reason, fill.headers = resp.status, resp.reason, plan.fields
        fill.leader_fields, fill.not_storable, fill.length = (
            plan.leader_fields,
            plan.not_storable,
            plan.length,
        )
        fill.vary, fill.secondary = plan.vary, plan.secondary
        if plan.not_storable is not None:
            self._drop(fill)
            fill.stop_keeping()
            if plan.hit_for_pass:
                self.pass_keys[fill.key] = plan.not_storable
        if plan.sliced:
            assert plan.length is not None
            entry = Entry(
                fill.key, resp.status, resp.reason, plan.fields, b"", plan.policy, response_time, age
            )
            meta = SliceMeta(entry, plan.length, self.slices.size)
            # Followers read slices (stored as they complete); nobody joins this fill.
            self._drop(fill)
            fill.stop_keeping()
            fill.set_head()
            self.memory.put_sliced(meta)
            await self.slices.cut_stream(fill, resp, meta)
            return
        fill.set_head()
        await self._stream_and_store(fill, resp, plan, response_time, age)

    async def _stream_and_store(
        self, fill: Fill, resp: UpstreamResponse, plan: StorePlan, response_time: float, age: float
    ) -> None:
        """Hand the body to the fill's readers as it arrives; store it if it came whole and may be kept."""
        why = plan.not_storable
        try:
            async for chunk in resp.chunks():
                fill.append(chunk)
                if why is None and fill.size > self.rules.max_object_size:
                    why = "too-large"
                    self._drop(fill)
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
        if why is not None or fill.discard:
            return
        body = fill.body()
        if fill.length is not None and len(body) != fill.length:
            return
        entry = Entry(
            fill.key,
            resp.status,
            resp.reason,
            plan.fields,
            body,
            plan.policy,
            response_time,
            age,
            plan.vary or (),
        )
        if plan.compressible and len(body) >= self.rules.compress_min_size:
            entry.encodings = {}
        self.memory.put_response(entry, plan.secondary)

    def _refresh(
        self,
        fill: Fill,
        req: Request,
        stale: Entry,
        fields_304: Headers,
        date: float,
        response_time: float,
        age: float,
    ) -> None:
        """RFC 9111 §4.3.4: freshen the stored fields and serve the stored body."""
        plan = plan_refresh(req, stale, fields_304, date, self.rules.ttls)
        fill.status, fill.reason, fill.headers = stale.status, stale.reason, plan.fields
        fill.length = len(stale.body)
        fill.vary = stale.vary
        if stale.vary:
            fill.secondary = secondary_key(req, stale.vary)
        fill.not_storable = plan.not_storable
        fill.append(stale.body)
        fill.finish()
        fill.set_head()
        if plan.not_storable is not None:
            self.memory.drop_response(fill.key)  # the upstream withdrew permission to keep it
        elif not fill.discard:
            entry = freshened(stale, plan.fields, plan.policy, response_time, age)
            self.memory.put_response(entry, fill.secondary)
