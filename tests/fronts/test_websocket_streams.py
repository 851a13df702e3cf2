"""WebSocket over HTTP/2 (RFC 8441) and HTTP/3 (RFC 9220) through the edge: extended CONNECT
bridged to an HTTP/1.1 Upgrade towards a real `websockets` origin, flow control both ways,
caps and the idle timeout. The clients are h2 / aioquic carrying the `websockets` library's
sans-I/O framing (benchmarks/ws_clients.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from websockets.asyncio.server import Server, ServerConnection, serve

from benchmarks.ws_clients import ENABLE_CONNECT_PROTOCOL, WsStream, _connect_head, h2_client, h3_client
from edge.wiring.devcert import DevCert
from tests.support.nodes import SecureEdge, free_port, start_secure_edge
from tests.support.raw_ws_origin import raw_ws_origin
from tests.support.scripted_origin import ScriptedOrigin, fixed
from tests.support.waiting import eventually, within

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90), pytest.mark.usefixtures("h2_engine")]
"""Every test on both HTTP/2 engines of the HTTPS front (h2 and ngh2: tests/conftest.py)."""

H2_CANCEL = 0x8
H3_REQUEST_CANCELLED = 0x10C


class WsOrigin:
    """A `websockets` server: greets with the request's path (a push), echoes, and records
    each handshake it saw; ``/flood`` pushes ``flood`` 1 MiB messages, counting each sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.flooded = 0
        self.flood = 0
        self.server: Server | None = None

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.seen.append((ws.request.path, {k.lower(): v for k, v in ws.request.headers.raw_items()}))
        if ws.request.path == "/flood":
            for _ in range(self.flood):
                await ws.send(b"f" * (1 << 20))
                self.flooded += 1
            await ws.send("flood done")
        elif ws.request.path == "/bye":
            await ws.send("bye")
            return  # the origin closes: the client's stream ends
        await ws.send("welcome " + ws.request.path)
        async for message in ws:
            await ws.send(message)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{next(iter(self.server.sockets)).getsockname()[1]}"


@pytest_asyncio.fixture
async def ws_origin() -> AsyncIterator[WsOrigin]:
    origin = WsOrigin()
    async with serve(origin.handler, "127.0.0.1", 0, max_size=None) as server:
        origin.server = server
        yield origin


async def ws(client: object, path: str) -> WsStream:
    stream: WsStream = await client.websocket(path)  # type: ignore[attr-defined]
    return stream


async def echo_checks(stream: WsStream, path: str) -> None:
    assert stream.status == 200, (stream.status, bytes(stream.body))
    assert await stream.recv() == "welcome " + path  # pushed by the origin
    for i in range(50):
        await stream.send(f"message {i}")
        assert await stream.recv() == f"message {i}"
    big = b"\x00\x01binary" * 30_000  # 240 KB: beyond the 64 KiB windows, both ways
    await stream.send(big)
    assert await stream.recv() == big


async def test_h2_extended_connect_is_bridged_to_the_origin(ws_origin: WsOrigin, dev_cert: DevCert) -> None:
    node = await start_secure_edge(ws_origin.url, dev_cert)
    try:
        async with h2_client("127.0.0.1", node.port, str(dev_cert.ca)) as client:
            assert client.settings.result()[ENABLE_CONNECT_PROTOCOL] == 1
            stream = await ws(client, "/chat?room=1")
            assert stream.header(b"sec-websocket-accept") is None  # the HTTP/1.1 handshake's own
            await echo_checks(stream, "/chat?room=1")
            await stream.close()
            assert await stream.recv() is None  # the origin answered the close and ended
            assert stream.reset_code is None
        await eventually(lambda: node.core.clients.tunnels == 0, "the tunnel ended")
        path, fields = ws_origin.seen[0]
        assert path == "/chat?room=1" and fields["upgrade"] == "websocket"
        assert fields["host"] == f"localhost:{node.port}" and "x-forwarded-for" in fields
        traffic = node.core.requests.snapshot()
        assert ["h2", 200, "none", 1] in traffic["requests"]
        assert 240_000 < traffic["response_bytes"]["h2"] < 260_000  # the tunnel's bytes to the client
        assert node.core.stats()["entries"] == 0  # never cached
    finally:
        await node.stop()


