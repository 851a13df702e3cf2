"""A fast hit answered again by its request's field block on the HTTPS front's ngh2 engine.

nghttp2 hands each request over as a tuple of decoded field pairs; the engine remembers,
under that tuple, the hit it decided (``edge.fronts.h2_ngh2.NgH2Protocol.on_request``, a
:class:`edge.fronts.h1.Replay`), and answers the same block again without the request
checks and rules. These tests send identical requests over real HTTP/2 connections and
check that the answer is what the full decision would give: after a purge, at the end of
freshness, per variant, for HEAD, with each client's own address in the access log, never
across schemes a trusted proxy names, never with a rate limit, never for large objects.
Each first checks that the table really holds the request, so an engine that stopped
replaying could not pass them by taking the ordinary path.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.core.node import ROUTE_MAX_CHARGE
from edge.fronts.h1 import NOT_REPLAYED, SEEN_ONCE, Replay
from edge.wiring.accesslog import AccessLog
from edge.wiring.devcert import DevCert
from tests.support.nodes import Clock, SecureEdge, start_secure_edge
from tests.support.scripted_origin import Route, ScriptedOrigin, fixed

pytestmark = pytest.mark.asyncio


@asynccontextmanager
async def origin_and_edge(
    routes: dict[str, Route], cert: DevCert, clock: Clock | None = None, **settings: Any
) -> AsyncIterator[tuple[ScriptedOrigin, SecureEdge]]:
    origin = ScriptedOrigin(routes)
    await origin.start()
    edge = await start_secure_edge(origin.url, cert, clock=clock, h2_engine="ngh2", **settings)
    try:
        yield origin, edge
    finally:
        await edge.stop()
        assert origin.server is not None
        origin.server.close()


def client(edge: SecureEdge, source: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(http2=True, verify=edge.ssl(), local_address=source)
    return httpx.AsyncClient(base_url=edge.https_url, transport=transport, timeout=20)


def table(edge: SecureEdge) -> dict[Any, Replay]:
    return edge.core.replay_tables["h2"]


def kept(edge: SecureEdge, path: str) -> list[Replay]:
    """The routes remembered for blocks asking for ``path``."""
    out = []
    for block, replay in table(edge).items():
        if (b":path", path.encode()) in block and replay is not SEEN_ONCE and replay is not NOT_REPLAYED:
            out.append(replay)
    return out


def marks(edge: SecureEdge, path: str) -> list[Replay]:
    return [replay for block, replay in table(edge).items() if (b":path", path.encode()) in block]


async def test_a_repeated_request_is_replayed_until_a_purge_and_then_refetched(dev_cert: DevCert) -> None:
    routes = {"/a.js": fixed(200, b"first", [("Cache-Control", "max-age=300")])}
    async with origin_and_edge(routes, dev_cert) as (origin, edge), client(edge) as h2:
        for _ in range(4):
            r = await h2.get("/a.js")
            assert (r.http_version, r.status_code, r.content) == ("HTTP/2", 200, b"first")
        assert len(kept(edge, "/a.js")) == 1
        assert origin.count("/a.js") == 1

        routes["/a.js"] = fixed(200, b"second", [("Cache-Control", "max-age=300")])
        assert edge.core.purge("url", f"https://localhost:{edge.port}/a.js") == 1
        r = await h2.get("/a.js")
        assert (r.content, r.headers["x-cache"]) == (b"second", "MISS")
        for _ in range(3):
            assert (await h2.get("/a.js")).content == b"second"
        assert origin.count("/a.js") == 2
        assert kept(edge, "/a.js")


async def test_a_replayed_hit_ends_with_its_freshness(dev_cert: DevCert) -> None:
    clock = Clock()
    routes = {"/t.css": fixed(200, b"v1", [("Cache-Control", "max-age=60")])}
    async with origin_and_edge(routes, dev_cert, clock=clock) as (origin, edge), client(edge) as h2:
        for _ in range(3):
            assert (await h2.get("/t.css")).content == b"v1"
        assert kept(edge, "/t.css")
        routes["/t.css"] = fixed(200, b"v2", [("Cache-Control", "max-age=60")])
        clock.advance(61)
        r = await h2.get("/t.css")
        assert r.content == b"v2" and r.headers["x-cache"] != "HIT"
        assert origin.count("/t.css") == 2


async def test_each_variant_is_replayed_to_its_own_request(dev_cert: DevCert) -> None:
    async def by_language(seen, conn) -> None:  # type: ignore[no-untyped-def]
        lang = dict((k.lower(), v) for k, v in seen.headers).get(b"accept-language", b"none")
        body = b"hello in " + lang
        conn.write(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=300\r\nVary: Accept-Language\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    async with origin_and_edge({"/v": by_language}, dev_cert) as (origin, edge), client(edge) as h2:
        for _ in range(4):
            assert (await h2.get("/v", headers={"accept-language": "fr"})).content == b"hello in fr"
            assert (await h2.get("/v", headers={"accept-language": "de"})).content == b"hello in de"
        routes = kept(edge, "/v")
        assert len(routes) == 2 and routes[0].route.entry is not routes[1].route.entry
        assert origin.count("/v") == 2


async def test_head_is_replayed_as_head(dev_cert: DevCert) -> None:
    routes = {"/h.txt": fixed(200, b"twelve bytes", [("Cache-Control", "max-age=300")])}
    async with origin_and_edge(routes, dev_cert) as (_origin, edge), client(edge) as h2:
        assert (await h2.get("/h.txt")).content == b"twelve bytes"
        for _ in range(3):
            r = await h2.head("/h.txt")
            assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "12")
        assert [r.req.method for r in kept(edge, "/h.txt")] == [b"HEAD"]
        assert (await h2.get("/h.txt")).content == b"twelve bytes"  # a GET is not answered as HEAD


async def test_a_replayed_hit_is_logged_with_the_address_that_sent_it(
    dev_cert: DevCert, tmp_path: Path
) -> None:
    path = tmp_path / "access.log"
    routes = {"/l.js": fixed(200, b"logged", [("Cache-Control", "max-age=300")])}
    async with origin_and_edge(routes, dev_cert) as (_origin, edge):
        log = AccessLog(str(path))
        edge.core.requests.set_access(log)
        async with client(edge, "127.0.0.1") as first:
            for _ in range(3):
                assert (await first.get("/l.js")).content == b"logged"
        assert kept(edge, "/l.js")
        async with client(edge, "127.0.0.2") as second:
            assert (await second.get("/l.js")).content == b"logged"
        log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["client"] for line in lines] == ["127.0.0.1"] * 3 + ["127.0.0.2"]
    assert [line["cache"].split(";")[1].strip() for line in lines[1:]] == ["hit"] * 3


async def test_a_block_with_x_forwarded_proto_is_never_replayed(dev_cert: DevCert) -> None:
    """The same block names the http object from a trusted proxy and the https one from anyone else."""
    fetches = [0]

    async def counting(seen, conn) -> None:  # type: ignore[no-untyped-def]
        fetches[0] += 1
        body = b"fetch %d" % fetches[0]
        conn.write(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=300\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )

    proto = {"x-forwarded-proto": "http"}
    async with origin_and_edge({"/x": counting}, dev_cert, trusted_proxies="127.0.0.2") as (_o, edge):
        async with client(edge, "127.0.0.1") as anyone:
            for _ in range(3):
                assert (await anyone.get("/x", headers=proto)).content == b"fetch 1"  # https: not trusted
        assert marks(edge, "/x") == [NOT_REPLAYED]
        async with client(edge, "127.0.0.2") as proxy:
            assert (await proxy.get("/x", headers=proto)).content == b"fetch 2"  # the http object


async def test_rate_limited_listeners_keep_no_table(dev_cert: DevCert) -> None:
    routes = {"/p": fixed(200, b"p", [("Cache-Control", "max-age=300")])}
    async with origin_and_edge(routes, dev_cert, rate_limit="1000", rate_burst="1000") as (_o, edge):
        async with client(edge) as h2:
            for _ in range(3):
                assert (await h2.get("/p")).content == b"p"
        assert "h2" not in edge.core.replay_tables


async def test_a_purge_empties_the_table_and_large_objects_are_never_held(dev_cert: DevCert) -> None:
    small = b"s" * 1024
    large = b"L" * (ROUTE_MAX_CHARGE + 1)
    routes = {
        "/small": fixed(200, small, [("Cache-Control", "max-age=300")]),
        "/large": fixed(200, large, [("Cache-Control", "max-age=300")]),
    }
    async with origin_and_edge(routes, dev_cert) as (_origin, edge), client(edge) as h2:
        for path, body in (("/small", small), ("/large", large)):
            for _ in range(3):
                assert (await h2.get(path)).content == body
        assert kept(edge, "/small")
        assert marks(edge, "/large") == [NOT_REPLAYED]  # a route would hold it past an eviction
        edge.core.purge("url", f"https://localhost:{edge.port}/large")
        assert not table(edge)  # whatever a route held is let go


async def test_a_malformed_block_is_refused_every_time(dev_cert: DevCert) -> None:
    """A refused request never enters the table: the same block is refused again."""
    routes = {"/m": fixed(200, b"m", [("Cache-Control", "max-age=300")])}
    async with origin_and_edge(routes, dev_cert, hosts="example.test") as (origin, edge):
        async with client(edge) as h2:
            for _ in range(3):
                assert (await h2.get("/m")).status_code == 421  # localhost is not served
        assert not marks(edge, "/m") and origin.count("/m") == 0
