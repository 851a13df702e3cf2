"""An in-flight upstream fetch that several clients read at once (request collapsing).

A Fill owns the bytes of one response while it arrives. Every reader tails it
from the first byte at its own pace; a reader that goes away never stops the
fill for the others. The fill runs in its own task, not in any client's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from edge.http.fields import Headers

if TYPE_CHECKING:
    from edge.cache.entry import Entry


class Fill:
    """The response head and the growing body of one upstream fetch."""

    def __init__(self, key: bytes, stale: Entry | None = None) -> None:
        self.key = key
        self.stale = stale
        """The stored response being revalidated, if any (its validators went upstream)."""
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Resolves when the head arrived, or carries the upstream error."""
        self.status = 0
        """Status of the response readers get (the stored one's after a 304 refresh)."""
        self.upstream_status = 0
        """What the upstream answered, for Cache-Status fwd-status."""
        self.age = 0
        """Age the response already had on arrival (RFC 9111 §4.2.3), whole seconds."""
        self.reason = b""
        self.headers: Headers = []
        """Client-facing fields: hop-by-hop removed, Date ensured, Via added."""
        self.length: int | None = None
        """Declared body length, or None when the upstream did not declare one."""
        self.not_storable: str | None = None
        """Why the response will not be stored (None while it will be)."""
        self.vary: tuple[bytes, ...] | None = ()
        self.secondary: bytes = b""
        """Secondary key of the request that started the fill, for Vary matching."""
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False
        self.error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.readers = 0

    def set_head(self) -> None:
        if not self.head.done():
            self.head.set_result(None)

    def fail_head(self, exc: Exception) -> None:
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # mark retrieved: readers may all be gone

    def append(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def fail(self, exc: Exception) -> None:
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def tail(self) -> AsyncIterator[bytes]:
        """Every body chunk from the first; raises the fill's error on truncation."""
        index = 0
        self.readers += 1
        try:
            while True:
                chunks = self.chunks
                while index < len(chunks):
                    yield chunks[index]
                    index += 1
                if self.error is not None:
                    raise self.error
                if self.done:
                    return
                if self._waiter is None:
                    self._waiter = asyncio.get_running_loop().create_future()
                await asyncio.shield(self._waiter)
        finally:
            self.readers -= 1
