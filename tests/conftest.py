"""Fixtures shared by every test folder: a scripted origin, a settable clock, and edge nodes.

The nodes are real servers on loopback (see ``tests/support/nodes.py``); the dev
certificate is made in a temporary directory, never in the user's state directory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from edge.wiring.devcert import DevCert, ensure_dev_cert
from tests.support import nodes
from tests.support.nodes import Clock, Edge, SecureEdge, start_edge, start_secure_edge
from tests.support.scripted_origin import ScriptedOrigin


@pytest_asyncio.fixture
async def origin() -> AsyncIterator[ScriptedOrigin]:
    server = ScriptedOrigin()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture
async def edge(origin: ScriptedOrigin, clock: Clock) -> AsyncIterator[Edge]:
    """An edge on the HTTP/1.1 front in front of ``origin``, on the settable ``clock``."""
    node = await start_edge(origin.url, clock, read_timeout="2", connect_timeout="1")
    yield node
    node.server.close()
    await node.core.aclose()


@pytest.fixture(scope="session")
def dev_cert(tmp_path_factory: pytest.TempPathFactory) -> DevCert:
    return ensure_dev_cert(tmp_path_factory.mktemp("certs"))


@pytest.fixture(params=["ngh2", "h2"])
def h2_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each HTTP/2 engine of the own HTTPS front in turn, for every start_secure_edge of the
    test (``pytest.mark.usefixtures("h2_engine")``); Hypercorn runs once, its engine is its own."""
    own = "tls_front" not in request.fixturenames or request.getfixturevalue("tls_front") == "own"
    if not own and request.param != "h2":
        pytest.skip("Hypercorn has its own HTTP/2 engine")
    monkeypatch.setattr(nodes, "H2_ENGINE", str(request.param))
    return str(request.param)


@pytest.fixture(params=["qh3", "aioquic"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def secure_edge(origin: ScriptedOrigin, dev_cert: DevCert, backend: str) -> AsyncIterator[SecureEdge]:
    """An edge with HTTPS (HTTP/2, HTTP/1.1) and HTTP/3 on one port, on either QUIC backend."""
    node = await start_secure_edge(origin.url, dev_cert, backend, read_timeout="5", connect_timeout="1")
    yield node
    await node.stop()
