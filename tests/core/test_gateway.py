"""The fields the core sends each kind of upstream (sans-I/O: no connection is opened)."""

from __future__ import annotations

import socket
import time

import pytest

from edge import config as edge_config
from edge.core.gateway import FILL_DROPPED_FIELDS, Gateway, build_router
from edge.http.internal import parse_internal
from edge.http.message import Request, fields_of
from edge.upstream.client import UpstreamError
from edge.upstream.router import Upstream

NODE = "n0de"


def gateway(**settings: str) -> Gateway:
    config = edge_config.load(
        None, {}, {"upstream": "http://origin.internal:8000", "shields": "http://s1:8080"} | settings
    )
    return Gateway(config, build_router(config, time.time, siblings=[None, "/tmp/none.sock"]), NODE)


def upstream(way: Gateway, kind: str) -> Upstream:
    return next(u for u in way.router.upstreams if u.kind == kind)


def request(*headers: tuple[bytes, bytes], method: bytes = b"GET", http_version: str = "1.1") -> Request:
    hs = list(headers)
    return Request(
        method, b"/a", hs, fields_of(hs), scheme=b"https", host=b"example.com", client="192.0.2.7",
        http_version=http_version,
    )  # fmt: skip


def test_leaving_the_node_hop_by_hop_fields_are_dropped_and_the_nodes_own_added() -> None:
    req = request(
        (b"Host", b"example.com"),
        (b"Connection", b"keep-alive, X-Trace"),
        (b"X-Trace", b"1"),
        (b"TE", b"trailers"),
        (b"Content-Length", b"0"),
        (b"Edge-Internal", b"client=6.6.6.6; scheme=http; version=1.1"),
        (b"Accept", b"*/*"),
    )
    way = gateway()
    for kind in ("origin", "shield"):
        assert way.fields_for(req, upstream(way, kind)) == [
            (b"Host", b"example.com"),
            (b"Accept", b"*/*"),
            (b"X-Forwarded-For", b"192.0.2.7"),
            (b"X-Forwarded-Proto", b"https"),
            (b"Via", b"1.1 edge"),
            (b"CDN-Loop", b"edge; node=" + NODE.encode()),
        ], kind


def test_upstream_host_is_for_the_origin_only() -> None:
    way = gateway(upstream_host="origin.example")
    req = request((b"Host", b"example.com"))
    assert way.fields_for(req, upstream(way, "origin"))[0] == (b"Host", b"origin.example")
    assert way.fields_for(req, upstream(way, "shield"))[0] == (b"Host", b"example.com")


def test_forwarding_fields_extend_what_a_trusted_peer_sent() -> None:
    req = request((b"X-Forwarded-For", b"198.51.100.1"), (b"X-Forwarded-Proto", b"http"), http_version="2")
    way = gateway(name="edge-eu", upstream_host="origin.example", trusted_proxies="192.0.2.0/24")
    fields = way.fields_for(req, upstream(way, "origin"))
    assert fields[0] == (b"Host", b"origin.example")
    assert (b"X-Forwarded-For", b"198.51.100.1, 192.0.2.7") in fields
    assert (b"X-Forwarded-Proto", b"https") in fields, "the scheme this node keyed by, not the client's word"
    assert (b"X-Forwarded-Proto", b"http") not in fields
    assert fields[-2:] == [(b"Via", b"2 edge-eu"), (b"CDN-Loop", b"edge-eu; node=" + NODE.encode())]


def test_an_untrusted_clients_forwarding_chain_is_replaced_by_its_address() -> None:
    """Issue 17: a client's own X-Forwarded-For reached the origin as the node's word (and an
    origin that reflected it had the client's text cached for everyone)."""
    req = request((b"X-Forwarded-For", b"<script>evil</script>"), (b"x-forwarded-for", b"10.0.0.1"))
    for settings in ({}, {"trusted_proxies": "198.51.100.0/24"}):
        way = gateway(**settings)
        for kind in ("origin", "shield"):
            fields = way.fields_for(req, upstream(way, kind))
            assert [v for k, v in fields if k.lower() == b"x-forwarded-for"] == [b"192.0.2.7"], kind
    trusting = gateway(trusted_proxies="192.0.2.7")
    fields = trusting.fields_for(req, upstream(trusting, "origin"))
    assert (b"X-Forwarded-For", b"<script>evil</script>, 10.0.0.1, 192.0.2.7") in fields


POISONING_FIELDS = [
    b"X-Forwarded-Host",
    b"X-Original-URL",
    b"X-Rewrite-URL",
    b"X-HTTP-Method-Override",
    b"X-Forwarded-Scheme",
    b"X-Forwarded-Port",
    b"X-Host",
    b"Forwarded",
]


