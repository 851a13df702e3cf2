"""HTTP/2 (and HTTP/1.1) over TLS, on both fronts (our own and Hypercorn's), checked with httpx."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import brotli  # type: ignore[import-untyped]
import httpx
import pytest
import pytest_asyncio

from edge.wiring.devcert import DevCert
from tests.fronts.test_h3_adapter import CACHEABLE, blob
from tests.support.nodes import SecureEdge, start_secure_edge
from tests.support.scripted_origin import ScriptedOrigin, fixed

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60), pytest.mark.usefixtures("h2_engine")]


@pytest.fixture
def backend() -> str:
    return "qh3"  # the QUIC side is not under test here; one backend is enough


@pytest.fixture(params=["own", "hypercorn"])
def tls_front(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def secure_edge(
    origin: ScriptedOrigin, dev_cert: DevCert, backend: str, tls_front: str
) -> AsyncIterator[SecureEdge]:
    node = await start_secure_edge(
        origin.url, dev_cert, backend, read_timeout="5", connect_timeout="1", tls_front=tls_front
    )
    yield node
    await node.stop()


async def test_h2_miss_then_hit_alt_svc(origin: ScriptedOrigin, secure_edge: SecureEdge) -> None:
    body = b"hello over h2\n"
    origin.routes["/hello.txt"] = fixed(200, body, [*CACHEABLE, ("Content-Type", "text/plain")])
    async with secure_edge.h2_client() as client:
        miss = await client.get("/hello.txt")
        hit = await client.get("/hello.txt")
        head = await client.head("/hello.txt")
    assert miss.http_version == hit.http_version == "HTTP/2"
    assert (miss.status_code, miss.content, miss.headers["x-cache"]) == (200, body, "MISS")
    assert (hit.status_code, hit.content, hit.headers["x-cache"]) == (200, body, "HIT")
    assert hit.headers["cache-status"].startswith("edge; hit; ttl=")
    assert "age" in hit.headers
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(body))
    for resp in (miss, hit):
        assert resp.headers["alt-svc"] == f'h3=":{secure_edge.port}"; ma=86400'
        assert len(resp.headers.get_list("date")) == 1  # Hypercorn's own Date is switched off
    assert origin.count("/hello.txt") == 1


@pytest.mark.parametrize("transport", ["aiofastnet", "asyncio"])
async def test_both_tls_transports_serve_h2_and_h1(
    origin: ScriptedOrigin, dev_cert: DevCert, transport: str
) -> None:
    """``tls_transport``: aiofastnet (the default) and the loop's own SSL transport, the
    fallback, each serve HTTP/2 and HTTP/1.1 (handed over by ALPN) on the own front; a 256 KiB
    body proves large writes arrive whole."""
    body = blob(256 * 1024)
    origin.routes["/t.bin"] = fixed(200, body, CACHEABLE)
    node = await start_secure_edge(origin.url, dev_cert, tls_front="own", tls_transport=transport)
    try:
        async with node.h2_client() as client:
            miss, hit = await client.get("/t.bin"), await client.get("/t.bin")
        async with httpx.AsyncClient(verify=node.ssl(), http2=False) as client:
            h1 = await client.get(node.https_url + "/t.bin")
    finally:
        await node.stop()
    assert (miss.http_version, hit.http_version, h1.http_version) == ("HTTP/2", "HTTP/2", "HTTP/1.1")
    assert miss.content == hit.content == h1.content == body
    assert (hit.headers["x-cache"], h1.headers["x-cache"]) == ("HIT", "HIT")


async def test_h1_over_tls_alpn(origin: ScriptedOrigin, secure_edge: SecureEdge) -> None:
    origin.routes["/a.txt"] = fixed(200, b"a", CACHEABLE)
    async with httpx.AsyncClient(verify=secure_edge.ssl(), http2=False) as client:
        resp = await client.get(secure_edge.https_url + "/a.txt")
    assert resp.http_version == "HTTP/1.1" and resp.content == b"a"
    assert "alt-svc" in resp.headers


async def test_h2_multi_mib_identical_bytes(origin: ScriptedOrigin, secure_edge: SecureEdge) -> None:
    body = blob(5 * 1024 * 1024 + 7)
    origin.routes["/big.bin"] = fixed(200, body, [*CACHEABLE, ("Content-Type", "application/octet-stream")])
    digest = hashlib.sha256(body).hexdigest()
    async with secure_edge.h2_client() as client:
        miss = await client.get("/big.bin")
        hit = await client.get("/big.bin")
    for resp, kind in ((miss, "MISS"), (hit, "HIT")):
        assert resp.status_code == 200 and resp.headers["x-cache"] == kind
        assert hashlib.sha256(resp.content).hexdigest() == digest


async def test_h2_range_same_as_h1(origin: ScriptedOrigin, secure_edge: SecureEdge) -> None:
    body = blob(300_000)
    origin.routes["/r.bin"] = fixed(200, body, [*CACHEABLE, ("Content-Type", "application/octet-stream")])
    async with secure_edge.h2_client() as client:
        await client.get("/r.bin")
        part = await client.get("/r.bin", headers={"Range": "bytes=1000-1999"})
    async with httpx.AsyncClient(base_url=secure_edge.h1_url) as h1:
        await h1.get("/r.bin")
        ref = await h1.get("/r.bin", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == ref.status_code == 206
    assert part.content == body[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(body)}"


async def test_h2_brotli_same_as_h1(origin: ScriptedOrigin, secure_edge: SecureEdge) -> None:
    text = (
        b"body { color: #123456; margin: 0 auto; }\n" * 300
    )  # under 16 KiB: compressed inline on the first hit
    headers = [*CACHEABLE, ("Content-Type", "text/css"), ("Vary", "Accept-Encoding")]
    origin.routes["/s.css"] = fixed(200, text, headers)
    raw = {"Accept-Encoding": "br"}
    async with secure_edge.h2_client() as client:
        await client.get("/s.css", headers=raw)
        async with client.stream("GET", "/s.css", headers=raw) as hit:
            encoded = b"".join([chunk async for chunk in hit.aiter_raw()])
    async with httpx.AsyncClient(base_url=secure_edge.h1_url) as h1:
        await h1.get("/s.css", headers=raw)
        ref = await h1.get("/s.css", headers=raw)
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers.get("content-encoding") == ref.headers.get("content-encoding") == "br"
    assert brotli.decompress(encoded) == text


async def test_h2_request_body_and_413(origin: ScriptedOrigin, dev_cert: DevCert, tls_front: str) -> None:
    async def echo(seen, conn):  # type: ignore[no-untyped-def]
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(seen.body) + seen.body)

    origin.routes["/echo"] = echo
    node = await start_secure_edge(origin.url, dev_cert, max_request_body="40000", tls_front=tls_front)
    try:
        async with node.h2_client() as client:
            ok = await client.post("/echo", content=b"y" * 30_000)
            too_big = await client.post("/echo", content=b"z" * 50_000)
            huge = await client.post("/echo", content=b"z" * 3_000_000)  # past the first window
    finally:
        await node.stop()
    assert ok.status_code == 200 and ok.content == b"y" * 30_000
    assert origin.seen[-1].header(b"x-forwarded-proto") == b"https"
    assert too_big.status_code == 413 and huge.status_code == 413
    assert len(origin.seen) == 1


async def test_own_front_alpn_http11_raw(origin: ScriptedOrigin, dev_cert: DevCert) -> None:
    """ALPN http/1.1 on the own front: the cleartext fast front speaks https (keys, default port)."""
    body = b"over tls h1\n"
    origin.routes["/t.txt"] = fixed(200, body, CACHEABLE)
    node = await start_secure_edge(origin.url, dev_cert, tls_front="own")
    try:
        ctx = node.ssl()
        ctx.set_alpn_protocols(["http/1.1"])
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", node.port, ssl=ctx, server_hostname="localhost"
        )
        ssl_object = writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        assert ssl_object.selected_alpn_protocol() == "http/1.1"
        request = b"GET /t.txt HTTP/1.1\r\nHost: localhost:443\r\n\r\n"
        heads = []
        for _ in range(2):  # miss then hit, on one kept-alive connection
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if line)
            length = int(fields[b"Content-Length"])
            assert await reader.readexactly(length) == body
            heads.append(head)
        writer.close()
        # The https key of localhost:443 is the one an h2 request for localhost finds.
        assert node.core.store.get(b"https://localhost/t.txt") is not None
    finally:
        await node.stop()
    assert heads[0].startswith(b"HTTP/1.1 200") and b"X-Cache: MISS" in heads[0]
    assert heads[1].startswith(b"HTTP/1.1 200") and b"X-Cache: HIT" in heads[1]
    assert origin.count("/t.txt") == 1
    assert origin.seen[-1].header(b"x-forwarded-proto") == b"https"


async def test_h2_invalid_host_is_refused(
    origin: ScriptedOrigin, secure_edge: SecureEdge, h2_engine: str
) -> None:
    """A host with a path in it would alias another URL's cache key: 400 on both fronts
    (nghttp2 resets the stream first: a malformed request, RFC 9113 §8.1.1)."""
    origin.routes["/bar"] = fixed(200, b"bar", CACHEABLE)
    async with secure_edge.h2_client() as client:
        if h2_engine == "ngh2":  # the own front on nghttp2 (Hypercorn runs with "h2" only)
            with pytest.raises(httpx.RemoteProtocolError, match="error_code:1"):
                await client.get("/bar", headers={"Host": "localhost/foo"})
        else:
            assert (await client.get("/bar", headers={"Host": "localhost/foo"})).status_code == 400
        good = await client.get("/bar")
    assert good.status_code == 200 and good.content == b"bar"
    assert origin.count("/bar") == 1


async def raw_h2(node: SecureEdge) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Any]:
    """A TLS connection to the own front with an h2 client that sends what it is told."""
    import h2.config
    import h2.connection

    ctx = node.ssl()
    ctx.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", node.port, ssl=ctx, server_hostname="localhost"
    )
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    return reader, writer, conn


async def events_until(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Any, done: Callable[[Any], bool]
) -> list[Any]:
    """Read and acknowledge until ``done(event)``; every event seen, in order."""
    import h2.events

    seen: list[Any] = []
    while True:
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data, f"the edge closed the connection after {seen}"
        for event in conn.receive_data(data):
            seen.append(event)
            if isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if done(event):
                writer.write(conn.data_to_send())
                return seen
        writer.write(conn.data_to_send())


@contextlib.contextmanager
def loop_errors() -> Iterator[list[dict[str, object]]]:
    """What reaches the running loop's exception handler meanwhile (uvloop's fatal errors)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        yield reported
    finally:
        loop.set_exception_handler(previous)


