"""Tests for edge.http.ranges: RFC 9110 §14 tables, abuse guards, If-Range, multipart round trips."""

from __future__ import annotations

import email.parser
import email.policy
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.http.ranges import (
    RangeResult,
    content_range,
    if_range_allows,
    multipart_byteranges,
    multipart_length,
    new_boundary,
    parse_range,
    unsatisfied_range,
)

# --- RFC 9110 §14.1.2 examples, representation of 10000 bytes -------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"bytes=0-499", ((0, 499),)),  # the first 500 bytes
        (b"bytes=500-999", ((500, 999),)),  # the second 500 bytes
        (b"bytes=-500", ((9500, 9999),)),  # the final 500 bytes
        (b"bytes=9500-", ((9500, 9999),)),  # the final 500 bytes
        (b"bytes=0-0,-1", ((0, 0), (9999, 9999))),  # first and last bytes only
        (b"bytes=500-600,601-999", ((500, 999),)),  # non-canonical second 500 bytes
        (b"bytes=500-700,601-999", ((500, 999),)),  # overlapping, still the second 500
    ],
)
def test_rfc9110_examples(header: bytes, expected: tuple[tuple[int, int], ...]) -> None:
    result = parse_range(header, 10000)
    assert result.ranges == expected
    assert not result.ignore and not result.unsatisfiable


@pytest.mark.parametrize(
    ("header", "length", "expected"),
    [
        (b"bytes=0-", 10, ((0, 9),)),
        (b"bytes=0-999", 10, ((0, 9),)),  # last-pos past the end is clamped
        (b"bytes=-999", 10, ((0, 9),)),  # a suffix longer than the body selects all of it
        (b"bytes=9-9", 10, ((9, 9),)),
        (b"BYTES=1-2", 10, ((1, 2),)),  # the unit is case-insensitive
        (b"  bytes=1-2 , ,5-6  ", 10, ((1, 2), (5, 6))),  # OWS and empty list elements
        (b"bytes=1-2,3-4", 10, ((1, 4),)),  # adjacent ranges are merged
        (b"bytes=1-2,\t4-5", 10, ((1, 2), (4, 5))),
        (b"bytes=6-7,1-2", 10, ((6, 7), (1, 2))),  # disjoint: request order kept (§15.3.7.2)
        (b"bytes=6-7,0-2,3-4", 10, ((0, 4), (6, 7))),  # touching: merged, ascending
        (b"bytes=20-30,2-3", 10, ((2, 3),)),  # the unsatisfiable spec is dropped
        (b"bytes=-0,2-3", 10, ((2, 3),)),  # "-0" selects nothing but is valid
        (b"bytes=0000000000000000000000000001-2", 10, ((1, 2),)),  # leading zeros
        (b"bytes=5-99999999999999999999999999999999999", 10, ((5, 9),)),  # huge last-pos
        (b"bytes=-" + b"9" * 5000, 10, ((0, 9),)),  # past int()'s digit limit
    ],
)
def test_resolution(header: bytes, length: int, expected: tuple[tuple[int, int], ...]) -> None:
    assert parse_range(header, length).ranges == expected


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "absent"),
        (b"", "syntax"),
        (b"bytes", "syntax"),
        (b"bytes=", "syntax"),
        (b"bytes=,", "syntax"),
        (b"bytes=5", "syntax"),
        (b"bytes=-", "syntax"),
        (b"bytes=5-4", "syntax"),  # last-pos < first-pos makes the spec invalid (§14.1.1)
        (b"bytes=0-1,5-4", "syntax"),  # one invalid spec invalidates the whole header
        (b"bytes=1-2-3", "syntax"),
        (b"bytes=a-b", "syntax"),
        (b"bytes=+1-2", "syntax"),
        (b"bytes=1 -2", "syntax"),
        (b"bytes=\xd9\xa1-2", "syntax"),  # non-ASCII digits are not DIGIT
        (b"bytes=0-1,999999999999999999999-x", "syntax"),
        (b"items=0-1", "unit"),
        (b"bytes =0-1", "unit"),
        (b"none=", "unit"),
    ],
)
def test_ignored(header: bytes | None, reason: str) -> None:
    result = parse_range(header, 100)
    assert result.ignore and result.ranges == () and not result.unsatisfiable
    assert result.reason == reason


@pytest.mark.parametrize("header", [b"bytes=100-", b"bytes=100-200", b"bytes=-0", b"bytes=100-,-0,500-600"])
def test_unsatisfiable(header: bytes) -> None:
    result = parse_range(header, 100)
    assert result.unsatisfiable and not result.ignore and result.ranges == ()


