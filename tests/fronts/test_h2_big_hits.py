"""Large cached hits over the ngh2 engine: handed to nghttp2 whole, written a budget per turn.

``NgH2Protocol.send_hit`` gives nghttp2 the stored body at once and ``flush`` writes at most
``WRITE_BUDGET`` bytes per connection per event-loop turn, continuing from the next turn
(``flush_more``). These tests shrink the budget so that every response crosses many turns,
and check that every byte arrives, in order, on concurrent streams and connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import time

import h2.config
import h2.connection
import h2.settings
import pytest

from edge.fronts import h2_ngh2
from edge.wiring.devcert import DevCert
from tests.support.nodes import start_secure_edge
from tests.support.scripted_origin import ScriptedOrigin, fixed

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

BIG = bytes(range(251)) * (6 * 1024 * 1024 // 251)  # 6 MiB, no two aligned pieces alike


async def test_hits_larger_than_the_write_budget_arrive_whole(
    dev_cert: DevCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h2_ngh2, "WRITE_BUDGET", 64 * 1024)
    turns = [0]
    flush_more = h2_ngh2.NgH2Protocol.flush_more

    def counting(self: h2_ngh2.NgH2Protocol) -> None:
        turns[0] += 1
        flush_more(self)

    monkeypatch.setattr(h2_ngh2.NgH2Protocol, "flush_more", counting)
    origin = ScriptedOrigin({"/big.bin": fixed(200, BIG, [("Cache-Control", "max-age=300")])})
    await origin.start()
    edge = await start_secure_edge(origin.url, dev_cert, h2_engine="ngh2")
    try:
        async with edge.h2_client() as first, edge.h2_client() as second:
            assert (await first.get("/big.bin")).content == BIG  # the miss stores it
            turns[0] = 0
            fetches = (c.get("/big.bin") for c in (first, first, first, second, second))
            got = await asyncio.wait_for(asyncio.gather(*fetches), 30)
        want = hashlib.sha256(BIG).digest()
        for response in got:
            assert response.headers["x-cache"] == "HIT"
            assert hashlib.sha256(response.content).digest() == want
        assert turns[0] >= 5 * len(BIG) // (64 * 1024) // 2  # most of it went from later turns
        assert origin.count("/big.bin") == 1
    finally:
        await edge.stop()
        assert origin.server is not None
        origin.server.close()


class _StalledClient:
    """A frame-level HTTP/2 client on a blocking TLS socket that opens wide windows, asks
    for a large hit, never reads, and keeps sending small requests."""

    def __init__(self, port: int, cafile: str) -> None:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", port))
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.set_alpn_protocols(["h2"])
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        self.conn.increment_flow_control_window(2**31 - 1 - 65535)
        self.sock.sendall(self.conn.data_to_send())
        self.authority = f"localhost:{port}"  # as httpx sends it: the same cache key

    def ask(self, path: str, method: str = "GET") -> None:
        stream_id = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":path", path), (":scheme", "https"), (":authority", self.authority)]
        self.conn.send_headers(stream_id, fields, end_stream=True)
        self.sock.sendall(self.conn.data_to_send())

    def close(self) -> None:
        self.sock.close()


async def test_a_client_that_stops_reading_does_not_grow_the_write_buffer(
    dev_cert: DevCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the transport has paused writing, no flush takes more from nghttp2 (which holds
    the whole hit): small requests arriving meanwhile must not each queue another piece."""
    protocols: list[h2_ngh2.NgH2Protocol] = []
    made = h2_ngh2.NgH2Protocol.connection_made

    def record(self: h2_ngh2.NgH2Protocol, transport: asyncio.BaseTransport) -> None:
        protocols.append(self)
        made(self, transport)

    monkeypatch.setattr(h2_ngh2.NgH2Protocol, "connection_made", record)
    huge = b"H" * (16 * 1024 * 1024)
    routes = {
        "/huge.bin": fixed(200, huge, [("Cache-Control", "max-age=300")]),
        "/s": fixed(200, b"s", [("Cache-Control", "max-age=300")]),
    }
    origin = ScriptedOrigin(routes)
    await origin.start()
    edge = await start_secure_edge(origin.url, dev_cert, h2_engine="ngh2", slice_size="64MiB")
    try:
        async with edge.h2_client() as warm:
            assert len((await warm.get("/huge.bin")).content) == len(huge)
            assert (await warm.get("/s")).content == b"s"
        protocols.clear()

        def stall() -> None:
            client = _StalledClient(edge.port, str(edge.cert.ca))
            client.ask("/huge.bin")
            time.sleep(0.5)  # the socket fills, the transport pauses
            for _ in range(200):
                client.ask("/s", "HEAD")
                time.sleep(0.005)
            time.sleep(0.3)
            client.close()

        peak = 0
        done = asyncio.get_running_loop().run_in_executor(None, stall)
        while not done.done():
            for protocol in protocols:
                if protocol.transport is not None:
                    peak = max(peak, protocol.transport.get_write_buffer_size())
            await asyncio.sleep(0.01)
        await done
        assert protocols and peak < 2 * 1024 * 1024, f"{peak / 2**20:.1f} MiB buffered"
        async with edge.h2_client() as other:  # and the node keeps serving
            assert (await other.get("/s")).content == b"s"
    finally:
        await edge.stop()
        assert origin.server is not None
        origin.server.close()
