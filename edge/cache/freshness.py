"""Freshness lifetime and age (RFC 9111 §4.2, RFC 9213 targeted fields).

Rules this module guarantees:
- the lifetime comes from s-maxage, then max-age, then Expires - Date, then a
  heuristic (10% of Date - Last-Modified, capped) for heuristically cacheable
  statuses or ``public`` responses; a malformed or duplicated value means
  "already stale" (lifetime 0);
- a targeted field (Edge-Cache-Control, then CDN-Cache-Control) with any valid
  directive replaces Cache-Control *and* Expires for this node (RFC 9213 §2.1); one
  that is not a valid Structured Field Dictionary, or gives a known directive a value
  of the wrong type, is ignored whole (``edge.http.cache_control.parse_targeted``);
- a response is fresh only while its lifetime is strictly greater than its age.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace

from edge.http.cache_control import INVALID, Directives, parse_cache_control, parse_targeted
from edge.http.dates import parse_http_date
from edge.http.fields import Headers, get_all, get_one

HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
"""Status codes cacheable by default (RFC 9110 §15.1)."""

HEURISTIC_FRACTION = 0.1
HEURISTIC_CAP = 86400.0
"""A day, the cap Squid and Varnish use for the Last-Modified heuristic."""

TARGETED_FIELDS = (b"edge-cache-control", b"cdn-cache-control")
"""RFC 9213 target list for this node, most specific first."""


@dataclass(frozen=True, slots=True)
class Policy:
    """The directives and lifetime this node applies to one stored response."""

    directives: Directives
    """Effective directives: the targeted field's if it had one, else Cache-Control."""
    lifetime: float
    """Freshness lifetime in seconds (0 when none or invalid)."""
    explicit: bool
    """True when the lifetime came from a directive or Expires, not the heuristic."""
    targeted: bool
    """True when a targeted field (RFC 9213) set the policy."""


def effective_directives(headers: Headers) -> tuple[Directives, bool]:
    """The directives this node obeys, and whether they came from a targeted field."""
    for name in TARGETED_FIELDS:
        values = get_all(headers, name)
        if values:
            directives = parse_targeted(values)
            if directives:
                return directives, True
    return parse_cache_control(get_all(headers, b"cache-control")), False


_EXPLICIT: dict[tuple[Directives, int, bool], Policy] = {}
"""Policies set by max-age or s-maxage, shared by the responses with the same directives
(an immutable Policy per stored object would cost 88 bytes each); emptied at 1,024."""


def freshness_policy(status: int, headers: Headers, date: float) -> Policy:
    """Compute the freshness lifetime of a response whose Date is ``date``."""
    directives, targeted = effective_directives(headers)
    for name in (b"s-maxage", b"max-age"):
        delta = directives.delta(name)
        if delta is not None:
            shared = (directives, delta, targeted)
            policy = _EXPLICIT.get(shared)
            if policy is None:
                if len(_EXPLICIT) >= 1024:
                    _EXPLICIT.clear()
                lifetime = 0.0 if delta == INVALID else float(delta)
                policy = _EXPLICIT[shared] = Policy(directives, lifetime, True, targeted)
            return policy
    if not targeted:
        expires_values = get_all(headers, b"expires")
        if expires_values:
            if len(expires_values) > 1:
                return Policy(directives, 0.0, True, targeted)
            expires = parse_http_date(expires_values[0])
            # An invalid Expires (e.g. "0") means already expired (RFC 9111 §5.3).
            lifetime = 0.0 if expires is None else max(0.0, expires - date)
            return Policy(directives, lifetime, True, targeted)
    if status in HEURISTIC_STATUSES or b"public" in directives:
        last_modified_raw = get_one(headers, b"last-modified")
        last_modified = parse_http_date(last_modified_raw) if last_modified_raw else None
        if last_modified is not None and last_modified < date:
            lifetime = min(HEURISTIC_CAP, (date - last_modified) * HEURISTIC_FRACTION)
            return Policy(directives, lifetime, False, targeted)
    return Policy(directives, 0.0, False, targeted)


class DefaultTtls:
    """The operator's lifetime for responses that give no explicit freshness, by path glob.

    ``rules`` are ``(glob, seconds)`` pairs in order (the first glob matching the path
    wins); a response with explicit freshness (a directive or Expires) keeps its own.
    """

    __slots__ = ("rules",)

    def __init__(self, rules: list[tuple[str, float]]) -> None:
        self.rules = rules

    def policy(self, status: int, headers: Headers, date: float, target: bytes) -> Policy:
        """Freshness from the response, or the first matching rule's lifetime when it gives none."""
        policy = freshness_policy(status, headers, date)
        if policy.explicit or not self.rules:
            return policy
        path = target.split(b"?", 1)[0].decode("latin-1")
        for glob, seconds in self.rules:
            if fnmatch.fnmatchcase(path, glob):
                return replace(policy, lifetime=seconds, explicit=True)
        return policy


def corrected_initial_age(
    age_header: bytes | None, date: float, request_time: float, response_time: float
) -> float:
    """RFC 9111 §4.2.3: the age a response already had when it arrived."""
    apparent_age = max(0.0, response_time - date)
    age_value = 0
    if age_header is not None:
        raw = age_header.split(b",")[0].strip()
        if raw.isdigit():
            age_value = int(raw)
    response_delay = max(0.0, response_time - request_time)
    return max(apparent_age, age_value + response_delay)
