"""A small HTTP/3 client on aioquic's client API, for tests and the bounded h3 load run.

It verifies the server's certificate against the dev CA (no ``verify_mode``
shortcut), so a test passing also proves the chain and the SANs are right.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import QuicEvent, StreamReset


@dataclass
class H3Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    interim: list[int] = field(default_factory=list)
    reset: int | None = None
    """Error code when the server reset the stream instead of ending it."""

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name.encode():
                return v.decode("latin-1")
        return None


class H3ClientProtocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.pending: dict[int, tuple[H3Response, asyncio.Future[H3Response]]] = {}
        self.keep_body = True
        self.received = 0
        self.head_streams: set[int] = set()
        # aioquic's H3 client checks Content-Length against the DATA it got without knowing
        # the request was HEAD, and closes the connection over a correct HEAD response.
        check = self.h3._check_content_length

        def check_unless_head(stream: Any) -> None:
            if stream.stream_id not in self.head_streams:
                check(stream)

        self.h3._check_content_length = check_unless_head  # type: ignore[method-assign]

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset) and event.stream_id in self.pending:
            resp, fut = self.pending.pop(event.stream_id)
            resp.reset = event.error_code
            if not fut.done():
                fut.set_result(resp)
        for h3_event in self.h3.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if not isinstance(event, HeadersReceived | DataReceived) or event.stream_id not in self.pending:
            return
        resp, fut = self.pending[event.stream_id]
        if isinstance(event, HeadersReceived):
            status = int(dict(event.headers)[b":status"])
            if status < 200:
                resp.interim.append(status)
            else:
                resp.status = status
                resp.headers = [(k, v) for k, v in event.headers if not k.startswith(b":")]
        else:
            self.received += len(event.data)
            if self.keep_body:
                resp.body += event.data
        if event.stream_ended:
            del self.pending[event.stream_id]
            if not fut.done():
                fut.set_result(resp)

    def peer_serial(self) -> int:
        """The serial of the certificate the server presented."""
        cert = self._quic.tls._peer_certificate
        assert cert is not None
        return int(cert.serial_number)

    async def request(
        self,
        path: str,
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        authority: str = "localhost",
        body: bytes = b"",
    ) -> H3Response:
        stream_id = self._quic.get_next_available_stream_id()
        head = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        head += [(k.lower().encode(), v.encode()) for k, v in headers or []]
        fut: asyncio.Future[H3Response] = asyncio.get_running_loop().create_future()
        self.pending[stream_id] = (H3Response(), fut)
        if method == "HEAD":
            self.head_streams.add(stream_id)
        self.h3.send_headers(stream_id, head, end_stream=not body)
        if body:
            self.h3.send_data(stream_id, body, end_stream=True)
        self.transmit()
        return await fut


def client_configuration(cafile: str | None, server_name: str = "localhost") -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        server_name=server_name,
        max_data=64 * 1024**2,
        max_stream_data=32 * 1024**2,
    )
    if cafile is None:
        config.verify_mode = ssl.CERT_NONE
    else:
        config.load_verify_locations(cafile=cafile)
    return config


@asynccontextmanager
async def h3_client(
    host: str, port: int, cafile: str | None, server_name: str = "localhost"
) -> AsyncIterator[H3ClientProtocol]:
    """aioquic's ``connect`` without its wait for the closing period (≈1 s per connection);
    ``server_name``: the SNI name asked for and verified."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    connection = QuicConnection(configuration=client_configuration(cafile, server_name))
    transport, protocol = await loop.create_datagram_endpoint(lambda: H3ClientProtocol(connection), sock=sock)
    assert isinstance(protocol, H3ClientProtocol)
    try:
        # IPv6 addresses must be 4-tuples: that is how datagrams arrive, and aioquic compares them.
        protocol.connect((host, port, 0, 0) if family == socket.AF_INET6 else (host, port))
        await protocol.wait_connected()
        yield protocol
    finally:
        protocol.close()
        await asyncio.sleep(0.01)  # let the CONNECTION_CLOSE leave
        transport.close()


@dataclass
class LoadResult:
    requests: int
    bytes: int
    seconds: float
    cpu_seconds: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def mbps(self) -> float:
        return self.bytes / self.seconds / 1e6


async def h3_load(
    host: str,
    port: int,
    path: str,
    cafile: str | None,
    connections: int = 4,
    streams: int = 16,
    duration: float = 3.0,
) -> LoadResult:
    """Bounded load: ``connections`` x ``streams`` request loops for ``duration`` seconds."""
    count = 0
    total = 0
    deadline = 0.0

    async def loop(client: H3ClientProtocol) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            resp = await client.request(path)
            assert resp.status == 200, resp.status
            count += 1

    clients = [h3_client(host, port, cafile) for _ in range(connections)]
    protocols = [await c.__aenter__() for c in clients]
    for p in protocols:
        p.keep_body = False
        await p.request(path)  # warm: connection up, object cached
        p.received = 0
    cpu0 = time.process_time()
    start = time.monotonic()
    deadline = start + duration
    await asyncio.gather(*(loop(p) for p in protocols for _ in range(streams)))
    elapsed = time.monotonic() - start
    cpu = time.process_time() - cpu0
    total = sum(p.received for p in protocols)
    for c in clients:
        await c.__aexit__(None, None, None)
    return LoadResult(count, total, elapsed, cpu)
