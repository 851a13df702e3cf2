"""The ``hosts`` allow-list on every front (issue 17): a request for a host the node does not
serve gets 421 Misdirected Request with a short text/plain reason, never a stored object of
another site, on HTTP/1.1, HTTP/2 (own front and Hypercorn's through the ASGI adapter) and
HTTP/3."""

from __future__ import annotations

import httpx
import pytest

from edge.wiring.devcert import DevCert
from tests.support.h3client import h3_client
from tests.support.nodes import raw_exchange, start_edge, start_secure_edge
from tests.support.scripted_origin import ScriptedOrigin, fixed

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

CACHEABLE = [("Cache-Control", "max-age=300"), ("Content-Type", "text/plain")]
REASON = b"421 Misdirected Request: this node does not serve that host\n"


async def test_h1_serves_listed_hosts_and_refuses_others(origin: ScriptedOrigin) -> None:
    origin.routes["/a.txt"] = fixed(200, b"site a\n", CACHEABLE)
    node = await start_edge(origin.url, hosts="localhost,*.example.com")
    try:
        async with node.client() as client:
            miss = await client.get("/a.txt", headers={"Host": "www.example.com"})
            hit = await client.get("/a.txt", headers={"Host": "WWW.example.com:80"})
        assert (miss.status_code, hit.status_code, hit.headers["x-cache"]) == (200, 200, "HIT")
        async with node.client() as client:
            other = await client.get("/a.txt", headers={"Host": "evil.example"})
        assert other.status_code == 421 and other.content == REASON
        assert other.headers["content-type"] == "text/plain; charset=utf-8"
        # The fast hit path too: the object is cached, the Host decides before the key is made.
        for raw in (
            b"GET /a.txt HTTP/1.1\r\nHost: example.com\r\n\r\n",
            b"GET http://evil.example/a.txt HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
            b"GET /a.txt HTTP/1.0\r\n\r\n",
        ):
            answer = await raw_exchange(node.port, raw)
            assert answer.startswith(b"HTTP/1.1 421 Misdirected Request\r\n"), raw
            assert answer.endswith(REASON) and b"site a" not in answer
        assert origin.count("/a.txt") == 1
    finally:
        node.server.close()
        await node.core.aclose()


@pytest.mark.usefixtures("h2_engine")
@pytest.mark.parametrize("tls_front", ["own", "hypercorn"])
async def test_h2_and_h3_refuse_a_host_not_listed(
    origin: ScriptedOrigin, dev_cert: DevCert, tls_front: str
) -> None:
    origin.routes["/a.txt"] = fixed(200, b"site a\n", CACHEABLE)
    node = await start_secure_edge(origin.url, dev_cert, "qh3", hosts="localhost", tls_front=tls_front)
    try:
        async with node.h2_client() as client:
            served = await client.get("/a.txt")
            hit = await client.get("/a.txt")
            other = await client.get("/a.txt", headers={"Host": "evil.example"})
            after = await client.get("/a.txt")
        assert served.http_version == other.http_version == "HTTP/2"
        assert (served.status_code, hit.headers["x-cache"]) == (200, "HIT")
        assert other.status_code == 421 and other.content == REASON
        assert other.headers["content-type"] == "text/plain; charset=utf-8"
        assert after.status_code == 200, "the stream is refused, not the connection"
        async with h3_client("127.0.0.1", node.port, str(node.cert.ca)) as h3:
            ok = await h3.request("/a.txt", authority=f"localhost:{node.port}")
            refused = await h3.request("/a.txt", authority="evil.example")
        assert ok.status == 200 and bytes(ok.body) == b"site a\n" and ok.header("x-cache") == "HIT"
        assert refused.status == 421 and bytes(refused.body) == REASON
        async with httpx.AsyncClient(base_url=node.h1_url) as h1:
            assert (await h1.get("/a.txt", headers={"Host": "evil.example"})).status_code == 421
        assert origin.count("/a.txt") == 1
    finally:
        await node.stop()
