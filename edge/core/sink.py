"""The seam between the core and a protocol adapter (hypercorn-style typing.Protocol)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from edge.core.observe import Recorder, RequestLog
from edge.http.fields import Headers
from edge.http.message import Request

log = logging.getLogger("edge.core")


class ResponseSink(Protocol):
    """Where the core writes one response. Each adapter implements it for its protocol.

    ``start`` receives end-to-end fields only; the adapter adds framing
    (Content-Length or chunking, Connection) itself. For a HEAD request the
    adapter sends the head with ``length`` as Content-Length and no body.
    """

    started: bool
    """True once ``start`` ran: after that an error can only cut the response short."""

    def interim(self, status: int, headers: Headers) -> None:
        """Relay a 1xx interim response (e.g. 103 Early Hints)."""

    def start(self, status: int, reason: bytes, headers: Headers, length: int | None) -> None:
        """Send the final response head; ``length`` None means length unknown."""

    async def write(self, data: bytes | memoryview) -> None:
        """Send body bytes, waiting while the client is slow (backpressure)."""

    def end(self) -> None:
        """The body is complete."""

    def abort(self) -> None:
        """The body cannot be completed: close so the client sees truncation."""


async def serve_guarded(
    serve: Callable[[Request, ResponseSink], Awaitable[None]],
    req: Request,
    sink: ResponseSink,
    log: RequestLog | None = None,
) -> None:
    """Run the core for one request; a bug answers 500 (or cuts the body) instead of killing the adapter.

    With ``log`` (every client-facing front passes the core's), the request is counted and,
    when the access log is on, logged once it is answered, also when it failed or was cut.
    """
    if log is None:
        await _serve_guarded(serve, req, sink)
        return
    started = time.perf_counter()
    recorder = Recorder(sink)
    try:
        await _serve_guarded(serve, req, recorder)
    finally:
        log.done(req, recorder, started)


async def _serve_guarded(
    serve: Callable[[Request, ResponseSink], Awaitable[None]], req: Request, sink: ResponseSink
) -> None:
    try:
        await serve(req, sink)
    except Exception:
        log.exception("serving %r failed", req)
        if not sink.started:
            sink.start(500, b"Internal Server Error", [(b"content-type", b"text/plain")], 22)
            await sink.write(b"internal server error\n")
            sink.end()
        else:
            sink.abort()
