"""WebSocket clients over HTTP/2 (RFC 8441) and HTTP/3 (RFC 9220) extended CONNECT, for the
tests and benchmarks.websocket.

No library offers a WebSocket client over HTTP/2 or HTTP/3 in Python, so these are made of
parts: the ``h2`` library (HTTP/2) or aioquic's H3 API (HTTP/3) carry the stream, and the
``websockets`` library's sans-I/O :class:`websockets.protocol.Protocol` frames the messages
(already OPEN: RFC 8441 has no Sec-WebSocket-Key handshake). Both verify the server's
certificate against the given CA. Client DATA respects the server's flow-control windows (h2).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

__all__ = ["H2Client", "H3Client", "WsStream", "h2_client", "h3_client"]

ENABLE_CONNECT_PROTOCOL = 0x8


class WsStream:
    """One WebSocket on one extended CONNECT stream (either protocol)."""

    def __init__(self, client: H2Client | H3Client, stream_id: int) -> None:
        self.client = client
        self.stream_id = stream_id
        self.ws = Protocol(Side.CLIENT, max_size=None)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        """DATA of a response that was not a 200 (a refusal's text)."""
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.messages: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        """Messages received; None once the stream ended or was reset."""
        self.ended = asyncio.Event()
        self.reset_code: int | None = None

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers).get(name)

    # -- from the transport --------------------------------------------------------------------
    def on_head(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = int(dict(headers)[b":status"])
        self.headers = [(k, v) for k, v in headers if not k.startswith(b":")]
        if not self.head.done():
            self.head.set_result(None)

    def on_data(self, data: bytes) -> None:
        if self.status != 200:
            self.body += data
            return
        self.ws.receive_data(data)
        for frame in self.ws.events_received():
            if not isinstance(frame, Frame):
                continue
            if frame.opcode is Opcode.TEXT:
                self.messages.put_nowait(bytes(frame.data).decode())
            elif frame.opcode is Opcode.BINARY:
                self.messages.put_nowait(bytes(frame.data))
        pending = self.ws.data_to_send()  # pongs, the close frame's answer
        if pending:
            self.client.send_stream_data(self.stream_id, b"".join(pending))

    def on_end(self, reset: int | None = None) -> None:
        self.reset_code = reset
        if not self.head.done():
            self.head.set_result(None)
        self.ended.set()
        self.messages.put_nowait(None)

    # -- the application -----------------------------------------------------------------------
    async def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.ws.send_text(message.encode())
        else:
            self.ws.send_binary(message)
        await self.client.send_data(self.stream_id, b"".join(self.ws.data_to_send()))

    async def recv(self, timeout: float = 10.0) -> str | bytes | None:
        """The next message; None when the stream ended (or was reset)."""
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def close(self) -> None:
        """A close frame, then END_STREAM."""
        if self.ended.is_set():
            return
        self.ws.send_close()
        await self.client.send_data(self.stream_id, b"".join(self.ws.data_to_send()), end=True)


def _connect_head(path: str, authority: str, extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"https"),
        (b":path", path.encode()),
        (b":authority", authority.encode()),
        (b"sec-websocket-version", b"13"),
        *extra,
    ]


class H2Client:
    """An HTTP/2 connection (h2 library) opening WebSockets by extended CONNECT."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, authority: str) -> None:
        self.reader = reader
        self.writer = writer
        self.authority = authority
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.streams: dict[int, WsStream] = {}
        self.settings: asyncio.Future[dict[int, int]] = asyncio.get_running_loop().create_future()
        self.window = asyncio.Event()
        self.reading: asyncio.Task[None] | None = None
        self.hold_credit = False
        """Give no flow-control credit back for received DATA (until :meth:`release_credit`)."""
        self.sent = 0
        """DATA payload bytes sent (within the server's windows)."""
        self.held: dict[int, int] = {}

    def release_credit(self) -> None:
        self.hold_credit = False
        for stream_id, size in self.held.items():
            self.conn.acknowledge_received_data(size, stream_id)
        self.held.clear()
        self.flush()

    async def start(self) -> None:
        self.conn.initiate_connection()
        self.flush()
        self.reading = asyncio.get_running_loop().create_task(self._read())
        await asyncio.wait_for(asyncio.shield(self.settings), 10)

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for event in self.conn.receive_data(data):
                    self._event(event)
                self.flush()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            for stream in self.streams.values():
                if not stream.ended.is_set():
                    stream.on_end(reset=-1)
            if not self.settings.done():
                self.settings.set_exception(ConnectionError("closed before SETTINGS"))

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            if not self.settings.done():
                self.settings.set_result({int(k): v.new_value for k, v in event.changed_settings.items()})
            self.window.set()
            return
        if isinstance(event, h2.events.WindowUpdated):
            self.window.set()
            return
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if stream is None:
            if isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        if isinstance(event, h2.events.ResponseReceived):
            stream.on_head(list(event.headers or ()))
        elif isinstance(event, h2.events.DataReceived):
            stream.on_data(event.data or b"")
            size = event.flow_controlled_length or 0
            if size and self.hold_credit:
                self.held[stream.stream_id] = self.held.get(stream.stream_id, 0) + size
            elif size:
                self.conn.acknowledge_received_data(size, stream.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            stream.on_end()
        elif isinstance(event, h2.events.StreamReset):
            stream.on_end(reset=int(event.error_code or 0))

    async def websocket(self, path: str, extra: list[tuple[bytes, bytes]] | None = None) -> WsStream:
        """Open a WebSocket on a new stream; its ``status`` is the server's answer (200: open)."""
        stream_id = self.conn.get_next_available_stream_id()
        stream = self.streams[stream_id] = WsStream(self, stream_id)
        self.conn.send_headers(stream_id, _connect_head(path, self.authority, extra or []))
        self.flush()
        await asyncio.wait_for(asyncio.shield(stream.head), 20)
        return stream

    async def stream_get(self, path: str, extra: list[tuple[bytes, bytes]] | None = None) -> WsStream:
        """A GET whose response DATA is queued as it arrives (see :meth:`H3Client.stream_get`)."""
        stream_id = self.conn.get_next_available_stream_id()
        stream = self.streams[stream_id] = _RawStream(self, stream_id)
        head = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", self.authority.encode()),
                (b":path", path.encode()), *(extra or [])]  # fmt: skip
        self.conn.send_headers(stream_id, head, end_stream=True)
        self.flush()
        await asyncio.wait_for(asyncio.shield(stream.head), 20)
        return stream

    def send_stream_data(self, stream_id: int, data: bytes) -> None:
        asyncio.get_running_loop().create_task(self.send_data(stream_id, data))

    async def send_data(self, stream_id: int, data: bytes, end: bool = False) -> None:
        view = memoryview(data)
        while True:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.window.clear()
                await asyncio.wait_for(self.window.wait(), 30)
                continue
            chunk, view = view[:window], view[window:]
            last = not len(view)
            self.conn.send_data(stream_id, bytes(chunk), end_stream=end and last)
            self.sent += len(chunk)
            self.flush()
            if last:
                break
        await self.writer.drain()

    async def aclose(self) -> None:
        with_closing = not self.writer.is_closing()
        if with_closing:
            self.conn.close_connection()
            self.flush()
            self.writer.close()
        if self.reading is not None:
            self.reading.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


@asynccontextmanager
async def h2_client(
    host: str, port: int, cafile: str | None, server_name: str = "localhost"
) -> AsyncIterator[H2Client]:
    ctx = ssl.create_default_context(cafile=cafile)
    if cafile is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=server_name)
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    client = H2Client(reader, writer, f"{server_name}:{port}")
    try:
        await client.start()
        yield client
    finally:
        await client.aclose()


