"""Shared helpers of the origin tests: the test-site layout, a threaded server, raw HTTP."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette

#: mtime given to every file of the test site (Sun, 06 Nov 1994 08:49:37 GMT).
SITE_MTIME = 784111777
FINGERPRINTED_JS = "app.3f9a1c2b.js"
JS_BODY = b"".join(
    b"export function f%d(x) { return x * %d + 'value-%d'; }\n" % (i, i, i) for i in range(400)
)
BIG_SIZE = 1024 * 1024 + 123  # above the origin's inline limit: streamed in chunks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Site:
    root: Path
    outside: Path
    big: bytes


class ServerThread:
    """Hypercorn serving an ASGI app on 127.0.0.1 in a background thread."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="origin-test-server", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.accesslog = None
        config.errorlog = None

        async def main() -> None:
            self._stop = asyncio.Event()
            await serve(self.app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
        finally:
            self._loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._error is not None:
                raise RuntimeError("origin test server failed to start") from self._error
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("origin test server did not start")

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(port: int, request: bytes, timeout: float = 5.0) -> RawResponse:
    """Send bytes as-is over a fresh connection and parse the (single) response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, headers, body)


#: ``raw_get(target, method="GET")`` fixture type: the target is sent verbatim.
RawGet = Callable[..., RawResponse]
