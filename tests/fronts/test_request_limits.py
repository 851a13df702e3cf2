"""Every front refuses an over-long target (414), too many fields or too large a field block
(431), a body declared too large (413) and CONNECT (405) with the same status and the same
body text as the HTTP/1.1 front, which the node answers over loopback here as the reference.

HTTP/3 runs on both QUIC backends with aioquic's client; HTTP/2 on both HTTPS fronts (the
own one and Hypercorn through the ASGI adapter) with httpx, and with a raw h2 client for
what httpx cannot send. After each refusal the same connection serves a good request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from edge import config as edge_config
from edge.wiring.devcert import DevCert
from tests.fronts.test_h2_adapter import events_until, get, raw_h2
from tests.support.h3client import H3ClientProtocol, H3Response, h3_client
from tests.support.nodes import SecureEdge, raw_exchange, start_secure_edge
from tests.support.scripted_origin import ScriptedOrigin, fixed

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

DEFAULTS = edge_config.load(None, {}, {"upstream": "http://127.0.0.1:9"})
MAX_BLOCK = DEFAULTS.max_header_bytes + DEFAULTS.max_request_line


@dataclass(frozen=True)
class Case:
    path: str
    headers: tuple[tuple[str, str], ...]
    status: int
    why: bytes


CASES = {
    "target-too-long": Case("/" + "a" * (DEFAULTS.max_request_line + 100), (), 414, b"too long"),
    "too-many-fields": Case(
        "/ok", tuple((f"x-field-{i}", "1") for i in range(DEFAULTS.max_header_count + 50)), 431, b"too many"
    ),
    # Over the limit by 1000 bytes: under what the own HTTP/2 front advertises as
    # SETTINGS_MAX_HEADER_LIST_SIZE (the limit plus 32 bytes a field), so it is answered.
    "block-too-large": Case("/ok", (("x-big", "b" * (MAX_BLOCK + 1000)),), 431, b"too large"),
}


@pytest.fixture(autouse=True)
def routes(origin: ScriptedOrigin) -> None:
    origin.routes["/ok"] = fixed(200, b"fine", [("Cache-Control", "max-age=60")])


async def h1_answer(node: SecureEdge, head: bytes) -> tuple[int, bytes]:
    """Status and body the node's cleartext HTTP/1.1 front gives ``head``: the reference."""
    port = urlsplit(node.h1_url).port
    assert port is not None
    out = await raw_exchange(port, head)
    status_line, _, rest = out.partition(b"\r\n")
    return int(status_line.split(b" ")[1]), rest.split(b"\r\n\r\n", 1)[1]


def h1_request(case: Case, method: str = "GET", extra: bytes = b"") -> bytes:
    fields = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in case.headers)
    return b"%s %s HTTP/1.1\r\nHost: localhost\r\n%s%s\r\n" % (
        method.encode(),
        case.path.encode(),
        fields,
        extra,
    )


# -- HTTP/3, on qh3 and aioquic -----------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
async def test_h3_refuses_like_h1(
    origin: ScriptedOrigin, secure_edge: SecureEdge, backend: str, name: str
) -> None:
    case = CASES[name]
    async with h3_client("127.0.0.1", secure_edge.port, str(secure_edge.cert.ca)) as client:
        refused = await client.request(case.path, headers=list(case.headers))
        head = await client.request(case.path, method="HEAD", headers=list(case.headers))
        good = await client.request("/ok")
    status, body = await h1_answer(secure_edge, h1_request(case))
    assert (status, case.why in body) == (case.status, True), body
    assert (refused.status, bytes(refused.body)) == (status, body)
    assert refused.header("content-type") == "text/plain; charset=utf-8"
    assert (head.status, bytes(head.body), head.header("content-length")) == (status, b"", str(len(body)))
    assert (good.status, bytes(good.body)) == (200, b"fine")  # the connection goes on
    assert origin.count("/ok") == 1 and len(origin.seen) == 1


async def h3_raw(client: H3ClientProtocol, pairs: list[tuple[bytes, bytes]], body: bytes = b"") -> H3Response:
    """Send a field block as given (the helper's ``request`` always sends ``:path``)."""
    stream_id = client._quic.get_next_available_stream_id()
    done: asyncio.Future[H3Response] = asyncio.get_running_loop().create_future()
    client.pending[stream_id] = (H3Response(), done)
    client.h3.send_headers(stream_id, pairs, end_stream=not body)
    if body:
        client.h3.send_data(stream_id, body, end_stream=True)
    client.transmit()
    return await asyncio.wait_for(done, 10)


async def test_h3_refuses_connect_like_h1(origin: ScriptedOrigin, secure_edge: SecureEdge) -> None:
    async with h3_client("127.0.0.1", secure_edge.port, str(secure_edge.cert.ca)) as client:
        refused = await h3_raw(client, [(b":method", b"CONNECT"), (b":authority", b"example.com:443")])
        good = await client.request("/ok")
    status, body = await h1_answer(
        secure_edge, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    )
    assert status == 405 and b"CONNECT" in body
    assert (refused.status, bytes(refused.body)) == (status, body)
    assert good.status == 200