@pytest.mark.parametrize("backend", ["qh3", "aioquic"])
async def test_h3_extended_connect_is_bridged_to_the_origin(
    ws_origin: WsOrigin, dev_cert: DevCert, backend: str
) -> None:
    node = await start_secure_edge(ws_origin.url, dev_cert, backend)
    try:
        async with h3_client("127.0.0.1", node.port, str(dev_cert.ca)) as client:
            assert client.settings.get(ENABLE_CONNECT_PROTOCOL) == 1  # qh3 needs the edge's subclass
            stream = await ws(client, "/live")
            await echo_checks(stream, "/live")
            await stream.close()
            assert await stream.recv() is None
        await eventually(lambda: node.core.clients.tunnels == 0, "the tunnel ended")
        assert ws_origin.seen[0][0] == "/live"
        traffic = node.core.requests.snapshot()
        assert ["h3", 200, "none", 1] in traffic["requests"]
        assert 240_000 < traffic["response_bytes"]["h3"] < 260_000
    finally:
        await node.stop()


async def test_the_origin_closing_ends_the_stream(ws_origin: WsOrigin, dev_cert: DevCert) -> None:
    node = await start_secure_edge(ws_origin.url, dev_cert)
    try:
        async with h2_client("127.0.0.1", node.port, str(dev_cert.ca)) as h2c:
            stream = await ws(h2c, "/bye")
            assert await stream.recv() == "bye"
            assert await stream.recv() is None and stream.reset_code is None  # END_STREAM, no reset
        async with h3_client("127.0.0.1", node.port, str(dev_cert.ca)) as h3c:
            stream = await ws(h3c, "/bye")
            assert await stream.recv() == "bye"
            assert await stream.recv() is None and stream.reset_code is None
        await eventually(lambda: node.core.clients.tunnels == 0, "both tunnels ended")
    finally:
        await node.stop()


async def test_only_websocket_is_bridged(ws_origin: WsOrigin, dev_cert: DevCert) -> None:
    """Another :protocol is 501 with its reason on both protocols; :protocol on a GET is
    malformed (400); the origin sees none of them."""
    node = await start_secure_edge(ws_origin.url, dev_cert)
    try:
        async with h2_client("127.0.0.1", node.port, str(dev_cert.ca)) as h2c:
            stream_id = h2c.conn.get_next_available_stream_id()
            refused = h2c.streams[stream_id] = WsStream(h2c, stream_id)
            h2c.conn.send_headers(
                stream_id,
                [(b":method", b"CONNECT"), (b":protocol", b"connect-udp"), (b":scheme", b"https"),
                 (b":path", b"/"), (b":authority", b"localhost")],
            )  # fmt: skip
            h2c.flush()
            await within(refused.ended.wait(), "the refusal")
            assert refused.status == 501 and b"websocket only" in refused.body
        async with h3_client("127.0.0.1", node.port, str(dev_cert.ca)) as h3c:
            stream_id = h3c._quic.get_next_available_stream_id()
            refused = h3c.streams[stream_id] = WsStream(h3c, stream_id)
            h3c.h3.send_headers(
                stream_id,
                [(b":method", b"CONNECT"), (b":protocol", b"webtransport"), (b":scheme", b"https"),
                 (b":path", b"/"), (b":authority", b"localhost")],
            )  # fmt: skip
            h3c.transmit()
            await within(refused.ended.wait(), "the refusal")
            assert refused.status == 501 and b"websocket only" in refused.body
        assert ws_origin.seen == []
    finally:
        await node.stop()


