"""Byte ranges (RFC 9110 §14): Range, Content-Range, If-Range, multipart/byteranges.

Rules this module guarantees:
- ``parse_range`` never raises; its answer is one of three: *ignore* (serve the
  whole 200), *unsatisfiable* (416 with ``Content-Range: bytes */length``), or
  ranges ``(start, end)`` with ``0 <= start <= end < length`` (end inclusive);
- the header is ignored, never half-applied, when any range-spec is invalid
  (§14.1.1), the unit is not ``bytes`` (§14.2), or it looks abusive (§14.2's
  security note): more than ``max_ranges`` specs, more than
  ``max_overlapping`` ranges that overlap another, or more selected bytes than
  ``max_total_factor`` times the representation;
- an end past the representation is clamped, a suffix longer than it selects
  all of it, unsatisfiable specs beside satisfiable ones are dropped (§14.1.2);
- the returned ranges are disjoint and never adjacent: when any requested
  ranges overlap or touch, all are merged and returned in ascending order
  (§15.3.7.2 allows coalescing "regardless of the order"); otherwise they keep
  the request's order, as §15.3.7.2 asks of multipart parts;
- a zero-length representation has no byte to send: ``bytes=-N`` (N > 0) is
  satisfiable on paper (§14.1.2) but no Content-Range can describe zero bytes,
  so it is *ignore* (an empty 200); every other spec is *unsatisfiable*;
- numerals of any length are safe: values past 10^18 saturate instead of
  reaching ``int()``'s digit limit;
- multipart bodies reference the stored body through ``memoryview`` slices and
  never copy it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from edge.http.dates import parse_http_date
from edge.http.fields import is_token

__all__ = [
    "DEFAULT_MAX_OVERLAPPING",
    "DEFAULT_MAX_RANGES",
    "DEFAULT_MAX_TOTAL_FACTOR",
    "MultipartFrame",
    "RangeResult",
    "content_range",
    "if_range_allows",
    "multipart_byteranges",
    "multipart_frame",
    "multipart_length",
    "new_boundary",
    "parse_content_range",
    "parse_range",
    "unsatisfied_range",
]

DEFAULT_MAX_RANGES = 32
"""Range-specs beyond this many make the header ignored (Apache's MaxRanges default is 200)."""
DEFAULT_MAX_OVERLAPPING = 2
"""RFC 9110 §14.2 names "more than two overlapping ranges" as a sign of abuse."""
DEFAULT_MAX_TOTAL_FACTOR = 2
"""Selected bytes (before merging) above this times length make the header ignored."""

_SATURATE = 10**18
_OWS = b" \t"

Range = tuple[int, int]


@dataclass(frozen=True, slots=True)
class RangeResult:
    """What to do with a Range header, resolved against one representation length."""

    ranges: tuple[Range, ...] = ()
    """Non-empty ⇒ 206: ``(start, end)`` inclusive, disjoint, non-adjacent."""
    unsatisfiable: bool = False
    """True ⇒ 416 with ``Content-Range: bytes */length``."""
    reason: str = ""
    """Why the header was ignored or unsatisfiable, for logs and tests."""

    @property
    def ignore(self) -> bool:
        """True ⇒ serve the whole representation with 200, as if Range were absent."""
        return not self.ranges and not self.unsatisfiable


def _ignore(reason: str) -> RangeResult:
    return RangeResult(reason=reason)


_ABSENT = RangeResult(reason="absent")
_UNSATISFIABLE = RangeResult(unsatisfiable=True, reason="unsatisfiable")


def _number(digits: bytes) -> int | None:
    """1*DIGIT as an int, saturated at 10^18; None if not all ASCII digits."""
    if not digits or not digits.isdigit():
        return None
    digits = digits.lstrip(b"0") or b"0"
    return _SATURATE if len(digits) > 18 else int(digits)


def parse_range(
    value: bytes | None,
    length: int,
    *,
    max_ranges: int = DEFAULT_MAX_RANGES,
    max_overlapping: int = DEFAULT_MAX_OVERLAPPING,
    max_total_factor: int = DEFAULT_MAX_TOTAL_FACTOR,
) -> RangeResult:
    """Resolve a Range field value against a representation of ``length`` bytes."""
    if value is None:
        return _ABSENT
    unit, eq, range_set = value.strip(_OWS).partition(b"=")
    if not eq:
        return _ignore("syntax")
    if unit.lower() != b"bytes":
        return _ignore("unit")

    # Pass 1: syntax. Any invalid spec invalidates the whole header (§14.1.1).
    specs: list[tuple[int | None, int | None]] = []  # (first, last) or (None, suffix)
    for raw in range_set.split(b","):
        member = raw.strip(_OWS)
        if not member:
            continue  # empty list elements are allowed (§5.6.1)
        if len(specs) == max_ranges:
            return _ignore("too-many-ranges")
        first_s, dash, last_s = member.partition(b"-")
        if not dash:
            return _ignore("syntax")
        if not first_s:
            suffix = _number(last_s)
            if suffix is None:
                return _ignore("syntax")
            specs.append((None, suffix))
            continue
        first = _number(first_s)
        last = _number(last_s) if last_s else None
        if first is None or (last_s and last is None) or (last is not None and last < first):
            return _ignore("syntax")
        specs.append((first, last))
    if not specs:
        return _ignore("syntax")

    # Pass 2: resolve against the length; drop the specs that select nothing.
    resolved: list[Range] = []
    empty_suffix = False
    for first, last in specs:
        if first is None:
            assert last is not None
            if last == 0:
                continue  # "-0" is valid but never satisfiable
            if length == 0:
                empty_suffix = True
                continue
            resolved.append((max(0, length - last), length - 1))
        elif first < length:
            resolved.append((first, length - 1 if last is None or last >= length else last))
    if not resolved:
        return _ignore("empty-representation") if empty_suffix else _UNSATISFIABLE

    if len(resolved) == 1:
        return RangeResult(ranges=(resolved[0],))

    # Pass 3: abuse guards (§14.2), then coalescing.
    if sum(e - s + 1 for s, e in resolved) > max_total_factor * length:
        return _ignore("too-much-data")
    ordered = sorted(resolved)
    overlapping = 0
    group = 1
    group_end = ordered[0][1]
    touching = False
    for start, end in ordered[1:]:
        if start <= group_end:
            group += 1
        else:
            if group > 1:
                overlapping += group
            group = 1
            if start == group_end + 1:
                touching = True
        group_end = max(group_end, end)
    if group > 1:
        overlapping += group
    if overlapping > max_overlapping:
        return _ignore("too-many-overlaps")
    if not overlapping and not touching:
        return RangeResult(ranges=tuple(resolved))
    merged: list[Range] = [ordered[0]]
    for start, end in ordered[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end + 1:
            if end > last_end:
                merged[-1] = (last_start, end)
        else:
            merged.append((start, end))
    return RangeResult(ranges=tuple(merged))


def content_range(start: int, end: int, length: int) -> bytes:
    """Content-Range value for a 206 part: ``bytes start-end/length`` (§14.4)."""
    if not 0 <= start <= end < length:
        raise ValueError(f"range {start}-{end} outside a representation of {length} bytes")
    return b"bytes %d-%d/%d" % (start, end, length)


def unsatisfied_range(length: int) -> bytes:
    """Content-Range value for a 416: ``bytes */length`` (§14.4)."""
    return b"bytes */%d" % length


# --- If-Range (§13.1.5) --------------------------------------------------------------------------


def _is_strong_etag(tag: bytes) -> bool:
    """``DQUOTE *etagc DQUOTE`` with etagc = %x21 / %x23-7E / obs-text (§8.8.3)."""
    return (
        len(tag) >= 2
        and tag[0] == 0x22
        and tag[-1] == 0x22
        and all(c == 0x21 or 0x23 <= c != 0x7F for c in tag[1:-1])
    )


def if_range_allows(
    if_range: bytes,
    etag: bytes | None,
    last_modified: bytes | None,
    *,
    date: bytes | None = None,
) -> bool:
    """Whether a Range may be honoured given If-Range; False ⇒ ignore Range, send 200.

    An entity-tag matches only by strong comparison: a weak tag on either side
    never matches. An HTTP-date matches only when it equals Last-Modified and
    Last-Modified is strong, which a cache knows only when the stored ``date``
    (the response's Date) is at least one second later (§8.8.2.2); without a
    Date the answer is False, which costs a full 200 but never sends bytes of a
    different representation.
    """
    value = if_range.strip(_OWS)
    if value[:1] == b'"' or value[:2] == b"W/":
        if etag is None or not _is_strong_etag(value):
            return False
        return _is_strong_etag(ours := etag.strip(_OWS)) and ours == value
    if last_modified is None or date is None:
        return False
    wanted = parse_http_date(value)
    modified = parse_http_date(last_modified)
    sent = parse_http_date(date)
    if wanted is None or modified is None or sent is None:
        return False
    return wanted == modified and sent >= modified + 1


# --- multipart/byteranges (§14.6, RFC 2046 §5.1.1) -----------------------------------------------

_BCHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ")


def new_boundary() -> bytes:
    """A random boundary: 32 hex digits, a token, so it never needs quoting.

    128 random bits make a collision with the body's bytes negligible, which is
    what lets the body be sent without scanning it.
    """
    return secrets.token_hex(16).encode("ascii")


def _check_boundary(boundary: bytes) -> None:
    if not 1 <= len(boundary) <= 70 or boundary[-1:] == b" " or not all(c in _BCHARS for c in boundary):
        raise ValueError(f"invalid multipart boundary {boundary!r}")


def _part_head(first: bool, boundary: bytes, type_line: bytes, start: int, end: int, length: int) -> bytes:
    return b"%s--%s\r\n%sContent-Range: bytes %d-%d/%d\r\n\r\n" % (
        b"" if first else b"\r\n",
        boundary,
        type_line,
        start,
        end,
        length,
    )


def _type_line(content_type: bytes | None) -> bytes:
    return b"Content-Type: " + content_type + b"\r\n" if content_type else b""


def _check_ranges(ranges: Sequence[Range], length: int) -> None:
    for start, end in ranges:
        if not 0 <= start <= end < length:
            raise ValueError(f"range {start}-{end} outside a representation of {length} bytes")


@dataclass(frozen=True, slots=True)
class MultipartFrame:
    """Everything of a multipart/byteranges body but the ranges' own bytes.

    The wire body is ``heads[0]``, the bytes of ``ranges[0]``, ``heads[1]``, ... and
    ``closing``: a sender with the bytes in memory (:func:`multipart_byteranges`) and one
    fetching them piece by piece (slices of a large object) write the same framing.
    """

    content_type: bytes
    """The 206's Content-Type value (with the boundary)."""
    ranges: tuple[Range, ...]
    heads: tuple[bytes, ...]
    """The delimiter and fields before each part's bytes."""
    closing: bytes
    length: int
    """The whole body's size (the 206's Content-Length)."""


def multipart_frame(
    ranges: Sequence[Range], length: int, content_type: bytes | None, boundary: bytes
) -> MultipartFrame:
    """The framing of a multipart/byteranges 206 of a ``length``-byte representation.

    Each part repeats the representation's Content-Type when it has one (§14.6).
    """
    _check_boundary(boundary)
    _check_ranges(ranges, length)
    type_line = _type_line(content_type)
    heads = tuple(
        _part_head(i == 0, boundary, type_line, start, end, length) for i, (start, end) in enumerate(ranges)
    )
    closing = b"\r\n--" + boundary + b"--\r\n"
    total = len(closing) + sum(len(h) for h in heads) + sum(end - start + 1 for start, end in ranges)
    param = boundary if is_token(boundary) else b'"' + boundary + b'"'
    return MultipartFrame(b"multipart/byteranges; boundary=" + param, tuple(ranges), heads, closing, total)


def multipart_byteranges(
    ranges: Sequence[Range],
    body: bytes | memoryview,
    length: int,
    content_type: bytes | None,
    boundary: bytes,
) -> tuple[bytes, list[bytes | memoryview]]:
    """The Content-Type value and the body pieces of a multipart/byteranges 206.

    Pieces alternate part head (bytes) and part body (a ``memoryview`` into
    ``body``, no copy) and end with the closing delimiter; ``b"".join`` gives
    the wire body, and ``multipart_length`` gives its size without building it.
    """
    frame = multipart_frame(ranges, length, content_type, boundary)
    if len(body) < length:
        raise ValueError(f"body of {len(body)} bytes is shorter than its length {length}")
    view = body if isinstance(body, memoryview) else memoryview(body)
    pieces: list[bytes | memoryview] = []
    for head, (start, end) in zip(frame.heads, frame.ranges, strict=True):
        pieces.append(head)
        pieces.append(view[start : end + 1])
    pieces.append(frame.closing)
    return frame.content_type, pieces


def multipart_length(
    ranges: Sequence[Range], length: int, content_type: bytes | None, boundary: bytes
) -> int:
    """Content-Length of what ``multipart_byteranges`` would produce, without building it."""
    return multipart_frame(ranges, length, content_type, boundary).length


def parse_content_range(value: bytes | None) -> tuple[int, int, int] | None:
    """``bytes a-b/len`` → (a, b, len); None for ``*``, an unknown length or bad syntax."""
    if value is None:
        return None
    unit, _, rest = value.strip(_OWS).partition(b" ")
    if unit.lower() != b"bytes":
        return None
    span, slash, total = rest.strip(_OWS).partition(b"/")
    first, dash, last = span.partition(b"-")
    if not (slash and dash):
        return None
    start, end, length = _number(first), _number(last), _number(total)
    if start is None or end is None or length is None or length >= _SATURATE:
        return None  # not digits, or a length past 10^18 (no representation is that long)
    if start > end or end >= length:
        return None
    return start, end, length
