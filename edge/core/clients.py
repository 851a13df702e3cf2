"""Per-client-address budgets every front applies: open connections, and an optional request rate.

One :class:`ClientLimits` per worker, shared by its fronts (``EdgeCore.clients``). It is
sans-I/O: fronts ask it and act (close the connection, answer 429), and time is passed in.

Guarantees:
- a client address holds at most ``max_connections`` open TCP connections (HTTP/1.1 and
  HTTPS) in a worker; the next is refused at once, before any request is read; closing one
  frees its place. 0 turns the cap off;
- with ``rate`` > 0, each address has a token bucket of ``burst`` requests refilled at
  ``rate`` per second; a request finding it empty is refused with the seconds until the
  next token (429 with ``Retry-After``, RFC 6585 §4). ``rate`` 0 (the default) costs a
  request one ``is None`` test in the front;
- at most ``max_tunnels`` WebSocket tunnels are open in a worker and ``max_client_tunnels``
  per address (0: no cap); the next upgrade is refused;
- addresses in ``trusted_proxies`` (a shield's edges, a load balancer) are never refused by
  either: one such address carries many clients;
- the memory is bounded: at most :data:`TRACKED` buckets are kept (the least recently
  used address is forgotten, which can only be generous to it), and an address with no
  open connection holds no connection entry.
"""

from __future__ import annotations

import math

from cachetools import LRUCache

from edge.http.peers import TrustedProxies

__all__ = ["TRACKED", "ClientLimits", "RateLimit"]

TRACKED = 100_000
"""Client addresses whose rate buckets are remembered at once."""


class RateLimit:
    """Token buckets per client address (``rate`` per second, up to ``burst``)."""

    __slots__ = ("buckets", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(max(1, burst))
        self.buckets: LRUCache[str, list[float]] = LRUCache(TRACKED)
        """address → [tokens, when they were counted]."""

    def retry_after(self, client: str, now: float) -> int:
        """0 when the request may go ahead (a token is taken); else whole seconds to wait."""
        bucket = self.buckets.get(client)
        if bucket is None:
            self.buckets[client] = [self.burst - 1.0, now]
            return 0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0
        bucket[0] = tokens
        return max(1, math.ceil((1.0 - tokens) / self.rate))


class ClientLimits:
    """The connection cap and (when on) the rate limit of one worker."""

    __slots__ = (
        "connections", "exempt", "max_client_tunnels", "max_connections", "max_tunnels", "rate",
        "refused_connections",
        "refused_requests", "refused_tunnels", "tunnels", "tunnels_by_client",
    )  # fmt: skip

    def __init__(
        self,
        max_connections: int,
        rate: float = 0.0,
        burst: int = 0,
        max_tunnels: int = 0,
        max_client_tunnels: int = 0,
        exempt: TrustedProxies | None = None,
    ) -> None:
        """``exempt``: peers (``trusted_proxies``: an edge seen by its shield, a load balancer)
        that carry many clients' traffic from one address, so neither cap nor rate applies."""
        self.exempt = exempt
        self.max_connections = max_connections
        self.max_tunnels = max_tunnels
        self.max_client_tunnels = max_client_tunnels
        self.tunnels = 0
        """WebSocket tunnels open in this worker."""
        self.tunnels_by_client: dict[str, int] = {}
        self.refused_tunnels = 0
        self.connections: dict[str, int] = {}
        """address → open connections (only addresses with at least one)."""
        self.rate: RateLimit | None = RateLimit(rate, burst or math.ceil(2 * rate)) if rate > 0 else None
        """None when requests are not rate limited (the front's only test per request)."""
        self.refused_connections = 0
        self.refused_requests = 0

    def opened(self, client: str) -> bool:
        """A connection from ``client`` was accepted: False when it is over the cap (close it;
        it was not counted)."""
        held = self.connections.get(client, 0)
        if self.max_connections and held >= self.max_connections:
            if self.exempt is not None and self.exempt.trusts(client):
                return True  # not counted: closed() finds nothing to give back
            self.refused_connections += 1
            return False
        self.connections[client] = held + 1
        return True

    def closed(self, client: str) -> None:
        """A connection :meth:`opened` admitted has closed."""
        _give_back(self.connections, client)

    def tunnel_opened(self, client: str) -> bool:
        """A WebSocket tunnel for ``client`` may open (False: over a cap, refuse it; not counted)."""
        held = self.tunnels_by_client.get(client, 0)
        if (self.max_tunnels and self.tunnels >= self.max_tunnels) or (
            self.max_client_tunnels and held >= self.max_client_tunnels
        ):
            self.refused_tunnels += 1
            return False
        self.tunnels += 1
        self.tunnels_by_client[client] = held + 1
        return True

    def tunnel_closed(self, client: str) -> None:
        """A tunnel :meth:`tunnel_opened` admitted has ended."""
        self.tunnels -= 1
        _give_back(self.tunnels_by_client, client)

    def retry_after(self, client: str, now: float) -> int:
        """0: serve the request; otherwise refuse it, retry after that many seconds."""
        assert self.rate is not None
        wait = self.rate.retry_after(client, now)
        if wait:
            if self.exempt is not None and self.exempt.trusts(client):
                return 0
            self.refused_requests += 1
        return wait


def _give_back(held: dict[str, int], client: str) -> None:
    """One place of ``client`` freed; an address holding none keeps no entry."""
    count = held.get(client, 0)
    if count <= 1:
        held.pop(client, None)
    else:
        held[client] = count - 1
