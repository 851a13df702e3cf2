"""Requests the cache does not answer: sent upstream as they are, the answer relayed, nothing stored.

Guarantees:
- the request goes upstream with its body (fields as ``Gateway.fields_for`` builds them),
  never through a sibling worker, and the answer is relayed whatever its status, 1xx
  included;
- after a successful unsafe method (RFC 9111 §4.4) the target URL, and the same-origin
  Location / Content-Location of the answer, are dropped from the cache, and the keys
  are handed to ``invalidated`` (the node's other workers drop theirs too);
- a 200 to a HEAD updates the stored GET response this request would be given
  (RFC 9111 §4.3.5): a new entry with the HEAD's fields merged as a 304's are, when its
  validators and length describe the stored one (``edge.cache.validation.head_describes``),
  else a stale copy; the stored entry itself is never changed.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from edge.cache.admission import plan_refresh, stored_fields
from edge.cache.encoded import freshened
from edge.cache.freshness import DefaultTtls, corrected_initial_age
from edge.cache.key import primary_key, secondary_key, url_key
from edge.cache.memory import MemoryTier
from edge.cache.status import Fwd
from edge.cache.validation import head_describes
from edge.core.gateway import Gateway
from edge.core.respond import Responder
from edge.core.sink import ResponseSink
from edge.http.fields import Headers, declared_length, get_one
from edge.http.message import Request
from edge.upstream.client import UpstreamError

__all__ = ["SAFE_METHODS", "Forwarder"]

SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})


class Forwarder:
    """Pass-through: one request, one upstream request, no cache."""

    def __init__(
        self, gateway: Gateway, responder: Responder, memory: MemoryTier, ttls: DefaultTtls | None = None
    ) -> None:
        self.gateway = gateway
        self.responder = responder
        self.memory = memory
        self.ttls = ttls or DefaultTtls([])
        """The operator's per-path TTLs, for a stored response a HEAD freshens."""
        self.invalidated: Callable[[list[bytes]], None] | None = None
        """Told the keys an unsafe method invalidated here (the wiring passes them to the
        node's other workers, whose copies would otherwise outlive the change)."""

    async def forward(self, req: Request, sink: ResponseSink, fwd: Fwd, detail: bytes | None = None) -> None:
        """Send ``req`` upstream as is and relay the answer."""
        key = primary_key(req)
        request_time = self.responder.clock()
        try:
            resp = await self.gateway.forward(req, key, on_interim=sink.interim)
        except UpstreamError as exc:
            await self.responder.send_upstream_error(sink, req, fwd, exc)
            return
        response_time = self.responder.clock()
        await self.responder.relay(req, sink, resp, fwd, detail)
        if req.method == b"HEAD" and resp.status == 200:
            self._update_from_head(req, key, resp.headers, request_time, response_time)
        if req.method not in SAFE_METHODS and 200 <= resp.status < 400:
            self._invalidate_after_unsafe(req, key, resp.headers)

    def _update_from_head(
        self, req: Request, key: bytes, head: Headers, request_time: float, response_time: float
    ) -> None:
        """RFC 9111 §4.3.5: a 200 to HEAD freshens the stored GET response it describes."""
        stored, _ = self.memory.response(req, key)
        if stored is None or stored.status != 200:
            return
        secondary = secondary_key(req, stored.vary) if stored.vary else b""
        fields, date = stored_fields(head, response_time, self.responder.via)
        if not head_describes(stored, fields, declared_length(head)):
            if self.memory.holds(stored):
                self.memory.put_response(stored.stale_copy(), secondary)
            return
        plan = plan_refresh(req, stored, fields, date, self.ttls)
        if plan.not_storable is not None:
            self.memory.drop_response(key)  # the upstream withdrew permission to keep it
            return
        age = corrected_initial_age(get_one(head, b"age"), date, request_time, response_time)
        if self.memory.holds(stored):
            self.memory.put_response(
                freshened(stored, plan.fields, plan.policy, response_time, age), secondary
            )

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
