"""Arbitrary and near-valid bytes into every parser and sans-I/O rule of ``edge.http``.

The property is the same everywhere: a parser returns one of its documented answers and
raises nothing, except where its docstring names an error type (``content_range`` and the
multipart helpers raise ValueError for ranges outside the representation). Inputs are
raw bytes, and bytes built from the grammar's own pieces (tokens, digits, separators,
quotes), so both the first check and the deep branches are reached; numerals run to
thousands of digits (Python's ``int()`` refuses strings above 4,300 digits).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge.http import accept_encoding, cache_control, dates, fields, h2_request, internal, message, ranges
from edge.http.compressible import is_compressible
from tests.fuzz.support import fuzz_settings, seeded

PIECES = st.sampled_from(
    [
        b"bytes",
        b"=",
        b"-",
        b",",
        b";",
        b" ",
        b"\t",
        b'"',
        b"\\",
        b"q=",
        b"0",
        b"1",
        b"9" * 25,
        b"0" * 30 + b"7",
        b"max-age",
        b"s-maxage",
        b"no-cache",
        b"private",
        b"stale-while-revalidate",
        b"gzip",
        b"br",
        b"zstd",
        b"identity",
        b"*",
        b"W/",
        b'"etag"',
        b"GMT",
        b"Sun, 06 Nov 1994 08:49:37 GMT",
        b"Sunday, 06-Nov-94 08:49:37 GMT",
        b"Sun Nov  6 08:49:37 1994",
        b"Feb",
        b"31",
        b"99",
        b"\x00",
        b"\r\n",
        b"\xff",
        b"\xc3\xa9",
        b":",
        b"/",
    ]
)
LONG_NUMERAL = st.integers(1, 6000).map(lambda n: b"9" * n) | st.integers(1, 6000).map(
    lambda n: b"0" * n + b"1"
)
"""Numerals past ``int()``'s 4,300-digit limit, and zero-padded small ones."""
FIELD_VALUE = (
    st.binary(max_size=120)
    | st.lists(PIECES, max_size=24).map(b"".join)
    | st.tuples(
        st.lists(PIECES, max_size=6).map(b"".join), LONG_NUMERAL, st.lists(PIECES, max_size=6).map(b"".join)
    ).map(b"".join)
)
LENGTH = st.integers(0, 2**40) | st.integers(0, 3000)
DIRECTIVE = st.tuples(
    st.sampled_from(
        [b"max-age", b"s-maxage", b"MAX-AGE", b"max-stale", b"min-fresh", b"no-cache", b"private", b"x"]
    ),
    st.sampled_from([b"", b"=", b'="', b"= "]),
    st.one_of(LONG_NUMERAL, st.integers(0, 2**40).map(lambda n: b"%d" % n), FIELD_VALUE),
).map(b"".join)
CACHE_CONTROL = st.lists(DIRECTIVE, max_size=5).map(b", ".join) | FIELD_VALUE
NUMERAL = st.integers(0, 2**64).map(lambda n: b"%d" % n) | LONG_NUMERAL
CONTENT_RANGE = (
    st.tuples(
        st.sampled_from([b"bytes ", b"BYTES ", b"bytes  ", b"bits "]),
        NUMERAL,
        st.sampled_from([b"-", b"--", b""]),
        NUMERAL,
        st.sampled_from([b"/", b""]),
        NUMERAL | st.just(b"*"),
    ).map(b"".join)
    | FIELD_VALUE
)


@seeded
@fuzz_settings(400)
@given(values=st.lists(CACHE_CONTROL, max_size=4))
def test_cache_control_any_bytes(values: list[bytes]) -> None:
    cc = cache_control.parse_cache_control(values)
    for name in cc.args:
        delta = cc.delta(name)
        assert delta is None or delta == cache_control.INVALID or 0 <= delta <= cache_control.DELTA_MAX
        names = cc.field_names(name)
        assert names is None or isinstance(names, frozenset)
    for name in (b"max-age", b"s-maxage", b"min-fresh", b"max-stale", b"stale-if-error"):
        cc.delta(name)


@seeded
@fuzz_settings(300)
@given(arg=st.one_of(st.none(), FIELD_VALUE, LONG_NUMERAL))
def test_parse_delta_any_bytes(arg: bytes | None) -> None:
    value = cache_control.parse_delta(arg)
    assert value == cache_control.INVALID or 0 <= value <= cache_control.DELTA_MAX


@seeded
@fuzz_settings(400)
@given(value=st.one_of(st.none(), FIELD_VALUE), length=LENGTH)
def test_parse_range_any_bytes(value: bytes | None, length: int) -> None:
    result = ranges.parse_range(value, length)
    if result.ranges:
        assert not result.unsatisfiable
        for i, (start, end) in enumerate(result.ranges):
            assert 0 <= start <= end < length
            for other_start, other_end in result.ranges[i + 1 :]:
                assert end + 1 < other_start or other_end + 1 < start  # disjoint and not adjacent
        for start, end in result.ranges:
            assert ranges.content_range(start, end, length).startswith(b"bytes ")
    else:
        assert result.ignore or result.unsatisfiable


@seeded
@fuzz_settings(300)
@given(value=st.one_of(st.none(), CONTENT_RANGE))
def test_parse_content_range_any_bytes(value: bytes | None) -> None:
    span = ranges.parse_content_range(value)
    if span is not None:
        start, end, length = span
        assert 0 <= start <= end < length


@seeded
@fuzz_settings(300)
@given(
    if_range=FIELD_VALUE,
    etag=st.none() | FIELD_VALUE,
    modified=st.none() | FIELD_VALUE,
    date=st.none() | FIELD_VALUE,
)
def test_if_range_any_bytes(
    if_range: bytes, etag: bytes | None, modified: bytes | None, date: bytes | None
) -> None:
    assert ranges.if_range_allows(if_range, etag, modified, date=date) in (True, False)


