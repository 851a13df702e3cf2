"""Fixtures: a scripted origin and an edge node, both real servers on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest_asyncio

from edge import config as edge_config
from edge.core import EdgeCore
from edge.serve.server import bind_tcp, start_h1
from tests.edge.scripted_origin import ScriptedOrigin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Edge:
    core: EdgeCore
    url: str
    port: int
    server: asyncio.Server

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, **{"timeout": 10, **kwargs})


class Clock:
    """A settable clock for the core: tests move time instead of sleeping."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def start_edge(upstream: str, clock: Clock | None = None, **settings: Any) -> Edge:
    port = free_port()
    flags = {"upstream": upstream, "listen": f"127.0.0.1:{port}", **settings}
    config = edge_config.load(None, {}, flags)
    core = EdgeCore(config, clock=clock or time.time)
    server = await start_h1(core, config, bind_tcp(config.listen, reuse_port=False))
    return Edge(core, f"http://127.0.0.1:{port}", port, server)


@pytest_asyncio.fixture
async def origin() -> AsyncIterator[ScriptedOrigin]:
    server = ScriptedOrigin()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture
async def edge(origin: ScriptedOrigin, clock: Clock) -> AsyncIterator[Edge]:
    node = await start_edge(origin.url, clock, read_timeout="2", connect_timeout="1")
    yield node
    node.server.close()
    await node.core.aclose()


async def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes and read until the server closes (or timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    chunks = []
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
    except TimeoutError:
        pass
    writer.close()
    return b"".join(chunks)
