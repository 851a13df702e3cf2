"""The requests the core sends upstream: which fields go, and to which upstream.

The ``Router`` (``edge.upstream.router``) picks the upstream for a key (the sibling
worker that owns it, the key's shield, the origin) and retries; this module says what
each of them is sent.

Guarantees:
- hop-by-hop fields and those Connection names are never forwarded; Content-Length is
  re-framed by the client from the buffered body; a client's own ``Edge-Internal`` is
  never forwarded;
- a fill, a slice or a validation never forwards the client's own preconditions or
  Range (``FILL_DROPPED_FIELDS``): they are answered from the stored response;
- to the origin, Host is the operator's ``upstream_host`` when set; a shield gets the
  client's Host (it keys by it, and applies its own ``upstream_host``);
- the fields of ``strip_request_fields`` (X-Forwarded-Host, X-Original-URL, Forwarded, ...)
  never leave the worker: the cache key does not hold them, so an origin that reflected
  one would have its answer served to every client (cache poisoning);
- a field of ``forward_request_fields`` is forwarded, and every response to the node
  varies on it (the gateway adds it to the response's Vary before anything reads the
  head), so it is part of the key: the node's variants, collapsing and any cache
  downstream keep the answers for different values apart;
- leaving the node (shield or origin), X-Forwarded-For is the client's address, after the
  client's own chain only when the client is in ``trusted_proxies`` (an edge in front of a
  shield, a load balancer): anybody else's would reach the origin as the node's word;
  X-Forwarded-Proto is the scheme this node keyed the request by (a client's own is
  replaced: a shield that trusts this node keys by it), Via names this node with the
  client's protocol version, and CDN-Loop (RFC 8586) carries this node's id, so a
  request that comes back to the node is refused (508) instead of looping;
- a sibling worker gets the client's request as it came plus ``Edge-Internal``
  (client, scheme, version): it is the same node, so it adds the node's fields itself
  when the request leaves the node;
- OPTIONS and TRACE leave with ``Max-Forwards`` one lower (RFC 9110 §7.6.2);
- every request that goes upstream (each attempt) is counted in ``requests``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from edge.cache.key import with_vary
from edge.config import Config, parse_field_names, parse_shields
from edge.http.fields import HOP_BY_HOP, Headers, connection_tokens, is_token
from edge.http.internal import INTERNAL_FIELD, format_internal
from edge.http.message import Request
from edge.http.peers import TrustedProxies
from edge.upstream.client import InterimCallback, UpstreamPool, UpstreamResponse, UpstreamTarget
from edge.upstream.health import Health
from edge.upstream.router import Router, Upstream

__all__ = ["FILL_DROPPED_FIELDS", "Gateway", "build_router"]

FILL_DROPPED_FIELDS = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range", b"range"}
)
"""Client preconditions and ranges are answered here; a fill wants the whole 200 to store."""

NO_FIELDS: frozenset[bytes] = frozenset()
GET = b"GET"
MAX_FORWARDS_METHODS = (b"OPTIONS", b"TRACE")


class Gateway:
    """One worker's way upstream: the router and the fields each kind of upstream is sent."""

    def __init__(self, config: Config, router: Router, node_id: str) -> None:
        self.router = router
        self.upstream_host = config.upstream_host.encode() or None
        self.name = config.name.encode()
        pseudonym = self.name if is_token(self.name) else b"edge"
        self.cdn_loop = b"%s; node=%s" % (pseudonym, node_id.encode())
        """This node's CDN-Loop member (RFC 8586)."""
        self.keyed = tuple(
            name.encode()
            for name in parse_field_names(config.forward_request_fields, "forward_request_fields")
        )
        """Fields forwarded upstream and made part of the key (every response varies on them)."""
        stripped = parse_field_names(config.strip_request_fields, "strip_request_fields")
        self.stripped = frozenset(name.encode() for name in stripped) - frozenset(self.keyed)
        """Fields never forwarded (``strip_request_fields`` less ``forward_request_fields``)."""
        self.trusted = TrustedProxies.of(config.trusted_proxies)
        """Peers whose X-Forwarded-For chain is extended rather than replaced (None: nobody)."""

    @property
    def requests(self) -> int:
        """Requests sent upstream (each attempt, fills, slices, validations and pass-through)."""
        return self.router.requests

    async def fetch(
        self,
        req: Request,
        key: bytes,
        extra: Iterable[tuple[bytes, bytes]] = (),
        on_interim: InterimCallback | None = None,
    ) -> UpstreamResponse:
        """GET ``req``'s target for the cache (a fill, a slice, a validation), with ``extra`` fields."""
        extra = list(extra)

        def fields_for(upstream: Upstream) -> Headers:
            return [*self.fields_for(req, upstream, FILL_DROPPED_FIELDS), *extra]

        started = time.perf_counter()
        resp, _ = await self.router.request(key, GET, req.target, fields_for, on_interim=on_interim)
        if self.keyed:
            self.vary_on_keyed(resp)
        req.upstream_time = time.perf_counter() - started
        return resp

    async def forward(
        self, req: Request, key: bytes, on_interim: InterimCallback | None = None
    ) -> UpstreamResponse:
        """Send ``req`` as it came (method, body): a pass-through, never through a sibling."""

        def fields_for(upstream: Upstream) -> Headers:
            return self.fields_for(req, upstream)

        started = time.perf_counter()
        resp, _ = await self.router.request(
            key, req.method, req.target, fields_for, req.body, on_interim, sibling=False
        )
        if self.keyed:
            self.vary_on_keyed(resp)
        req.upstream_time = time.perf_counter() - started
        return resp

    def vary_on_keyed(self, resp: UpstreamResponse) -> None:
        """Make ``resp`` vary on the forwarded fields of ``forward_request_fields``, before the
        core reads its head: whatever the origin made of them is stored per value. A 304
        gets them only when it carries its own Vary (which would replace the stored one)."""
        if resp.status != 304 or any(name.lower() == b"vary" for name, _ in resp.headers):
            resp.headers = with_vary(resp.headers, self.keyed)

    def fields_for(self, req: Request, upstream: Upstream, drop: frozenset[bytes] = NO_FIELDS) -> Headers:
        """The fields to send ``upstream`` for ``req``, without those in ``drop``."""
        named = connection_tokens(req.headers)
        leaving = upstream.kind != "sibling"
        out: Headers = []
        forwarded_for = None
        max_forwards = req.method in MAX_FORWARDS_METHODS
        stripped = self.stripped
        for name, value in req.headers:
            lname = name.lower()
            if (
                lname in HOP_BY_HOP
                or lname in named
                or lname in drop
                or lname in stripped
                or lname == INTERNAL_FIELD
            ):
                continue
            if lname == b"host":
                if self.upstream_host and upstream.kind == "origin":
                    value = self.upstream_host
            elif lname == b"x-forwarded-for" and leaving:
                if self.trusted is not None and self.trusted.trusts(req.client):
                    forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
                continue
            elif lname == b"x-forwarded-proto" and leaving:
                continue  # ours says the scheme this node keyed the request by (below)
            elif lname == b"content-length":
                continue  # re-framed by the client from the buffered body
            elif lname == b"max-forwards" and max_forwards and leaving and value.strip().isdigit():
                value = b"%d" % max(0, int(value) - 1)
            out.append((name, value))
        if b"host" not in req.fields:
            host = self.upstream_host if upstream.kind == "origin" and self.upstream_host else None
            out.insert(0, (b"Host", host or req.host or upstream.pool.target.host_header))
        if not leaving:
            out.append((b"Edge-Internal", format_internal(req.client, req.scheme, req.http_version)))
            return out
        client = req.client.encode()
        out.append((b"X-Forwarded-For", forwarded_for + b", " + client if forwarded_for else client))
        out.append((b"X-Forwarded-Proto", req.scheme))
        out.append((b"Via", req.http_version.encode() + b" " + self.name))
        out.append((b"CDN-Loop", self.cdn_loop))
        return out

    def close(self) -> None:
        self.router.close()