def test_zero_length_representation() -> None:
    # §14.1.2: on an empty representation only a non-zero suffix is satisfiable, yet no
    # Content-Range can name zero bytes: serve the (empty) 200 instead.
    assert parse_range(b"bytes=-5", 0).ignore
    assert parse_range(b"bytes=-5", 0).reason == "empty-representation"
    assert parse_range(b"bytes=0-", 0).unsatisfiable
    assert parse_range(b"bytes=0-0", 0).unsatisfiable
    assert parse_range(b"bytes=-0", 0).unsatisfiable
    assert parse_range(b"bytes=0-,-1", 0).ignore


# --- abuse guards (§14.2) --------------------------------------------------------------------------


def test_too_many_ranges() -> None:
    ok = b"bytes=" + b",".join(b"%d-%d" % (i * 10, i * 10) for i in range(32))
    assert len(parse_range(ok, 1000).ranges) == 32
    over = ok + b",900-900"
    assert parse_range(over, 1000).reason == "too-many-ranges"
    assert parse_range(over, 1000, max_ranges=33).ranges
    # counted as sent, before dropping unsatisfiable ones, and cheaply: parsing stops early
    assert parse_range(b"bytes=" + b"5000-," * 100000, 1000).reason == "too-many-ranges"


def test_overlapping_ranges() -> None:
    assert parse_range(b"bytes=0-10,5-15", 100).ranges == ((0, 15),)  # two overlapping: merged
    assert parse_range(b"bytes=0-10,5-15,8-20", 100).reason == "too-many-overlaps"
    assert parse_range(b"bytes=0-10,5-15,50-60,55-65", 100).reason == "too-many-overlaps"
    assert parse_range(b"bytes=0-10,5-15,8-20", 100, max_overlapping=3).ranges == ((0, 20),)
    # adjacency is not overlap
    assert parse_range(b"bytes=0-9,10-19,20-29,30-39", 100).ranges == ((0, 39),)
    # the Apache Killer shape
    killer = b"bytes=0-," + b",".join(b"5-%d" % i for i in range(1, 30))
    assert parse_range(killer, 10000).ignore


def test_total_bytes_guard() -> None:
    assert parse_range(b"bytes=0-,0-", 100).ranges == ((0, 99),)  # exactly 2x is allowed
    many = b"bytes=0-,0-,0-"
    assert parse_range(many, 100, max_overlapping=10).reason == "too-much-data"
    assert parse_range(many, 100, max_overlapping=10, max_total_factor=3).ranges == ((0, 99),)


# --- Content-Range ----------------------------------------------------------------------------------


def test_content_range_values() -> None:
    assert content_range(42, 1233, 1234) == b"bytes 42-1233/1234"  # §14.4 example
    assert unsatisfied_range(1234) == b"bytes */1234"
    assert unsatisfied_range(0) == b"bytes */0"
    for bad in [(-1, 0, 10), (5, 4, 10), (0, 10, 10)]:
        with pytest.raises(ValueError):
            content_range(*bad)


# --- If-Range (§13.1.5) ------------------------------------------------------------------------------

LM = b"Sat, 29 Oct 1994 19:43:31 GMT"
DATE_LATER = b"Sat, 29 Oct 1994 19:43:32 GMT"


@pytest.mark.parametrize(
    ("if_range", "etag", "last_modified", "date", "allowed"),
    [
        (b'"xyzzy"', b'"xyzzy"', None, None, True),
        (b' "xyzzy" ', b'"xyzzy"', None, None, True),
        (b'"xyzzy"', b'"other"', None, None, False),
        (b'W/"xyzzy"', b'W/"xyzzy"', None, None, False),  # weak never matches
        (b'W/"xyzzy"', b'"xyzzy"', None, None, False),
        (b'"xyzzy"', b'W/"xyzzy"', None, None, False),
        (b'"xyzzy"', None, LM, DATE_LATER, False),  # an etag with no stored etag
        (b'"xy"zy"', b'"xy"zy"', None, None, False),  # not an entity-tag
        (b'"xyzzy', b'"xyzzy', None, None, False),
        (LM, b'"x"', LM, DATE_LATER, True),
        (b"Saturday, 29-Oct-94 19:43:31 GMT", None, LM, DATE_LATER, True),  # same instant, RFC 850 form
        (b"Sat Oct 29 19:43:31 1994", None, LM, DATE_LATER, True),  # asctime form
        (LM, None, LM, LM, False),  # Date == Last-Modified: Last-Modified is weak (§8.8.2.2)
        (LM, None, LM, None, False),  # no Date: strength unknown
        (DATE_LATER, None, LM, DATE_LATER, False),  # later than Last-Modified is not equal
        (b"Sat, 29 Oct 1994 19:43:30 GMT", None, LM, DATE_LATER, False),
        (LM, b'"x"', None, DATE_LATER, False),
        (b"not a date", None, LM, DATE_LATER, False),
        (b"", b'"x"', LM, DATE_LATER, False),
        (LM, None, b"garbage", DATE_LATER, False),
    ],
)
def test_if_range(
    if_range: bytes, etag: bytes | None, last_modified: bytes | None, date: bytes | None, allowed: bool
) -> None:
    assert if_range_allows(if_range, etag, last_modified, date=date) is allowed


