"""Real nodes on loopback for tests: an edge on the HTTP/1.1 front, or with HTTPS and HTTP/3 too.

The fixtures that use these live in ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from edge import config as edge_config
from edge.core import EdgeCore
from edge.fronts.h3 import QuicListener
from edge.wiring.devcert import DevCert
from edge.wiring.process import Secure, bind_tcp, prepare_secure, start_h1, start_secure
from edge.wiring.tls import bind_many

H2_ENGINE: str | None = None
"""The own HTTPS front's HTTP/2 engine for start_secure_edge (the ``h2_engine`` fixture sets
it per test); None: the config's default."""


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


async def start_edge(
    upstream: str, clock: Clock | None = None, siblings: Sequence[str | None] = (), **settings: Any
) -> Edge:
    """An edge on the HTTP/1.1 front; ``siblings`` makes it one worker of a node (see EdgeCore)."""
    port = free_port()
    flags = {"upstream": upstream, "listen": f"127.0.0.1:{port}", **settings}
    config = edge_config.load(None, {}, flags)
    core = EdgeCore(config, clock=clock or time.time, siblings=siblings)
    server = await start_h1(core, config, bind_tcp(config.listen, reuse_port=False))
    return Edge(core, f"http://127.0.0.1:{port}", port, server)


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
    upstream: str,
    cert: DevCert,
    backend: str = "qh3",
    clock: Clock | None = None,
    cert_files: tuple[str, str] | None = None,
    **settings: Any,
) -> SecureEdge:
    """``cert_files``: the ``cert`` and ``key`` settings (comma lists) instead of ``cert``'s."""
    tls_socks, quic_socks, port = _same_port_pair()
    h1_sock = bind_tcp("127.0.0.1:0", reuse_port=False)
    flags = {
        "upstream": upstream,
        "listen": f"127.0.0.1:{h1_sock.getsockname()[1]}",
        "tls_listen": f"127.0.0.1:{port}",
        "quic_listen": f"127.0.0.1:{port}",
        "cert": cert_files[0] if cert_files else str(cert.cert),
        "key": cert_files[1] if cert_files else str(cert.key),
        "quic_backend": backend,
        "admin_listen": "",
        **({"h2_engine": H2_ENGINE} if H2_ENGINE else {}),
        **settings,
    }
    config = edge_config.load(None, {}, flags)
    resolved = prepare_secure(config)
    assert resolved is not None
    core = EdgeCore(config, clock=clock or time.time)
    h1 = await start_h1(core, config, h1_sock)
    stop_event = asyncio.Event()
    tls_task, quic, _ = await start_secure(core, config, Secure(resolved, tls_socks, quic_socks), stop_event)
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


def ca_path(node: SecureEdge) -> Path:
    return node.cert.ca
