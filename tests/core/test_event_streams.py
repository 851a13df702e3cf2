"""Server-Sent Events reach the client as the origin sends them: no buffering, no compression
that waits for a block, on HTTP/1.1, HTTP/2 and HTTP/3."""

from __future__ import annotations

import pytest

from edge.wiring.devcert import DevCert
from tests.support.nodes import Clock, start_edge, start_secure_edge
from tests.support.scripted_origin import Gate, OriginConnection, ScriptedOrigin, Seen
from tests.support.waiting import within

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


def event_stream(gate: Gate, cache_control: str):  # type: ignore[no-untyped-def]
    async def route(seen: Seen, conn: OriginConnection) -> None:
        conn.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            + f"Cache-Control: {cache_control}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        first = b"data: first\n\n"
        conn.write(b"%x\r\n%s\r\n" % (len(first), first))
        await gate.hold()
        second = b"data: second\n\n"
        conn.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(second), second))

    return route


@pytest.mark.parametrize("cache_control", ["no-cache", "no-store"])
async def test_events_reach_an_http1_client_before_the_origin_sends_the_next(
    origin: ScriptedOrigin, clock: Clock, cache_control: str
) -> None:
    gate = Gate()
    origin.routes["/events"] = event_stream(gate, cache_control)
    node = await start_edge(origin.url, clock)
    try:
        async with (
            node.client() as client,
            client.stream(
                "GET", "/events", headers={"Accept": "text/event-stream", "Accept-Encoding": "gzip, br, zstd"}
            ) as resp,
        ):
            assert resp.status_code == 200
            assert resp.headers.get("content-encoding") is None
            chunks = resp.aiter_bytes()
            got = await within(chunks.__anext__(), "the first event while the origin holds the second", 10)
            assert got == b"data: first\n\n" and not gate.is_open
            gate.open()
            rest = b"".join([chunk async for chunk in chunks])
            assert rest == b"data: second\n\n"
    finally:
        node.server.close()
        await node.core.aclose()


async def test_events_reach_an_http2_client_before_the_origin_sends_the_next(
    origin: ScriptedOrigin, dev_cert: DevCert
) -> None:
    import httpx

    gate = Gate()
    origin.routes["/events"] = event_stream(gate, "no-cache")
    node = await start_secure_edge(origin.url, dev_cert)
    try:
        async with (
            httpx.AsyncClient(http2=True, verify=str(dev_cert.ca)) as client,
            client.stream(
                "GET", f"https://localhost:{node.port}/events", headers={"Accept-Encoding": "gzip, br"}
            ) as resp,
        ):
            assert resp.http_version == "HTTP/2" and resp.status_code == 200
            assert resp.headers.get("content-encoding") is None
            chunks = resp.aiter_bytes()
            got = await within(chunks.__anext__(), "the first event while the origin holds the second", 10)
            assert got == b"data: first\n\n" and not gate.is_open
            gate.open()
            assert b"".join([chunk async for chunk in chunks]) == b"data: second\n\n"
    finally:
        await node.stop()


@pytest.mark.parametrize("backend", ["qh3", "aioquic"])
async def test_events_reach_an_http3_client_before_the_origin_sends_the_next(
    origin: ScriptedOrigin, dev_cert: DevCert, backend: str
) -> None:
    """aioquic's client hands each DATA frame over as it arrives (benchmarks/ws_clients)."""
    from benchmarks.ws_clients import h3_client

    gate = Gate()
    origin.routes["/events"] = event_stream(gate, "no-store")
    node = await start_secure_edge(origin.url, dev_cert, backend)
    try:
        async with h3_client("127.0.0.1", node.port, str(dev_cert.ca)) as client:
            stream = await client.stream_get("/events", [(b"accept-encoding", b"gzip, br")])
            assert stream.status == 200 and stream.header(b"content-encoding") is None
            got = await within(stream.recv(), "the first event while the origin holds the second", 10)
            assert got == b"data: first\n\n" and not gate.is_open
            gate.open()
            rest = b""
            while (chunk := await stream.recv()) is not None:
                assert isinstance(chunk, bytes)
                rest += chunk
            assert rest == b"data: second\n\n"
    finally:
        await node.stop()
