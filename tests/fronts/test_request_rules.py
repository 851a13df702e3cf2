"""The request toolkit every front uses (edge.fronts.request), without sockets: limits at
their boundaries, the final step's refusals, the Host cache, and the refusal text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge import config as edge_config
from edge.config import Config
from edge.fronts import request as toolkit
from edge.fronts.request import (
    HOST_CACHE_SIZE,
    Refusal,
    RequestRules,
    block_size,
    block_too_large,
    body_too_large,
    combine_repeated,
    target_too_long,
    too_many_fields,
)
from edge.http.fields import Headers
from edge.http.message import Request


def config(**settings: str) -> Config:
    return edge_config.load(None, {}, {"upstream": "http://127.0.0.1:9", **settings})


SMALL = config(max_request_line="100", max_header_bytes="400", max_header_count="5", max_request_body="1000")
"""Field block limit 500, at most 5 fields, 100-byte target, 1000-byte body."""


def pseudo(
    rules: RequestRules,
    headers: Headers | None = None,
    path: bytes | None = b"/a",
    method: bytes | None = b"GET",
    authority: bytes | None = b"example.com",
    version: str = "2",
) -> Request:
    return rules.from_pseudo(method, path, authority, list(headers or []), "192.0.2.1", version)


def refusal(call: object, *args: object, **kwargs: object) -> tuple[int, str]:
    assert callable(call)
    with pytest.raises(Refusal) as caught:
        call(*args, **kwargs)
    return caught.value.status, caught.value.why


def test_limits_come_from_the_config() -> None:
    rules = RequestRules(SMALL, b"http")
    assert (rules.max_target, rules.max_block, rules.max_count, rules.max_body) == (100, 500, 5, 1000)
    defaults = RequestRules(config(), b"https")
    assert defaults.max_block == 32768 + 8192 and defaults.scheme == b"https"
    with pytest.raises(ValueError):
        RequestRules(SMALL, b"ftp")


def test_refusal_text_is_the_same_shape_for_every_status() -> None:
    assert target_too_long().body == b"414 Request-URI Too Long: request target too long\n"
    assert too_many_fields().body == b"431 Request Header Fields Too Large: too many header fields\n"
    assert block_too_large().body == b"431 Request Header Fields Too Large: request header block too large\n"
    assert body_too_large().status == 413 and body_too_large().body.startswith(b"413 ")
    assert Refusal(599, "odd").body == b"599 Unknown: odd\n"


@given(
    target=st.binary(max_size=50),
    headers=st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40)), max_size=12),
)
def test_block_size_is_the_http11_head_without_method_and_version(target: bytes, headers: Headers) -> None:
    wire = target + b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    assert block_size(target, headers) == len(wire)


def test_target_limit_boundary() -> None:
    rules = RequestRules(SMALL, b"https")
    assert pseudo(rules, path=b"/" + b"a" * 99).target == b"/" + b"a" * 99
    assert refusal(pseudo, rules, path=b"/" + b"a" * 100) == (414, "request target too long")


def test_field_count_boundary() -> None:
    rules = RequestRules(SMALL, b"https")
    five = [(b"x-%d" % i, b"1") for i in range(5)]
    assert len(pseudo(rules, five).headers) == 6  # and the Host taken from :authority
    assert refusal(pseudo, rules, [*five, (b"x-5", b"1")]) == (431, "too many header fields")


def test_field_block_boundary_counts_path_authority_and_fields() -> None:
    rules = RequestRules(SMALL, b"https")
    # "/a" (2) + "example.com" (11) + "x-big: " value CRLF (4 + 5) = 22 + value
    assert pseudo(rules, [(b"x-big", b"v" * 478)]).fields[b"x-big"] == b"v" * 478
    assert refusal(pseudo, rules, [(b"x-big", b"v" * 479)]) == (431, "request header block too large")


def test_declared_body_boundary() -> None:
    rules = RequestRules(SMALL, b"https")
    assert pseudo(rules, [(b"content-length", b"1000")], method=b"POST").method == b"POST"
    assert refusal(pseudo, rules, [(b"content-length", b"1001")], method=b"POST") == (
        413,
        "request body too large",
    )
    # Not a number: left to the protocol library, as before.
    assert pseudo(rules, [(b"content-length", b"x")], method=b"POST").method == b"POST"


@pytest.mark.parametrize(
    ("method", "path", "authority", "headers", "expected"),
    [
        (None, b"/a", b"h", [], (400, "missing :method")),
        (b"GET", None, b"h", [], (400, "missing :path")),
        (b"GET", b"", b"h", [], (400, "missing :path")),
        (b"CONNECT", None, b"h:443", [], (405, "CONNECT is not supported: this is a cache, not a tunnel")),
        (b"CONNECT", b"/", b"h:443", [], (405, "CONNECT is not supported: this is a cache, not a tunnel")),
        (b"GET", b"t/a", b"hos", [], (400, ":path is not an absolute path")),
        (b"GET", b"*", b"h", [], (400, ":path is not an absolute path")),
        (b"GET", b"/a", None, [], (400, "missing Host field")),
        (b"GET", b"/a", b"h/evil", [], (400, "invalid :authority")),
        (b"GET", b"/a", None, [(b"host", b"a b")], (400, "invalid Host field")),
        (b"GET", b"/a", None, [(b"host", b"a"), (b"host", b"b")], (400, "more than one Host field")),
    ],
)
def test_pseudo_header_refusals(
    method: bytes | None,
    path: bytes | None,
    authority: bytes | None,
    headers: Headers,
    expected: tuple[int, str],
) -> None:
    rules = RequestRules(SMALL, b"https")
    assert refusal(pseudo, rules, headers, path=path, method=method, authority=authority) == expected


def test_pseudo_request_fields() -> None:
    rules = RequestRules(SMALL, b"https")
    req = pseudo(rules, [(b"cookie", b"a=1"), (b"cookie", b"b=2")], authority=b"Example.COM:443")
    assert req.headers[0] == (b"host", b"Example.COM:443")  # copied as sent (RFC 9113 §8.3.1)
    assert req.fields == {b"host": b"Example.COM:443", b"cookie": b"a=1; b=2"}
    assert (req.scheme, req.host, req.client, req.http_version) == (
        b"https",
        b"example.com",
        "192.0.2.1",
        "2",
    )
    star = pseudo(rules, method=b"OPTIONS", path=b"*")
    assert star.target == b"*"
    # A Host field wins; :authority is not added beside it.
    both = pseudo(rules, [(b"host", b"example.com")], authority=b"example.com")
    assert [k for k, _ in both.headers] == [b"host"]


def test_http10_may_omit_host() -> None:
    rules = RequestRules(SMALL, b"http")
    req = rules.finish(b"GET", b"/a", [], {}, None, "", "1.0")
    assert req.host == b""
    assert refusal(rules.finish, b"GET", b"/a", [], {}, None, "", "1.1") == (400, "missing Host field")


def test_combine_repeated() -> None:
    assert combine_repeated([(b"Accept", b"a"), (b"accept", b"b")]) == {b"accept": b"a, b"}
    assert refusal(combine_repeated, [(b"Host", b"a"), (b"host", b"a")]) == (400, "more than one Host field")


def test_hosts_are_normalised_once_per_scheme_and_shared() -> None:
    http_a, http_b = RequestRules(SMALL, b"http"), RequestRules(SMALL, b"http")
    https = RequestRules(SMALL, b"https")
    assert http_a.hosts is http_b.hosts and http_a.hosts is not https.hosts
    raw = b"Shared.Example:80"
    assert http_a.finish(b"GET", b"/", [], {}, raw, "", "1.1").host == b"shared.example"
    assert http_b.hosts[raw] == b"shared.example"  # learnt by one connection, known to all
    assert https.finish(b"GET", b"/", [], {}, raw, "", "1.1").host == b"shared.example:80"
    assert https.finish(b"GET", b"/", [], {}, b"Shared.Example:443", "", "2").host == b"shared.example"


def test_an_invalid_host_is_never_cached() -> None:
    rules = RequestRules(SMALL, b"http")
    assert refusal(rules.finish, b"GET", b"/", [], {}, b"evil/x", "", "1.1")[0] == 400
    assert b"evil/x" not in rules.hosts


def test_the_host_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolkit, "_HOSTS", {b"http": {}, b"https": {}})
    rules = RequestRules(SMALL, b"http")
    for i in range(HOST_CACHE_SIZE + 10):
        assert rules.finish(b"GET", b"/", [], {}, b"h%d.example" % i, "", "1.1").host == b"h%d.example" % i
    assert 0 < len(rules.hosts) <= HOST_CACHE_SIZE


def test_a_host_off_the_allow_list_is_misdirected_and_never_cached() -> None:
    listed = config(hosts="example.com,*.example.com")
    for scheme in (b"http", b"https"):
        rules = RequestRules(listed, scheme)
        assert rules.hosts is not toolkit._HOSTS[scheme], "verdicts are kept apart per allow-list"
        assert rules.hosts is RequestRules(listed, scheme).hosts
        served = rules.finish(b"GET", b"/", [], {}, b"WWW.Example.com:443", "", "2")
        assert served.host.startswith(b"www.example.com")
        assert refusal(rules.finish, b"GET", b"/", [], {}, b"evil.example", "", "1.1") == (
            421,
            "this node does not serve that host",
        )
        assert b"evil.example" not in rules.hosts
        assert refusal(pseudo, rules, authority=b"evil.example:443")[0] == 421
        assert refusal(pseudo, rules, [(b"host", b"evil.example")], authority=b"example.com")[0] == 421
        assert refusal(rules.finish, b"GET", b"/", [], {}, None, "", "1.0")[0] == 421, "no Host: no site"
        assert refusal(rules.finish, b"GET", b"/", [], {}, b"evil/x", "", "1.1")[0] == 400
    assert Refusal(421, "this node does not serve that host").body == (
        b"421 Misdirected Request: this node does not serve that host\n"
    )
    # A host learnt by a node serving any host is not thereby allowed on one with a list.
    RequestRules(config(), b"http").finish(b"GET", b"/", [], {}, b"other.example", "", "1.1")
    listing = RequestRules(listed, b"http")
    assert refusal(listing.finish, b"GET", b"/", [], {}, b"other.example", "", "1.1")[0] == 421


def test_without_an_allow_list_every_host_is_served_as_before() -> None:
    rules = RequestRules(config(), b"http")
    assert rules.allowed is None and rules.hosts is toolkit._HOSTS[b"http"]
    assert rules.finish(b"GET", b"/", [], {}, b"anything.example", "", "1.1").host == b"anything.example"