def get(node: SecureEdge, path: bytes, method: bytes = b"GET") -> list[tuple[bytes, bytes]]:
    """Request fields as httpx sends them to ``node``: the same cache key as its requests."""
    return [
        (b":method", method),
        (b":scheme", b"https"),
        (b":authority", b"localhost:%d" % node.port),
        (b":path", path),
    ]


async def test_own_front_requests_then_goaway_in_one_read_close_quietly(
    origin: ScriptedOrigin, dev_cert: DevCert, caplog: pytest.LogCaptureFixture
) -> None:
    """h2load ends every run with its last requests and a GOAWAY in one write.

    h2 applies the GOAWAY before the front sees the requests, so they cannot be answered
    any more: the connection must close cleanly, not raise out of data_received (which
    uvloop reports as a fatal SSL protocol error with a traceback, once per connection).
    The node keeps serving.
    """
    origin.routes["/g.txt"] = fixed(200, b"g", CACHEABLE)
    node = await start_secure_edge(origin.url, dev_cert, tls_front="own")
    try:
        with loop_errors() as reported:
            async with node.h2_client() as client:  # fill the cache: the requests below are hits
                assert (await client.get("/g.txt")).status_code == 200
            reader, writer, conn = await raw_h2(node)
            for stream_id in (1, 3, 5):
                conn.send_headers(stream_id, get(node, b"/g.txt"), end_stream=True)
            conn.close_connection()
            writer.write(conn.data_to_send())
            await writer.drain()
            rest = await asyncio.wait_for(reader.read(), 10)  # read to EOF: the edge closed
            assert isinstance(rest, bytes)
            writer.close()
            async with node.h2_client() as client:
                again = await client.get("/g.txt")
    finally:
        await node.stop()
    assert again.status_code == 200 and again.content == b"g"
    assert origin.count("/g.txt") == 1  # the raw requests were hits, answered synchronously
    assert reported == []
    # The client said goodbye: nothing for an operator to look at (a real failure warns).
    assert [r for r in caplog.records if r.name == "edge.fronts.h2" and r.levelno >= logging.WARNING] == []


