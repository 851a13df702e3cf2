"""Tiers in one process: an edge in front of a shield (another node) in front of an origin,
and two workers of one node sharing a key's fetch over the sibling socket.

Real HTTP/1.1 on loopback throughout; the processes, the kill of a shield and HTTP/3 on
every worker are in tests/wiring/test_fleet.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from edge.admin.node import LocalNode
from edge.admin.server import serve_admin
from edge.fronts.sibling import SiblingProtocol
from edge.wiring.process import bind_unix
from edge.wiring.workers import WorkerPlace, invalidate_on_siblings
from tests.support.nodes import Clock, Edge, raw_exchange, start_edge
from tests.support.scripted_origin import ScriptedOrigin, fixed
from tests.support.waiting import eventually

pytestmark = pytest.mark.asyncio

CACHEABLE = [("Cache-Control", "max-age=600, stale-if-error=600"), ("ETag", '"v1"')]


async def stop(*edges: Edge) -> None:
    for node in edges:
        node.server.close()
        await node.core.aclose()


@pytest_asyncio.fixture
async def tier(origin: ScriptedOrigin, clock: Clock) -> AsyncIterator[tuple[Edge, Edge]]:
    """(edge, shield): the edge (on the test's clock) lists the shield, whose upstream is the origin."""
    shield = await start_edge(origin.url, name="shield-1", read_timeout="2", connect_timeout="1")
    edge = await start_edge(
        origin.url, clock, shields=shield.url, name="edge-eu", shield_fallback="error", read_timeout="2",
        connect_timeout="1", shield_fail_threshold="1",
    )  # fmt: skip
    yield edge, shield
    await stop(edge, shield)


async def get(node: Edge, path: str, **headers: str) -> httpx.Response:
    """GET through ``node`` for the site every node serves (one Host, whichever node's port)."""
    async with node.client() as client:
        return await client.get(path, headers={"Host": "cdn.example", **headers})


async def test_a_miss_goes_through_the_shield_and_cache_status_shows_both_tiers(
    origin: ScriptedOrigin, tier: tuple[Edge, Edge]
) -> None:
    edge, shield = tier
    origin.routes["/a.css"] = fixed(200, b"a{}", CACHEABLE)
    first = await get(edge, "/a.css")
    assert first.status_code == 200 and first.content == b"a{}"
    assert first.headers["cache-status"] == (
        "shield-1; fwd=uri-miss; fwd-status=200; stored, edge-eu; fwd=uri-miss; fwd-status=200; stored"
    )
    assert first.headers["via"] == "1.1 shield-1, 1.1 edge-eu"
    hit = await get(edge, "/a.css")
    assert hit.headers["cache-status"].startswith(
        "shield-1; fwd=uri-miss; fwd-status=200; stored, edge-eu; hit; ttl="
    )
    # Another region's edge in front of the same shield: a second-tier hit.
    other = await start_edge(origin.url, shields=shield.url, name="edge-us")
    try:
        second_tier = await get(other, "/a.css")
    finally:
        await stop(other)
    assert second_tier.content == b"a{}"
    members = [m.strip() for m in second_tier.headers["cache-status"].split(",")]
    assert members[0].startswith("shield-1; hit; ttl=")
    assert members[1] == "edge-us; fwd=uri-miss; fwd-status=200; stored"
    assert origin.count("/a.css") == 1
    [seen] = origin.seen
    assert [v for k, v in seen.headers if k.lower() == b"via"] == [b"1.1 edge-eu", b"1.1 shield-1"]
    loops = [v for k, v in seen.headers if k.lower() == b"cdn-loop"]
    assert [v.split(b";")[0] for v in loops] == [b"edge-eu", b"shield-1"], (
        "each node that forwarded added its member"
    )


async def test_a_request_that_comes_back_is_refused_with_508(origin: ScriptedOrigin) -> None:
    origin.routes["/x"] = fixed(200, b"x", CACHEABLE)
    node = await start_edge(origin.url, name="loopy")
    # A second front of the same node (same node id) that lists the first as its shield: the
    # request comes back to the node it left. The 508 is relayed, not retried at the origin.
    front = await start_edge(origin.url, name="loopy", shields=node.url, node_id=node.core.node_id)
    try:
        resp = await get(front, "/x")
        assert resp.status_code == 508 and "already passed" in resp.text
        assert "detail=loop" in resp.headers["cache-status"]
        assert origin.count("/x") == 0
        assert all(u.health.up for u in front.core.gateway.router.upstreams), "a loop is no shield failure"
        looped = await get(node, "/x", **{"CDN-Loop": f"other, loopy; node={node.core.node_id}"})
        assert looped.status_code == 508
        assert (await get(node, "/x", **{"CDN-Loop": "loopy; node=someone-else"})).status_code == 200
    finally:
        await stop(front, node)


async def test_options_with_max_forwards_zero_is_answered_by_the_node(
    origin: ScriptedOrigin, tier: tuple[Edge, Edge]
) -> None:
    edge, _ = tier
    async with edge.client() as client:
        resp = await client.request("OPTIONS", "/anything", headers={"Max-Forwards": "0"})
    assert resp.status_code == 200 and "GET" in resp.headers["allow"]
    assert origin.seen == []


async def test_the_whole_shield_tier_down_serves_stale_where_allowed(
    origin: ScriptedOrigin, tier: tuple[Edge, Edge], clock: Clock
) -> None:
    edge, shield = tier
    origin.routes["/s.js"] = fixed(200, b"v1", [("Cache-Control", "max-age=1, stale-if-error=600")])
    assert (await get(edge, "/s.js")).content == b"v1"
    shield.server.close()  # the shield is gone: no new connection, and the kept-alive ones are dropped
    await shield.server.wait_closed()
    for upstream in edge.core.gateway.router.upstreams:
        upstream.pool.close()
    clock.advance(5)
    resp = await get(edge, "/s.js")
    assert resp.status_code == 200 and resp.content == b"v1"
    assert "detail=stale-if-error" in resp.headers["cache-status"]
    resp = await get(edge, "/never-fetched.js")
    assert resp.status_code == 502, (
        "nothing stale to serve: an error, never the origin (shield_fallback=error)"
    )
    assert origin.count("/never-fetched.js") == 0


@pytest_asyncio.fixture
async def workers(origin: ScriptedOrigin, tmp_path: Path) -> AsyncIterator[list[Edge]]:
    """Two workers of one node, wired as edge.wiring.process wires them: each serves its
    sibling on a cache socket and the admin API on a control socket."""
    places = [WorkerPlace(i, 2, tmp_path, "control-token") for i in range(2)]
    nodes = [await start_edge(origin.url, siblings=p.siblings(), name="node", node_id="n1") for p in places]
    servers = []
    shutdown = asyncio.Event()
    controls = []
    for place, node in zip(places, nodes, strict=True):
        core, config = node.core, node.core.config
        servers.append(
            await asyncio.get_running_loop().create_unix_server(
                lambda core=core, config=config: SiblingProtocol(core, config),
                sock=bind_unix(place.cache_socket(place.index)),
            )
        )
        control = bind_unix(place.control_socket(place.index))
        controls.append(
            asyncio.create_task(
                serve_admin(LocalNode(core, place.index), "", "control-token", shutdown, sock=control)
            )
        )
        core.forwarder.invalidated = lambda keys, place=place: asyncio.ensure_future(
            invalidate_on_siblings(place, keys)
        )
    yield nodes
    shutdown.set()
    for task in controls:
        await asyncio.wait_for(task, 5)
    for server in servers:
        server.close()
    await stop(*nodes)


async def test_two_workers_fetch_an_object_once_and_answer_as_one_node(
    origin: ScriptedOrigin, workers: list[Edge]
) -> None:
    bodies = {}
    for i in range(40):
        path = f"/o{i}.bin"
        body = hashlib.sha256(path.encode()).digest() * 32
        bodies[path] = body
        origin.routes[path] = fixed(200, body, CACHEABLE)
    for path, body in bodies.items():
        for node in workers:  # both workers, whoever owns the key
            resp = await get(node, path)
            assert resp.status_code == 200 and resp.content == body
            assert resp.headers["cache-status"].count("node;") == 1, resp.headers["cache-status"]
            assert resp.headers["via"] == "1.1 node"
        assert origin.count(path) == 1, f"{path}: one origin fetch for the node"
    router = workers[0].core.gateway.router
    owners = {router.owner(b"http://cdn.example" + p.encode()) is None for p in bodies}
    assert owners == {True, False}, "the objects are shared out between the two workers"


async def test_a_sibling_socket_refuses_a_request_without_edge_internal(
    workers: list[Edge], tmp_path: Path
) -> None:
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "cache-0.sock"))
    writer.write(b"GET /o HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await reader.read(200)
    writer.close()
    assert head.startswith(b"HTTP/1.1 400") and b"Edge-Internal" in head
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "cache-0.sock"))
    writer.write(b"OPTIONS * HTTP/1.1\r\nHost: h\r\nMax-Forwards: 0\r\n\r\n")
    probe = await reader.read(200)
    writer.close()
    assert probe.startswith(b"HTTP/1.1 200"), "a health probe is answered by the worker itself"


