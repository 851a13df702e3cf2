"""Issue 17: odd upstream framing, ranges over slices, HEAD updating stored fields.

Real servers on loopback: a scripted origin sends the exact bytes, an edge on the
HTTP/1.1 front relays them.
"""

from __future__ import annotations

import asyncio

import pytest

from edge.upstream.client import UpstreamPool, UpstreamTarget
from tests.support.nodes import Edge, raw_exchange
from tests.support.scripted_origin import OriginConnection, ScriptedOrigin, Seen

pytestmark = pytest.mark.asyncio

BODY = b"".join(b"line %04d of a body framed by the close\n" % i for i in range(2000))


def coded_until_close(coding: bytes, body: bytes = BODY, cache: bytes = b"max-age=60") -> object:
    """A route answering with ``Transfer-Encoding: coding`` and a body ended by closing."""

    async def route(seen: Seen, conn: OriginConnection) -> None:
        conn.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: "
            + coding
            + b"\r\nCache-Control: "
            + cache
            + b"\r\nContent-Type: text/plain\r\n\r\n"
        )
        for i in range(0, len(body), 7000):
            await conn.send(body[i : i + 7000])
            await asyncio.sleep(0)
        conn.close()

    return route


async def test_upstream_client_reads_a_transfer_coded_body_until_the_close(origin: ScriptedOrigin) -> None:
    origin.routes["/foo"] = coded_until_close(b"foo")  # type: ignore[assignment]
    pool = UpstreamPool(UpstreamTarget("127.0.0.1", origin.port, b"127.0.0.1"), read_timeout=5)
    resp = await pool.request(b"GET", b"/foo", [(b"Host", b"127.0.0.1")])
    got = b"".join([c async for c in resp.chunks()])
    assert got == BODY
    assert resp.complete and resp.close_delimited
    resp.close()
    pool.close()


@pytest.mark.parametrize("coding", [b"foo", b"chunked, foo", b"gzip"])
async def test_a_transfer_coding_other_than_chunked_is_read_until_close_and_relayed_whole(
    origin: ScriptedOrigin, edge: Edge, coding: bytes
) -> None:
    origin.routes["/coded"] = coded_until_close(coding)  # type: ignore[assignment]
    raw = await raw_exchange(
        edge.port, b"GET /coded HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"
    )
    head, _, rest = raw.partition(b"\r\n\r\n")
    fields = head.lower()
    assert head.startswith(b"HTTP/1.1 200 ")
    # the node's own framing (chunked to an HTTP/1.1 client), never the upstream's coding
    assert b"transfer-encoding: chunked" in fields
    assert coding not in fields.replace(b"transfer-encoding: chunked", b"")
    assert _dechunk(rest) == BODY
    async with edge.client() as client:
        again = await client.get("/coded")
    assert again.content == BODY
    assert "transfer-encoding" not in {k.lower() for k, v in again.headers.items() if v.lower() != "chunked"}
    # not stored: a close-delimited, transfer-coded body is never kept (see edge/cache/storability.py)
    assert origin.count("/coded") == 2
    assert "detail=transfer-coded" in again.headers["cache-status"]


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out += data[:size]
        data = data[size + 2 :]
