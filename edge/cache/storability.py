"""May a shared cache store this response? (RFC 9111 §3, §3.5; RFC 9110 §15.1)

One function decides, and says why not, so Cache-Status can carry the reason.
"""

from __future__ import annotations

from edge.cache.freshness import HEURISTIC_STATUSES, Policy
from edge.http.cache_control import parse_cache_control
from edge.http.fields import Headers, get_all
from edge.http.message import Request

UNDERSTOOD_STATUSES = frozenset(range(200, 600)) - {206, 304}
"""Final statuses this cache stores whole. 206 is stored only by the slice layer; 304 never."""


def why_not_storable(req: Request, status: int, headers: Headers, policy: Policy) -> str | None:
    """None when the response may be stored; otherwise a short reason for Cache-Status."""
    directives = policy.directives
    if req.method not in (b"GET", b"HEAD"):
        return "method"
    if status not in UNDERSTOOD_STATUSES:
        return "status"
    if b"no-store" in directives:
        return "no-store"
    request_cc = req.fields.get(b"cache-control")
    if request_cc is not None and b"no-store" in parse_cache_control([request_cc]):
        return "request-no-store"
    private = directives.field_names(b"private")
    if private is not None and not private:
        return "private"
    if b"authorization" in req.fields and not (
        b"public" in directives or b"s-maxage" in directives or b"must-revalidate" in directives
    ):
        return "authorization"
    set_cookie = get_all(headers, b"set-cookie")
    if (
        set_cookie
        and b"public" not in directives
        and not (private and b"set-cookie" in private)
        and not policy.targeted
    ):
        # Varnish and nginx refuse these too: a cookie must never reach another client.
        return "set-cookie"
    for value in get_all(headers, b"vary"):
        if b"*" in value:
            return "vary-star"
    explicit = policy.explicit or b"public" in directives
    if not explicit and status not in HEURISTIC_STATUSES:
        return "no-freshness"
    if policy.lifetime <= 0 and not _has_validator(headers) and not explicit:
        # Neither explicit freshness nor a validator: nothing to serve later.
        return "no-freshness"
    return None


def _has_validator(headers: Headers) -> bool:
    return any(k.lower() in (b"etag", b"last-modified") for k, _ in headers)


def fields_to_strip(policy: Policy) -> frozenset[bytes]:
    """Fields a shared cache must not store: those named by ``private="..."``."""
    return policy.directives.field_names(b"private") or frozenset()
