"""A hand-written WebSocket origin for the tunnel tests: it answers the handshake with a valid
101 (after ``interim`` heads and ``delay`` seconds), may push ``greeting`` (raw frame bytes),
then either reads nothing (``deaf``: its socket fills) or records every byte it reads."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator

WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RawWsOrigin:
    def __init__(self, interim: bytes, delay: float, greeting: bytes, deaf: bool) -> None:
        self.interim = interim
        self.delay = delay
        self.greeting = greeting
        self.deaf = deaf
        self.done = asyncio.Event()
        """Set to let every connection go."""
        self.switched = asyncio.Event()
        """A 101 was sent."""
        self.received = bytearray()
        """Bytes read after the handshake's head (when not deaf)."""
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())
            if self.interim:
                writer.write(self.interim)
            await asyncio.sleep(self.delay)
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: %s\r\n\r\n%s" % (accept, self.greeting)
            )
            self.switched.set()
            if self.deaf:
                await self.done.wait()  # never reads again
                return
            while data := await reader.read(65536):
                self.received += data
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # (cancelled: the test's loop is closing)
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def raw_ws_origin(
    interim: bytes = b"", delay: float = 0.0, greeting: bytes = b"", deaf: bool = False
) -> AsyncIterator[RawWsOrigin]:
    origin = RawWsOrigin(interim, delay, greeting, deaf)
    server = await asyncio.start_server(origin.handle, "127.0.0.1", 0)
    origin.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield origin
    finally:
        origin.done.set()
        server.close()