class H3Client(QuicConnectionProtocol):
    """An HTTP/3 connection (aioquic) opening WebSockets by extended CONNECT; also reads
    streamed responses event by event (``get``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.authority = ""
        self.streams: dict[int, WsStream] = {}
        self.settings_seen = asyncio.Event()

    @property
    def settings(self) -> dict[int, int]:
        return dict(self.h3.received_settings or {})

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset) and event.stream_id in self.streams:
            self.streams[event.stream_id].on_end(reset=event.error_code)
        if isinstance(event, ConnectionTerminated):
            for ended in self.streams.values():
                if not ended.ended.is_set():
                    ended.on_end(reset=-1)
        for h3_event in self.h3.handle_event(event):
            stream = self.streams.get(getattr(h3_event, "stream_id", -1))
            if stream is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                stream.on_head(list(h3_event.headers))
            elif isinstance(h3_event, DataReceived):
                stream.on_data(h3_event.data)
            if getattr(h3_event, "stream_ended", False):
                stream.on_end()
        if self.h3.received_settings is not None:
            self.settings_seen.set()

    async def websocket(self, path: str, extra: list[tuple[bytes, bytes]] | None = None) -> WsStream:
        stream_id = self._quic.get_next_available_stream_id()
        stream = self.streams[stream_id] = WsStream(self, stream_id)
        self.h3.send_headers(stream_id, _connect_head(path, self.authority, extra or []), end_stream=False)
        self.transmit()
        await asyncio.wait_for(asyncio.shield(stream.head), 20)
        return stream

    def send_stream_data(self, stream_id: int, data: bytes) -> None:
        self.h3.send_data(stream_id, data, end_stream=False)
        self.transmit()

    async def send_data(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self.h3.send_data(stream_id, data, end_stream=end)
        self.transmit()

    async def stream_get(self, path: str, extra: list[tuple[bytes, bytes]] | None = None) -> WsStream:
        """A GET whose response DATA is queued as it arrives (for Server-Sent Events): the
        returned stream's ``messages`` carry each DATA payload as bytes."""
        stream_id = self._quic.get_next_available_stream_id()
        stream = self.streams[stream_id] = _RawStream(self, stream_id)
        head = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", self.authority.encode()),
                (b":path", path.encode()), *(extra or [])]  # fmt: skip
        self.h3.send_headers(stream_id, head, end_stream=True)
        self.transmit()
        await asyncio.wait_for(asyncio.shield(stream.head), 20)
        return stream


class _RawStream(WsStream):
    def on_data(self, data: bytes) -> None:
        if data:
            self.messages.put_nowait(data)


@asynccontextmanager
async def h3_client(
    host: str, port: int, cafile: str | None, server_name: str = "localhost"
) -> AsyncIterator[H3Client]:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=server_name)
    if cafile is None:
        config.verify_mode = ssl.CERT_NONE
    else:
        config.load_verify_locations(cafile=cafile)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: H3Client(QuicConnection(configuration=config)), sock=sock
    )
    assert isinstance(protocol, H3Client)
    protocol.authority = f"{server_name}:{port}"
    try:
        protocol.connect((host, port))
        await protocol.wait_connected()
        await asyncio.wait_for(protocol.settings_seen.wait(), 10)
        yield protocol
    finally:
        protocol.close()
        await asyncio.sleep(0.01)
        transport.close()