def build_router(config: Config, clock: Callable[[], float], siblings: Sequence[str | None] = ()) -> Router:
    """The upstreams ``config`` names (origin, shields) and the node's sibling workers.

    ``siblings`` has one entry per worker of the node, in worker order: the Unix socket
    path its cache hop listens on, or None for this worker itself.
    """

    def pool(target: UpstreamTarget, read_timeout: float = config.read_timeout) -> UpstreamPool:
        return UpstreamPool(target, connect_timeout=config.connect_timeout, read_timeout=read_timeout)

    def health() -> Health:
        return Health(config.shield_fail_threshold, config.shield_probe_min, config.shield_probe_max)

    origin = Upstream(
        config.upstream.encode(), "origin", pool(UpstreamTarget.from_url(config.upstream)), health=health(),
        name=config.upstream,
    )  # fmt: skip
    shields = [
        Upstream(url.encode(), "shield", pool(UpstreamTarget.from_url(url)), weight, health(), url)
        for url, weight in parse_shields(config.shields)
    ]
    workers = [
        None
        if path is None
        else Upstream(
            b"worker-%d" % i,
            "sibling",
            # The owner waits up to read_timeout on its own upstream: leave it time to answer (or 504).
            pool(UpstreamTarget.unix_socket(path), 2 * config.read_timeout + config.connect_timeout),
            1.0,
            health(),
            f"worker {i}",
        )
        for i, path in enumerate(siblings)
    ]
    return Router(
        origin, shields, fallback_to_origin=config.shield_fallback == "origin", siblings=workers, clock=clock
    )
