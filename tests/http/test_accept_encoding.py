"""Tests for edge.http.accept_encoding: RFC 9110 §12.5.3 examples, negotiation table, cache-key properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http.accept_encoding import (
    ABSENT,
    DEFAULT_PREFERENCE,
    IDENTITY,
    choose_encoding,
    normalise_for_key,
    parse_accept_encoding,
)

ALL = (b"br", b"zstd", b"gzip", b"identity")

# --- parsing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # RFC 9110 §12.5.3 examples
        (b"compress, gzip", {b"compress": 1.0, b"gzip": 1.0}),
        (b"", {}),
        (b"*", {b"*": 1.0}),
        (b"compress;q=0.5, gzip;q=1.0", {b"compress": 0.5, b"gzip": 1.0}),
        (b"gzip;q=1.0, identity; q=0.5, *;q=0", {b"gzip": 1.0, b"identity": 0.5, b"*": 0.0}),
        # what browsers send
        (b"gzip, deflate, br, zstd", {b"gzip": 1.0, b"deflate": 1.0, b"br": 1.0, b"zstd": 1.0}),
        # case, aliases, whitespace
        (b"GZip;Q=0.7 ,  BR", {b"gzip": 0.7, b"br": 1.0}),
        (b"x-gzip", {b"gzip": 1.0}),
        (b"gzip ; q = 0.5", {b"gzip": 0.5}),
        (b"gzip;q=0.5;foo=bar", {b"gzip": 0.5}),
        (b"gzip;foo=bar", {b"gzip": 1.0}),
        (b",, gzip ,,", {b"gzip": 1.0}),
        # q-values: clamped, rounded to three decimals; only an explicit zero refuses
        (b"gzip;q=1.5", {b"gzip": 1.0}),
        (b"gzip;q=-1", {b"gzip": 0.0}),
        (b"gzip;q=0.12345", {b"gzip": 0.123}),
        (b"gzip;q=0.0001", {b"gzip": 0.001}),
        (b"gzip;q=0.000", {b"gzip": 0.0}),
        (b"gzip;q=.5", {b"gzip": 0.5}),
        (b"gzip;q=1.", {b"gzip": 1.0}),
        # invalid q: that member is dropped
        (b"gzip;q=abc, br", {b"br": 1.0}),
        (b"gzip;q=, br", {b"br": 1.0}),
        (b"gzip;q=nan, br;q=inf, zstd;q=1e-3", {}),
        # not a token: dropped
        (b'"gzip", b r, br', {b"br": 1.0}),
        # listed twice: the lowest q wins
        (b"gzip, gzip;q=0", {b"gzip": 0.0}),
        (b"gzip;q=0.2, GZIP;q=0.9", {b"gzip": 0.2}),
    ],
)
def test_parse(header: bytes, expected: dict[bytes, float]) -> None:
    assert dict(parse_accept_encoding(header)) == expected


def test_absent_is_a_marker() -> None:
    assert parse_accept_encoding(None) is ABSENT
    assert dict(ABSENT) == {b"*": 1.0}
    assert parse_accept_encoding(b"*") is not ABSENT
    with pytest.raises(TypeError):
        ABSENT[b"gzip"] = 1.0  # type: ignore[index]


# --- choosing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "available", "expected"),
    [
        (None, ALL, b"identity"),  # no header: identity, as servers and CDNs do
        (None, (b"br", b"gzip"), b"br"),  # ... unless there is no identity body
        (b"", ALL, b"identity"),  # empty: identity only (§12.5.3)
        (b"", (b"br", b"gzip"), None),
        (b"gzip, deflate, br, zstd", ALL, b"br"),  # ties: server preference
        (b"gzip, deflate, br", (b"gzip", b"identity"), b"gzip"),
        (b"gzip, deflate", ALL, b"gzip"),
        (b"gzip;q=1.0, br;q=0.9", ALL, b"gzip"),  # the client's q beats server preference
        (b"br;q=0.1", ALL, b"br"),  # an unlisted identity ranks below every listed coding
        (b"br;q=0.1, identity;q=0.5", ALL, b"identity"),
        (b"identity", ALL, b"identity"),
        (b"identity, gzip", ALL, b"gzip"),  # identity loses ties
        (b"*", ALL, b"br"),
        (b"*;q=0.5, gzip", ALL, b"gzip"),
        (b"*;q=0", ALL, None),  # everything refused, identity too
        (b"*;q=0, identity", ALL, b"identity"),
        (b"identity;q=0", ALL, None),
        (b"identity;q=0, gzip", ALL, b"gzip"),
        (b"gzip;q=0", ALL, b"identity"),
        (b"br;q=0, *", ALL, b"zstd"),  # * covers what is not listed, not what is
        (b"gzip;q=1.0, identity; q=0.5, *;q=0", ALL, b"gzip"),  # §12.5.3 example
        (b"gzip;q=1.0, identity; q=0.5, *;q=0", (b"br", b"identity"), b"identity"),
        (b"compress, gzip", (b"br", b"identity"), b"identity"),  # §12.5.3: identity when nothing listed
        (b"deflate", (b"deflate", b"gzip", b"identity"), b"deflate"),  # a coding outside the preference
        (b"deflate, gzip", (b"deflate", b"gzip", b"identity"), b"gzip"),  # ... ranks below preferred ones
        (b"x-gzip", ALL, b"gzip"),
        (b"GZIP", (b"GZIP", b"identity"), b"GZIP"),  # the element of `available` is returned
    ],
)
def test_choose(header: bytes | None, available: tuple[bytes, ...], expected: bytes | None) -> None:
    assert choose_encoding(parse_accept_encoding(header), available) == expected


def test_server_preference_is_configurable() -> None:
    accept = parse_accept_encoding(b"gzip, br, zstd")
    assert choose_encoding(accept, ALL, (b"gzip", b"br")) == b"gzip"
    assert choose_encoding(accept, ALL, (b"zstd",)) == b"zstd"
    assert choose_encoding(accept, ALL, ()) in {b"gzip", b"br", b"zstd"}


# --- cache key ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "key"),
    [
        (None, b"identity"),
        (b"", b"identity"),
        (b"gzip, deflate, br, zstd", b"br"),  # Chrome
        (b"gzip, deflate, br", b"br"),  # Firefox, Safari
        (b"gzip, deflate", b"gzip"),
        (b"deflate", b"identity"),
        (b"*;q=0", b"identity"),  # nothing acceptable: the node sends identity anyway
        (b"identity;q=0", b"identity"),
    ],
)
def test_normalise_for_key(header: bytes | None, key: bytes) -> None:
    assert normalise_for_key(header) == key


def test_normalise_for_key_respects_supported() -> None:
    assert normalise_for_key(b"gzip, br", (b"gzip",)) == b"gzip"
    assert normalise_for_key(b"br", (b"gzip",)) == b"identity"
    assert normalise_for_key(b"gzip, br", [b"gzip", b"br"]) == b"gzip"  # order is preference


CODING = st.sampled_from(
    [b"br", b"zstd", b"gzip", b"deflate", b"compress", b"identity", b"*", b"x-gzip", b"BR"]
)
QVALUE = st.one_of(
    st.none(),
    st.sampled_from([b"0", b"1", b"0.5", b"0.001", b"1.000", b"0.000", b"abc", b"2", b""]),
    st.decimals(0, 1, places=3).map(lambda d: str(d).encode()),
)
MEMBER = st.tuples(CODING, QVALUE).map(lambda m: m[0] if m[1] is None else m[0] + b";q=" + m[1])
HEADER = st.one_of(st.none(), st.lists(MEMBER, max_size=6).map(b", ".join))
AVAILABLE = st.lists(st.sampled_from([b"br", b"zstd", b"gzip", b"deflate", b"identity"]), unique=True)


@given(HEADER, AVAILABLE)
def test_choose_never_returns_a_refused_coding(header: bytes | None, available: list[bytes]) -> None:
    accept = parse_accept_encoding(header)
    chosen = choose_encoding(accept, available)
    if chosen is None:
        return
    assert chosen in available
    q = accept.get(chosen, accept.get(b"*"))
    assert q != 0
    if chosen != IDENTITY:
        assert q is not None  # a real coding is sent only when listed or covered by *
    # nothing available beats it on q
    for other in available:
        other_q = accept.get(other, accept.get(b"*"))
        if other_q is not None and q is not None:
            assert other_q <= q


@given(HEADER)
def test_key_is_a_fixed_point(header: bytes | None) -> None:
    key = normalise_for_key(header)
    assert key in (*DEFAULT_PREFERENCE, IDENTITY)
    assert normalise_for_key(key) == key
    chosen = choose_encoding(parse_accept_encoding(header), (*DEFAULT_PREFERENCE, IDENTITY))
    assert normalise_for_key(chosen or IDENTITY) == key


@given(st.one_of(st.none(), st.binary(max_size=200)))
def test_never_raises(raw: bytes | None) -> None:
    accept = parse_accept_encoding(raw)
    for coding, q in accept.items():
        assert coding == coding.lower()
        assert 0.0 <= q <= 1.0 and round(q, 3) == q
    choose_encoding(accept, ALL)
    assert normalise_for_key(raw) in (*DEFAULT_PREFERENCE, IDENTITY)