async def test_h3_refuses_a_declared_body_too_large_at_its_head(
    origin: ScriptedOrigin, dev_cert: DevCert, backend: str
) -> None:
    """413 as soon as the field block arrives, the upload is asked to stop, and the rest
    of it is dropped; the connection serves the next request."""
    node = await start_secure_edge(origin.url, dev_cert, backend, max_request_body="1KiB")
    try:
        async with h3_client("127.0.0.1", node.port, str(node.cert.ca)) as client:
            refused = await client.request(
                "/upload", method="POST", headers=[("content-length", "20000")], body=b"u" * 20000
            )
            good = await client.request("/ok")
        upload = Case("/upload", (("Content-Length", "20000"),), 413, b"body")
        status, body = await h1_answer(node, h1_request(upload, "POST"))
    finally:
        await node.stop()
    assert status == 413 and b"body" in body
    assert (refused.status, bytes(refused.body)) == (status, body)
    assert good.status == 200
    assert origin.count("/upload") == 0


async def test_h3_request_ended_by_trailers_is_answered(
    origin: ScriptedOrigin, secure_edge: SecureEdge
) -> None:
    """A request whose body is followed by trailers ends with the trailers' HEADERS frame."""

    async def echo(seen, conn):  # type: ignore[no-untyped-def]
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(seen.body) + seen.body)

    origin.routes["/echo"] = echo
    async with h3_client("127.0.0.1", secure_edge.port, str(secure_edge.cert.ca)) as client:
        stream_id = client._quic.get_next_available_stream_id()
        done: asyncio.Future[H3Response] = asyncio.get_running_loop().create_future()
        client.pending[stream_id] = (H3Response(), done)
        head = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", b"/echo"),
        ]
        client.h3.send_headers(stream_id, head)
        client.h3.send_data(stream_id, b"posted", end_stream=False)
        client.h3.send_headers(stream_id, [(b"x-trailer", b"1")], end_stream=True)
        client.transmit()
        resp = await asyncio.wait_for(done, 10)
    assert (resp.status, bytes(resp.body)) == (200, b"posted")


# -- HTTP/2, on the own front and on Hypercorn (the ASGI adapter) ----------------------------


@pytest.fixture(params=["own", "hypercorn"])
def tls_front(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def tls_edge(origin: ScriptedOrigin, dev_cert: DevCert, tls_front: str) -> AsyncIterator[SecureEdge]:
    node = await start_secure_edge(origin.url, dev_cert, "qh3", tls_front=tls_front)
    yield node
    await node.stop()


@pytest.mark.usefixtures("h2_engine")
@pytest.mark.parametrize("name", list(CASES))
async def test_h2_refuses_like_h1(origin: ScriptedOrigin, tls_edge: SecureEdge, name: str) -> None:
    case = CASES[name]
    async with tls_edge.h2_client() as client:
        refused = await client.get(case.path, headers=list(case.headers))
        head = await client.head(case.path, headers=list(case.headers))
        good = await client.get("/ok")
    status, body = await h1_answer(tls_edge, h1_request(case))
    assert (status, case.why in body) == (case.status, True), body
    assert refused.http_version == good.http_version == "HTTP/2"
    assert (refused.status_code, refused.content) == (status, body)
    assert refused.headers["content-type"] == "text/plain; charset=utf-8"
    assert (head.status_code, head.content, head.headers["content-length"]) == (status, b"", str(len(body)))
    assert (good.status_code, good.content) == (200, b"fine")  # the connection goes on
    assert origin.count("/ok") == 1 and len(origin.seen) == 1


@pytest.mark.usefixtures("h2_engine")
async def test_own_h2_front_refuses_connect_like_h1(origin: ScriptedOrigin, dev_cert: DevCert) -> None:
    import h2.events

    node = await start_secure_edge(origin.url, dev_cert, tls_front="own")
    try:
        reader, writer, conn = await raw_h2(node)
        conn.send_headers(1, [(b":method", b"CONNECT"), (b":authority", b"example.com:443")], end_stream=True)
        conn.send_headers(3, get(node, b"/ok"), end_stream=True)
        writer.write(conn.data_to_send())
        ended: set[int] = set()

        def both_ended(event: object) -> bool:
            if isinstance(event, h2.events.StreamEnded):
                ended.add(event.stream_id)
            return ended == {1, 3}

        seen = await events_until(reader, writer, conn, both_ended)
        writer.close()
        status, body = await h1_answer(
            node, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
        )
    finally:
        await node.stop()
    answers = {
        e.stream_id: dict(e.headers)[b":status"] for e in seen if isinstance(e, h2.events.ResponseReceived)
    }
    refused = b"".join(e.data for e in seen if isinstance(e, h2.events.DataReceived) and e.stream_id == 1)
    assert status == 405
    assert answers == {1: b"405", 3: b"200"}
    assert refused == body
