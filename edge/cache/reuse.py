"""May a stored response answer this request? (RFC 9111 §4, §5.2.1, §5.2.2)

Rules this module guarantees:
- a response is fresh only while lifetime > age (strictly);
- request ``no-cache`` (or ``Pragma: no-cache`` without Cache-Control),
  ``max-age``, ``min-fresh`` and ``max-stale`` are honoured;
- response ``no-cache`` (unqualified), ``must-revalidate``, ``proxy-revalidate``
  and ``s-maxage`` forbid serving stale without validation.
"""

from __future__ import annotations

import enum

from edge.cache.entry import Entry
from edge.http.cache_control import EMPTY, INVALID, Directives, parse_cache_control
from edge.http.fields import split_list
from edge.http.message import Request

FAST_HIT_BLOCKERS = frozenset(
    {
        b"cache-control",
        b"pragma",
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"range",
        b"upgrade",
    }
)
"""Request fields whose rules run only on the full path (``EdgeCore.serve``): the request's
own directives (RFC 9111 §5.2.1, §5.4), its preconditions (RFC 9110 §13), ranges
(RFC 9110 §14), and an Upgrade (a WebSocket handshake is tunnelled, never a cache hit:
``edge.fronts.tunnel``, checked where the HTTP/1.1 front starts the full path). A request
carrying any of them never takes the fast hit.

Every request field a rule in ``edge.cache`` or ``edge.core`` reads is listed here, in
:data:`FAST_HIT_APPLIES` or in :data:`MISS_ONLY_FIELDS`; tests/cache/test_fast_path.py
fails on a rule that reads a field none of them lists, so a new request rule cannot be
skipped by the fast hit without anyone deciding so."""

FAST_HIT_APPLIES = frozenset({b"host", b"accept-encoding"})
"""Request fields the fast hit applies itself: Host is part of the key, Accept-Encoding picks
the compressed sibling. (The fields a response's Vary names go through the secondary key.)"""

MISS_ONLY_FIELDS = frozenset({b"authorization", b"x-forwarded-proto", b"cdn-loop", b"max-forwards"})
"""Request fields read only when a request goes upstream or its response is stored
(RFC 9111 §3.5 for Authorization; the forwarding fields; CDN-Loop, which stops a
request that would go upstream in a loop, RFC 8586; Max-Forwards, read only for
OPTIONS and TRACE): a hit never needs them."""


class Reuse(enum.Enum):
    FRESH = "fresh"
    """Serve as is."""
    STALE_ALLOWED = "stale-allowed"
    """Stale, but the request's max-stale allows serving it."""
    VALIDATE = "validate"
    """Must be validated (or replaced) upstream first."""


def request_directives(req: Request) -> Directives:
    """The request's Cache-Control; ``Pragma: no-cache`` counts only without it (§5.4)."""
    value = req.fields.get(b"cache-control")
    if value is not None:
        return parse_cache_control([value])
    pragma = req.fields.get(b"pragma")
    if pragma is not None and any(m.lower() == b"no-cache" for m in split_list([pragma])):
        return parse_cache_control([b"no-cache"])
    return EMPTY


def decide_reuse(entry: Entry, request_cc: Directives, now: float) -> Reuse:
    response_cc = entry.policy.directives
    if b"no-cache" in request_cc:
        return Reuse.VALIDATE
    no_cache_fields = response_cc.field_names(b"no-cache")
    if no_cache_fields is not None and not no_cache_fields:
        return Reuse.VALIDATE
    age = entry.corrected_initial_age + (now - entry.response_time)
    # Time left before lifetime == age. It comes from fresh_until so a soft purge
    # (fresh_until = -inf) and response no-cache make the entry stale here too.
    remaining = entry.fresh_until - now
    max_age = request_cc.delta(b"max-age")
    if max_age is not None and (max_age == INVALID or age > max_age):
        return Reuse.VALIDATE
    min_fresh = request_cc.delta(b"min-fresh")
    if min_fresh is not None and (min_fresh == INVALID or remaining < min_fresh):
        return Reuse.VALIDATE
    if remaining > 0:
        return Reuse.FRESH
    if b"max-stale" in request_cc and not _revalidation_required(response_cc):
        max_stale = request_cc.delta(b"max-stale")
        if request_cc.args[b"max-stale"] is None or (
            max_stale is not None and max_stale != INVALID and -remaining <= max_stale
        ):
            return Reuse.STALE_ALLOWED
    return Reuse.VALIDATE


def _revalidation_required(response_cc: Directives) -> bool:
    return (
        b"must-revalidate" in response_cc or b"proxy-revalidate" in response_cc or b"s-maxage" in response_cc
    )
