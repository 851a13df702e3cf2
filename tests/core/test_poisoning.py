"""Cache poisoning through unkeyed request fields (issue 17), with real servers on loopback.

The origin here reflects a request field into a cacheable body, as frameworks do with
X-Forwarded-Host (absolute links, redirects) and friends. Client A sends the field with
an attacker's value, client B a clean request: B must never get A's answer. Only what is
in the cache key, or named by Vary, may change what is served.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from edge.fronts.sibling import SiblingProtocol
from edge.wiring.process import bind_unix
from edge.wiring.workers import WorkerPlace
from tests.support.nodes import Edge, start_edge
from tests.support.scripted_origin import Gate, OriginConnection, Route, ScriptedOrigin, Seen, response

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

EVIL = "evil.example"

POISONING_FIELDS = [
    "X-Forwarded-Host",
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-HTTP-Method-Override",
    "X-Forwarded-Scheme",
    "X-Forwarded-Port",
    "X-Host",
    "Forwarded",
]


def reflecting(field: str, gate: Gate | None = None) -> Route:
    """A cacheable answer whose body says what the origin read from ``field``."""
    name = field.lower().encode()

    async def route(seen: Seen, conn: OriginConnection) -> None:
        if gate is not None:
            await gate.hold()
        body = b"%s=%s\n" % (name, seen.header(name) or b"-")
        conn.write(response(200, body, [("Cache-Control", "max-age=300"), ("Content-Type", "text/plain")]))

    return route


async def get(node: Edge, path: str, **headers: str) -> httpx.Response:
    async with node.client() as client:
        return await client.get(path, headers={"Host": "www.example.com", **headers})


@pytest_asyncio.fixture
async def node(origin: ScriptedOrigin) -> AsyncIterator[Edge]:
    """An edge with the default settings (a different Host per test: no shared state)."""
    edge = await start_edge(origin.url, read_timeout="5", connect_timeout="1")
    yield edge
    edge.server.close()
    await edge.core.aclose()


@pytest.mark.parametrize("field", POISONING_FIELDS)
async def test_a_poisoning_field_never_reaches_the_origin_nor_another_client(
    origin: ScriptedOrigin, node: Edge, field: str
) -> None:
    origin.routes["/page"] = reflecting(field)
    poisoned = await get(node, "/page", **{field: EVIL if field != "Forwarded" else f"host={EVIL}"})
    clean = await get(node, "/page")
    again = await get(node, "/page", **{field: EVIL})
    assert [r.status_code for r in (poisoned, clean, again)] == [200, 200, 200]
    assert EVIL.encode() not in clean.content, f"{field} poisoned the cache for a clean client"
    assert clean.content == poisoned.content == again.content == b"%s=-\n" % field.lower().encode()
    assert clean.headers["x-cache"] == "HIT", "one object for everyone: the field is not part of the key"
    assert all(seen.header(field.lower().encode()) is None for seen in origin.seen)


async def test_a_clients_own_forwarding_chain_is_not_reflected_to_others(
    origin: ScriptedOrigin, node: Edge
) -> None:
    origin.routes["/ip"] = reflecting("X-Forwarded-For")
    forged = await get(
        node, "/ip", **{"X-Forwarded-For": "<script>alert(1)</script>", "X-Forwarded-Proto": "https"}
    )
    clean = await get(node, "/ip")
    assert forged.content == clean.content == b"x-forwarded-for=127.0.0.1\n"
    assert clean.headers["x-cache"] == "HIT", (
        "an untrusted client's X-Forwarded-Proto does not change the key"
    )
    assert origin.seen[0].header(b"x-forwarded-for") == b"127.0.0.1"
    assert origin.seen[0].header(b"x-forwarded-proto") == b"http", "the scheme the node keyed by"
    assert node.core.memory.lookup(b"http://www.example.com/ip") is not None


async def test_a_poisoned_fill_is_not_shared_with_clients_that_collapse_onto_it(
    origin: ScriptedOrigin, node: Edge
) -> None:
    gate = Gate()
    origin.routes["/collapsed"] = reflecting("X-Forwarded-Host", gate)
    first = asyncio.create_task(get(node, "/collapsed", **{"X-Forwarded-Host": EVIL}))
    await gate.reached()
    second = asyncio.create_task(get(node, "/collapsed"))
    await asyncio.sleep(0.05)  # the clean client joins the fill under way
    gate.open()
    for resp in await asyncio.gather(first, second):
        assert resp.content == b"x-forwarded-host=-\n"
    assert origin.count("/collapsed") == 1


@pytest_asyncio.fixture
async def keyed(origin: ScriptedOrigin) -> AsyncIterator[Edge]:
    """An edge whose operator forwards X-Forwarded-Host (a load balancer in front sets it)."""
    edge = await start_edge(
        origin.url, read_timeout="5", connect_timeout="1", forward_request_fields="X-Forwarded-Host"
    )
    yield edge
    edge.server.close()
    await edge.core.aclose()


async def test_a_forwarded_field_is_part_of_the_key(origin: ScriptedOrigin, keyed: Edge) -> None:
    origin.routes["/page"] = reflecting("X-Forwarded-Host")
    evil = await get(keyed, "/page", **{"X-Forwarded-Host": EVIL})
    clean = await get(keyed, "/page")
    assert evil.content == b"x-forwarded-host=evil.example\n", "forwarded, as the operator asked"
    assert clean.content == b"x-forwarded-host=-\n" and clean.headers["x-cache"] == "MISS"
    assert "x-forwarded-host" in evil.headers["vary"].lower(), "a cache downstream varies too"
    hits = [
        await get(keyed, "/page", **h) for h in ({"X-Forwarded-Host": EVIL}, {}, {"x-forwarded-host": EVIL})
    ]
    assert [r.headers["x-cache"] for r in hits] == ["HIT", "HIT", "HIT"]
    assert [r.content for r in hits] == [evil.content, clean.content, evil.content]
    other = await get(keyed, "/page", **{"X-Forwarded-Host": "other.example"})
    assert other.content == b"x-forwarded-host=other.example\n" and other.headers["x-cache"] == "MISS"
    assert origin.count("/page") == 3
    # The rest of the list is still stripped.
    origin.routes["/x-host"] = reflecting("X-Host")
    assert (await get(keyed, "/x-host", **{"X-Host": EVIL})).content == b"x-host=-\n"


async def test_a_forwarded_field_keeps_a_collapsed_fill_to_its_own_value(
    origin: ScriptedOrigin, keyed: Edge
) -> None:
    gate = Gate()
    origin.routes["/collapsed"] = reflecting("X-Forwarded-Host", gate)
    first = asyncio.create_task(get(keyed, "/collapsed", **{"X-Forwarded-Host": EVIL}))
    await gate.reached()
    second = asyncio.create_task(get(keyed, "/collapsed"))
    await asyncio.sleep(0.05)
    gate.open()
    evil, clean = await asyncio.gather(first, second)
    assert evil.content == b"x-forwarded-host=evil.example\n"
    assert clean.content == b"x-forwarded-host=-\n", "a clean client never reads the other value's fill"
    assert (await get(keyed, "/collapsed")).content == b"x-forwarded-host=-\n"


async def test_a_large_object_varying_on_a_forwarded_field_is_never_sliced(
    origin: ScriptedOrigin, keyed: Edge
) -> None:
    """Slices are kept per URL, not per variant: a Range miss must not store one value's slices."""
    body = b"x" * (3 * 1024 * 1024)

    async def route(seen: Seen, conn: OriginConnection) -> None:
        value = seen.header(b"x-forwarded-host") or b"-"
        data = value + body[len(value) :]
        rng = seen.header(b"range")
        fields = [("Cache-Control", "max-age=300"), ("Content-Type", "application/octet-stream")]
        if rng is not None:
            start, _, end = rng.partition(b"=")[2].partition(b"-")
            first, last = int(start), min(int(end), len(data) - 1)
            fields.append(("Content-Range", f"bytes {first}-{last}/{len(data)}"))
            conn.write(response(206, data[first : last + 1], fields, reason="Partial Content"))
        else:
            conn.write(response(200, data, fields))

    origin.routes["/big.bin"] = route
    evil = await get(keyed, "/big.bin", **{"X-Forwarded-Host": EVIL, "Range": "bytes=0-15"})
    clean = await get(keyed, "/big.bin", Range="bytes=0-15")
    assert evil.status_code == clean.status_code == 206
    assert evil.content.startswith(EVIL.encode()) and clean.content.startswith(b"-xxx")


