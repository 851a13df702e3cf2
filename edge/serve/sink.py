"""The seam between the core and a protocol adapter (hypercorn-style typing.Protocol)."""

from __future__ import annotations

from typing import Protocol

from edge.http.fields import Headers


class ResponseSink(Protocol):
    """Where the core writes one response. Each adapter implements it for its protocol.

    ``start`` receives end-to-end fields only; the adapter adds framing
    (Content-Length or chunking, Connection) itself. For a HEAD request the
    adapter sends the head with ``length`` as Content-Length and no body.
    """

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
