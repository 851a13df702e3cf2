"""The protocol-neutral request handler every front calls, and the node's operations API.

``EdgeCore`` is a thin facade over parts that each own their state:

- ``MemoryTier`` (``edge.cache.memory``): what is stored under which key;
- ``Gateway``: the requests sent upstream and their fields;
- ``Responder``: writing stored entries, ranges, 304s, relayed answers, errors;
- ``Forwarder``: pass-through for what the cache does not answer;
- ``Slices``: large objects as slices fetched with Range;
- ``Fills``: the one upstream fetch per key that every waiting client tails;
- ``Misses``: clients joining (or starting) a fill and reading it;
- ``Compressor``: the compressed siblings of stored entries.

It decides which part answers a request (:meth:`EdgeCore.serve`) and answers a fresh
hit itself (:meth:`EdgeCore.fresh_hit`). Operators and the admin API reach it through
:meth:`EdgeCore.purge` and :meth:`EdgeCore.stats`, never through the parts.

Guarantees:
- a fresh hit is answered synchronously through :meth:`EdgeCore.fresh_hit` (no await,
  no per-request framework objects); a request carrying a field whose rule only the
  full path applies (``edge.cache.reuse.FAST_HIT_BLOCKERS``) never takes it;
- concurrent misses for one key make one upstream request (see ``edge.core.fills``);
- a stale entry is served only where ``edge.cache.reuse`` / ``edge.cache.stale`` allow;
- a purge reaches fills already under way: they finish for their readers, store nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, cast

from edge.cache import stale as stale_rules
from edge.cache.admission import AdmissionRules
from edge.cache.entry import Entry, Variants
from edge.cache.freshness import DefaultTtls
from edge.cache.key import primary_key, secondary_key
from edge.cache.memory import MemoryTier
from edge.cache.purge import PurgeKind, purge
from edge.cache.reuse import FAST_HIT_BLOCKERS, Reuse, decide_reuse, request_directives
from edge.cache.status import Fwd, cache_name
from edge.cache.store import Store, make_store
from edge.config import Config, parse_ttl_rules
from edge.core.challenges import Challenges
from edge.core.clients import ClientLimits
from edge.core.codings import Compressor
from edge.core.disk import DiskTier, FileBody
from edge.core.fills import Fills
from edge.core.forward import Forwarder
from edge.core.gateway import Gateway, build_router
from edge.core.misses import Misses
from edge.core.observe import RequestLog
from edge.core.respond import Responder
from edge.core.sink import ResponseSink
from edge.core.slices import Slices
from edge.http.fields import Headers, split_list
from edge.http.message import Request
from edge.http.peers import TrustedProxies
from edge.upstream.router import Router

__all__ = ["EdgeCore", "HitRoute"]

GET, HEAD = b"GET", b"HEAD"
NEVER = float("-inf")
_NO_VERDICTS: dict[bytes, bool] = {}


def _ttl(entry: Entry, now: float) -> int | None:
    """Seconds of freshness left for Cache-Status (none for an entry that is never fresh)."""
    return None if entry.fresh_until == NEVER else int(entry.fresh_until - now)


ROUTE_MAX_CHARGE = 24 * 1024
"""Largest stored value (all its variants and siblings) a HitRoute is made for: a route
holds it until its bytes come again or its table is emptied, also after an eviction, so
1,024 routes hold at most 24 MiB beside the store. Larger objects gain little from it:
writing the body costs more than parsing the request."""


class HitRoute:
    """A fresh hit's answer, held for requests identical to the one it was decided for.

    :meth:`EdgeCore.fresh_hit` is a function of the request and of the stored ``found``
    (an Entry or Variants) under ``key``: the variant of ``secondary`` (the ``base``
    entry), its freshness and its compressed siblings. While ``found`` is still stored
    under ``key`` (a purge, replacement or eviction removes it), ``base`` is still the
    variant, still fresh, and has the same siblings (``codings``, which only grow), the
    same request gets ``entry`` again: :meth:`EdgeCore.replay` checks exactly that.
    """

    __slots__ = ("base", "codings", "entry", "found", "key", "secondary")

    def __init__(
        self, key: bytes, found: Entry | Variants, secondary: bytes | None, base: Entry, entry: Entry
    ) -> None:
        self.key = key
        self.found = found
        self.secondary = secondary
        self.base = base
        self.entry = entry
        self.codings = -1 if base.encodings is None else len(base.encodings)


class EdgeCore:
    """One node's cache and upstream, shared by every protocol front."""

    def __init__(
        self,
        config: Config,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        siblings: Sequence[str | None] = (),
    ) -> None:
        """``siblings``: the node's workers in order, each the Unix socket path of its cache hop
        (None for this worker); empty for a node of one worker."""
        self.config = config
        self.clock = clock
        self.store: Store = (
            store if store is not None else make_store(config.cache_size, policy=config.eviction)
        )
        """The store itself (LRU or S3-FIFO, ``eviction``): its counters and size (the parts go
        through ``memory``)."""
        self.memory = MemoryTier(self.store)
        self._lookup = self.memory.lookup
        self.hit_fields: Headers = [(b"X-Cache", b"HIT")]
        """Fields every fresh hit carries besides Age and Cache-Status (see :meth:`hit_status`)."""
        ttls = self.ttls = DefaultTtls(parse_ttl_rules(config.default_ttl))
        self.siblings = list(siblings)
        self.compressor = Compressor(config, self.memory)
        self._verdicts = self.compressor.verdicts
        self.node_id = config.node_id or secrets.token_hex(8)
        """This node's id in CDN-Loop: the wiring gives all workers of a node the same one."""
        self.gateway = Gateway(config, build_router(config, clock, siblings), self.node_id)
        self.disk: DiskTier | None = None
        """The disk tier below memory (``disk_cache``), or None; only this worker's keys."""
        if config.disk_cache:
            worker = self.siblings.index(None) if None in self.siblings else 0
            share = config.disk_size // max(1, len(self.siblings))  # keys are shared out evenly
            self.disk = DiskTier(config.disk_cache, share, self._owns, clock, worker)
            self.memory.lower = self.disk
        self._disk_start: asyncio.Task[None] | None = None
        self.node_param = b"node=" + self.node_id.encode()
        """How this node's member of CDN-Loop ends: a request carrying it already passed here."""
        self.responder = Responder(
            cache_name(config.name), b"1.1 " + config.name.encode(), self.compressor, clock
        )
        self.forwarder = Forwarder(self.gateway, self.responder, self.memory, ttls)
        self.slices = Slices(config, self.memory, self.gateway, self.responder, ttls, clock)
        self.slices.disk = self.disk
        rules = AdmissionRules(
            max_object_size=config.max_object_size,
            slice_size=config.slice_size,
            compress=bool(self.compressor.codings),
            compress_min_size=config.compress_min_size,
            stale_grace=config.stale_grace,
            ttls=ttls,
        )
        self.fills = Fills(config, self.memory, self.gateway, self.responder, self.slices, rules, clock)
        self.serving = 0
        """Responses being served by :meth:`serve` (the slow path) right now."""
        self._idle: asyncio.Event | None = None
        self.misses = Misses(self.fills, self.responder, self.forwarder, config.stale_grace, clock)
        self._retired: list[Router] = []
        """Routers a reload replaced, closed once no request can still be waiting on them."""
        self.clients = ClientLimits(
            config.max_client_connections,
            config.rate_limit,
            config.rate_burst,
            config.max_tunnels,
            config.max_client_tunnels,
            TrustedProxies.of(config.trusted_proxies),
        )
        """Per-client-address connection cap and rate limit, applied by the fronts."""
        self.replay_tables: dict[Any, dict[bytes, Any]] = {}
        """The fronts' tables of fast hits by request bytes (``edge.fronts.h1.Replay``), each
        listener kind's own: kept here so that a purge empties them (see :meth:`purge`)."""
        self.requests = RequestLog()
        """Counters of answered requests and the access log (``edge.core.observe``)."""
        self.challenges = Challenges()
        """ACME HTTP-01 tokens being validated (``edge.core.challenges``); inactive but while an
        order of ``edge.wiring.acme`` is under way (or, in a worker of several, while ACME is on)."""

    def _owns(self, key: bytes) -> bool:
        """Whether this worker owns ``key`` among the node's workers (it alone keeps it on disk)."""
        return self.gateway.router.owner(key) is None

    def begin(self) -> None:
        """Start what runs in the background from the start (the disk tier's index rebuild)."""
        if self.disk is not None and self._disk_start is None:
            self._disk_start = asyncio.get_running_loop().create_task(self.disk.start())

    # -- the hot path ------------------------------------------------------------------
    def fresh_hit(self, req: Request, now: float) -> Entry | None:
        """The entry to send as is, or None when :meth:`serve` must decide. Never awaits."""
        method = req.method
        if (method != GET and method != HEAD) or not req.fields.keys().isdisjoint(FAST_HIT_BLOCKERS):
            return None
        found = self._lookup(primary_key(req))
        if found is None:
            return None
        if type(found) is Variants:
            entry = found.by_secondary.get(secondary_key(req, found.names))
            if entry is None:
                return None
            coding = entry.negotiated  # the upstream's coding: only for requests accepting it
            if coding is not None:
                accept = req.fields.get(b"accept-encoding")
                verdict = self._verdicts.get(accept, _NO_VERDICTS).get(coding)
                if not (self.compressor.accepts(accept, coding) if verdict is None else verdict):
                    return None
        else:
            entry = found
        if now >= entry.fresh_until:
            return None
        if entry.encodings is not None:
            return self.compressor.representation(entry, req)
        return entry

    def disk_hit(self, req: Request, now: float) -> tuple[Entry, FileBody] | None:
        """For a request :meth:`fresh_hit` answered None: a fresh large record on disk whose
        body is sent from its file (``DiskTier.fast_hit``), when memory holds nothing under
        the key (else :meth:`serve` decides). Never awaits; the caller closes the body."""
        disk = self.disk
        if disk is None:
            return None
        method = req.method
        if (method != GET and method != HEAD) or not req.fields.keys().isdisjoint(FAST_HIT_BLOCKERS):
            return None
        key = primary_key(req)
        if self.memory.holds_key(key):
            return None
        return disk.fast_hit(req, key, now)

    def hit_route(self, req: Request, entry: Entry) -> HitRoute | None:
        """What keeps ``entry``, just returned by :meth:`fresh_hit` for ``req``, the answer to
        every request identical to ``req`` (see :class:`HitRoute`); None when it is not final
        (a compressed sibling the request takes is still being made)."""
        key = primary_key(req)
        found = self._lookup(key)
        secondary = None
        base = found
        if type(found) is Variants:
            secondary = secondary_key(req, found.names)
            base = found.by_secondary.get(secondary)
        if found is None or type(base) is not Entry or not self.compressor.settled(base, entry, req):
            return None
        if found.charge > ROUTE_MAX_CHARGE:
            return None  # a route holds what it checks: only small objects, the ones it pays for
        return HitRoute(key, found, secondary, base, entry)

    def replay(self, route: HitRoute, now: float) -> Entry | None:
        """:meth:`fresh_hit`'s answer for a request identical to the one ``route`` was made
        for, or None when the route no longer holds (then ask :meth:`fresh_hit`). Never awaits."""
        base = route.base
        if now >= base.fresh_until:
            return None
        found = self._lookup(route.key)  # also what makes it a use for the eviction policy
        if found is not route.found:
            return None  # purged, replaced, evicted
        if (
            route.secondary is not None
            and cast(Variants, found).by_secondary.get(route.secondary) is not base
        ):
            return None
        encodings = base.encodings
        if encodings is not None and len(encodings) != route.codings:
            return None  # a new sibling: the coding choice may change
        return route.entry

    @property
    def cache_name(self) -> bytes:
        """This node's name as its Cache-Status member writes it."""
        return self.responder.name

    @property
    def via(self) -> bytes:
        """The Via value this node adds to responses."""
        return self.responder.via

    def hit_status(self, ttl: int) -> bytes:
        """Cache-Status value of a fresh hit with ``ttl`` seconds of freshness left."""
        return bytes(self.responder.hit(ttl))

    # -- every other request -------------------------------------------------------------
    async def serve(self, req: Request, sink: ResponseSink) -> None:
        """Answer ``req`` on ``sink``: hit, stale, revalidation, collapsed fill or pass."""
        self.serving += 1
        try:
            await self._answer(req, sink)
        finally:
            self.serving -= 1
            if not self.serving and self._idle is not None:
                self._idle.set()

    async def drained(self, timeout: float) -> bool:
        """Wait until no response is being served through :meth:`serve`, at most ``timeout`` s.

        For a graceful shutdown: the listeners are closed first, so the count only falls.
        """
        if not self.serving:
            return True
        self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                while self.serving:
                    self._idle.clear()
                    await self._idle.wait()
        except TimeoutError:
            return False
        finally:
            self._idle = None
        return True

    async def _answer(self, req: Request, sink: ResponseSink) -> None:
        if self.challenges.active and await self.challenges.answer(req, sink, self.clock()):
            return
        if b"cdn-loop" in req.fields and self._looped(req):
            await self.responder.send_loop_detected(sink, req)
            return
        if req.method not in (GET, HEAD):
            if req.method in (b"OPTIONS", b"TRACE") and req.fields.get(b"max-forwards", b"").strip() == b"0":
                await self.responder.send_final_options(sink, req)
            else:
                await self.forwarder.forward(req, sink, b"request")
            return
        now = self.clock()
        key = primary_key(req)
        request_cc = request_directives(req)
        entry, has_variants = self.memory.response(req, key)
        respond = self.responder
        if entry is None and self.disk is not None:
            found = await self.disk.find(req, key)
            body = found[2] if found is not None else None
            if found is not None and body is not None:
                # A large body: sent from its file, not promoted (edge.core.disk.PROMOTE_MAX).
                stub = found[0]
                try:
                    now = self.clock()
                    if decide_reuse(stub, request_cc, now) is not Reuse.VALIDATE:
                        status = respond.hit(_ttl(stub, now))
                        await respond.send_file_entry(req, sink, stub, body, now, status)
                        return
                finally:
                    body.close()
                # To be revalidated: read whole and promoted, then as any stored entry below.
                found = await self.disk.find(req, key, whole=True)
            if found is not None:  # promoted to memory as any new entry (the store's policy)
                entry, has_variants = found[0], bool(found[0].vary)
                self.memory.put_response(entry, found[1])
                now = self.clock()
        if entry is not None:
            reuse = decide_reuse(entry, request_cc, now)
            ttl = _ttl(entry, now)
            if reuse is not Reuse.VALIDATE:  # fresh, or stale within the request's max-stale
                await respond.send_entry(req, sink, entry, now, respond.hit(ttl))
                return
            if stale_rules.while_revalidate(entry, request_cc, now):
                self.fills.refresh_in_background(req, key, entry)
                await respond.send_entry(req, sink, entry, now, respond.hit(ttl, b"stale-while-revalidate"))
                return
        elif not has_variants:
            meta = self.memory.sliced(key)
            if meta is None and self.disk is not None:
                meta = await self.disk.find_meta(key)
                if meta is not None:  # its slices are read from disk as they are needed
                    self.memory.put_sliced(meta)
                    now = self.clock()
            if meta is not None:
                if decide_reuse(meta.entry, request_cc, now) is not Reuse.VALIDATE:
                    status = respond.hit(_ttl(meta.entry, now))
                    if await self.slices.send(req, sink, meta, now, status):
                        return
                    # A slice it needed showed the object changed before a byte was sent:
                    # the description is gone, so the request is answered afresh below.
                else:
                    fresh = (
                        None if b"only-if-cached" in request_cc else await self.slices.revalidate(req, meta)
                    )
                    if fresh is not None:
                        asked = b"no-cache" in request_cc or b"max-age" in request_cc
                        status = respond.forwarded(b"request" if asked else b"stale", 304)
                        if await self.slices.send(req, sink, fresh, self.clock(), status):
                            return
                    self.memory.drop_sliced(key)  # changed or unknown: slices are fetched afresh
        if b"only-if-cached" in request_cc:
            status = respond.forwarded(b"miss", detail=b"only-if-cached")
            await respond.send_error(sink, req, 504, status, "not in cache")
            return
        if (
            entry is None
            and req.method == GET
            and b"range" in req.fields
            and key not in self.slices.unsliceable
        ):
            await self._range_miss(req, sink, key)
            return
        fwd: Fwd
        if entry is not None:
            asked = b"no-cache" in request_cc or b"max-age" in request_cc or b"min-fresh" in request_cc
            fwd = b"request" if asked else b"stale"
        else:
            fwd = b"vary-miss" if has_variants else b"uri-miss"
            if key in self.fills.pass_keys:
                await self.forwarder.forward(req, sink, fwd, b"pass")
                return
        await self.misses.serve(req, sink, key, fwd, entry, request_cc)

    def _looped(self, req: Request) -> bool:
        """Whether the request already passed this node (its CDN-Loop carries our node id)."""
        value = req.fields.get(b"cdn-loop")
        if value is None:
            return False
        node = self.node_param
        return any(
            param.strip() == node for member in split_list([value]) for param in member.split(b";")[1:]
        )

    async def _range_miss(self, req: Request, sink: ResponseSink, key: bytes) -> None:
        """A Range request for an object not in cache: one slice-sized upstream request."""
        adopted = await self.slices.range_miss(req, sink, key, b"uri-miss")
        if adopted is None:
            return
        # The upstream ignores ranges and sent the whole 200: that becomes the key's fill
        # (the range is cut from it as it streams), unless a fill is already under way.
        if key in self.fills.in_flight:
            await self.responder.relay(req, sink, adopted[0], b"uri-miss")
        else:
            await self.misses.serve_adopted(req, sink, key, adopted, b"uri-miss", request_directives(req))

    # -- operations ----------------------------------------------------------------------
    def purge(self, kind: PurgeKind, target: str = "", *, soft: bool = False) -> int:
        """Purge by URL, prefix, tag or everything; how many stored responses were purged.

        Raises ``edge.cache.purge.PurgeError`` for a target the cache could not hold.
        Fills under way when the purge runs finish for their readers but store nothing.
        """
        purged = purge(self.memory, kind, target, soft=soft)
        for table in self.replay_tables.values():
            table.clear()  # their routes would fail their check; this frees what they hold
        if self.disk is not None:
            # Memory holds a subset of the disk's responses (written through) plus copies of other
            # workers' keys: the larger count is the better estimate of distinct responses.
            purged = max(purged, self.disk.purge(kind, target, soft))
        self.fills.discard_in_flight()
        return purged

    async def flush_purges(self) -> None:
        """Wait until the purges made so far are durable (the disk tier's purge log)."""
        if self.disk is not None:
            await self.disk.flush()

    def stats(self) -> dict[str, Any]:
        """The node's counters: store, compressions (pending, and skipped or dropped by the
        backlog bounds of ``edge.core.codings``), fills, upstream requests, hit-for-pass keys,
        and ``traffic``: the answered requests (:meth:`RequestLog.snapshot`)."""
        store = self.store
        counters = store.stats()
        return {
            "entries": len(store),
            "bytes": store.total_charge,
            "capacity": store.capacity,
            "hits": counters["hits"],
            "misses": counters["misses"],
            "inserts": counters["inserts"],
            "evictions": counters["evictions"],
            "compressions_pending": self.compressor.pending,
            "compressions_skipped": self.compressor.skipped,
            "compressions_dropped": self.compressor.dropped,
            "fills_in_flight": len(self.fills),
            "upstream_requests": self.gateway.requests,
            "sibling_requests": self.gateway.router.sibling_requests,
            "hit_for_pass_keys": len(self.fills.pass_keys),
            "refused_connections": self.clients.refused_connections,
            "rate_limited_requests": self.clients.refused_requests,
            "tunnels": self.clients.tunnels,
            "refused_tunnels": self.clients.refused_tunnels,
            **(self.disk.stats() if self.disk is not None else {}),
            "traffic": self.requests.snapshot(),
        }

    def reload(self, config: Config) -> None:
        """Apply a re-read configuration's upstreams, shields and TTL rules (SIGHUP).

        Requests already sent keep the upstream they chose; new ones use the new router.
        The old router's connections are closed once a response could no longer be
        waiting on them (connect plus read timeout), its counters carried over.
        """
        old = self.gateway.router
        router = build_router(config, self.clock, self.siblings)
        router.carry_over(old)
        self.gateway.router = router
        self.gateway.upstream_host = config.upstream_host.encode() or None
        self.ttls.rules = parse_ttl_rules(config.default_ttl)
        grace = config.connect_timeout + 2 * config.read_timeout
        self._retired.append(old)
        asyncio.get_running_loop().call_later(grace, self._retire, old)

    def _retire(self, router: Router) -> None:
        if router in self._retired:
            self._retired.remove(router)
            router.close()

    def upstreams(self) -> list[dict[str, object]]:
        """Every upstream (sibling workers, shields, origin) with its health and counters."""
        return self.gateway.router.stats()

    @property
    def compressions(self) -> Counter[bytes]:
        """How many times each coding was produced (see :class:`Compressor`)."""
        return self.compressor.counts

    async def aclose(self) -> None:
        await self.fills.aclose()
        if self._disk_start is not None:
            await self._disk_start
        if self.disk is not None:
            await self.disk.aclose()
        self.gateway.close()
        for router in self._retired:
            router.close()
        self._retired.clear()
        self.compressor.close()