@seeded
@fuzz_settings(200)
@given(start=st.integers(-5, 10**18 - 1), end=st.integers(-5, 10**18 - 1), length=st.integers(-5, 10**18 - 1))
def test_content_range_raises_only_value_error(start: int, end: int, length: int) -> None:
    try:
        value = ranges.content_range(start, end, length)
    except ValueError:
        return
    assert ranges.parse_content_range(value) == (start, end, length)


@seeded
@fuzz_settings(300)
@given(value=FIELD_VALUE | st.binary(max_size=40))
def test_http_dates_any_bytes(value: bytes) -> None:
    epoch = dates.parse_http_date(value)
    if epoch is not None:
        assert dates.parse_http_date(dates.format_http_date(epoch)) == epoch
    text = value.decode("latin-1")
    assert dates.parse_http_date(text) == epoch


@seeded
@fuzz_settings(400)
@given(
    value=st.one_of(st.none(), FIELD_VALUE),
    available=st.lists(
        st.sampled_from([b"br", b"zstd", b"gzip", b"identity", b"compress", b"BR"]), max_size=5
    ),
)
def test_accept_encoding_any_bytes(value: bytes | None, available: list[bytes]) -> None:
    accept = accept_encoding.parse_accept_encoding(value)
    for coding, q in accept.items():
        assert coding == coding.lower() and 0 <= q <= 1
    chosen = accept_encoding.choose_encoding(accept, available)
    assert chosen is None or chosen in available
    if chosen is not None and chosen.lower() != accept_encoding.IDENTITY:
        assert accept.get(chosen.lower(), accept.get(b"*")) != 0
    key = accept_encoding.normalise_for_key(value)
    assert key in (*accept_encoding.DEFAULT_PREFERENCE, accept_encoding.IDENTITY)


HEADER_NAME = st.sampled_from(
    [
        b"Connection",
        b"connection",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Keep-Alive",
        b"Upgrade",
        b"X-A",
        b"cookie",
        b"Cookie",
        b"host",
        b"TE",
    ]
) | st.binary(max_size=12)
HEADERS = st.lists(
    st.tuples(HEADER_NAME, FIELD_VALUE | st.binary(max_size=20))
    | st.tuples(
        st.sampled_from([b"Content-Length", b"content-length"]),
        NUMERAL | st.tuples(NUMERAL, st.just(b", "), NUMERAL).map(b"".join),
    ),
    max_size=8,
)


@seeded
@fuzz_settings(400)
@given(headers=HEADERS, values=st.lists(FIELD_VALUE, max_size=4))
def test_field_helpers_any_bytes(headers: list[tuple[bytes, bytes]], values: list[bytes]) -> None:
    members = list(fields.split_list(values))
    assert all(m and m == m.strip(b" \t") for m in members)
    for member in members:
        fields.unquote(member)
    kept = fields.strip_hop_by_hop(headers)
    assert all(name.lower() not in fields.HOP_BY_HOP for name, _ in kept)
    assert isinstance(fields.connection_tokens(headers), frozenset)
    length = fields.declared_length(headers)
    assert length is None or length >= 0
    for name, _ in headers:
        fields.get_one(headers, name.lower())
    combined = message.fields_of(headers)
    assert all(name == name.lower() for name in combined)


PSEUDO = st.sampled_from([b":method", b":scheme", b":authority", b":path", b":protocol", b":status", b":"])
H2_NAME = PSEUDO | HEADER_NAME | st.sampled_from([b"te", b"host", b"content-length", b"accept"])
H2_VALUE = (
    st.sampled_from(
        [
            b"GET",
            b"CONNECT",
            b"OPTIONS",
            b"https",
            b"/",
            b"*",
            b"localhost",
            b"trailers",
            b" x",
            b"x ",
            b"a\x00b",
        ]
    )
    | FIELD_VALUE
)


@seeded
@fuzz_settings(400)
@given(block=st.lists(st.tuples(H2_NAME, H2_VALUE), max_size=10))
def test_h2_request_rules_any_block(block: list[tuple[bytes, bytes]]) -> None:
    verdict = h2_request.malformed_request(block)
    assert verdict is None or (isinstance(verdict, str) and verdict)
    trailers = h2_request.malformed_trailers(block)
    assert trailers is None or isinstance(trailers, str)
    method, path, authority, regular = message.split_pseudo(block)
    assert all(not name.startswith(b":") for name, _ in regular)
    if verdict is None:
        assert method is not None and (authority is not None or any(n == b"host" for n, _ in regular))
        if method != b"CONNECT":
            assert path is not None and message.request_path_ok(path, method)


@seeded
@fuzz_settings(300)
@given(
    host=FIELD_VALUE | st.binary(max_size=30),
    scheme=st.sampled_from([b"http", b"https"]),
    method=st.binary(max_size=8),
)
def test_message_helpers_any_bytes(host: bytes, scheme: bytes, method: bytes) -> None:
    if message.valid_authority(host):
        assert not any(c in host for c in b"/?#@ ")
    normal = message.normalize_host(host, scheme)
    assert normal == normal.lower()
    message.request_path_ok(host, method)
    assert isinstance(message.reason_phrase(int.from_bytes(host[:2] or b"\x00", "big")), bytes)


@seeded
@fuzz_settings(300)
@given(value=FIELD_VALUE | st.binary(max_size=60))
def test_internal_field_and_compressible_any_bytes(value: bytes) -> None:
    parsed = internal.parse_internal(value)
    if parsed is not None:
        client, scheme, version = parsed
        assert internal.parse_internal(internal.format_internal(client, scheme, version)) == parsed
    assert is_compressible(value) in (True, False)