async def test_own_front_a_stream_reset_in_the_same_read_costs_only_that_stream(
    origin: ScriptedOrigin, dev_cert: DevCert
) -> None:
    """A browser cancelling a request: HEADERS then RST_STREAM for it, in one read, with a
    second request beside it. h2 has closed the first stream before the front sees the
    request; the front forgets it and answers the second on the same connection."""
    import h2.errors
    import h2.events

    origin.routes["/r.txt"] = fixed(200, b"r", CACHEABLE)
    node = await start_secure_edge(origin.url, dev_cert, tls_front="own")
    try:
        with loop_errors() as reported:
            async with node.h2_client() as client:
                assert (await client.get("/r.txt")).status_code == 200
            reader, writer, conn = await raw_h2(node)
            conn.send_headers(1, get(node, b"/r.txt"), end_stream=True)
            conn.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
            conn.send_headers(3, get(node, b"/r.txt"), end_stream=True)
            writer.write(conn.data_to_send())
            seen = await events_until(
                reader, writer, conn, lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == 3
            )
            writer.close()
    finally:
        await node.stop()
    body = b"".join(e.data for e in seen if isinstance(e, h2.events.DataReceived) and e.stream_id == 3)
    assert body == b"r"
    assert origin.count("/r.txt") == 1
    assert reported == []


