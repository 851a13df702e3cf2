"""Which upstream a request goes to: sibling worker, shields by rendezvous hashing, then the origin.

An ``Upstream`` is one place misses can go, with its own connection pool and
:class:`~edge.upstream.health.Health`. The :class:`Router` orders them for a key and
sends a request down that order until one answers.

Rules this module guarantees:

- a key's shields are ranked by weighted rendezvous hashing on the key
  (``edge.upstream.rendezvous``): every node sends a key to the same shield, no two
  shields hold the same object, and a shield that leaves moves only its own keys, each
  to its next choice; shields whose circuit is open (down) are skipped;
- after the healthy shields comes the origin, unless ``shield_fallback`` is ``error``
  and shields are configured: then a node with no healthy shield answers from cache
  or with an error, and never sends the origin a herd;
- a worker that does not own a key (rendezvous over the node's workers) asks the
  owning sibling first, so a node fetches each object once whatever its worker count;
- a request is retried only when it is idempotent (RFC 9110 §9.2.2), only before its
  final response head arrived (at most a relayed 1xx reached the client), only after a
  connection failure, a connect timeout or a 5xx a shield made itself (not after a read
  timeout: the upstream may be waiting on its own upstream, and the next one would only
  wait again), and always on the next choice, never on the one that just failed;
- a failure counts against an upstream's health when the upstream itself failed: a
  connect error, a timeout, or a 5xx a shield made itself. A 5xx a shield relays from
  further up (its Cache-Status member says it forwarded) is the origin's, not the
  shield's: it is returned, not retried, and the shield stays up. A sibling worker's
  5xx is always taken as relayed (it runs the same code as this worker and answers
  without its own member), so only connect errors and timeouts count against it;
- a 508 (a node found the request had already passed it) is returned as it is: not
  retried on another upstream and not counted against the one that said it;
- a down upstream is probed with ``OPTIONS * HTTP/1.1`` and ``Max-Forwards: 0``
  (answered by the node itself, RFC 9110 §7.6.2) on an exponential backoff; any answer
  below 500 closes its circuit again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import http_sf

from edge.http.fields import Headers, get_all
from edge.upstream.client import (
    InterimCallback,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
)
from edge.upstream.health import Health
from edge.upstream.rendezvous import rank

__all__ = ["IDEMPOTENT_METHODS", "NoUpstream", "Router", "Upstream", "UpstreamKind"]

log = logging.getLogger("edge.upstream")

UpstreamKind = Literal["sibling", "shield", "origin"]

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
"""Methods a request may be retried with (RFC 9110 §9.2.2)."""

LOOP_DETECTED = 508
"""A node found its own id in the request's CDN-Loop: answered as it is, never retried elsewhere."""

PROBE_TIMEOUT = 5.0
"""Seconds a health probe may take before it counts as failed."""


class NoUpstream(UpstreamError):
    """Every upstream for the request is down (or was tried and failed)."""


@dataclass(eq=False)
class Upstream:
    """One place misses can go, with its pool and its health."""

    id: bytes
    """Its stable name for rendezvous hashing (the URL, or the worker's index)."""
    kind: UpstreamKind
    pool: UpstreamPool
    weight: float = 1.0
    health: Health = field(default_factory=Health)
    name: str = ""
    """How logs and stats name it."""
    requests: int = 0
    """Requests sent to it (each attempt)."""

    def __str__(self) -> str:
        return self.name or self.id.decode("latin-1")


def relayed_5xx(headers: Headers) -> bool:
    """Whether a 5xx answer says, in its last Cache-Status member, that it came from further up.

    An edge node that forwards a request records ``fwd-status`` (the next hop's status) or
    ``detail=upstream-error|upstream-timeout`` (no answer from the next hop) in its member.
    """
    values = get_all(headers, b"cache-status")
    if not values:
        return False
    try:
        members = http_sf.parse(b", ".join(values), tltype="list")
    except ValueError:  # http_sf.StructuredFieldError: a value that does not parse says nothing
        return False
    if not isinstance(members, list) or not members or not isinstance(members[-1], tuple):
        return False
    params = members[-1][1]
    if not isinstance(params, dict):
        return False
    detail = str(params.get("detail", ""))
    return "fwd-status" in params or detail in ("upstream-error", "upstream-timeout")