def test_unkeyed_fields_that_origins_read_as_host_url_or_method_never_leave_the_worker() -> None:
    req = request(
        (b"Host", b"example.com"),
        *((name, b"evil.example") for name in POISONING_FIELDS),
        (b"Accept", b"*/*"),
    )
    way = gateway()
    for kind in ("origin", "shield", "sibling"):
        names = {name.lower() for name, _ in way.fields_for(req, upstream(way, kind))}
        assert names.isdisjoint(name.lower() for name in POISONING_FIELDS), kind
        assert b"accept" in names and b"host" in names
    assert {name.lower().decode() for name in POISONING_FIELDS} <= set(
        edge_config.parse_field_names(edge_config.Config.strip_request_fields, "strip")
    ), "the default list"


def test_the_strip_list_is_the_operators() -> None:
    req = request((b"X-Forwarded-Host", b"evil.example"), (b"X-Custom-Host", b"evil.example"))
    way = gateway(strip_request_fields="X-Custom-Host")
    fields = way.fields_for(req, upstream(way, "origin"))
    assert (b"X-Forwarded-Host", b"evil.example") in fields
    assert all(k != b"X-Custom-Host" for k, _ in fields)
    with pytest.raises(edge_config.ConfigError):
        gateway(strip_request_fields="host")
    with pytest.raises(edge_config.ConfigError):
        gateway(forward_request_fields="X-Forwarded-For")


class _Head:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.headers = status, headers


def test_a_forwarded_field_is_keyed_through_the_responses_vary() -> None:
    way = gateway(forward_request_fields="X-Forwarded-Host, Forwarded")
    req = request((b"X-Forwarded-Host", b"a.example"), (b"Forwarded", b"host=a.example"), (b"X-Host", b"b"))
    fields = way.fields_for(req, upstream(way, "origin"))
    assert (b"X-Forwarded-Host", b"a.example") in fields and (b"Forwarded", b"host=a.example") in fields
    assert all(k != b"X-Host" for k, _ in fields), "the rest of the list is still stripped"
    plain = _Head(200, [(b"Content-Type", b"text/plain")])
    way.vary_on_keyed(plain)  # type: ignore[arg-type]
    assert plain.headers[-1] == (b"Vary", b"x-forwarded-host, forwarded")
    listed = _Head(200, [(b"Vary", b"Accept-Language, X-Forwarded-Host")])
    way.vary_on_keyed(listed)  # type: ignore[arg-type]
    assert listed.headers == [(b"Vary", b"Accept-Language, X-Forwarded-Host"), (b"Vary", b"forwarded")]
    star = _Head(200, [(b"Vary", b"*")])
    way.vary_on_keyed(star)  # type: ignore[arg-type]
    assert star.headers == [(b"Vary", b"*")]
    not_modified = _Head(304, [(b"ETag", b'"a"')])
    way.vary_on_keyed(not_modified)  # type: ignore[arg-type]
    assert not_modified.headers == [(b"ETag", b'"a"')], "a 304 keeps the stored Vary"


def test_a_sibling_gets_the_request_as_it_came_and_who_sent_it() -> None:
    req = request(
        (b"Host", b"example.com"),
        (b"X-Forwarded-For", b"198.51.100.1"),
        (b"Edge-Internal", b"client=6.6.6.6; scheme=http; version=1.1"),
        http_version="2",
    )
    way = gateway()
    fields = way.fields_for(req, upstream(way, "sibling"))
    assert fields[:2] == [(b"Host", b"example.com"), (b"X-Forwarded-For", b"198.51.100.1")]
    [internal] = [v for k, v in fields if k.lower() == b"edge-internal"]
    assert parse_internal(internal) == ("192.0.2.7", b"https", "2"), "the client's own value never passes"
    assert not {k.lower() for k, _ in fields} & {b"via", b"cdn-loop", b"x-forwarded-proto"}


def test_max_forwards_goes_down_by_one_for_options_and_trace() -> None:
    way = gateway()
    for method, expected in ((b"OPTIONS", b"4"), (b"TRACE", b"4"), (b"GET", b"5")):
        fields = way.fields_for(request((b"Max-Forwards", b"5"), method=method), upstream(way, "shield"))
        assert (b"Max-Forwards", expected) in fields, method


def test_a_fill_drops_the_clients_preconditions_and_range() -> None:
    req = request(
        (b"Host", b"example.com"), (b"Range", b"bytes=0-1"), (b"If-None-Match", b'"a"'), (b"Accept", b"*/*")
    )
    way = gateway()
    names = {name.lower() for name, _ in way.fields_for(req, upstream(way, "shield"), FILL_DROPPED_FIELDS)}
    assert names.isdisjoint(FILL_DROPPED_FIELDS) and b"accept" in names


@pytest.mark.asyncio
async def test_every_request_sent_is_counted_failed_ones_too() -> None:
    with socket.socket() as s:  # a port nothing listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = edge_config.load(None, {}, {"upstream": f"http://127.0.0.1:{port}", "connect_timeout": "2"})
    way = Gateway(config, build_router(config, time.time), NODE)
    for expected in (1, 2):
        with pytest.raises(UpstreamError):
            await way.fetch(request((b"Host", b"h")), b"http://h/a")
        assert way.requests == expected
    way.close()
