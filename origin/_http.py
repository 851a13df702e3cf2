"""Sans-I/O HTTP helpers for the origin: header parsing and the decisions built on it.

Everything here is a pure function of header strings and numbers: no sockets, no
files, no clock reads. The app (``origin.app``) feeds request headers in and acts on
the returned decisions.

Guarantees:

* ``parse_range`` understands exactly one ``bytes`` range; anything else (other
  units, several ranges, bad syntax) is reported as "ignore the Range header",
  which RFC 9110 §14.2 allows: the client then gets a 200 with the full body.
* ``etag_matches_any`` uses weak comparison (RFC 9110 §8.8.3.2), as If-None-Match
  requires; ``if_range_allows`` uses strong comparison, as If-Range requires.
* ``choose_encoding`` honours q-values and ``q=0`` exclusions, including ``*``;
  ties go to the server preference order br > zstd > gzip > identity.
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC

__all__ = [
    "ENCODING_PREFERENCE",
    "ByteRange",
    "RangeNotSatisfiable",
    "choose_encoding",
    "etag_matches_any",
    "format_http_date",
    "if_range_allows",
    "not_modified_since",
    "parse_http_date",
    "parse_range",
]

#: Content codings the origin can serve from precompressed siblings, best first,
#: with the file suffix of the sibling.
ENCODING_PREFERENCE: tuple[tuple[str, str], ...] = (
    ("br", ".br"),
    ("zstd", ".zst"),
    ("gzip", ".gz"),
)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A satisfiable single byte range, resolved against a known length."""

    start: int
    """First byte offset, inclusive."""
    end: int
    """Last byte offset, inclusive (``end >= start``)."""

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, total: int) -> str:
        return f"bytes {self.start}-{self.end}/{total}"


class RangeNotSatisfiable(Exception):
    """The Range header was well formed but selects no byte of the representation."""


def parse_range(value: str | None, total: int) -> ByteRange | None:
    """Resolve a ``Range`` header against a representation of ``total`` bytes.

    Returns ``None`` when the header should be ignored (absent, not ``bytes``,
    malformed, or more than one range: those get a 200 with the full body), a
    ``ByteRange`` when it selects bytes, and raises ``RangeNotSatisfiable`` when it
    is a valid single range that selects nothing (→ 416).
    """
    if value is None:
        return None
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    spec = spec.strip()
    if not spec or "," in spec:
        # Multiple ranges: answered with the whole representation (documented).
        return None
    first, dash, last = spec.partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if first == "":
        # Suffix range: the last N bytes.
        if not last.isdigit() or not last.isascii():
            return None
        n = int(last)
        if n == 0 or total == 0:
            raise RangeNotSatisfiable
        return ByteRange(max(0, total - n), total - 1)
    if not first.isdigit() or not first.isascii():
        return None
    start = int(first)
    if last == "":
        end = total - 1
    else:
        if not last.isdigit() or not last.isascii():
            return None
        end = int(last)
        if end < start:
            return None  # invalid range-spec: ignore the header
    if start >= total:
        raise RangeNotSatisfiable
    return ByteRange(start, min(end, total - 1))


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith(("W/", "w/")) else tag


def etag_matches_any(if_none_match: str, etag: str) -> bool:
    """Weak comparison of ``etag`` against an If-None-Match list (or ``*``)."""
    items = _split_list(if_none_match)
    if "*" in items:
        return True
    mine = _opaque(etag)
    return any(_opaque(item) == mine for item in items)


def parse_http_date(value: str) -> float | None:
    """Seconds since the epoch for an HTTP-date, or ``None`` if it is not one."""
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        # RFC 850 and asctime forms carry no zone; HTTP dates are always GMT.
        return parsed.replace(tzinfo=UTC).timestamp()
    return parsed.timestamp()


def format_http_date(timestamp: float) -> str:
    """IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return email.utils.formatdate(int(timestamp), usegmt=True)


def not_modified_since(if_modified_since: str, mtime: float) -> bool:
    """True when a resource last modified at ``mtime`` is unchanged since the date.

    An unparsable date means "no condition" and yields False (serve the body).
    """
    when = parse_http_date(if_modified_since)
    if when is None:
        return False
    return int(mtime) <= int(when)


def if_range_allows(if_range: str | None, etag: str, last_modified: str) -> bool:
    """Whether the Range header may be honoured given an ``If-Range`` value.

    An entity tag must match strongly (weak tags never match); a date must equal
    the Last-Modified date exactly. Anything else means "send the full body".
    """
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith(("W/", "w/")):
        return False
    if value.startswith('"'):
        return value == etag
    when = parse_http_date(value)
    mine = parse_http_date(last_modified)
    return when is not None and mine is not None and int(when) == int(mine)


def _parse_accept_encoding(value: str) -> dict[str, float]:
    prefs: dict[str, float] = {}
    for item in _split_list(value):
        name, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            key, _, raw = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(raw.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        name = name.lower()
        if name == "x-gzip":
            name = "gzip"
        if name:
            prefs[name] = q
    return prefs


def choose_encoding(accept_encoding: str | None, available: Iterable[str]) -> str:
    """Pick the content coding to send: one of ``available`` or ``"identity"``.

    ``available`` lists codings that have a precompressed sibling. Without an
    Accept-Encoding header only identity is sent. A coding is acceptable when its
    own q (or else ``*``'s q) is above zero; the highest q wins, ties going to the
    order of ``ENCODING_PREFERENCE``. Identity is the fallback even when the
    client excluded it (RFC 9110 §12.5.3 allows that instead of a 406).
    """
    if accept_encoding is None:
        return "identity"
    prefs = _parse_accept_encoding(accept_encoding)
    star = prefs.get("*")
    offered = set(available)
    best = "identity"
    # Unlisted identity stays acceptable but loses to any acceptable coding.
    best_q = prefs.get("identity", star if star is not None else 0.0)
    # Walk from least to most preferred so that ties go to the preferred coding.
    for name, _suffix in reversed(ENCODING_PREFERENCE):
        if name not in offered:
            continue
        q = prefs.get(name, star if star is not None else 0.0)
        if q > 0.0 and q >= best_q:
            best, best_q = name, q
    return best
