"""Bad input gets a clear 4xx with a reason and a closed connection; the node keeps serving."""

from __future__ import annotations

import pytest

from tests.edge.conftest import Edge, raw_exchange
from tests.edge.scripted_origin import ScriptedOrigin, fixed

pytestmark = pytest.mark.asyncio


@pytest.fixture
def routes(origin: ScriptedOrigin) -> None:
    origin.routes["/ok"] = fixed(200, b"fine", [("Cache-Control", "max-age=60")])


async def still_serves(edge: Edge) -> None:
    async with edge.client() as client:
        resp = await client.get("/ok")
    assert resp.status_code == 200 and resp.content == b"fine"


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431, b"too large"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, b"too long"),
        (b"GET /ok HTTP/1.1\r\nHost: t\r\n" + b"X-A: 1\r\n" * 150 + b"\r\n", 431, b"too many"),
        (b"GARBAGE\r\n\r\n", 400, b""),
        (b"GET /ok HTTP/9.9\r\nHost: t\r\n\r\n", 400, b""),
        (b"GE(T /ok HTTP/1.1\r\nHost: t\r\n\r\n", 400, b"method"),
        (b"GET /ok HTTP/1.1\r\n\r\n", 400, b"Host"),
        (b"GET /ok HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, b"Host"),
        (b"GET /ok HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n", 400, b""),
        (b"POST /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 999999999999\r\n\r\n", 413, b"body"),
        (
            b"POST /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            b"",
        ),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405, b"CONNECT"),
    ],
    ids=[
        "header-too-large",
        "target-too-long",
        "too-many-fields",
        "garbage",
        "bad-version",
        "invalid-method",
        "no-host",
        "two-hosts",
        "space-in-field-name",
        "body-too-large",
        "smuggling-cl-te",
        "connect",
    ],
)
async def test_bad_request_rejected_and_node_keeps_serving(
    edge: Edge, routes: None, request_bytes: bytes, status: int, reason: bytes
) -> None:
    out = await raw_exchange(edge.port, request_bytes)
    assert status_of(out) == status, out[:200]
    assert b"Connection: close" in out
    body = out.split(b"\r\n\r\n", 1)[1]
    assert reason in body
    await still_serves(edge)


async def test_header_sent_slowly_in_pieces_is_bounded(edge: Edge, routes: None) -> None:
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Big: ")
    for _ in range(100):
        writer.write(b"b" * 1000)
        await writer.drain()
    out = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert status_of(out) == 431
    await still_serves(edge)


async def test_http10_without_host_is_accepted(edge: Edge, routes: None) -> None:
    out = await raw_exchange(edge.port, b"GET /ok HTTP/1.0\r\n\r\n")
    assert status_of(out) == 200 and out.endswith(b"fine")


async def test_absolute_form_target(edge: Edge, routes: None, origin: ScriptedOrigin) -> None:
    out = await raw_exchange(
        edge.port, b"GET http://127.0.0.1/ok HTTP/1.1\r\nHost: ignored\r\nConnection: close\r\n\r\n"
    )
    assert status_of(out) == 200 and out.endswith(b"fine")
    assert origin.seen[-1].target == b"/ok"
