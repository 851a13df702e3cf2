"""Streaming through the edge: bodies flow as they arrive and a slow client costs bounded memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.support import procnet
from tests.support.nodes import Edge, start_edge
from tests.support.scripted_origin import Gate, OriginConnection, Route, ScriptedOrigin, Seen
from tests.support.waiting import eventually, every_slice_stored, within

pytestmark = pytest.mark.asyncio

BLOCK = bytes(range(256)) * 256  # 64 KiB
BLOCKS = 512  # 32 MiB
BIG_BLOCKS = 1536  # 96 MiB


@pytest_asyncio.fixture
async def edge(origin: ScriptedOrigin) -> AsyncIterator[Edge]:
    """The shared fixture's edge, but waiting 30 s (not 2) for upstream bytes.

    Origins here hold bodies at a gate while the test checks its clients: a busy
    machine must make that take longer, not turn it into an upstream timeout.
    """
    node = await start_edge(origin.url, read_timeout="30", connect_timeout="1")
    yield node
    node.server.close()
    await node.core.aclose()


def streaming(cache_control: str, gate: Gate | None = None, blocks: int = BLOCKS) -> Route:
    """``blocks`` blocks of 64 KiB, paced by the edge's reading; held at ``gate`` after the first."""

    async def route(seen: Seen, conn: OriginConnection) -> None:
        head = f"HTTP/1.1 200 OK\r\nCache-Control: {cache_control}\r\nContent-Length: {len(BLOCK) * blocks}\r\n\r\n"
        conn.write(head.encode())
        for i in range(blocks):
            await conn.send(BLOCK)
            if i == 0 and gate is not None:
                await gate.hold()

    return route


async def read_response(
    port: int,
    path: str,
    pause_after: int = 0,
    pause: float = 0.0,
    started: asyncio.Event | None = None,
) -> tuple[bytes, bytes]:
    """Read one whole response: (head, sha256 + length of the body); ``started`` is set on the head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if started is not None:
        started.set()
    digest = hashlib.sha256()
    got = 0
    paused = False
    while chunk := await reader.read(65536):
        digest.update(chunk)
        got += len(chunk)
        if pause and not paused and got >= pause_after:
            paused = True
            await asyncio.sleep(pause)  # a slow reader on purpose: the scenario, not a wait
    writer.close()
    return head, digest.digest() + got.to_bytes(8, "big")


async def test_slow_client_of_uncacheable_stream_costs_bounded_memory(
    origin: ScriptedOrigin, edge: Edge
) -> None:
    origin.routes["/big"] = streaming("no-store", blocks=BIG_BLOCKS)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(1 << 20)
    # The client stalls (reads nothing more) until the origin is stuck: the edge stopped reading
    # it. Without backpressure that never happens and held_back fails as the origin finishes.
    await origin.held_back("/big")
    sent_while_stalled = origin.sent
    # Stuck, what the origin got out is the edge's bound (4 MiB fill + 1 MiB upstream) plus kernel
    # socket buffers, which loopback autotuning grows to several MiB per socket (four sockets here).
    assert sent_while_stalled < 48 << 20, f"edge buffered {sent_while_stalled >> 20} MiB for a stalled client"
    total = 1 << 20
    digest = hashlib.sha256(BLOCK * 16)  # the first MiB read above is 16 whole blocks
    while chunk := await reader.read(1 << 20):
        digest.update(chunk)
        total += len(chunk)
    writer.close()
    assert total == len(BLOCK) * BIG_BLOCKS
    assert digest.digest() == hashlib.sha256(BLOCK * BIG_BLOCKS).digest()


async def test_first_bytes_arrive_before_the_upstream_finishes(origin: ScriptedOrigin, edge: Edge) -> None:
    rest = Gate()
    origin.routes["/slowtail"] = streaming("max-age=60", gate=rest)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /slowtail HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    await within(reader.readuntil(b"\r\n\r\n"), "the head was held back until the upstream finished")
    first = await within(
        reader.readexactly(len(BLOCK)), "the first block was held back until the upstream finished"
    )
    assert first == BLOCK
    rest.open()  # the origin sent one block of 512 until now
    body = len(BLOCK)
    while chunk := await reader.read(1 << 20):
        body += len(chunk)
    writer.close()
    assert body == len(BLOCK) * BLOCKS


async def test_two_clients_tail_one_fill_and_the_result_is_stored(origin: ScriptedOrigin, edge: Edge) -> None:
    rest = Gate()
    origin.routes["/shared"] = streaming("max-age=60", gate=rest)
    started = [asyncio.Event(), asyncio.Event()]
    both = asyncio.gather(
        read_response(edge.port, "/shared", started=started[0]),
        # The second client is slow on purpose (the scenario): the fill must not wait for it.
        read_response(edge.port, "/shared", pause_after=4 << 20, pause=0.3, started=started[1]),
    )
    # Both clients have their heads while the origin holds all but the first block: two readers of
    # one fill under way (the second joined it, or reads the slices it cuts as they complete).
    await within(asyncio.gather(*(e.wait() for e in started)), "both clients got the head")
    rest.open()
    first, second = await within(both, "both clients read the whole body")
    expected = hashlib.sha256(BLOCK * BLOCKS).digest() + (len(BLOCK) * BLOCKS).to_bytes(8, "big")
    assert first[1] == second[1] == expected
    assert origin.count("/shared") == 1
    third = await read_response(edge.port, "/shared")
    assert b"X-Cache: HIT" in third[0] and third[1] == expected


async def test_client_leaving_does_not_abort_a_storable_fill(origin: ScriptedOrigin, edge: Edge) -> None:
    rest = Gate()
    origin.routes["/keep"] = streaming("max-age=60", gate=rest)  # 32 MiB: stored as slices
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /keep HTTP/1.1\r\nHost: t\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    edge_end = procnet.find("tcp", ("127.0.0.1", edge.port), writer.get_extra_info("sockname"))
    assert edge_end is not None
    writer.transport.abort()
    # The edge closed its end of the connection (it saw the client go) while the origin still
    # holds all but the first block: what follows is fetched for nobody but the cache.
    await eventually(
        lambda: edge_end.inode not in procnet.socket_inodes(os.getpid()),
        "the edge noticed the client leaving",
    )
    rest.open()
    await origin.responded("/keep")
    await eventually(lambda: every_slice_stored(edge), "the fill went on and stored the object")
    head, digest = await read_response(edge.port, "/keep")
    assert b"X-Cache: HIT" in head
    assert digest[-8:] == (len(BLOCK) * BLOCKS).to_bytes(8, "big")
    assert origin.count("/keep") == 1