@given(st.binary(max_size=64), st.one_of(st.none(), st.binary(max_size=16)))
def test_if_range_never_raises_and_weak_never_matches(if_range: bytes, etag: bytes | None) -> None:
    result = if_range_allows(if_range, etag, LM, date=DATE_LATER)
    is_tag = if_range.strip(b" \t").startswith((b'"', b"W/"))
    if is_tag and (etag is None or etag.strip(b" \t").startswith(b"W/")):
        assert result is False


# --- multipart/byteranges ----------------------------------------------------------------------------


def parse_multipart(content_type: bytes, wire: bytes) -> list[tuple[dict[bytes, bytes], bytes]]:
    """A strict multipart/byteranges reader: finds parts by boundary, as clients do."""
    prefix = b"multipart/byteranges; boundary="
    assert content_type.startswith(prefix)
    boundary = content_type[len(prefix) :].strip(b'"')
    delimiter = b"\r\n--" + boundary
    assert wire.startswith(b"--" + boundary + b"\r\n")
    assert wire.endswith(delimiter + b"--\r\n")
    parts = []
    pos = len(boundary) + 4
    while True:
        head_end = wire.index(b"\r\n\r\n", pos)
        headers = {}
        for line in wire[pos:head_end].split(b"\r\n"):
            name, _, value = line.partition(b": ")
            headers[name.lower()] = value
        data_end = wire.index(delimiter, head_end + 4)
        parts.append((headers, wire[head_end + 4 : data_end]))
        pos = data_end + len(delimiter)
        if wire[pos : pos + 2] == b"--":
            assert pos + 4 == len(wire)
            return parts
        assert wire[pos : pos + 2] == b"\r\n"
        pos += 2


def test_multipart_wire_format() -> None:
    body = bytes(range(256)) * 40  # 10240 bytes
    ctype, pieces = multipart_byteranges(
        [(0, 3), (10000, 10239)], body, len(body), b"application/pdf", b"THIS_STRING_SEPARATES"
    )
    assert ctype == b"multipart/byteranges; boundary=THIS_STRING_SEPARATES"
    wire = b"".join(pieces)
    assert wire.startswith(
        b"--THIS_STRING_SEPARATES\r\nContent-Type: application/pdf\r\n"
        b"Content-Range: bytes 0-3/10240\r\n\r\n\x00\x01\x02\x03\r\n--THIS_STRING_SEPARATES\r\n"
    )
    assert wire.endswith(b"\r\n--THIS_STRING_SEPARATES--\r\n")
    assert len(wire) == multipart_length(
        [(0, 3), (10000, 10239)], len(body), b"application/pdf", b"THIS_STRING_SEPARATES"
    )
    # body parts are views into the stored body, not copies
    views = [p for p in pieces if isinstance(p, memoryview)]
    assert len(views) == 2 and all(v.obj is body for v in views)


def test_multipart_without_content_type_and_quoted_boundary() -> None:
    body = b"0123456789"
    ctype, pieces = multipart_byteranges([(1, 2), (7, 8)], memoryview(body), 10, None, b"a:b")
    assert ctype == b'multipart/byteranges; boundary="a:b"'
    parts = parse_multipart(ctype, b"".join(pieces))
    assert [(h, d) for h, d in parts] == [
        ({b"content-range": b"bytes 1-2/10"}, b"12"),
        ({b"content-range": b"bytes 7-8/10"}, b"78"),
    ]


def test_multipart_parses_with_the_email_package() -> None:
    body = b"".join(b"line %04d\r\n" % i for i in range(100))
    ranges = [(0, 9), (500, 549), (990, 999)]
    ctype, pieces = multipart_byteranges(ranges, body, len(body), b"text/plain", new_boundary())
    raw = b"Content-Type: " + ctype + b"\r\n\r\n" + b"".join(pieces)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert message.get_content_type() == "multipart/byteranges"
    parts = message.get_payload()
    assert isinstance(parts, list)
    assert [p["Content-Range"] for p in parts] == [f"bytes {s}-{e}/{len(body)}" for s, e in ranges]
    assert [p.get_payload(decode=True) for p in parts] == [body[s : e + 1] for s, e in ranges]


@pytest.mark.parametrize("boundary", [b"", b"x" * 71, b"ends with space ", b"semi;colon", b"new\r\nline"])
def test_bad_boundaries_are_refused(boundary: bytes) -> None:
    with pytest.raises(ValueError):
        multipart_byteranges([(0, 0)], b"x", 1, None, boundary)
    with pytest.raises(ValueError):
        multipart_length([(0, 0)], 1, None, boundary)


