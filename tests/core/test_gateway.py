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


def test_forwarding_fields_extend_what_the_client_sent() -> None:
    req = request((b"X-Forwarded-For", b"198.51.100.1"), (b"X-Forwarded-Proto", b"http"), http_version="2")
    way = gateway(name="edge-eu", upstream_host="origin.example")
    fields = way.fields_for(req, upstream(way, "origin"))
    assert fields[0] == (b"Host", b"origin.example")
    assert (b"X-Forwarded-For", b"198.51.100.1, 192.0.2.7") in fields
    assert (b"X-Forwarded-Proto", b"https") in fields, "the scheme this node keyed by, not the client's word"
    assert (b"X-Forwarded-Proto", b"http") not in fields
    assert fields[-2:] == [(b"Via", b"2 edge-eu"), (b"CDN-Loop", b"edge-eu; node=" + NODE.encode())]


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
