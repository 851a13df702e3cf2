"""Streaming through the edge: bodies flow as they arrive and a slow client costs bounded memory."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from tests.support.nodes import Edge
from tests.support.scripted_origin import OriginConnection, ScriptedOrigin, Seen

pytestmark = pytest.mark.asyncio

BLOCK = bytes(range(256)) * 256  # 64 KiB
BLOCKS = 512  # 32 MiB
BIG_BLOCKS = 1536  # 96 MiB


def streaming(cache_control: str, delay_first: float = 0.0, blocks: int = BLOCKS):  # type: ignore[no-untyped-def]
    async def route(seen: Seen, conn: OriginConnection) -> None:
        head = f"HTTP/1.1 200 OK\r\nCache-Control: {cache_control}\r\nContent-Length: {len(BLOCK) * blocks}\r\n\r\n"
        conn.write(head.encode())
        for i in range(blocks):
            await conn.send(BLOCK)
            if i == 0 and delay_first:
                await asyncio.sleep(delay_first)

    return route


async def read_response(
    port: int, path: str, pause_after: int = 0, pause: float = 0.0
) -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    digest = hashlib.sha256()
    got = 0
    paused = False
    while chunk := await reader.read(65536):
        digest.update(chunk)
        got += len(chunk)
        if pause and not paused and got >= pause_after:
            paused = True
            await asyncio.sleep(pause)
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
    await asyncio.sleep(1.0)  # the client stalls; the origin must stall too
    sent_while_stalled = origin.sent
    # Without backpressure the whole 96 MiB crosses loopback in well under a second. With it, what
    # the origin got out is the edge's bound (4 MiB fill + 1 MiB upstream) plus kernel socket
    # buffers, which loopback autotuning grows to several MiB per socket (four sockets here).
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
    origin.routes["/slowtail"] = streaming("max-age=60", delay_first=1.0)
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /slowtail HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(len(BLOCK))
    first_block_at = time.monotonic() - start
    body = len(BLOCK)
    while chunk := await reader.read(1 << 20):
        body += len(chunk)
    writer.close()
    assert first_block_at < 0.8, "the first block was held back until the upstream finished"
    assert body == len(BLOCK) * BLOCKS


async def test_two_clients_tail_one_fill_and_the_result_is_stored(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/shared"] = streaming("max-age=60", delay_first=0.3)
    first, second = await asyncio.gather(
        read_response(edge.port, "/shared"),
        read_response(edge.port, "/shared", pause_after=4 << 20, pause=0.3),
    )
    expected = hashlib.sha256(BLOCK * BLOCKS).digest() + (len(BLOCK) * BLOCKS).to_bytes(8, "big")
    assert first[1] == second[1] == expected
    assert origin.count("/shared") == 1
    third = await read_response(edge.port, "/shared")
    assert b"X-Cache: HIT" in third[0] and third[1] == expected


async def test_client_leaving_does_not_abort_a_storable_fill(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/keep"] = streaming("max-age=60", delay_first=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /keep HTTP/1.1\r\nHost: t\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    writer.transport.abort()
    for _ in range(100):
        await asyncio.sleep(0.05)
        if not edge.core.fills:
            break
    head, digest = await read_response(edge.port, "/keep")
    assert b"X-Cache: HIT" in head
    assert digest[-8:] == (len(BLOCK) * BLOCKS).to_bytes(8, "big")
    assert origin.count("/keep") == 1
