"""A purge passed to the node's shields (purge_peers) before the node itself, over real admin APIs."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from edge.admin.server import bind_admin, serve_admin
from tests.admin.conftest import TOKEN
from tests.support.nodes import Edge, start_edge
from tests.support.scripted_origin import ScriptedOrigin, fixed

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[object]:
    stops: list[tuple[asyncio.Event, asyncio.Task[None], Edge]] = []

    async def start(core_edge: Edge, peers: list[str], sock: socket.socket | None = None) -> str:
        sock = sock or bind_admin("127.0.0.1:0")
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        shutdown = asyncio.Event()
        task = asyncio.create_task(serve_admin(core_edge.core, url, TOKEN, shutdown, sock=sock, peers=peers))
        stops.append((shutdown, task, core_edge))
        return url

    yield start
    for shutdown, task, node in stops:
        shutdown.set()
        await asyncio.wait_for(task, 5)
        node.server.close()
        await node.core.aclose()


async def purge(admin: str, **body: object) -> dict[str, object]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        resp = await client.post(admin + "/purge", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200, resp.text
    answer: dict[str, object] = resp.json()
    return answer


async def get(node: Edge, path: str) -> httpx.Response:
    async with node.client() as client:
        return await client.get(path, headers={"Host": "cdn.example"})


async def test_a_purge_reaches_the_shields_first_then_the_node(origin: ScriptedOrigin, serve) -> None:  # type: ignore[no-untyped-def]
    shield = await start_edge(origin.url, name="shield-1")
    edge = await start_edge(origin.url, name="edge-eu", shields=shield.url)
    order: list[str] = []
    for node in (shield, edge):
        real = node.core.purge

        def recording(*args: object, real=real, name=node.core.config.name, **kwargs: object) -> int:  # type: ignore[no-untyped-def]
            order.append(name)
            return real(*args, **kwargs)  # type: ignore[arg-type]

        node.core.purge = recording  # type: ignore[method-assign]
    shield_admin = await serve(shield, [])
    edge_admin = await serve(edge, [shield_admin])
    origin.routes["/a.js"] = fixed(200, b"v1", [("Cache-Control", "max-age=600")])
    assert (await get(edge, "/a.js")).content == b"v1"
    origin.routes["/a.js"] = fixed(200, b"v2", [("Cache-Control", "max-age=600")])
    answer = await purge(edge_admin, url="http://cdn.example/a.js")
    assert answer["purged"] == 1 and answer["ok"] is True
    assert answer["peers"] == [{"admin": shield_admin, "purged": 1}]
    assert order == ["shield-1", "edge-eu"], "the shield is purged before the edge"
    assert (await get(edge, "/a.js")).content == b"v2"
    assert origin.count("/a.js") == 2


async def test_a_peer_down_still_purges_the_node_and_says_so(origin: ScriptedOrigin, serve) -> None:  # type: ignore[no-untyped-def]
    edge = await start_edge(origin.url, name="edge-eu")
    dead = "http://127.0.0.1:9"  # discard port: nothing answers
    edge_admin = await serve(edge, [dead])
    origin.routes["/b.js"] = fixed(200, b"v1", [("Cache-Control", "max-age=600")])
    await get(edge, "/b.js")
    answer = await purge(edge_admin, url="http://cdn.example/b.js")
    assert answer["purged"] == 1 and answer["ok"] is False
    [peer] = answer["peers"]  # type: ignore[misc]
    assert peer["admin"] == dead and "error" in peer


async def test_peers_listing_each_other_purge_once_each(origin: ScriptedOrigin, serve) -> None:  # type: ignore[no-untyped-def]
    a = await start_edge(origin.url, name="a")
    b = await start_edge(origin.url, name="b")
    sock_a, sock_b = bind_admin("127.0.0.1:0"), bind_admin("127.0.0.1:0")
    url_a = f"http://127.0.0.1:{sock_a.getsockname()[1]}"
    url_b = f"http://127.0.0.1:{sock_b.getsockname()[1]}"
    # Each lists the other: the purge goes a -> b -> (a: already on the path, stops).
    await serve(a, [url_b], sock_a)
    await serve(b, [url_a], sock_b)
    answer = await asyncio.wait_for(purge(url_a, all=True), 10)
    assert answer["ok"] is True
    [to_b] = answer["peers"]  # type: ignore[misc]
    assert to_b["admin"] == url_b and to_b["purged"] == 0
    [back_to_a] = to_b["peers"]
    assert back_to_a == {"admin": url_a, "purged": 0}


async def test_edge_purge_reports_a_node_whose_peer_failed(origin: ScriptedOrigin, serve) -> None:  # type: ignore[no-untyped-def]
    edge = await start_edge(origin.url, name="edge-eu")
    edge_admin = await serve(edge, ["http://127.0.0.1:9"])
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "edge.cli", "purge", "--admin", edge_admin, "--token", TOKEN, "--all"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out
    assert "not everywhere" in out.stdout + out.stderr and "127.0.0.1:9" in out.stdout + out.stderr
