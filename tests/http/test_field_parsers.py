"""Unit and property tests for the header-field parsers in edge.http."""

from __future__ import annotations

import calendar
import time

from hypothesis import given
from hypothesis import strategies as st

from edge.http.cache_control import DELTA_MAX, INVALID, parse_cache_control
from edge.http.dates import format_http_date, parse_http_date
from edge.http.fields import split_list, strip_hop_by_hop, unquote

TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).map(str.encode)


def test_cache_control_basics() -> None:
    cc = parse_cache_control([b"Public, MAX-AGE=60", b's-maxage="30", no-cache="Set-Cookie, X-A"'])
    assert b"public" in cc
    assert cc.delta(b"max-age") == 60
    assert cc.delta(b"s-maxage") == 30  # quoted form is tolerated as RFC 9111 §5.2 advises
    assert cc.field_names(b"no-cache") == {b"set-cookie", b"x-a"}
    assert cc.delta(b"min-fresh") is None


def test_cache_control_invalid_and_duplicate_values() -> None:
    assert parse_cache_control([b"max-age=abc"]).delta(b"max-age") == INVALID
    assert parse_cache_control([b"max-age=-1"]).delta(b"max-age") == INVALID
    assert parse_cache_control([b"max-age"]).delta(b"max-age") == INVALID
    assert parse_cache_control([b"max-age=5, max-age=10"]).delta(b"max-age") == INVALID
    assert parse_cache_control([b"max-age=99999999999999"]).delta(b"max-age") == DELTA_MAX


def test_quoted_commas_do_not_split() -> None:
    assert list(split_list([b'a, b="x, y", c'])) == [b"a", b'b="x, y"', b"c"]
    assert unquote(b'"a\\"b"') == b'a"b'


@given(st.dictionaries(TOKEN, st.one_of(st.none(), st.integers(0, 10**12)), max_size=8))
def test_cache_control_round_trip(directives: dict[bytes, int | None]) -> None:
    text = b", ".join(k if v is None else k + b"=%d" % v for k, v in directives.items())
    cc = parse_cache_control([text])
    assert set(cc.args) == set(directives)
    for name, value in directives.items():
        if value is not None:
            assert cc.delta(name) == min(value, DELTA_MAX)


@given(st.binary(max_size=200))
def test_cache_control_never_raises(raw: bytes) -> None:
    cc = parse_cache_control([raw])
    for name in cc.args:
        assert name == name.lower()
        cc.delta(name)
        cc.field_names(name)


@given(st.integers(0, 2**33))
def test_http_date_round_trip(epoch: int) -> None:
    assert parse_http_date(format_http_date(epoch)) == epoch


def test_http_date_obsolete_formats() -> None:
    expected = calendar.timegm((1994, 11, 6, 8, 49, 37, 0, 0, 0))
    assert parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT") == expected
    assert parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT") == expected
    assert parse_http_date(b"Sun Nov  6 08:49:37 1994") == expected
    assert parse_http_date(b"0") is None
    assert parse_http_date(b"Sun, 32 Nov 1994 08:49:37 GMT") is None
    assert parse_http_date(b"Sun, 06 Foo 1994 08:49:37 GMT") is None


@given(st.binary(max_size=64))
def test_http_date_never_raises(raw: bytes) -> None:
    value = parse_http_date(raw)
    assert value is None or isinstance(value, float)


def test_strip_hop_by_hop_includes_connection_named_fields() -> None:
    headers = [(b"Connection", b"close, X-Foo"), (b"X-Foo", b"1"), (b"TE", b"x"), (b"ETag", b'"a"')]
    assert strip_hop_by_hop(headers) == [(b"ETag", b'"a"')]


def test_format_http_date_now_is_imf_fixdate() -> None:
    formatted = format_http_date(time.time())
    assert formatted.endswith(b" GMT") and len(formatted) == 29
