"""The protocol-neutral request handler every adapter calls.

It joins the sans-I/O rules in ``edge.cache`` with the I/O of
``edge.upstream``: look up, serve a hit, or join/start the one fill for a key.

Guarantees:
- a fresh hit is answered synchronously through :meth:`EdgeCore.fresh_hit`
  (no await, no per-request framework objects);
- concurrent misses for one key make one upstream request; when the response
  turns out not storable or its Vary does not match, the others go upstream
  on their own, and the key is remembered as pass for ``pass_ttl`` seconds;
- a stale entry is revalidated with its validators; a 304 freshens it and
  its stored body is served; stale content is served only where
  ``edge.cache.stale`` allows (stale-while-revalidate, stale-if-error, grace);
- a body is stored only when it arrived whole; a truncated upstream body
  aborts the client connections instead of ending them cleanly;
- upstream failures become 502 (unreachable, broken) or 504 (timeout).
"""

from __future__ import annotations

from edge.cache import stale as stale_rules
from edge.cache.entry import Entry, Variants
from edge.cache.key import primary_key, secondary_key
from edge.cache.reuse import Reuse, decide_reuse, request_directives
from edge.cache.slices import meta_key
from edge.core.base import GET, HEAD, NEVER, SLOW_PATH_FIELDS
from edge.core.sink import ResponseSink
from edge.core.slicing import SliceMixin
from edge.http.message import Request


class EdgeCore(SliceMixin):
    """One node's cache and upstream, shared by every protocol adapter."""

    def fresh_hit(self, req: Request, now: float) -> Entry | None:
        """The entry to send as is, or None when :meth:`serve` must decide. Never awaits."""
        method = req.method
        if (method != GET and method != HEAD) or not req.fields.keys().isdisjoint(SLOW_PATH_FIELDS):
            return None
        obj = self.store.get(req.scheme + b"://" + req.host + req.target)
        if obj is None:
            return None
        if type(obj) is Variants:
            obj = obj.by_secondary.get(secondary_key(req, obj.names))
            if obj is None:
                return None
        entry: Entry = obj
        if now >= entry.fresh_until:
            return None
        if entry.encodings is not None:
            return self.compressor.representation(entry, req)
        return entry

    async def serve(self, req: Request, sink: ResponseSink) -> None:
        """Answer ``req`` on ``sink``: hit, stale, revalidation, collapsed fill or pass."""
        if req.method not in (GET, HEAD):
            await self._forward(req, sink, b"fwd=request")
            return
        now = self.clock()
        key = primary_key(req)
        request_cc = request_directives(req)
        entry, has_variants = self._lookup(req, key)
        if entry is not None:
            reuse = decide_reuse(entry, request_cc, now)
            ttl = b"; ttl=%d" % int(entry.fresh_until - now) if entry.fresh_until != NEVER else b""
            if reuse is not Reuse.VALIDATE:  # fresh, or stale within the request's max-stale
                await self._send_entry(req, sink, entry, now, self.name + b"; hit" + ttl)
                return
            if stale_rules.while_revalidate(entry, request_cc, now):
                self._refresh_in_background(req, key, entry)
                status = self.name + b"; hit" + ttl + b"; detail=stale-while-revalidate"
                await self._send_entry(req, sink, entry, now, status)
                return
        elif not has_variants:
            meta = self.store.get(meta_key(key))
            if meta is not None:
                if decide_reuse(meta.entry, request_cc, now) is not Reuse.VALIDATE:
                    status = self.name + b"; hit; ttl=%d" % int(meta.entry.fresh_until - now)
                    await self._send_sliced(req, sink, meta, now, status)
                    return
                if b"only-if-cached" not in request_cc and await self._revalidate_slices(req, meta):
                    asked = b"no-cache" in request_cc or b"max-age" in request_cc
                    status = self.name + (b"; fwd=request" if asked else b"; fwd=stale") + b"; fwd-status=304"
                    await self._send_sliced(req, sink, meta, self.clock(), status)
                    return
                self.store.pop(meta_key(key), None)  # changed or unknown: slices are fetched afresh
        if b"only-if-cached" in request_cc:
            await self._send_error(sink, req, 504, b"fwd=miss; detail=only-if-cached", "not in cache")
            return
        if entry is None and req.method == GET and b"range" in req.fields and key not in self.unsliceable:
            await self._range_miss(req, sink, key, b"fwd=uri-miss")
            return
        if entry is not None:
            asked = b"no-cache" in request_cc or b"max-age" in request_cc or b"min-fresh" in request_cc
            fwd = b"fwd=request" if asked else b"fwd=stale"
        else:
            fwd = b"fwd=vary-miss" if has_variants else b"fwd=uri-miss"
            if key in self.pass_keys:
                await self._forward(req, sink, fwd + b"; detail=pass")
                return
        await self._via_fill(req, sink, key, fwd, entry, request_cc)