async def test_own_front_answers_a_malformed_request_400_and_keeps_the_connection(
    origin: ScriptedOrigin, dev_cert: DevCert, h2_engine: str
) -> None:
    """RFC 9113 §8.1.1: a malformed request is answered (400, naming the rule); the
    connection and its other streams go on. The h2 library would have closed it all.
    nghttp2 checks the request first and resets the stream (PROTOCOL_ERROR): also §8.1.1."""
    import h2.events

    origin.routes["/m.txt"] = fixed(200, b"m", CACHEABLE)
    node = await start_secure_edge(origin.url, dev_cert, tls_front="own")
    try:
        reader, writer, conn = await raw_h2(node)
        conn.send_headers(1, [*get(node, b"/m.txt"), (b"connection", b"keep-alive")], end_stream=True)
        conn.send_headers(3, get(node, b"/m.txt"), end_stream=True)
        writer.write(conn.data_to_send())
        ended: set[int] = set()

        def both_ended(event: Any) -> bool:
            if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                ended.add(event.stream_id)
            return ended == {1, 3}

        seen = await events_until(reader, writer, conn, both_ended)
        writer.close()
    finally:
        await node.stop()
    status = {
        e.stream_id: dict(e.headers)[b":status"] for e in seen if isinstance(e, h2.events.ResponseReceived)
    }
    bodies = {
        sid: b"".join(e.data for e in seen if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)
        for sid in (1, 3)
    }
    if h2_engine == "ngh2":
        resets = [(e.stream_id, e.error_code) for e in seen if isinstance(e, h2.events.StreamReset)]
        assert status == {3: b"200"} and resets == [(1, 1)]  # PROTOCOL_ERROR
        assert bodies == {1: b"", 3: b"m"}
    else:
        assert status == {1: b"400", 3: b"200"}
        assert bodies == {1: b"400 Bad Request: malformed request: connection-specific field\n", 3: b"m"}
    assert origin.count("/m.txt") == 1