async def test_a_shield_behind_an_edge_keeps_the_chain_and_strips_the_rest(origin: ScriptedOrigin) -> None:
    shield = await start_edge(origin.url, name="shield-1", trusted_proxies="127.0.0.1/32")
    edge = await start_edge(origin.url, shields=shield.url, name="edge-eu")
    try:
        origin.routes["/t"] = reflecting("X-Forwarded-Host")
        poisoned = await get(edge, "/t", **{"X-Forwarded-Host": EVIL, "X-Forwarded-For": "6.6.6.6"})
        clean = await get(shield, "/t")
        assert poisoned.content == clean.content == b"x-forwarded-host=-\n"
        assert clean.headers["x-cache"] == "HIT"
        seen = origin.seen[0]
        # The edge's word (the client, then the edge) is kept by the shield that trusts it;
        # the client's own 6.6.6.6 was dropped by the edge, which trusts nobody.
        assert seen.header(b"x-forwarded-for") == b"127.0.0.1, 127.0.0.1"
        assert seen.header(b"x-forwarded-host") is None and origin.count("/t") == 1
    finally:
        for node in (edge, shield):
            node.server.close()
            await node.core.aclose()


async def test_workers_of_one_node_key_a_forwarded_field_alike(
    origin: ScriptedOrigin, tmp_path: Path
) -> None:
    """The asking worker sends the forwarded field to the key's owner, which keys by it too."""
    places = [WorkerPlace(i, 2, tmp_path, "token") for i in range(2)]
    nodes = [
        await start_edge(
            origin.url,
            siblings=p.siblings(),
            name="node",
            node_id="n1",
            forward_request_fields="X-Forwarded-Host",
        )
        for p in places
    ]
    servers = [
        await asyncio.get_running_loop().create_unix_server(
            functools.partial(SiblingProtocol, node.core, node.core.config),
            sock=bind_unix(place.cache_socket(place.index)),
        )
        for place, node in zip(places, nodes, strict=True)
    ]
    try:
        origin.routes["/w"] = reflecting("X-Forwarded-Host")
        origin.routes["/x"] = reflecting("X-Host")
        for node in nodes:
            assert (
                await get(node, "/w", **{"X-Forwarded-Host": EVIL})
            ).content == b"x-forwarded-host=evil.example\n"
            assert (await get(node, "/w")).content == b"x-forwarded-host=-\n"
            assert (await get(node, "/x", **{"X-Host": EVIL})).content == b"x-host=-\n"
        assert origin.count("/w") == 2, "one fetch per value for the node"
        assert all(seen.header(b"x-host") is None for seen in origin.seen)
    finally:
        for server in servers:
            server.close()
        for node in nodes:
            node.server.close()
            await node.core.aclose()
