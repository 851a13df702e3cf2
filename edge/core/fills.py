"""Fills: the one upstream fetch per key that every waiting client reads as it arrives.

This module runs fills (``edge.core.misses`` reads them for clients). Guarantees:
- one fill per key at a time (request collapsing); a key whose response was refused
  for a reason that holds for everyone is remembered as hit-for-pass for ``pass_ttl``
  seconds, so its next misses do not wait on one another;
- a stale entry is revalidated with its validators; a 304 freshens it and readers get
  its stored body (RFC 9111 §4.3.4); a 304 that does not describe the stored response
  is followed by one unconditional request;
- what is kept is decided from the head alone by ``edge.cache.admission``; a body is
  stored only when it arrived whole, and a purge during the fetch keeps it out of
  the cache (``discard_in_flight``);
- a fill runs in its own task, not a client's: a client that goes away never stops it
  for the others, and readers never wait on a fill that failed;
- a fill that nobody reads and that will not be stored stops fetching.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import cachetools

from edge.cache.admission import AdmissionRules, StorePlan, plan_admission, plan_refresh, stored_fields
from edge.cache.encoded import freshened
from edge.cache.entry import Entry
from edge.cache.freshness import corrected_initial_age
from edge.cache.key import secondary_key
from edge.cache.memory import MemoryTier
from edge.cache.slices import SliceMeta
from edge.cache.validation import conditional_fields, validators_match
from edge.config import Config
from edge.core.gateway import Gateway
from edge.core.respond import Responder
from edge.core.slices import Slices
from edge.http.fields import Headers, declared_length, get_one
from edge.http.message import Request
from edge.upstream.client import UpstreamError, UpstreamResponse
from edge.upstream.fill import Fill

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
        slices: Slices,
        rules: AdmissionRules,
        clock: Callable[[], float],
    ) -> None:
        self.memory = memory
        self.gateway = gateway
        self.responder = responder
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

    def refresh_in_background(self, req: Request, key: bytes, stale: Entry) -> None:
        """stale-while-revalidate: one validation per key, whoever asks meanwhile."""
        if key not in self.in_flight:
            self.start(req, key, stale, _no_interim)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # -- running a fill ------------------------------------------------------------------
    def start(
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
            conditions = conditional_fields(stale) if stale is not None else []
            request_time = self.clock()
            try:
                resp = await self.gateway.fetch(req, fill.key, conditions, on_interim=interim)
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
            req,
            resp.status,
            fields,
            date,
            declared_length(resp.headers),
            stale,
            response_time,
            self.rules,
            transfer_coded=resp.transfer_coded,
        )
        fill.status, fill.reason, fill.headers = resp.status, resp.reason, plan.fields
        fill.leader_fields, fill.not_storable, fill.length = (
            plan.leader_fields,
            plan.not_storable,
            plan.length,
        )
        fill.vary, fill.secondary = plan.vary, plan.secondary
        fill.compressible = plan.compressible
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
        fill.stored = entry

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
        fill.compressible = stale.encodings is not None
        fill.append(stale.body)
        fill.finish()
        fill.set_head()
        if plan.not_storable is not None:
            self.memory.drop_response(fill.key)  # the upstream withdrew permission to keep it
        elif not fill.discard:
            entry = freshened(stale, plan.fields, plan.policy, response_time, age)
            self.memory.put_response(entry, fill.secondary)
            fill.stored = entry