async def test_a_soft_purge_across_tiers_gives_the_edge_the_new_object(
    origin: ScriptedOrigin, tier: tuple[Edge, Edge]
) -> None:
    edge, shield = tier
    origin.routes["/app.js"] = fixed(200, b"v1", [("Cache-Control", "max-age=600"), ("ETag", '"v1"')])
    assert (await get(edge, "/app.js")).content == b"v1"
    origin.routes["/app.js"] = fixed(200, b"v2", [("Cache-Control", "max-age=600"), ("ETag", '"v2"')])
    for node in (shield, edge):  # shields first, as `edge purge` and purge_peers do
        assert node.core.purge("url", "http://cdn.example/app.js", soft=True) == 1
    resp = await get(edge, "/app.js")
    assert resp.content == b"v2" and resp.headers["etag"] == '"v2"'
    validation = origin.seen[-1]
    assert validation.header(b"if-none-match") == b'"v1"', "the shield revalidated its soft-purged copy"
    # X-Cache says what this node did (the shield's is not kept); Cache-Status has both tiers.
    assert (await get(edge, "/app.js")).headers["x-cache"] == "HIT"
    assert origin.count("/app.js") == 2


async def test_a_body_cut_off_behind_a_sibling_is_never_stored_whatever_the_client_speaks(
    origin: ScriptedOrigin, workers: list[Edge]
) -> None:
    """The owner frames its answer to a sibling as HTTP/1.1 (chunked) even for an HTTP/1.0
    client: a cut-off body must not read as a close-delimited, complete one."""

    async def cut(seen, conn):  # type: ignore[no-untyped-def]
        conn.write(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nTransfer-Encoding: chunked\r\n\r\n")
        conn.write(b"5\r\nhello\r\n")
        conn.abort()

    router = workers[0].core.gateway.router
    path = next(
        p for p in (f"/cut{i}" for i in range(100)) if router.owner(b"http://cdn.example" + p.encode())
    )
    origin.routes[path] = cut
    head = await raw_exchange(workers[0].port, f"GET {path} HTTP/1.0\r\nHost: cdn.example\r\n\r\n".encode())
    assert b"hello" not in head or b"200 OK" in head  # whatever reached the client was cut, never "complete"
    origin.routes[path] = fixed(200, b"whole body", CACHEABLE)
    again = await get(workers[0], path)
    assert again.content == b"whole body", "the cut-off body was not stored"


async def test_an_unsafe_method_on_one_worker_invalidates_the_others_copies(
    origin: ScriptedOrigin, workers: list[Edge]
) -> None:
    origin.routes["/doc"] = fixed(200, b"v1", CACHEABLE)
    for node in workers:
        assert (await get(node, "/doc")).content == b"v1"
    origin.routes["/doc"] = fixed(200, b"v2", CACHEABLE)
    async with workers[0].client() as client:
        assert (
            await client.post("/doc", content=b"edit", headers={"Host": "cdn.example"})
        ).status_code == 200
    await eventually(
        lambda: all(n.core.memory.lookup(b"http://cdn.example/doc") is None for n in workers),
        "every worker dropped its copy",
    )
    for node in workers:
        assert (await get(node, "/doc")).content == b"v2"


async def test_a_shield_keys_by_the_scheme_its_trusted_edges_say(origin: ScriptedOrigin) -> None:
    """http and https answers never mix at the shield: an https redirect must not reach http clients."""
    shield = await start_edge(origin.url, name="shield-1", trusted_proxies="127.0.0.1/32")
    # The edge trusts the test client as it would a TLS load balancer in front of it.
    edge = await start_edge(origin.url, shields=shield.url, name="edge-eu", trusted_proxies="127.0.0.0/8")
    try:
        origin.routes["/s"] = fixed(200, b"either", CACHEABLE)
        secure = await get(edge, "/s", **{"X-Forwarded-Proto": "https"})
        plain = await get(edge, "/s")
        assert secure.status_code == plain.status_code == 200
        assert plain.headers["cache-status"].startswith("shield-1; fwd=uri-miss"), "not the https copy"
        assert [s.header(b"x-forwarded-proto") for s in origin.seen] == [b"https", b"http"]
        forged = await get(shield, "/s", **{"X-Forwarded-Proto": "https"})
        assert forged.headers["cache-status"].startswith("shield-1; hit"), "trusted peer: the https key"
        assert shield.core.memory.lookup(b"https://cdn.example/s") is not None
        assert shield.core.memory.lookup(b"http://cdn.example/s") is not None
    finally:
        await stop(edge, shield)
