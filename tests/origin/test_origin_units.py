"""Sans-I/O pieces of the origin: header decisions, target splitting, rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from origin._files import BadTarget, content_type_for, split_target
from origin._http import (
    ByteRange,
    RangeNotSatisfiable,
    choose_encoding,
    etag_matches_any,
    format_http_date,
    if_range_allows,
    not_modified_since,
    parse_range,
)
from origin.rules import (
    DEFAULT_CACHE_CONTROL,
    FINGERPRINT_CACHE_CONTROL,
    HTML_CACHE_CONTROL,
    CacheRules,
    RulesError,
    is_fingerprinted,
    load_rules,
)

# --- Range -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", ByteRange(0, 9)),
        ("bytes=10-", ByteRange(10, 99)),
        ("bytes=-10", ByteRange(90, 99)),
        ("bytes=-1000", ByteRange(0, 99)),
        ("bytes=50-5000", ByteRange(50, 99)),
        ("bytes = 5-5", ByteRange(5, 5)),
        ("BYTES=0-0", ByteRange(0, 0)),
    ],
)
def test_parse_range_satisfiable(header: str, expected: ByteRange) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header",
    [None, "bytes=0-1,5-6", "items=0-1", "bytes=", "bytes=abc", "bytes=5-1", "bytes=-", "0-1"],
)
def test_parse_range_ignored(header: str | None) -> None:
    assert parse_range(header, 100) is None


@pytest.mark.parametrize(
    ("header", "total"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0), ("bytes=-5", 0)]
)
def test_parse_range_unsatisfiable(header: str, total: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, total)


@given(total=st.integers(1, 10_000), a=st.integers(0, 20_000), b=st.integers(0, 20_000))
def test_parse_range_stays_inside_representation(total: int, a: int, b: int) -> None:
    for header in (f"bytes={a}-{b}", f"bytes={a}-", f"bytes=-{b}"):
        try:
            r = parse_range(header, total)
        except RangeNotSatisfiable:
            continue
        if r is not None:
            assert 0 <= r.start <= r.end < total
            assert r.content_range(total) == f"bytes {r.start}-{r.end}/{total}"


# --- Accept-Encoding ------------------------------------------------------------

ALL = ["br", "zstd", "gzip"]


@pytest.mark.parametrize(
    ("accept", "available", "expected"),
    [
        (None, ALL, "identity"),
        ("", ALL, "identity"),
        ("gzip, deflate, br, zstd", ALL, "br"),
        ("gzip, zstd", ALL, "zstd"),
        ("gzip", ALL, "gzip"),
        ("x-gzip", ALL, "gzip"),
        ("br;q=0, gzip", ALL, "gzip"),
        ("gzip;q=1.0, br;q=0.5", ALL, "gzip"),
        ("*", ALL, "br"),
        ("*;q=0.5, br;q=0", ALL, "zstd"),
        ("*;q=0", ALL, "identity"),
        ("identity", ALL, "identity"),
        ("br", ["gzip"], "identity"),
        ("br, gzip", [], "identity"),
        ("gzip;q=0.2, identity;q=0.9", ALL, "identity"),
        ("BR;Q=1", ALL, "br"),
        ("br;q=bogus, gzip", ALL, "gzip"),
        ("br;q=2, gzip", ALL, "gzip"),
    ],
)
def test_choose_encoding(accept: str | None, available: list[str], expected: str) -> None:
    assert choose_encoding(accept, available) == expected


# --- validators -------------------------------------------------------------

ETAG = '"sha256-abc"'


@pytest.mark.parametrize(
    ("inm", "match"),
    [
        ('"sha256-abc"', True),
        ('W/"sha256-abc"', True),
        ('"x", "sha256-abc"', True),
        ("*", True),
        ('"sha256-abd"', False),
        ('"x",W/"y"', False),
    ],
)
def test_if_none_match_weak_comparison(inm: str, match: bool) -> None:
    assert etag_matches_any(inm, ETAG) is match


def test_if_modified_since() -> None:
    mtime = 784111777.6
    assert not_modified_since(format_http_date(mtime), mtime)
    assert not_modified_since(format_http_date(mtime + 10), mtime)
    assert not not_modified_since(format_http_date(mtime - 1), mtime)
    assert not not_modified_since("not a date", mtime)
    assert not_modified_since("Sunday, 06-Nov-94 08:49:37 GMT", mtime)  # RFC 850 form


def test_if_range() -> None:
    lm = format_http_date(784111777)
    assert if_range_allows(None, ETAG, lm)
    assert if_range_allows(ETAG, ETAG, lm)
    assert not if_range_allows('W/"sha256-abc"', ETAG, lm)  # weak never matches
    assert not if_range_allows('"other"', ETAG, lm)
    assert if_range_allows(lm, ETAG, lm)
    assert not if_range_allows(format_http_date(784111778), ETAG, lm)
    assert not if_range_allows("garbage", ETAG, lm)


# --- targets ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "segments"),
    [
        (b"/", []),
        (b"/a/b.js", ["a", "b.js"]),
        (b"//a//b/", ["a", "b"]),
        (b"/caf%C3%A9.txt", ["caf\u00e9.txt"]),
        (b"/sp%20ace.txt", ["sp ace.txt"]),
    ],
)
def test_split_target(raw: bytes, segments: list[str]) -> None:
    assert split_target(raw) == segments


@pytest.mark.parametrize(
    "raw", [b"/..", b"/a/../b", b"/%2e%2e/x", b"/%2E./x", b"/.git/config", b"/a/.env", b"/./a"]
)
def test_split_target_hidden(raw: bytes) -> None:
    assert split_target(raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"/a%2fb",
        b"/a%2Fb",
        b"/a%5cb",
        b"/a\\b",
        b"/a%00",
        b"/a\x00",
        b"/%zz",
        b"/%4",
        b"/%ff",
        b"a",
        b"/x%0d%0aSet-Cookie:1",
    ],
)
def test_split_target_malformed(raw: bytes) -> None:
    with pytest.raises(BadTarget):
        split_target(raw)


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("a.js", "text/javascript; charset=utf-8"),
        ("a.MJS", "text/javascript; charset=utf-8"),
        ("a.css", "text/css; charset=utf-8"),
        ("a.html", "text/html; charset=utf-8"),
        ("a.svg", "image/svg+xml; charset=utf-8"),
        ("a.woff2", "font/woff2"),
        ("a.bin", "application/octet-stream"),
        ("dir/noext", "application/octet-stream"),
        ("a.unknown", "application/octet-stream"),
    ],
)
def test_content_type_for(name: str, ctype: str) -> None:
    assert content_type_for(name) == ctype


# --- rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fingerprinted"),
    [
        ("app.3f9a1c.js", True),
        ("assets/style-0a1b2c3d4e.css", True),
        ("chunk.ABCDEF12.min.js", True),
        ("app.3f9a1.js", False),  # 5 hex digits: too short
        ("app.js", False),
        ("app.3f9a1g.js", False),
        ("3f9a1c2b.js", False),  # no name before the hash
    ],
)
def test_is_fingerprinted(name: str, fingerprinted: bool) -> None:
    assert is_fingerprinted(name) is fingerprinted


def test_default_rules() -> None:
    rules = CacheRules()
    assert rules.cache_control("app.3f9a1c.js") == FINGERPRINT_CACHE_CONTROL
    assert rules.cache_control("/index.html") == HTML_CACHE_CONTROL
    assert rules.cache_control("docs/page.htm") == HTML_CACHE_CONTROL
    assert rules.cache_control("img/logo.svg") == DEFAULT_CACHE_CONTROL


def test_user_rules_first_match_wins() -> None:
    rules = CacheRules(
        [
            ("downloads/*", "public, max-age=3600"),
            ("*.woff2", "public, max-age=604800"),
            ("*.woff2", "ignored"),
        ]
    )
    assert rules.cache_control("downloads/x.bin") == "public, max-age=3600"
    assert rules.cache_control("fonts/a.woff2") == "public, max-age=604800"
    assert rules.cache_control("x.bin") == DEFAULT_CACHE_CONTROL
    assert rules.cache_control("app.3f9a1c.js") == FINGERPRINT_CACHE_CONTROL


def test_load_rules(tmp_path: Path) -> None:
    f = tmp_path / "rules.toml"
    f.write_text(
        '[[rule]]\nglob = "downloads/*"\ncache_control = "public, max-age=3600"\n'
        '[[rule]]\nglob = "*.json"\ncache_control = "no-store"\n'
    )
    assert load_rules(f) == [("downloads/*", "public, max-age=3600"), ("*.json", "no-store")]


@pytest.mark.parametrize(
    "text",
    [
        "[[rule]\n",  # not TOML
        '[[rule]]\nglob = "*"\n',  # missing cache_control
        '[[rule]]\nglob = "*"\ncache_control = ""\n',
        '[[rule]]\nglob = "*"\ncache_control = "x"\nextra = 1\n',
        'rule = "x"\n',
        "other = 1\n",
    ],
)
def test_load_rules_errors(tmp_path: Path, text: str) -> None:
    f = tmp_path / "rules.toml"
    f.write_text(text)
    with pytest.raises(RulesError) as info:
        load_rules(f)
    assert "\n" not in str(info.value)


def test_load_rules_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "nope.toml")
