"""Accept-Encoding negotiation (RFC 9110 §12.5.3) and the cache key it implies.

Rules this module guarantees:
- codings are case-insensitive and returned lower-case; ``x-gzip`` and
  ``x-compress`` mean ``gzip`` and ``compress`` (§8.4.1);
- a member whose q is not a number is dropped; numbers are clamped to [0, 1]
  and rounded to three decimals, but a positive q never rounds to 0, so only
  an explicit zero refuses a coding; a coding listed twice keeps its lowest q
  (refused anywhere means refused);
- an absent header is :data:`ABSENT` (``{"*": 1}``, "anything"), an empty one
  is ``{}`` (identity only);
- ``choose_encoding`` never returns a coding whose q is 0; ``identity`` is
  acceptable unless ``identity;q=0``, or ``*;q=0`` without an ``identity``
  entry, refuses it; an unlisted identity ranks below every listed coding;
  ties go to the server's preference, and identity loses every tie;
- with no Accept-Encoding at all the answer is identity: the RFC lets a server
  pick any coding, but clients that omit the header are mostly tools and bots
  that do not decode, and nginx, Apache and the large CDNs all send identity;
- ``None`` means nothing available is acceptable. RFC 9110 allows a 406 then;
  callers should send identity anyway, as nginx and Apache do: a usable
  uncompressed asset beats an error page, and the client asked for no
  particular coding of the *status*;
- ``normalise_for_key`` maps every header to the coding the node would send,
  so a cache varies on at most ``len(supported) + 1`` keys, not on raw headers;
- ``accepts`` says whether a body already in some coding (the upstream's) may be
  sent for a header: every coding it lists has a q above 0 (or ``*`` does), an
  absent header accepts anything, identity is always acceptable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from types import MappingProxyType
from typing import Final

from edge.http.fields import is_token, split_list

__all__ = [
    "ABSENT",
    "DEFAULT_PREFERENCE",
    "IDENTITY",
    "accepts",
    "choose_encoding",
    "normalise_for_key",
    "parse_accept_encoding",
]

IDENTITY: Final = b"identity"
DEFAULT_PREFERENCE: Final = (b"br", b"zstd", b"gzip")
"""Server preference: smallest output first (brotli and zstd beat gzip on text)."""

ABSENT: Final[Mapping[bytes, float]] = MappingProxyType({b"*": 1.0})
"""The header was not sent: any coding is acceptable (test with ``is``)."""

_ALIASES = {b"x-gzip": b"gzip", b"x-compress": b"compress"}
_QVALUE = re.compile(rb"-?(?:\d{1,9}(?:\.\d*)?|\.\d+)")


def _qvalue(raw: bytes) -> float | None:
    if not _QVALUE.fullmatch(raw):
        return None
    q = min(1.0, max(0.0, float(raw)))
    rounded = round(q, 3)
    return 0.001 if q > 0 and rounded == 0 else rounded


def parse_accept_encoding(value: bytes | None) -> Mapping[bytes, float]:
    """Accept-Encoding as coding → q; :data:`ABSENT` when the header is missing."""
    if value is None:
        return ABSENT
    accept: dict[bytes, float] = {}
    for member in split_list([value]):
        coding, *params = member.split(b";")
        coding = coding.strip(b" \t").lower()
        if not is_token(coding):
            continue
        coding = _ALIASES.get(coding, coding)
        q: float | None = 1.0
        for param in params:
            name, _, arg = param.partition(b"=")
            if name.strip(b" \t").lower() == b"q":
                q = _qvalue(arg.strip(b" \t"))
        if q is None:
            continue
        previous = accept.get(coding)
        accept[coding] = q if previous is None else min(previous, q)
    return accept


def choose_encoding(
    accept: Mapping[bytes, float],
    available: Sequence[bytes],
    preference: Sequence[bytes] = DEFAULT_PREFERENCE,
) -> bytes | None:
    """The member of ``available`` to send, or None when none is acceptable.

    ``available`` lists what the node can send for this object, identity
    included when it has the identity body; the answer is that list's element.
    Highest q wins, then ``preference`` order, then codings not in it, then
    identity.
    """
    if accept is ABSENT:
        for coding in available:
            if coding.lower() == IDENTITY:
                return coding
    ranks = {c.lower(): len(preference) - i for i, c in enumerate(preference)}
    star = accept.get(b"*")
    best: bytes | None = None
    best_key = (-1.0, -1)
    for coding in available:
        name = coding.lower()
        q = accept.get(name, star)
        if name == IDENTITY:
            rank = -1
            if q is None:
                q = 0.0  # unlisted identity: acceptable, below every listed coding
            elif q == 0:
                continue
        else:
            rank = ranks.get(name, 0)
            if not q:
                continue
        key = (q, rank)
        if key > best_key:
            best, best_key = coding, key
    return best


@lru_cache(maxsize=1024)
def _key(value: bytes | None, supported: tuple[bytes, ...]) -> bytes:
    chosen = choose_encoding(parse_accept_encoding(value), (*supported, IDENTITY), supported)
    return IDENTITY if chosen is None else chosen


def normalise_for_key(value: bytes | None, supported: Sequence[bytes] = DEFAULT_PREFERENCE) -> bytes:
    """The coding the node would send for this Accept-Encoding, as a cache-key component.

    Assumes every ``supported`` coding can be produced; an object that is never
    compressed should not vary on Accept-Encoding at all. A header that accepts
    nothing maps to identity, which is what the node sends then. Memoised:
    browsers send a handful of distinct values, and the cache is bounded.
    """
    return _key(value, tuple(supported))


@lru_cache(maxsize=1024)
def accepts(value: bytes | None, content_coding: bytes) -> bool:
    """Whether a body whose Content-Encoding is ``content_coding`` may answer this Accept-Encoding.

    ``content_coding`` is a Content-Encoding value (a list when several codings were
    applied): each coding must be acceptable, identity always is (a node sends identity
    even to ``identity;q=0``, see above), and an absent header accepts any coding
    (RFC 9110 §12.5.3). Memoised, like :func:`normalise_for_key`.
    """
    accept = parse_accept_encoding(value)
    if accept is ABSENT:
        return True
    star = accept.get(b"*")
    for member in split_list([content_coding]):
        coding = member.lower()
        coding = _ALIASES.get(coding, coding)
        if coding != IDENTITY and not accept.get(coding, star):
            return False
    return True
