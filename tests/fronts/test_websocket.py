"""WebSocket over HTTP/1.1 through the edge: handshake forwarded, bytes tunnelled both ways,
caps and the idle timeout enforced. A real `websockets` server is the origin; the clients are
the `websockets` library's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.nodes import Clock, start_edge
from tests.support.raw_ws_origin import raw_ws_origin
from tests.support.scripted_origin import ScriptedOrigin, fixed
from tests.support.waiting import eventually

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def echo(ws: ServerConnection) -> None:
    """Greets (a push from the origin), then echoes every message."""
    await ws.send("welcome " + ws.request.path if ws.request is not None else "welcome")
    async for message in ws:
        await ws.send(message)


@pytest_asyncio.fixture
async def ws_origin() -> AsyncIterator[Server]:
    async with serve(echo, "127.0.0.1", 0) as server:
        yield server


def port_of(server: Server) -> int:
    return int(next(iter(server.sockets)).getsockname()[1])


async def test_a_websocket_is_tunnelled_to_the_origin_and_back(ws_origin: Server, clock: Clock) -> None:
    node = await start_edge(f"http://127.0.0.1:{port_of(ws_origin)}", clock)
    try:
        async with connect(f"ws://127.0.0.1:{node.port}/chat?room=1") as ws:
            assert await ws.recv() == "welcome /chat?room=1"  # pushed by the origin
            for i in range(100):
                await ws.send(f"message {i}")
                assert await ws.recv() == f"message {i}"
            await ws.send(b"\x00\x01binary" * 1000)
            assert await ws.recv() == b"\x00\x01binary" * 1000
        await eventually(lambda: node.core.clients.tunnels == 0, "the tunnel ended")  # counted then
        traffic = node.core.requests.snapshot()
        assert ["h1", 101, "none", 1] in traffic["requests"]
        assert node.core.stats()["entries"] == 0  # never cached
    finally:
        node.server.close()
        await node.core.aclose()


async def test_an_idle_tunnel_is_closed(ws_origin: Server, clock: Clock) -> None:
    node = await start_edge(f"http://127.0.0.1:{port_of(ws_origin)}", clock, tunnel_idle_timeout="0.3")
    try:
        async with connect(f"ws://127.0.0.1:{node.port}/", ping_interval=None) as ws:
            assert (await ws.recv()).startswith("welcome")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)  # nothing moves: the edge closes it
    finally:
        node.server.close()
        await node.core.aclose()


async def test_tunnels_beyond_the_per_client_cap_are_refused(ws_origin: Server, clock: Clock) -> None:
    node = await start_edge(f"http://127.0.0.1:{port_of(ws_origin)}", clock, max_client_tunnels="1")
    try:
        async with connect(f"ws://127.0.0.1:{node.port}/a") as first:
            assert (await first.recv()).startswith("welcome")
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"ws://127.0.0.1:{node.port}/b"):
                    pass
            assert refused.value.response.status_code == 503
            assert b"too many WebSocket tunnels" in refused.value.response.body
            await first.send("still here")
            assert await first.recv() == "still here"
        async with connect(f"ws://127.0.0.1:{node.port}/c") as again:  # its place was given back
            assert (await again.recv()).startswith("welcome")
    finally:
        node.server.close()
        await node.core.aclose()


async def test_an_unreachable_origin_is_a_502(clock: Clock) -> None:
    from tests.support.nodes import free_port

    node = await start_edge(f"http://127.0.0.1:{free_port()}", clock)
    try:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{node.port}/"):
                pass
        assert refused.value.response.status_code == 502
    finally:
        node.server.close()
        await node.core.aclose()


async def test_a_refused_handshake_carries_no_client_bytes_to_the_origin(
    origin: ScriptedOrigin, clock: Clock
) -> None:
    """An origin answering the upgrade with a keep-alive 404: the bytes the client sent after its
    handshake are never forwarded (they would skip every request rule of the node)."""
    origin.routes["/ws"] = fixed(404, b"no websocket here")
    node = await start_edge(origin.url, clock)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: cdn.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            b"GET /admin HTTP/1.1\r\nHost: internal.example\r\nX-Forwarded-Host: evil.example\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(), 10)  # the edge closes after the 404
        writer.close()
        assert answer.startswith(b"HTTP/1.1 404") and answer.endswith(b"no websocket here")
        assert answer.count(b"HTTP/1.1") == 1
        assert [s.target for s in origin.seen] == [b"/ws"]
    finally:
        node.server.close()
        await node.core.aclose()


async def test_sigterm_drain_closes_open_tunnels_at_once(ws_origin: Server, clock: Clock) -> None:
    from edge.fronts.h1 import LIVE

    node = await start_edge(f"http://127.0.0.1:{port_of(ws_origin)}", clock)
    try:
        async with connect(f"ws://127.0.0.1:{node.port}/", ping_interval=None) as ws:
            assert (await ws.recv()).startswith("welcome")
            assert all(proto.close_when_idle() for proto in list(LIVE))  # what the drain asks
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
        await eventually(lambda: node.core.clients.tunnels == 0, "the tunnel was counted closed")
    finally:
        node.server.close()
        await node.core.aclose()


async def test_an_idle_tunnel_to_a_deaf_origin_is_given_back(clock: Clock) -> None:
    """An origin that stopped reading with bytes still buffered for it: the idle timeout ends
    the tunnel without waiting for them (the client is closed, the place given back)."""
    async with raw_ws_origin(deaf=True) as deaf:
        node = await start_edge(deaf.url, clock, tunnel_idle_timeout="1")
        try:
            async with connect(f"ws://127.0.0.1:{node.port}/deaf", ping_interval=None, close_timeout=1) as ws:
                sending = asyncio.get_running_loop().create_task(ws.send(b"u" * (48 << 20)))
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 20)
                sending.cancel()
            await eventually(lambda: node.core.clients.tunnels == 0, "the tunnel was given back")
            assert ["h1", 101, "none", 1] in node.core.requests.snapshot()["requests"]
        finally:
            node.server.close()
            await node.core.aclose()


async def test_interim_answers_before_the_101_are_skipped(clock: Clock) -> None:
    """An origin answering the handshake 100 and 103 before its 101: the client gets the 101."""
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    async with raw_ws_origin(interim=interim, greeting=b"\x81\x05hello") as origin:
        node = await start_edge(origin.url, clock)
        try:
            async with connect(
                f"ws://127.0.0.1:{node.port}/hints", ping_interval=None, close_timeout=1
            ) as ws:
                assert await ws.recv() == "hello"
        finally:
            node.server.close()
            await node.core.aclose()