async def test_a_refused_handshake_is_relayed_and_carries_no_client_bytes(
    origin: ScriptedOrigin, dev_cert: DevCert
) -> None:
    origin.routes["/ws"] = fixed(404, b"no websocket here")
    node = await start_secure_edge(origin.url, dev_cert)
    try:
        async with h2_client("127.0.0.1", node.port, str(dev_cert.ca)) as client:
            stream = await ws(client, "/ws")
            await within(stream.ended.wait(), "the origin's answer")
            assert stream.status == 404 and bytes(stream.body) == b"no websocket here"
        assert [s.target for s in origin.seen] == [b"/ws"]
        seen = origin.seen[0]
        assert seen.method == b"GET" and seen.header(b"upgrade") == b"websocket"
        assert seen.header(b"sec-websocket-key") is not None  # the bridge's own key
    finally:
        await node.stop()


async def test_h2_flow_control_holds_the_origin(ws_origin: WsOrigin, dev_cert: DevCert) -> None:
    """A client that gives no credit back: the edge stops reading the origin (its sends
    block) instead of buffering the stream; once credit comes, every byte arrives."""
    ws_origin.flood = 48  # 48 MiB
    node = await start_secure_edge(ws_origin.url, dev_cert)
    try:
        async with h2_client("127.0.0.1", node.port, str(dev_cert.ca)) as client:
            client.hold_credit = True
            stream = await ws(client, "/flood")
            sent = -1
            while sent != ws_origin.flooded:  # until the origin's sends stopped moving
                sent = ws_origin.flooded
                await asyncio.sleep(0.3)
            # 64 KiB of window, the bridge's buffers and loopback's socket buffers: far below 48 MiB.
            assert sent < 24, sent
            client.release_credit()
            for _ in range(48):
                assert await stream.recv(30) == b"f" * (1 << 20)
            assert await stream.recv() == "flood done"
    finally:
        await node.stop()


@pytest.mark.parametrize("protocol", ["h2", "h3"])
async def test_an_idle_tunnel_is_reset(ws_origin: WsOrigin, dev_cert: DevCert, protocol: str) -> None:
    node = await start_secure_edge(ws_origin.url, dev_cert, tunnel_idle_timeout="0.3")
    opener = h2_client if protocol == "h2" else h3_client
    try:
        async with opener("127.0.0.1", node.port, str(dev_cert.ca)) as client:
            stream = await ws(client, "/quiet")
            assert await stream.recv() == "welcome /quiet"
            assert await stream.recv(10) is None  # nothing moves: the edge closes the tunnel
            assert stream.reset_code == (H2_CANCEL if protocol == "h2" else H3_REQUEST_CANCELLED)
        await eventually(lambda: node.core.clients.tunnels == 0, "the tunnel was given back")
    finally:
        await node.stop()


@pytest.mark.parametrize("protocol", ["h2", "h3"])
async def test_tunnels_beyond_the_per_client_cap_are_refused(
    ws_origin: WsOrigin, dev_cert: DevCert, protocol: str
) -> None:
    node: SecureEdge = await start_secure_edge(ws_origin.url, dev_cert, max_client_tunnels="1")
    opener = h2_client if protocol == "h2" else h3_client
    try:
        async with opener("127.0.0.1", node.port, str(dev_cert.ca)) as client:
            first = await ws(client, "/a")
            assert first.status == 200 and await first.recv() == "welcome /a"
            second = await ws(client, "/b")
            await within(second.ended.wait(), "the refusal")
            assert second.status == 503 and b"too many WebSocket tunnels" in second.body
            await first.send("still here")
            assert await first.recv() == "still here"
            await first.close()
            assert await first.recv() is None
            await eventually(lambda: node.core.clients.tunnels == 0, "the place was given back")
            again = await ws(client, "/c")
            assert again.status == 200 and await again.recv() == "welcome /c"
        assert [path for path, _ in ws_origin.seen] == ["/a", "/c"]
        assert node.core.clients.refused_tunnels == 1
    finally:
        await node.stop()


async def test_a_tunnel_goes_to_the_origin_past_a_dead_shield(ws_origin: WsOrigin, dev_cert: DevCert) -> None:
    """With a shield configured that does not answer, a WebSocket still opens: tunnels go to
    the origin on a connection of their own, never through a shield."""
    node = await start_secure_edge(ws_origin.url, dev_cert, shields=f"http://127.0.0.1:{free_port()}")
    try:
        async with h2_client("127.0.0.1", node.port, str(dev_cert.ca)) as client:
            stream = await ws(client, "/through")
            assert stream.status == 200 and await stream.recv() == "welcome /through"
        assert ws_origin.seen[0][0] == "/through"
    finally:
        await node.stop()


