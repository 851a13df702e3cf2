"""The HTTPS front's one-pass request check agrees with the h2 library's own on any block."""

from __future__ import annotations

import h2.exceptions
import h2.utilities
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.http.h2_request import malformed_request, malformed_trailers

REQUEST_FLAGS = h2.utilities.HeaderValidationFlags(
    is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
)

GOOD = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"example.com"),
    (b":path", b"/app.js"),
    (b"accept-encoding", b"br, gzip"),
    (b"te", b"Trailers"),
]


def h2_verdict(fields: list[tuple[bytes, bytes]]) -> bool:
    """True when h2 accepts the block as a request."""
    try:
        list(h2.utilities.validate_headers(fields, REQUEST_FLAGS))
    except h2.exceptions.ProtocolError:
        return False
    return True


def test_a_browser_request_is_well_formed() -> None:
    assert malformed_request(GOOD) is None
    assert h2_verdict(GOOD)


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"a")], "missing :scheme or :path"),
        ([*GOOD, (b":path", b"/x")], "pseudo-header after a regular field"),
        ([*GOOD[:4], (b":path", b"/x")], "repeated pseudo-header"),
        ([(b":status", b"200"), *GOOD], "unknown pseudo-header"),
        ([*GOOD, (b"Accept", b"*/*")], "invalid character in a field name (or upper case)"),
        ([*GOOD, (b"connection", b"keep-alive")], "connection-specific field"),
        ([*GOOD, (b"te", b"gzip")], "TE other than trailers"),
        ([*GOOD, (b"x-a", b"1\r\nx-b: 2")], "NUL, CR or LF in a field value"),
        ([*GOOD, (b"x-a", b" padded")], "field value starts or ends with whitespace"),
        ([*GOOD, (b"host", b"other.example")], "Host differs from :authority"),
        ([GOOD[0], GOOD[1], (b":path", b"")], "empty :path"),
        ([GOOD[0], GOOD[1], GOOD[3]], "neither :authority nor Host"),
        ([*GOOD, (b"host", b"example.com"), (b"host", b"example.com")], "repeated Host"),
        ([(b":method", b"GET"), (b":protocol", b"websocket"), *GOOD[1:4]], ":protocol outside CONNECT"),
        ([(b":method", b"CONNECT"), (b":protocol", b"websocket"), GOOD[2]], "missing :scheme or :path"),
    ],
)
def test_each_rule_is_named(fields: list[tuple[bytes, bytes]], rule: str) -> None:
    assert malformed_request(fields) == rule
    assert not h2_verdict(fields)


@pytest.mark.parametrize("path", [b"m/app.js", b"app.js", b"https://example.com/app.js", b"*", b"//x"])
def test_path_must_be_origin_form_which_h2_does_not_check(path: bytes) -> None:
    """The cache key joins authority and path: "example.co" + "m/app.js" must not be read
    as example.com/app.js. h2 accepts all of these; the front refuses all but "//x"."""
    fields = [GOOD[0], GOOD[1], (b":authority", b"example.co"), (b":path", path)]
    assert h2_verdict(fields)
    expected = None if path == b"//x" else ":path is not an absolute path"
    assert malformed_request(fields) == expected
    options = [(b":method", b"OPTIONS"), GOOD[1], GOOD[2], (b":path", b"*")]
    assert malformed_request(options) is None


def test_extended_connect_is_well_formed() -> None:
    """RFC 8441 §4: :protocol on a CONNECT, which then carries :scheme and :path (the
    front bridges websocket only: edge.fronts.stream_tunnel)."""
    fields = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), *GOOD[1:4]]
    assert h2_verdict(fields)
    assert malformed_request(fields) is None
    relative = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), GOOD[1], GOOD[2], (b":path", b"x")]
    assert malformed_request(relative) == ":path is not an absolute path"


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ([(b"x-checksum", b"abc")], None),
        ([(b":path", b"/x")], "pseudo-header in trailers"),
        ([(b"connection", b"close")], "connection-specific field"),
        ([(b"X-Up", b"1")], "invalid character in a field name (or upper case)"),
        ([(b"x-a", b" 1")], "field value starts or ends with whitespace"),
        ([(b"", b"1")], "empty field name"),
    ],
)
def test_trailers(fields: list[tuple[bytes, bytes]], rule: str | None) -> None:
    assert malformed_trailers(fields) == rule


names = st.sampled_from(
    [b":method", b":scheme", b":authority", b":path", b":protocol", b":status", b":x", b"host",
     b"te", b"connection", b"upgrade", b"accept", b"Accept", b"x-a", b"", b"x:y", b"x y", b"\xff"]
)  # fmt: skip
values = st.one_of(
    st.sampled_from([b"GET", b"CONNECT", b"https", b"/", b"", b"example.com", b"trailers", b"gzip"]),
    st.binary(max_size=6),
)
blocks = st.lists(st.tuples(names, values), max_size=9)


@settings(max_examples=2000)
@given(st.one_of(blocks, blocks.map(lambda extra: GOOD[:4] + extra)))
def test_verdict_matches_h2(fields: list[tuple[bytes, bytes]]) -> None:
    """Same verdict as h2, but for the two rules h2 leaves out (tested above)."""
    pseudo = dict(f for f in fields if f[0][:1] == b":")
    path = pseudo.get(b":path")
    h2_gaps = b":protocol" in pseudo or (
        path is not None and path[:1] != b"/" and pseudo.get(b":method") != b"CONNECT"
        and not (path == b"*" and pseudo.get(b":method") == b"OPTIONS")
    )  # fmt: skip
    if h2_gaps:
        return
    assert (malformed_request(fields) is None) == h2_verdict(fields)


@given(st.lists(st.tuples(names, values), max_size=6))
def test_trailer_verdict_matches_h2(fields: list[tuple[bytes, bytes]]) -> None:
    flags = h2.utilities.HeaderValidationFlags(
        is_client=False, is_trailer=True, is_response_header=False, is_push_promise=False
    )
    try:
        list(h2.utilities.validate_headers(fields, flags))
        accepted = True
    except h2.exceptions.ProtocolError:
        accepted = False
    assert (malformed_trailers(fields) is None) == accepted