def test_multipart_refuses_ranges_outside_the_body() -> None:
    with pytest.raises(ValueError):
        multipart_byteranges([(0, 10)], b"0123456789", 10, None, b"b")
    with pytest.raises(ValueError):
        multipart_byteranges([(0, 5)], b"0123", 10, None, b"b")


def test_new_boundary() -> None:
    boundaries = {new_boundary() for _ in range(100)}
    assert len(boundaries) == 100
    for b in boundaries:
        assert len(b) == 32 and b.isalnum()


# --- properties ---------------------------------------------------------------------------------------


def model_resolved(header: bytes, length: int) -> list[tuple[int, int]]:
    """The satisfiable specs of a well-formed ``bytes=`` header in request order, straight from §14.1.2."""
    resolved = []
    for spec in header.partition(b"=")[2].split(b","):
        first, _, last = spec.strip().partition(b"-")
        if not first:
            if int(last) > 0 and length > 0:
                resolved.append((max(0, length - int(last)), length - 1))
        elif int(first) < length:
            resolved.append((int(first), min(int(last), length - 1) if last else length - 1))
    return resolved


SPEC = st.one_of(
    st.tuples(st.integers(0, 80), st.integers(0, 80)).map(lambda t: b"%d-%d" % (min(t), max(t))),
    st.integers(0, 80).map(lambda a: b"%d-" % a),
    st.integers(0, 80).map(lambda n: b"-%d" % n),
)
HEADER = st.lists(SPEC, min_size=1, max_size=8).map(lambda specs: b"bytes=" + b", ".join(specs))


def check_invariants(result: RangeResult, length: int) -> None:
    assert sum((result.ignore, result.unsatisfiable, bool(result.ranges))) == 1
    for start, end in result.ranges:
        assert 0 <= start <= end < length
    ordered = sorted(result.ranges)
    for (_, end), (start, _) in itertools.pairwise(ordered):
        assert start > end + 1  # disjoint and not even adjacent


@given(st.binary(max_size=200), st.integers(0, 10**6))
def test_parse_range_never_raises_on_bytes(raw: bytes, length: int) -> None:
    check_invariants(parse_range(raw, length), length)
    check_invariants(parse_range(b"bytes=" + raw, length), length)


@given(st.text(alphabet="0123456789-, \t=bytesBYTES", max_size=60).map(str.encode), st.integers(0, 100))
def test_parse_range_never_raises_on_near_misses(raw: bytes, length: int) -> None:
    check_invariants(parse_range(raw, length), length)


@given(HEADER, st.integers(0, 100))
@settings(max_examples=400)
def test_parse_range_selects_exactly_the_requested_bytes(header: bytes, length: int) -> None:
    result = parse_range(header, length, max_overlapping=100, max_total_factor=100)
    check_invariants(result, length)
    resolved = model_resolved(header, length)
    wanted = {i for s, e in resolved for i in range(s, e + 1)}
    if resolved:
        assert {i for s, e in result.ranges for i in range(s, e + 1)} == wanted
        # either the request's own order, or coalesced into fewer ranges in ascending order
        if list(result.ranges) != resolved:
            assert len(result.ranges) < len(resolved)
            assert list(result.ranges) == sorted(result.ranges)
    elif length == 0 and any(
        spec.strip().startswith(b"-") and int(spec.strip()[1:]) > 0 for spec in header[6:].split(b",")
    ):
        assert result.ignore and result.reason == "empty-representation"
    else:
        assert result.unsatisfiable


@given(HEADER, st.integers(1, 100))
def test_default_guards_hold(header: bytes, length: int) -> None:
    result = parse_range(header, length)
    check_invariants(result, length)
    if result.ranges:
        selected = sum(e - s + 1 for s, e in result.ranges)
        assert selected <= length


@given(st.binary(min_size=1, max_size=300), HEADER, st.one_of(st.none(), st.just(b"text/css; charset=utf-8")))
def test_multipart_round_trip(body: bytes, header: bytes, ctype: bytes | None) -> None:
    length = len(body)
    result = parse_range(header, length)
    if not result.ranges:
        return
    boundary = new_boundary()
    content_type, pieces = multipart_byteranges(result.ranges, body, length, ctype, boundary)
    wire = b"".join(pieces)
    assert len(wire) == multipart_length(result.ranges, length, ctype, boundary)
    parts = parse_multipart(content_type, wire)
    assert len(parts) == len(result.ranges)
    for (headers, data), (start, end) in zip(parts, result.ranges, strict=True):
        assert data == body[start : end + 1]
        assert headers[b"content-range"] == content_range(start, end, length)
        assert headers.get(b"content-type") == ctype