async def test_own_front_refuses_a_path_not_in_origin_form_and_bad_trailers(
    origin: ScriptedOrigin, dev_cert: DevCert, h2_engine: str
) -> None:
    """Two rules h2 does not check: ":path" must be origin form (the key joins authority
    and path), and trailers must not carry pseudo-headers or connection fields."""
    import h2.errors
    import h2.events

    origin.routes["/p.txt"] = fixed(200, b"p", CACHEABLE)
    node = await start_secure_edge(origin.url, dev_cert, tls_front="own")
    try:
        reader, writer, conn = await raw_h2(node)
        authority = b"localhost:%d" % node.port
        head = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", authority[:-1])]
        conn.send_headers(1, [*head, (b":path", authority[-1:] + b"/p.txt")], end_stream=True)
        post = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", authority),
            (b":path", b"/p.txt"),
        ]
        conn.send_headers(3, post)
        conn.send_data(3, b"x")
        conn.send_headers(3, [(b":path", b"/other")], end_stream=True)  # trailers with a pseudo-header
        writer.write(conn.data_to_send())
        seen = await events_until(
            reader, writer, conn, lambda e: isinstance(e, h2.events.StreamReset) and e.stream_id == 3
        )
        conn.send_headers(5, [*head[:2], (b":authority", authority), (b":path", b"/p.txt")], end_stream=True)
        writer.write(conn.data_to_send())
        seen += await events_until(
            reader, writer, conn, lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == 5
        )
        writer.close()
    finally:
        await node.stop()
    status = {
        e.stream_id: dict(e.headers)[b":status"] for e in seen if isinstance(e, h2.events.ResponseReceived)
    }
    body1 = b"".join(e.data for e in seen if isinstance(e, h2.events.DataReceived) and e.stream_id == 1)
    resets = [e for e in seen if isinstance(e, h2.events.StreamReset)]
    if h2_engine == "ngh2":  # nghttp2 resets the malformed request itself (RFC 9113 §8.1.1)
        assert 1 not in status and body1 == b""
        assert [(r.stream_id, r.error_code) for r in resets] == [
            (1, h2.errors.ErrorCodes.PROTOCOL_ERROR),
            (3, h2.errors.ErrorCodes.PROTOCOL_ERROR),
        ]
    else:
        assert status[1] == b"400" and b":path is not an absolute path" in body1
        assert [(r.stream_id, r.error_code) for r in resets] == [(3, h2.errors.ErrorCodes.PROTOCOL_ERROR)]
    assert status[5] == b"200"  # the connection went on
    assert origin.count("/p.txt") == 1 and origin.count("/other") == 0


async def test_own_front_answers_a_refused_upload_and_reads_the_rest(
    origin: ScriptedOrigin, dev_cert: DevCert
) -> None:
    """A 413 for a declared length over the limit while the client is still sending: the
    answer goes out at once, the rest of the body is read and dropped (no RST_STREAM, which
    curl and httpx report as a failed transfer), and the connection serves the next request."""
    import h2.events

    origin.routes["/after.txt"] = fixed(200, b"after", CACHEABLE)
    node = await start_secure_edge(origin.url, dev_cert, tls_front="own", max_request_body="1KiB")
    try:
        reader, writer, conn = await raw_h2(node)
        post = [*get(node, b"/upload", b"POST"), (b"content-length", b"20000")]
        conn.send_headers(1, post)
        writer.write(conn.data_to_send())
        seen = await events_until(reader, writer, conn, lambda e: isinstance(e, h2.events.StreamEnded))
        for _ in range(5):  # the client finishes its upload; the edge acknowledges and drops it
            conn.send_data(1, b"u" * 4000, end_stream=_ == 4)
        conn.send_headers(3, get(node, b"/after.txt"), end_stream=True)
        writer.write(conn.data_to_send())
        seen += await events_until(
            reader, writer, conn, lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == 3
        )
        writer.close()
    finally:
        await node.stop()
    status = {
        e.stream_id: dict(e.headers)[b":status"] for e in seen if isinstance(e, h2.events.ResponseReceived)
    }
    assert status == {1: b"413", 3: b"200"}
    assert not any(isinstance(e, h2.events.StreamReset) for e in seen)
    assert origin.count("/upload") == 0 and origin.count("/after.txt") == 1
