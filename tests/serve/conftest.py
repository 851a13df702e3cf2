"""Fixtures: an edge with all three public listeners (h1, TLS via Hypercorn, HTTP/3) on loopback.

The dev certificate is made in a temporary directory, never in the user's
state directory, so tests do not touch a developer's real dev CA.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from edge import config as edge_config
from edge.core import EdgeCore
from edge.serve.devcert import DevCert, ensure_dev_cert
from edge.serve.h3 import QuicListener
from edge.serve.server import Secure, bind_tcp, prepare_secure, start_h1, start_secure
from edge.serve.tls import bind_many
from tests.edge.conftest import Clock
from tests.edge.scripted_origin import ScriptedOrigin


@pytest.fixture(scope="session")
def dev_cert(tmp_path_factory: pytest.TempPathFactory) -> DevCert:
    return ensure_dev_cert(tmp_path_factory.mktemp("certs"))


def _same_port_pair() -> tuple[list[socket.socket], list[socket.socket], int]:
    """A TCP and a UDP socket on one free port number, as a real node listens."""
    for _ in range(50):
        tcp = bind_many("127.0.0.1:0", socket.SOCK_STREAM, reuse_port=False)
        port = tcp[0].getsockname()[1]
        try:
            udp = bind_many(f"127.0.0.1:{port}", socket.SOCK_DGRAM, reuse_port=False)
        except OSError:
            tcp[0].close()
            continue
        return tcp, udp, port
    raise RuntimeError("no free TCP+UDP port pair")


@dataclass
class SecureEdge:
    core: EdgeCore
    port: int
    """The HTTPS (TCP) and HTTP/3 (UDP) port."""
    h1_url: str
    cert: DevCert
    quic: QuicListener | None
    stop: Callable[[], Awaitable[None]]

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.port}"

    def h2_client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.https_url, http2=True, verify=self.ssl(), timeout=20, **kwargs)

    def ssl(self) -> ssl.SSLContext:
        """Trust the dev CA only: the test proves the chain and the SANs, not just TLS."""
        return ssl.create_default_context(cafile=str(self.cert.ca))


async def start_secure_edge(
    upstream: str, cert: DevCert, backend: str = "qh3", clock: Clock | None = None, **settings: Any
) -> SecureEdge:
    tls_socks, quic_socks, port = _same_port_pair()
    h1_sock = bind_tcp("127.0.0.1:0", reuse_port=False)
    flags = {
        "upstream": upstream,
        "listen": f"127.0.0.1:{h1_sock.getsockname()[1]}",
        "tls_listen": f"127.0.0.1:{port}",
        "quic_listen": f"127.0.0.1:{port}",
        "cert": str(cert.cert),
        "key": str(cert.key),
        "quic_backend": backend,
        "admin_listen": "",
        **settings,
    }
    config = edge_config.load(None, {}, flags)
    resolved = prepare_secure(config)
    assert resolved is not None
    core = EdgeCore(config, clock=clock or time.time)
    h1 = await start_h1(core, config, h1_sock)
    stop_event = asyncio.Event()
    tls_task, quic = await start_secure(core, config, Secure(resolved, tls_socks, quic_socks), stop_event)
    await asyncio.sleep(0.05)  # let Hypercorn bind its sockets

    async def stop() -> None:
        stop_event.set()
        h1.close()
        if quic is not None:
            quic.close()
        if tls_task is not None:
            await asyncio.wait_for(tls_task, 10)
        await core.aclose()

    return SecureEdge(core, port, f"http://127.0.0.1:{h1_sock.getsockname()[1]}", cert, quic, stop)


@pytest_asyncio.fixture
async def origin() -> AsyncIterator[ScriptedOrigin]:
    server = ScriptedOrigin()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(params=["qh3", "aioquic"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def secure_edge(origin: ScriptedOrigin, dev_cert: DevCert, backend: str) -> AsyncIterator[SecureEdge]:
    node = await start_secure_edge(origin.url, dev_cert, backend, read_timeout="5", connect_timeout="1")
    yield node
    await node.stop()


def ca_path(node: SecureEdge) -> Path:
    return node.cert.ca
