"""When a stale response may still be served (RFC 9111 §4.2.4, RFC 5861).

Rules this module guarantees:
- ``must-revalidate`` and ``proxy-revalidate`` forbid every kind of stale serving;
  unqualified response ``no-cache`` too;
- ``stale-while-revalidate=N`` (response) allows serving for N seconds past
  expiry while one background validation runs, unless the request itself asked
  for validation (``no-cache``, ``max-age`` exceeded);
- ``stale-if-error=N`` in the response or the request allows serving for N
  seconds past expiry when the upstream fails (5xx, timeout, unreachable);
- the operator's ``grace`` does the same when no directive speaks.
- An explicit ``stale-*`` directive is taken as the origin's permission even
  when ``s-maxage`` is present (whose implied proxy-revalidate would otherwise
  forbid it): the origin wrote both, and CDNs honour this pairing.
"""

from __future__ import annotations

from edge.cache.entry import Entry
from edge.http.cache_control import INVALID, Directives


def _forbidden(entry: Entry) -> bool:
    directives = entry.policy.directives
    if b"must-revalidate" in directives or b"proxy-revalidate" in directives:
        return True
    no_cache = directives.field_names(b"no-cache")
    return no_cache is not None and not no_cache


def staleness(entry: Entry, now: float) -> float:
    """Seconds past expiry (negative while fresh)."""
    return now - entry.fresh_until


def while_revalidate(entry: Entry, request_cc: Directives, now: float) -> bool:
    """May ``entry`` be served now while a background validation refreshes it?"""
    if _forbidden(entry) or b"no-cache" in request_cc or entry.fresh_until == float("-inf"):
        return False
    window = entry.policy.directives.delta(b"stale-while-revalidate")
    if window is None or window == INVALID:
        return False
    max_age = request_cc.delta(b"max-age")
    if max_age is not None and (max_age == INVALID or entry.age(now) > max_age):
        return False
    return 0 <= staleness(entry, now) <= window


def if_error(entry: Entry, request_cc: Directives, now: float, grace: float) -> bool:
    """May ``entry`` be served because the upstream failed?"""
    if _forbidden(entry):
        return False
    past = max(0.0, staleness(entry, now))
    for directives in (entry.policy.directives, request_cc):
        window = directives.delta(b"stale-if-error")
        if window is not None and window != INVALID and past <= window:
            return True
    if entry.fresh_until == float("-inf"):
        return grace > 0  # soft-purged: staleness is unbounded, grace alone decides
    return past <= grace
