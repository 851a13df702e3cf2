"""The fields the core sends upstream (sans-I/O: no connection is opened)."""

from __future__ import annotations

import socket

import pytest

from edge import config as edge_config
from edge.core.gateway import FILL_DROPPED_FIELDS, Gateway
from edge.http.message import Request, fields_of
from edge.upstream.client import UpstreamError


def gateway(**settings: str) -> Gateway:
    config = edge_config.load(None, {}, {"upstream": "http://origin.internal:8000"} | settings)
    return Gateway(config)


def request(*headers: tuple[bytes, bytes], http_version: str = "1.1") -> Request:
    hs = list(headers)
    return Request(
        b"GET", b"/a", hs, fields_of(hs), scheme=b"https", host=b"example.com", client="192.0.2.7",
        http_version=http_version,
    )  # fmt: skip


def test_hop_by_hop_and_connection_named_fields_stay_here() -> None:
    req = request(
        (b"Host", b"example.com"),
        (b"Connection", b"keep-alive, X-Trace"),
        (b"X-Trace", b"1"),
        (b"TE", b"trailers"),
        (b"Content-Length", b"0"),
        (b"Accept", b"*/*"),
    )
    assert gateway().fields_for(req) == [
        (b"Host", b"example.com"),
        (b"Accept", b"*/*"),
        (b"X-Forwarded-For", b"192.0.2.7"),
        (b"X-Forwarded-Proto", b"https"),
        (b"Via", b"1.1 edge"),
    ]


def test_forwarding_fields_extend_what_the_client_sent() -> None:
    req = request((b"X-Forwarded-For", b"198.51.100.1"), (b"X-Forwarded-Proto", b"http"), http_version="2")
    fields = gateway(name="edge-eu", upstream_host="origin.example").fields_for(req)
    assert fields[0] == (b"Host", b"origin.example")
    assert (b"X-Forwarded-For", b"198.51.100.1, 192.0.2.7") in fields
    assert (b"X-Forwarded-Proto", b"http") in fields and (b"X-Forwarded-Proto", b"https") not in fields
    assert fields[-1] == (b"Via", b"2 edge-eu")


def test_a_fill_drops_the_clients_preconditions_and_range() -> None:
    req = request(
        (b"Host", b"example.com"), (b"Range", b"bytes=0-1"), (b"If-None-Match", b'"a"'), (b"Accept", b"*/*")
    )
    names = {name.lower() for name, _ in gateway().fields_for(req, drop=FILL_DROPPED_FIELDS)}
    assert names.isdisjoint(FILL_DROPPED_FIELDS) and b"accept" in names


@pytest.mark.asyncio
async def test_every_request_sent_is_counted_failed_ones_too() -> None:
    with socket.socket() as s:  # a port nothing listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    way = gateway(upstream=f"http://127.0.0.1:{port}", connect_timeout="2")
    for expected in (1, 2):
        with pytest.raises(UpstreamError):
            await way.request(b"GET", b"/", [(b"Host", b"h")])
        assert way.requests == expected
