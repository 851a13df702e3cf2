"""An in-flight upstream fetch that several clients read at once (request collapsing).

A Fill owns the bytes of one response while it arrives. Every reader tails it
from the first byte at its own pace; a reader that goes away never stops the
fill for the others. The fill runs in its own task, not in any client's.

Memory: while the response is being stored (``keep``), the fill holds the whole
body, which is bounded by ``max_object_size``. Once it will not be stored, a
chunk is dropped as soon as every reader has passed it, and the fetch waits
(:meth:`Fill.room`) while the slowest reader is more than ``high_water`` bytes
behind, so a slow client costs a bounded buffer, not the whole object.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from edge.http.fields import Headers

if TYPE_CHECKING:
    from edge.cache.entry import Entry

HIGH_WATER = 4 << 20
"""Bytes a not-stored fill may run ahead of its slowest reader."""


class Reader:
    """One client reading a fill: its position, compared by identity (two readers may be at one index)."""

    __slots__ = ("index",)

    def __init__(self) -> None:
        self.index = 0


class Fill:
    """The response head and the growing body of one upstream fetch."""

    def __init__(self, key: bytes, stale: Entry | None = None, high_water: int = HIGH_WATER) -> None:
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
        self.leader_fields: Headers = []
        """Fields only the client that started the fill receives (its Set-Cookie)."""
        self.length: int | None = None
        """Declared body length, or None when the upstream did not declare one."""
        self.not_storable: str | None = None
        """Why the response will not be stored (None while it will be)."""
        self.vary: tuple[bytes, ...] | None = ()
        self.secondary: bytes = b""
        """Secondary key of the request that started the fill, for Vary matching."""
        self.discard = False
        """Set by a purge during the fetch: readers get the body, the store does not."""
        self.compressible = False
        """The node may encode this response itself: readers that take a coding get it encoded."""
        self.stored: Entry | None = None
        """The entry stored from this fill once it is (set before readers see the end)."""
        self.keep = True
        """Hold every chunk (the body is being stored); False frees chunks once read."""
        self.high_water = high_water
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False
        self.error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._readers: list[Reader] = []
        """Active readers; removed by identity."""
        self._freed = 0
        """Chunks below this index have been released."""
        self._freed_bytes = 0
        self._room: asyncio.Future[None] | None = None

    @property
    def readers(self) -> int:
        return len(self._readers)

    def set_head(self) -> None:
        if not self.head.done():
            self.head.set_result(None)

    def fail_head(self, exc: Exception) -> None:
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # mark retrieved: readers may all be gone

    def stop_keeping(self) -> None:
        """The body will not be stored: release what every reader has read."""
        self.keep = False
        self._release()

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

    def body(self) -> bytes:
        """The whole body; only meaningful while ``keep`` held all along."""
        return b"".join(self.chunks)

    async def room(self) -> bool:
        """Wait while the slowest reader lags too far; False when nobody reads any more."""
        while not self.keep:
            if not self._readers:
                return False
            if self.size - self._freed_bytes <= self.high_water:
                return True
            self._room = asyncio.get_running_loop().create_future()
            await self._room
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _release(self) -> None:
        if self.keep:
            return
        upto = min((r.index for r in self._readers), default=len(self.chunks))
        chunks = self.chunks
        for i in range(self._freed, upto):
            self._freed_bytes += len(chunks[i])
            chunks[i] = b""
        self._freed = max(self._freed, upto)
        room = self._room
        if room is not None and not room.done():
            self._room = None
            room.set_result(None)

    def attach(self) -> Reader:
        """Register a reader before it waits for the head, so no chunk is freed before it reads."""
        if not self.keep and self._freed:
            raise RuntimeError("fill already released its first chunks; cannot join")
        reader = Reader()
        self._readers.append(reader)
        return reader

    def detach(self, reader: Reader) -> None:
        """Idempotent: a reader may leave early and again in a ``finally``."""
        for i, current in enumerate(self._readers):
            if current is reader:
                del self._readers[i]
                self._release()
                return

    async def tail(self, reader: Reader) -> AsyncIterator[bytes]:
        """Every body chunk from the reader's position; raises the fill's error on truncation."""
        while True:
            chunks = self.chunks
            while reader.index < len(chunks):
                chunk = chunks[reader.index]
                reader.index += 1
                yield chunk
                if not self.keep:
                    self._release()
            if self.error is not None:
                raise self.error
            if self.done:
                return
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._waiter)
