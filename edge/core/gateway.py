"""The requests the core sends upstream: which fields go, to which pool, and how many were sent.

Guarantees:
- hop-by-hop fields and those Connection names are never forwarded; Content-Length is
  re-framed by the client from the buffered body;
- Host is the operator's ``upstream_host`` when set, else the client's (or the
  upstream's own name when the client sent none);
- X-Forwarded-For gains the client's address, X-Forwarded-Proto is added when the
  client sent none, and Via names this node with the client's protocol version;
- a fill never forwards the client's own preconditions or Range
  (``FILL_DROPPED_FIELDS``): they are answered from the stored response;
- every request that goes upstream is counted once in ``requests``, failed ones included.
"""

from __future__ import annotations

from edge.config import Config
from edge.http.fields import HOP_BY_HOP, Headers, connection_tokens
from edge.http.message import Request
from edge.upstream.client import InterimCallback, UpstreamPool, UpstreamResponse, UpstreamTarget

__all__ = ["FILL_DROPPED_FIELDS", "Gateway"]

FILL_DROPPED_FIELDS = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range", b"range"}
)
"""Client preconditions and ranges are answered here; a fill wants the whole 200 to store."""

NO_FIELDS: frozenset[bytes] = frozenset()


class Gateway:
    """One node's way upstream: the pooled client and the fields every request carries."""

    def __init__(self, config: Config, pool: UpstreamPool | None = None) -> None:
        target = UpstreamTarget.from_url(config.upstream)
        self.pool = pool or UpstreamPool(
            target, connect_timeout=config.connect_timeout, read_timeout=config.read_timeout
        )
        self.upstream_host = config.upstream_host.encode() or None
        self.default_host = target.host_header
        self.name = config.name.encode()
        self.requests = 0
        """Requests sent upstream (fills, slices, validations and pass-through)."""

    def fields_for(self, req: Request, drop: frozenset[bytes] = NO_FIELDS) -> Headers:
        """The fields to send upstream for ``req``, without those in ``drop``."""
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

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes = b"",
        on_interim: InterimCallback | None = None,
    ) -> UpstreamResponse:
        """Send one request upstream and wait for its head (see ``UpstreamPool.request``)."""
        self.requests += 1
        return await self.pool.request(method, target, headers, body, on_interim=on_interim)

    def close(self) -> None:
        self.pool.close()