class Router:
    """The upstreams of one worker and the order a key tries them in."""

    def __init__(
        self,
        origin: Upstream,
        shields: Sequence[Upstream] = (),
        *,
        fallback_to_origin: bool = True,
        siblings: Sequence[Upstream | None] = (),
        clock: Callable[[], float],
    ) -> None:
        self.origin = origin
        self.shields = list(shields)
        self.fallback_to_origin = fallback_to_origin or not self.shields
        self.siblings = list(siblings)
        """One per worker of this node, in worker order; None stands for this worker itself."""
        self._workers = [_WorkerSlot(i) for i in range(len(self.siblings))]
        self.clock = clock
        self.requests = 0
        """Requests sent to shields and the origin, each attempt counted."""
        self.sibling_requests = 0
        """Requests sent to sibling workers (the same node: not upstream traffic)."""
        self._prober: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._probes: set[asyncio.Task[None]] = set()

    @property
    def upstreams(self) -> list[Upstream]:
        """Every upstream: siblings, shields, origin."""
        return [*(s for s in self.siblings if s is not None), *self.shields, self.origin]

    def owner(self, key: bytes) -> Upstream | None:
        """The sibling worker that owns ``key``, or None when this worker does (or there are no siblings)."""
        if not self._workers:
            return None
        owner: Upstream | None = self.siblings[rank(key, self._workers)[0].index]
        return owner

    def choices(self, key: bytes, sibling: bool = True) -> list[Upstream]:
        """The upstreams to try for ``key``, best first, down ones left out."""
        order: list[Upstream] = []
        if sibling:
            owner = self.owner(key)
            if owner is not None and owner.health.up:
                order.append(owner)
        if self.shields:
            order += [s for s in rank(key, self.shields) if s.health.up]
        if self.fallback_to_origin:
            order.append(self.origin)
        return order

    async def request(
        self,
        key: bytes,
        method: bytes,
        target: bytes,
        fields_for: Callable[[Upstream], Headers],
        body: bytes = b"",
        on_interim: InterimCallback | None = None,
        sibling: bool = True,
    ) -> tuple[UpstreamResponse, Upstream]:
        """Send one request for ``key`` down its choices; the answer and who gave it.

        ``fields_for`` gives the request's fields for an upstream (a shield and the
        origin may want a different Host). Raises the last ``UpstreamError`` when no
        upstream answered, :class:`NoUpstream` when there was none to try.
        """
        choices = self.choices(key, sibling)
        if not choices:
            raise NoUpstream("no healthy shield, and shield_fallback = error")
        retry = method in IDEMPOTENT_METHODS
        failure: UpstreamError | None = None
        for position, upstream in enumerate(choices):
            last = position == len(choices) - 1
            if upstream.kind == "sibling":
                self.sibling_requests += 1
            else:
                self.requests += 1
            upstream.requests += 1
            try:
                resp = await upstream.pool.request(method, target, fields_for(upstream), body, on_interim)
            except UpstreamError as exc:
                self._failed(upstream, exc)
                failure = exc
                if not retry or (isinstance(exc, UpstreamTimeout) and not getattr(exc, "connect", False)):
                    # No answer in time to a request that was sent: the upstream may be waiting
                    # on its own upstream; asking the next one would only multiply that wait.
                    raise
                continue
            if resp.status == LOOP_DETECTED:
                return resp, upstream  # the request came back to a node it passed: it goes no further
            if resp.status >= 500 and upstream.kind == "shield" and not relayed_5xx(resp.headers):
                self._failed(upstream, None)
                if retry and not last:
                    resp.close()
                    continue
            else:
                upstream.health.succeeded(self.clock())
            return resp, upstream
        assert failure is not None
        raise failure

    def _failed(self, upstream: Upstream, exc: UpstreamError | None) -> None:
        health = upstream.health
        was_up = health.up
        health.failed(self.clock())
        if was_up and not health.up:
            log.warning(
                "%s %s is down (%s); its keys go to the next choice", upstream.kind, upstream, exc or "5xx"
            )
            self.start_probing()
            assert self._wake is not None
            self._wake.set()

    # -- active health: probes while down -------------------------------------------------
    def start_probing(self) -> None:
        """Run the prober in the background (from the loop; the first circuit that opens starts it)."""
        if self._prober is None:
            self._wake = asyncio.Event()
            self._prober = asyncio.get_running_loop().create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        assert self._wake is not None
        while True:
            now = self.clock()
            soonest: float | None = None
            for upstream in self.upstreams:
                health = upstream.health
                if health.probe_due(now):
                    health.probe_started(now)
                    task = asyncio.get_running_loop().create_task(self._probe(upstream))
                    self._probes.add(task)
                    task.add_done_callback(self._probes.discard)
                elif health.next_probe_at is not None:
                    soonest = health.next_probe_at if soonest is None else min(soonest, health.next_probe_at)
            self._wake.clear()
            delay = 1.0 if soonest is None else max(0.0, min(1.0, soonest - now))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay if soonest is not None else None):
                    await self._wake.wait()

    async def _probe(self, upstream: Upstream) -> None:
        ok = False
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                resp = await upstream.pool.request(
                    b"OPTIONS", b"*", [(b"Host", upstream.pool.target.host_header), (b"Max-Forwards", b"0")]
                )
                ok = resp.status < 500
                with contextlib.suppress(UpstreamError):
                    async for _ in resp.chunks():
                        pass
                resp.close()
        except (UpstreamError, TimeoutError):
            ok = False
        upstream.health.probe_result(ok, self.clock())
        if ok:
            log.warning("%s %s answers again; it takes its keys back", upstream.kind, upstream)
        if self._wake is not None:
            self._wake.set()

    def carry_over(self, old: Router) -> None:
        """Continue ``old``'s counters (a reload replaced it): totals, and each upstream's that
        both name, so the node's counters never go down while it runs."""
        self.requests += old.requests
        self.sibling_requests += old.sibling_requests
        before = {(u.kind, str(u)): u for u in old.upstreams}
        for upstream in self.upstreams:
            previous = before.get((upstream.kind, str(upstream)))
            if previous is not None:
                upstream.requests += previous.requests
                upstream.health.failures_total += previous.health.failures_total
                upstream.health.opened_total += previous.health.opened_total
                upstream.health.probes_total += previous.health.probes_total

    def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
        for task in list(self._probes):
            task.cancel()
        for upstream in self.upstreams:
            upstream.pool.close()

    def stats(self) -> list[dict[str, object]]:
        """Health and counters of every upstream, for /stats and /metrics."""
        return [
            {
                "name": str(upstream),
                "kind": upstream.kind,
                "up": upstream.health.up,
                "requests": upstream.requests,
                "failures_total": upstream.health.failures_total,
                "opened_total": upstream.health.opened_total,
                "probes_total": upstream.health.probes_total,
            }
            for upstream in self.upstreams
        ]


@dataclass(frozen=True)
class _WorkerSlot:
    """A worker of this node as a rendezvous member: equal weights, named by index."""

    index: int

    @property
    def id(self) -> bytes:
        return b"worker-%d" % self.index

    @property
    def weight(self) -> float:
        return 1.0
