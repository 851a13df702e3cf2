"""Sans-I/O tests of freshness, storability, reuse and conditional rules: time is passed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.cache.conditional import is_not_modified
from edge.cache.entry import Entry
from edge.cache.freshness import corrected_initial_age, freshness_policy
from edge.cache.key import secondary_key, vary_names
from edge.cache.reuse import Reuse, decide_reuse, request_directives
from edge.cache.storability import why_not_storable
from edge.http.dates import format_http_date
from edge.http.message import Request, fields_of

NOW = 1_700_000_000.0
DATE = format_http_date(NOW)


def req(method: bytes = b"GET", **headers: str) -> Request:
    hs = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Request(method, b"/x", hs, fields_of(hs), host=b"h")


def hdrs(**headers: str) -> list[tuple[bytes, bytes]]:
    return [(b"Date", DATE)] + [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]


@pytest.mark.parametrize(
    ("headers", "lifetime"),
    [
        ({"Cache_Control": "max-age=60"}, 60),
        ({"Cache_Control": "max-age=60, s-maxage=10"}, 10),
        ({"Cache_Control": "max-age=60", "Expires": format_http_date(NOW + 500).decode()}, 60),
        ({"Expires": format_http_date(NOW + 500).decode()}, 500),
        ({"Expires": "0"}, 0),
        ({"Cache_Control": "max-age=oops"}, 0),
        ({"Last_Modified": format_http_date(NOW - 1000).decode()}, 100),
        ({"Last_Modified": format_http_date(NOW - 10**8).decode()}, 86400),
        ({"CDN_Cache_Control": "max-age=5", "Cache_Control": "max-age=60"}, 5),
        ({"Edge_Cache_Control": "max-age=7", "CDN_Cache_Control": "max-age=5"}, 7),
        ({"CDN_Cache_Control": "max-age=5", "Expires": format_http_date(NOW + 500).decode()}, 5),
    ],
)
def test_freshness_lifetime(headers: dict[str, str], lifetime: float) -> None:
    assert freshness_policy(200, hdrs(**headers), NOW).lifetime == lifetime


def test_heuristic_only_for_heuristically_cacheable_status() -> None:
    lm = format_http_date(NOW - 1000).decode()
    assert freshness_policy(302, hdrs(Last_Modified=lm), NOW).lifetime == 0
    assert freshness_policy(302, hdrs(Last_Modified=lm, Cache_Control="public"), NOW).lifetime == 100


@given(st.floats(0, 1e6), st.floats(0, 1e4), st.floats(0, 100), st.integers(0, 10**6))
def test_corrected_initial_age_is_never_below_any_estimate(
    skew: float, delay: float, request_gap: float, age_value: int
) -> None:
    response_time = NOW + skew
    request_time = response_time - delay
    age = corrected_initial_age(b"%d" % age_value, NOW, request_time, response_time)
    assert age >= age_value + delay - 1e-6
    assert age >= skew - 1e-6


@pytest.mark.parametrize(
    ("status", "cc", "request_headers", "reason"),
    [
        (200, "max-age=60", {}, None),
        (200, "no-store", {}, "no-store"),
        (200, "private", {}, "private"),
        (200, 'private="Set-Cookie", max-age=5', {}, None),
        (200, "max-age=60", {"Authorization": "x"}, "authorization"),
        (200, "max-age=60, must-revalidate", {"Authorization": "x"}, None),
        (200, "s-maxage=60", {"Authorization": "x"}, None),
        (200, "max-age=60", {"Cache_Control": "no-store"}, "request-no-store"),
        (206, "max-age=60", {}, "status"),
        (302, "", {}, "no-freshness"),
        (302, "max-age=60", {}, None),
        (599, "max-age=60", {}, None),
    ],
)
def test_storability(status: int, cc: str, request_headers: dict[str, str], reason: str | None) -> None:
    headers = hdrs(Cache_Control=cc) if cc else hdrs()
    policy = freshness_policy(status, headers, NOW)
    assert why_not_storable(req(**request_headers), status, headers, policy) == reason


def entry(cc: str, age: float = 0.0) -> Entry:
    headers = hdrs(Cache_Control=cc)
    return Entry(b"k", 200, b"OK", headers, b"", freshness_policy(200, headers, NOW), NOW, age)


@pytest.mark.parametrize(
    ("cc", "elapsed", "request_headers", "decision"),
    [
        ("max-age=60", 59.9, {}, Reuse.FRESH),
        ("max-age=60", 60, {}, Reuse.VALIDATE),  # fresh only while lifetime > age
        ("max-age=60", 10, {"Cache_Control": "no-cache"}, Reuse.VALIDATE),
        ("max-age=60", 10, {"Pragma": "no-cache"}, Reuse.VALIDATE),
        ("max-age=60", 10, {"Pragma": "no-cache", "Cache_Control": "max-stale"}, Reuse.FRESH),
        ("max-age=60", 10, {"Cache_Control": "max-age=5"}, Reuse.VALIDATE),
        ("max-age=60", 10, {"Cache_Control": "min-fresh=55"}, Reuse.VALIDATE),
        ("max-age=60", 10, {"Cache_Control": "min-fresh=20"}, Reuse.FRESH),
        ("max-age=60", 70, {"Cache_Control": "max-stale=20"}, Reuse.STALE_ALLOWED),
        ("max-age=60", 90, {"Cache_Control": "max-stale=20"}, Reuse.VALIDATE),
        ("max-age=60", 900, {"Cache_Control": "max-stale"}, Reuse.STALE_ALLOWED),
        ("max-age=60, must-revalidate", 70, {"Cache_Control": "max-stale"}, Reuse.VALIDATE),
        ("s-maxage=60", 70, {"Cache_Control": "max-stale"}, Reuse.VALIDATE),
        ("max-age=60, no-cache", 1, {}, Reuse.VALIDATE),
        ('max-age=60, no-cache="Set-Cookie"', 1, {}, Reuse.FRESH),
    ],
)
def test_reuse(cc: str, elapsed: float, request_headers: dict[str, str], decision: Reuse) -> None:
    assert decide_reuse(entry(cc), request_directives(req(**request_headers)), NOW + elapsed) is decision


def test_entry_fresh_until_matches_decide_reuse() -> None:
    e = entry("max-age=60", age=20)
    assert e.is_fresh(NOW + 39.9) and not e.is_fresh(NOW + 40)
    assert e.age(NOW + 10) == 30


def test_vary_names_and_secondary_key() -> None:
    assert vary_names([b"Accept-Encoding, accept-language", b"Accept-Encoding"]) == (
        b"accept-encoding",
        b"accept-language",
    )
    assert vary_names([b"*"]) is None
    names = (b"accept-language",)
    a = secondary_key(req(Accept_Language="en,  fr"), names)
    b = secondary_key(req(Accept_Language="en, fr"), names)
    c = secondary_key(req(Accept_Language="fr"), names)
    absent = secondary_key(req(), names)
    empty = secondary_key(req(Accept_Language=""), names)
    assert a == b and a != c and absent != empty
    # Accept-Encoding is keyed by the coding the request would get.
    ae = (b"accept-encoding",)
    assert secondary_key(req(Accept_Encoding="gzip, deflate, br"), ae) == secondary_key(
        req(Accept_Encoding="br"), ae
    )
    assert secondary_key(req(Accept_Encoding="gzip"), ae) != secondary_key(req(Accept_Encoding="br"), ae)
    assert secondary_key(req(), ae) == secondary_key(req(Accept_Encoding="identity"), ae)


def test_client_conditionals() -> None:
    lm = format_http_date(NOW)
    assert is_not_modified(req(If_None_Match='"a", W/"b"'), b'"b"', None)
    assert is_not_modified(req(If_None_Match="*"), b'"x"', None)
    assert not is_not_modified(req(If_None_Match='"a"'), b'"b"', lm)
    # If-None-Match takes precedence over If-Modified-Since.
    assert not is_not_modified(req(If_None_Match='"a"', If_Modified_Since=lm.decode()), b'"b"', lm)
    assert is_not_modified(req(If_Modified_Since=lm.decode()), None, lm)
    assert not is_not_modified(req(If_Modified_Since=format_http_date(NOW - 5).decode()), None, lm)
