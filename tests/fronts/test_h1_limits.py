"""Bad input gets a clear 4xx with a reason and a closed connection; the node keeps serving."""

from __future__ import annotations

import pytest

from tests.support.nodes import Edge, raw_exchange
from tests.support.scripted_origin import Gate, ScriptedOrigin, fixed
from tests.support.waiting import WAIT, unchanged_for, within

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
    out = await within(reader.read(), "the 431 and the close")
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


@pytest.mark.parametrize("host", [b"example.com/foo", b"a b", b"x?y", b"user@host", b"h#f"])
async def test_invalid_host_is_refused(edge: Edge, routes: None, host: bytes) -> None:
    out = await raw_exchange(edge.port, b"GET /bar HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert status_of(out) == 400 and b"Host" in out
    await still_serves(edge)


async def test_absolute_form_authority_replaces_host_upstream(
    edge: Edge, routes: None, origin: ScriptedOrigin
) -> None:
    raw = b"GET http://victim.example/ok HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n"
    out = await raw_exchange(edge.port, raw)
    assert status_of(out) == 200
    assert origin.seen[-1].header(b"host") == b"victim.example"
    assert [k for k, _ in origin.seen[-1].headers].count(b"Host") == 1


async def test_pipelined_requests_before_a_bad_one_are_answered_first(
    edge: Edge, routes: None, origin: ScriptedOrigin
) -> None:
    import asyncio
    import re

    gate = Gate()
    origin.routes["/slow"] = fixed(200, b"slow", [("Cache-Control", "max-age=60")], gate=gate)
    raw = b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /ok HTTP/1.1\r\nHost: t\r\n\r\nGARBAGE\r\n\r\n"
    exchange = asyncio.ensure_future(raw_exchange(edge.port, raw, timeout=WAIT))
    # /slow reached the origin: the edge has read the whole write, GARBAGE included, and its 400
    # is ready while /slow's answer is held. Only then may /slow complete.
    await gate.reached()
    gate.open()
    out = await exchange

    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", out)]
    assert statuses[:2] == [200, 200] and statuses[2] in (400, 501) and len(statuses) == 3
    assert out.index(b"slow") < out.index(b"fine") < out.index(b"Connection: close")


async def test_large_post_then_get_on_one_connection(
    edge: Edge, routes: None, origin: ScriptedOrigin
) -> None:
    from tests.support.scripted_origin import OriginConnection, Seen, response

    async def echo(seen: Seen, conn: OriginConnection) -> None:
        conn.write(response(200, b"%d" % len(seen.body)))

    origin.routes["/post"] = echo
    body = b"x" * 200_000
    raw = b"POST /post HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    raw += b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    out = await raw_exchange(edge.port, raw)
    assert out.count(b"HTTP/1.1 200 OK") == 2, out[-300:]
    assert b"200000" in out and out.endswith(b"fine")


async def test_a_thousand_pipelined_hits_in_one_write(edge: Edge, routes: None) -> None:
    await still_serves(edge)  # /ok is now cached
    request = b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % edge.port
    out = await raw_exchange(
        edge.port, request * 999 + request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    )
    assert out.count(b"HTTP/1.1 200 OK") == 1000
    assert b"431" not in out


async def test_100_continue_is_never_sent_inside_another_response(
    edge: Edge, routes: None, origin: ScriptedOrigin
) -> None:
    import asyncio

    from tests.support.scripted_origin import OriginConnection, Seen, response

    async def echo(seen: Seen, conn: OriginConnection) -> None:
        conn.write(response(200, b"got:" + seen.body))

    gate = Gate()
    origin.routes["/slow"] = fixed(200, b"A" * 5000, [("Cache-Control", "no-store")], gate=gate)
    origin.routes["/up"] = echo
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(
        b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"
        b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    # /slow reached the origin: the edge has read the POST's head too (one write), and any
    # 100 Continue it sends for it now would land before /slow's response, which is held.
    await gate.reached()
    gate.open()
    writer.write(b"BBBBB")
    out = await within(reader.read(), "both responses")
    writer.close()
    first_body_end = out.index(b"A" * 5000) + 5000
    assert b"100 Continue" not in out[:first_body_end]
    assert out.endswith(b"got:BBBBB")


async def test_client_that_never_reads_stops_the_edge_reading(
    edge: Edge, routes: None, origin: ScriptedOrigin
) -> None:
    import asyncio

    origin.routes["/big"] = fixed(200, b"z" * 16384, [("Cache-Control", "max-age=60")])
    async with edge.client() as client:
        await client.get("/big")
    request = b"GET /big HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Pad: %s\r\n\r\n" % (edge.port, b"p" * 2000)
    _reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)

    async def write_until_held_back(limit: int) -> int:
        """Requests written before the edge stopped reading them (``limit`` if it never did)."""
        for sent in range(limit):
            writer.write(request)
            drain = asyncio.ensure_future(writer.drain())

            def progress(drain: asyncio.Future[None] = drain) -> tuple[bool, int]:
                return drain.done(), writer.transport.get_write_buffer_size()

            while not drain.done():  # the edge is not reading as fast as we write: did it stop?
                if await unchanged_for(progress):
                    drain.cancel()
                    return sent
            await drain
        return limit

    sent = await within(write_until_held_back(20000), "the edge neither read nor stopped reading")
    assert sent < 20000, "the edge kept reading (and buffering responses) for a client that reads nothing"
    writer.transport.abort()
    await still_serves(edge)
