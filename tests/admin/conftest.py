"""Fixtures: an edge in front of the scripted origin (tests/conftest.py), and its admin API, on loopback.

The admin tests' edge runs on the real clock (the one in tests/conftest.py runs on a settable one).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest_asyncio

from edge.admin.server import bind_admin, serve_admin
from edge.core import EdgeCore
from tests.support.nodes import Edge, start_edge
from tests.support.scripted_origin import ScriptedOrigin

TOKEN = "s3cret-admin-token"


@dataclass
class Admin:
    url: str
    token: str

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        """A client that sends ``token`` (the admin's own by default; "" sends none)."""
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10, trust_env=False)


async def start_admin(core: EdgeCore, token: str) -> tuple[Admin, asyncio.Event, asyncio.Task[None]]:
    """Serve the admin API on a free port; the socket listens before this returns."""
    sock = bind_admin("127.0.0.1:0")
    port = sock.getsockname()[1]
    shutdown = asyncio.Event()
    task = asyncio.create_task(serve_admin(core, f"127.0.0.1:{port}", token, shutdown, sock=sock))
    return Admin(f"http://127.0.0.1:{port}", token), shutdown, task


@pytest_asyncio.fixture
async def edge(origin: ScriptedOrigin) -> AsyncIterator[Edge]:
    node = await start_edge(origin.url, read_timeout="2", connect_timeout="1")
    yield node
    node.server.close()
    await node.core.aclose()


@pytest_asyncio.fixture
async def admin(edge: Edge) -> AsyncIterator[Admin]:
    server, shutdown, task = await start_admin(edge.core, TOKEN)
    yield server
    shutdown.set()
    await asyncio.wait_for(task, 5)


@pytest_asyncio.fixture
async def open_admin(edge: Edge) -> AsyncIterator[Admin]:
    """An admin API whose node has no token configured."""
    server, shutdown, task = await start_admin(edge.core, "")
    yield server
    shutdown.set()
    await asyncio.wait_for(task, 5)