@pytest.mark.parametrize("protocol", ["h2", "h3"])
async def test_shutdown_closes_open_tunnels(ws_origin: WsOrigin, dev_cert: DevCert, protocol: str) -> None:
    node = await start_secure_edge(ws_origin.url, dev_cert)
    opener = h2_client if protocol == "h2" else h3_client
    stopped = False
    try:
        async with opener("127.0.0.1", node.port, str(dev_cert.ca)) as client:
            stream = await ws(client, "/open")
            assert await stream.recv() == "welcome /open"
            await node.stop()
            stopped = True
            assert await stream.recv(10) is None  # the connection went with the node
        await eventually(lambda: node.core.clients.tunnels == 0, "the tunnel was given back")
        assert ws_origin.seen[0][0] == "/open"
    finally:
        if not stopped:
            await node.stop()


async def test_h2_flow_control_holds_the_client(dev_cert: DevCert) -> None:
    """An origin that accepts the WebSocket and then reads nothing: the edge stops crediting
    the client's DATA (no WINDOW_UPDATE) once the origin's socket is full, so the client's
    48 MiB message stalls instead of piling up in the edge."""
    import base64
    import hashlib

    done = asyncio.Event()

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: %s\r\n\r\n" % accept)  # fmt: skip
        await done.wait()  # never reads again
        writer.close()

    server = await asyncio.start_server(deaf, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    node = await start_secure_edge(f"http://127.0.0.1:{port}", dev_cert)
    try:
        async with h2_client("127.0.0.1", node.port, str(dev_cert.ca)) as client:
            stream = await ws(client, "/deaf")
            assert stream.status == 200
            sending = asyncio.get_running_loop().create_task(stream.send(b"u" * (48 << 20)))
            sent = -1
            while sent != client.sent:  # until the client's DATA stopped moving
                sent = client.sent
                await asyncio.sleep(0.3)
            assert not sending.done() and sent < 24 << 20, sent
            sending.cancel()
    finally:
        done.set()
        await node.stop()
        server.close()


async def test_h2_bytes_held_before_a_refused_handshake_are_credited_back(
    origin: ScriptedOrigin, dev_cert: DevCert
) -> None:
    """DATA sent before the origin's answer is held, and dropped on a refusal: its
    connection-level credit still comes back, or the whole HTTP/2 connection stalls."""
    origin.routes["/ws"] = fixed(404, b"no websocket here")
    node = await start_secure_edge(origin.url, dev_cert)
    try:
        async with h2_client("127.0.0.1", node.port, str(dev_cert.ca)) as client:
            conn = client.conn
            stream_id = conn.get_next_available_stream_id()
            stream = client.streams[stream_id] = WsStream(client, stream_id)
            conn.send_headers(stream_id, _connect_head("/ws", client.authority, []))
            for _ in range(3):
                conn.send_data(stream_id, b"x" * 16000)  # an optimistic first message
            client.flush()
            await within(stream.ended.wait(), "the origin's answer")
            assert stream.status == 404
            await eventually(
                lambda: conn.outbound_flow_control_window == 65535, "the connection window came back"
            )
    finally:
        await node.stop()


async def test_h2_credit_owed_to_a_stalled_tunnel_is_given_back_when_it_ends(dev_cert: DevCert) -> None:
    """A client reset of a tunnel whose origin stopped reading: the DATA still waiting for the
    origin is dropped and credited back on the connection (other streams can still upload)."""
    async with raw_ws_origin(deaf=True) as deaf:
        node = await start_secure_edge(deaf.url, dev_cert)
        try:
            async with h2_client("127.0.0.1", node.port, str(dev_cert.ca)) as client:
                stream = await ws(client, "/deaf")
                assert stream.status == 200
                sending = asyncio.get_running_loop().create_task(stream.send(b"u" * (48 << 20)))
                sent = -1
                while sent != client.sent:  # until the client's DATA stopped moving
                    sent = client.sent
                    await asyncio.sleep(0.3)
                sending.cancel()
                assert client.conn.outbound_flow_control_window == 0
                client.conn.reset_stream(stream.stream_id, H2_CANCEL)  # the client gives up
                client.flush()
                await eventually(lambda: client.conn.outbound_flow_control_window > 0, "credit came back")
                await eventually(lambda: node.core.clients.tunnels == 0, "the tunnel was given back")
        finally:
            await node.stop()


@pytest.mark.parametrize("protocol", ["h2", "h3"])
async def test_an_idle_reset_with_a_deaf_origin_gives_the_tunnel_back(
    dev_cert: DevCert, protocol: str
) -> None:
    """An origin that stopped reading with bytes still buffered for it: the tunnel's end does
    not wait for them (its place under the caps is given back, the tunnel is logged)."""
    async with raw_ws_origin(deaf=True) as deaf:
        node = await start_secure_edge(deaf.url, dev_cert, tunnel_idle_timeout="1")
        opener = h2_client if protocol == "h2" else h3_client
        try:
            async with opener("127.0.0.1", node.port, str(dev_cert.ca)) as client:
                stream = await ws(client, "/deaf")
                assert stream.status == 200
                size = 48 << 20 if protocol == "h2" else 16 << 20
                sending = asyncio.get_running_loop().create_task(stream.send(b"u" * size))
                await within(stream.ended.wait(), "the edge ends the tunnel")  # idle, or too much held
                sending.cancel()
                await eventually(lambda: node.core.clients.tunnels == 0, "the tunnel was given back")
                assert [protocol, 200, "none", 1] in node.core.requests.snapshot()["requests"]
        finally:
            await node.stop()


@pytest.mark.parametrize("protocol", ["h2", "h3"])
async def test_interim_answers_before_the_101_are_skipped(dev_cert: DevCert, protocol: str) -> None:
    """An origin answering the handshake 100 and 103 before its 101: the tunnel opens."""
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    async with raw_ws_origin(interim=interim, greeting=b"\x81\x05hello") as origin:
        node = await start_secure_edge(origin.url, dev_cert)
        opener = h2_client if protocol == "h2" else h3_client
        try:
            async with opener("127.0.0.1", node.port, str(dev_cert.ca)) as client:
                stream = await ws(client, "/hints")
                assert stream.status == 200, (stream.status, bytes(stream.body))
                assert await stream.recv() == "hello"
                await stream.send("up")
                await eventually(lambda: len(origin.received) >= 8, "the client's frame reached the origin")
        finally:
            await node.stop()


@pytest.mark.parametrize("backend", ["qh3", "aioquic"])
async def test_h3_bytes_after_a_failed_handshake_are_never_forwarded(
    dev_cert: DevCert, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """More than 64 KiB before the origin's answer resets the stream; what the client sends
    after that is not forwarded once the origin answers 101, and no 200 goes out."""
    async with raw_ws_origin(delay=1.0) as slow:
        node = await start_secure_edge(slow.url, dev_cert, backend)
        try:
            async with h3_client("127.0.0.1", node.port, str(dev_cert.ca)) as client:
                stream_id = client._quic.get_next_available_stream_id()
                stream = client.streams[stream_id] = WsStream(client, stream_id)
                client.h3.send_headers(
                    stream_id, _connect_head("/slow", client.authority, []), end_stream=False
                )
                client.h3.send_data(stream_id, b"x" * (70 * 1024), end_stream=False)  # beyond 64 KiB
                client.transmit()
                await within(stream.ended.wait(), "the reset")
                assert stream.reset_code is not None
                client.h3.send_data(stream_id, b"after the fail", end_stream=False)
                client.transmit()
                await within(slow.switched.wait(), "the origin's 101")
                await eventually(lambda: node.core.clients.tunnels == 0, "the tunnel was given back")
                await asyncio.sleep(0.3)
                assert bytes(slow.received) == b""
                assert stream.status == 0  # no head on the reset stream
                assert "request failed" not in caplog.text  # (a head on a reset stream raises)
        finally:
            await node.stop()
