"""Large bodies on the HTTP/1.1 front are written in bounded pieces as the socket drains
(issue 19): a client that does not read holds a bounded write buffer, not the object, and
other connections are answered meanwhile; bodies arrive whole and in request order."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import pytest

from edge.fronts.h1 import LIVE, WRITE_HIGH, WRITE_PIECE
from tests.support.nodes import Clock, start_edge
from tests.support.scripted_origin import ScriptedOrigin, fixed
from tests.support.waiting import fills_settled, unchanged_for, within

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

BIG = os.urandom(16 << 20)
SMALL = b"s" * 1024
FIELDS = [("Content-Type", "application/octet-stream"), ("Cache-Control", "max-age=600")]


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return await reader.readexactly(length)


@pytest.mark.parametrize("slice_size", ["32MiB", "1MiB"], ids=["whole-fast-hit", "sliced-full-path"])
async def test_a_client_that_does_not_read_holds_a_bounded_buffer(
    origin: ScriptedOrigin, clock: Clock, slice_size: str
) -> None:
    origin.routes["/big"] = fixed(200, BIG, FIELDS)
    origin.routes["/small"] = fixed(200, SMALL, FIELDS)
    node = await start_edge(origin.url, clock, slice_size=slice_size)
    try:
        warm_r, warm_w = await asyncio.open_connection("127.0.0.1", node.port)
        for path in (b"/big", b"/small"):
            warm_w.write(b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path)
            await read_response(warm_r)
        await fills_settled(node)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", node.port))
        before = set(LIVE)
        sock.send(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /small HTTP/1.1\r\nHost: a\r\n\r\n")
        # Nothing is read: the edge's buffer for this connection stops growing, bounded.
        buffered = lambda: sum(p.transport.get_write_buffer_size() for p in LIVE - before if p.transport)  # noqa: E731
        while not await unchanged_for(buffered):
            pass
        assert buffered() <= WRITE_HIGH + WRITE_PIECE, buffered()
        # Another connection is answered meanwhile.
        warm_w.write(b"GET /small HTTP/1.1\r\nHost: a\r\n\r\n")
        assert await within(read_response(warm_r), "a small hit on another connection", 5) == SMALL
        # Now read: the big body arrives whole, then the pipelined small one.
        reader, writer = await asyncio.open_connection(sock=sock)
        assert hashlib.sha256(await within(read_response(reader), "the big body", 30)).digest() == (
            hashlib.sha256(BIG).digest()
        )
        assert await within(read_response(reader), "the pipelined small hit", 5) == SMALL
        writer.close()
        warm_w.close()
    finally:
        node.server.close()
        await node.core.aclose()
