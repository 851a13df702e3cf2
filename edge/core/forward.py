"""Requests the cache does not answer: sent upstream as they are, the answer relayed, nothing stored.

Guarantees:
- the request goes upstream with its body (fields as ``Gateway.fields_for`` builds them),
  never through a sibling worker, and the answer is relayed whatever its status, 1xx
  included;
- after a successful unsafe method (RFC 9111 §4.4) the target URL, and the same-origin
  Location / Content-Location of the answer, are dropped from the cache, and the keys
  are handed to ``invalidated`` (the node's other workers drop theirs too).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from edge.cache.key import primary_key, url_key
from edge.cache.memory import MemoryTier
from edge.cache.status import Fwd
from edge.core.gateway import Gateway
from edge.core.respond import Responder
from edge.core.sink import ResponseSink
from edge.http.fields import Headers, get_one
from edge.http.message import Request
from edge.upstream.client import UpstreamError

__all__ = ["SAFE_METHODS", "Forwarder"]

SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})


class Forwarder:
    """Pass-through: one request, one upstream request, no cache."""

    def __init__(self, gateway: Gateway, responder: Responder, memory: MemoryTier) -> None:
        self.gateway = gateway
        self.responder = responder
        self.memory = memory
        self.invalidated: Callable[[list[bytes]], None] | None = None
        """Told the keys an unsafe method invalidated here (the wiring passes them to the
        node's other workers, whose copies would otherwise outlive the change)."""

    async def forward(self, req: Request, sink: ResponseSink, fwd: Fwd, detail: bytes | None = None) -> None:
        """Send ``req`` upstream as is and relay the answer."""
        key = primary_key(req)
        try:
            resp = await self.gateway.forward(req, key, on_interim=sink.interim)
        except UpstreamError as exc:
            await self.responder.send_upstream_error(sink, req, fwd, exc)
            return
        await self.responder.relay(req, sink, resp, fwd, detail)
        if req.method not in SAFE_METHODS and 200 <= resp.status < 400:
            self._invalidate_after_unsafe(req, key, resp.headers)

    def _invalidate_after_unsafe(self, req: Request, key: bytes, headers: Headers) -> None:
        keys = [key]
        self.memory.drop_response(key)
        for name in (b"location", b"content-location"):
            value = get_one(headers, name)
            if not value:
                continue
            parts = urlsplit(value.decode("latin-1"))
            if parts.netloc and parts.netloc.lower().encode() != req.host:
                continue
            if parts.scheme and parts.scheme.encode() != req.scheme:
                continue
            if not parts.path.startswith("/"):
                continue
            target = parts.path + ("?" + parts.query if parts.query else "")
            keys.append(url_key(req.scheme, req.host, target.encode("latin-1")))
            self.memory.drop_response(keys[-1])
        if self.invalidated is not None:
            self.invalidated(keys)
