"""Per-client-address budgets on the fronts: the connection cap and the 429 rate limit."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from edge.wiring.devcert import DevCert
from tests.support.h3client import h3_client
from tests.support.nodes import Clock, start_edge, start_secure_edge
from tests.support.scripted_origin import ScriptedOrigin, fixed
from tests.support.waiting import eventually


async def closed_without_answer(port: int) -> bool:
    """Whether a new connection is closed by the node before it answers a request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /a HTTP/1.1\r\nHost: cdn.test\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(100), 10)
        return data == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_a_client_over_its_connection_cap_is_refused_and_a_close_frees_a_place(
    origin: ScriptedOrigin, clock: Clock
) -> None:
    origin.routes["/a"] = fixed(200, b"a", [("Cache-Control", "max-age=60")])
    node = await start_edge(origin.url, clock, max_client_connections="2")
    try:
        held = [await asyncio.open_connection("127.0.0.1", node.port) for _ in range(2)]
        for reader, writer in held:  # both are served
            writer.write(b"GET /a HTTP/1.1\r\nHost: cdn.test\r\n\r\n")
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        assert await closed_without_answer(node.port)
        assert node.core.clients.refused_connections == 1
        held[0][1].close()
        await held[0][1].wait_closed()
        await eventually(
            lambda: node.core.clients.connections.get("127.0.0.1") == 1, "the node saw the close"
        )
        assert not await closed_without_answer(node.port)
        held[1][1].close()
    finally:
        node.server.close()
        await node.core.aclose()


@pytest.mark.asyncio
async def test_over_the_rate_limit_every_protocol_answers_429_with_retry_after(
    origin: ScriptedOrigin, dev_cert: DevCert
) -> None:
    """A burst of 2 and a refill too slow to matter here: the third request of an address
    is refused, on HTTP/1.1, HTTP/2 and HTTP/3 alike, before the cache or the origin."""
    origin.routes["/a"] = fixed(200, b"a", [("Cache-Control", "max-age=60")])
    node = await start_secure_edge(origin.url, dev_cert, rate_limit="0.001", rate_burst="2")
    try:
        statuses: dict[str, list[int]] = {}
        retry: dict[str, str | None] = {}
        async with httpx.AsyncClient(base_url=node.h1_url) as h1:
            answers = [await h1.get("/a") for _ in range(3)]
            statuses["h1"] = [r.status_code for r in answers]
            retry["h1"] = answers[-1].headers.get("retry-after")
        node.core.clients.rate.buckets.clear()  # type: ignore[union-attr]  # a fresh budget per protocol
        async with httpx.AsyncClient(http2=True, verify=str(dev_cert.ca)) as h2:
            answers = [await h2.get(f"https://localhost:{node.port}/a") for _ in range(3)]
            assert answers[-1].http_version == "HTTP/2"
            statuses["h2"] = [r.status_code for r in answers]
            retry["h2"] = answers[-1].headers.get("retry-after")
        node.core.clients.rate.buckets.clear()  # type: ignore[union-attr]
        async with h3_client("127.0.0.1", node.port, str(dev_cert.ca)) as h3:
            h3_answers = [await h3.request("/a") for _ in range(3)]
            statuses["h3"] = [r.status for r in h3_answers]
            retry["h3"] = h3_answers[-1].header("retry-after")
    finally:
        await node.stop()
    assert statuses == {"h1": [200, 200, 429], "h2": [200, 200, 429], "h3": [200, 200, 429]}
    assert retry == {"h1": "1000", "h2": "1000", "h3": "1000"}
    assert origin.count("/a") == 3  # one miss per host the clients named; no refused one went upstream
    assert node.core.clients.refused_requests == 3
