"""Content codings the node makes itself: which one a request gets, and making each once.

Guarantees:
- an object is compressed at most once per coding (``counts`` records each);
- bodies up to 16 KiB are compressed on the loop, larger ones in a one-thread
  pool, and nobody waits for a coding being made: identity is sent meanwhile;
- a sibling is charged to the store with its entry, so memory stays bounded;
- the thread's backlog is bounded (``BACKLOG_JOBS``, ``BACKLOG_BYTES``): beyond it a
  request gets identity and the coding is made on a later request (``skipped``), and a
  queued job whose entry left the store before its turn is dropped (``dropped``), so
  evicted bodies are neither kept alive nor compressed;
- :meth:`Compressor.close` drops the queued jobs and lets the running one end unseen:
  shutdown logs nothing;
- a miss is encoded as it streams (:meth:`stream_coding`, ``edge.codecs.StreamEncoder``
  at a fast level) in the coding a hit would get; that body becomes the stored object's
  sibling (weak validator) only until the one made at the configured level replaces it
  (:meth:`streamed`), so the node still makes each stored variant once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

from edge.cache.encoded import encoded_sibling
from edge.cache.entry import Entry
from edge.cache.memory import MemoryTier
from edge.codecs import compress
from edge.config import Config
from edge.http.accept_encoding import accepts, normalise_for_key
from edge.http.message import Request

IDENTITY = b"identity"
INLINE_COMPRESS_LIMIT = 16384
"""Bodies up to this size are compressed on the loop (well under a millisecond); larger in a thread."""
BACKLOG_JOBS = 16
"""Compressions waiting for the thread at most; a request beyond it gets identity meanwhile."""
BACKLOG_BYTES = 32 * 1024**2
"""Bytes of bodies waiting for (or in) the thread at most; one job is taken whatever its size."""

log = logging.getLogger("edge.core")


class Compressor:
    """Chooses and produces the encoded siblings of stored entries."""

    def __init__(self, config: Config, memory: MemoryTier) -> None:
        self.memory = memory
        self.codings = config.codings()
        self.levels = {b"br": config.brotli_level, b"zstd": config.zstd_level, b"gzip": config.gzip_level}
        self._coding_choice: dict[bytes | None, bytes] = {}
        """Accept-Encoding value → coding this node would send; a handful of distinct values in practice."""
        self.verdicts: dict[bytes | None, dict[bytes, bool]] = {}
        """Accept-Encoding value → {an upstream's Content-Encoding → may it be sent}: :meth:`accepts`
        memoised where the fast hit reads it (two dict lookups, no call)."""
        self._compressing: set[tuple[int, bytes]] = set()
        """(id(entry), coding) of the compressions queued or running."""
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-compress")
        self._queue: deque[tuple[Entry, bytes]] = deque()
        """Compressions waiting, oldest first: the thread is given one job at a time, so a job's
        entry is checked to be still stored when its turn comes."""
        self._busy = False
        self._backlog_bytes = 0
        self._closed = False
        self.counts: Counter[bytes] = Counter()
        """How many times each coding was produced: once per object and coding."""
        self.skipped = 0
        """Compressions not started because the backlog was full (the request got identity)."""
        self.dropped = 0
        """Queued compressions dropped at their turn: their entry had left the store."""

    def _coding_for(self, req: Request) -> bytes:
        accept = req.fields.get(b"accept-encoding")
        coding = self._coding_choice.get(accept)
        if coding is None:
            # No Accept-Encoding: identity, as nginx and curl users expect (RFC 9110 allows either).
            coding = IDENTITY if accept is None else normalise_for_key(accept, self.codings)
            if len(self._coding_choice) >= 1024:
                self._coding_choice.clear()
            self._coding_choice[accept] = coding
        return coding

    def accepts(self, accept: bytes | None, coding: bytes) -> bool:
        """Whether a request with this Accept-Encoding may be sent a body the upstream encoded
        in ``coding`` (``edge.http.accept_encoding.accepts``), memoised in :attr:`verdicts`."""
        verdicts = self.verdicts.get(accept)
        if verdicts is None:
            if len(self.verdicts) >= 1024:
                self.verdicts.clear()
            verdicts = self.verdicts[accept] = {}
        verdict = verdicts.get(coding)
        if verdict is None:
            if len(verdicts) >= 64:
                verdicts.clear()
            verdict = verdicts[coding] = accepts(accept, coding)
        return verdict

    def stream_coding(self, req: Request) -> bytes | None:
        """The coding a miss of a compressible 200 is encoded in as it streams, by the same
        choice as a hit's (:meth:`representation`); None for identity (Range requests too)."""
        if b"range" in req.fields:
            return None
        coding = self._coding_for(req)
        return None if coding == IDENTITY else coding

    def streamed(self, entry: Entry, coding: bytes, data: bytes) -> None:
        """``data``, ``entry``'s body encoded in ``coding`` as its miss streamed: the sibling
        until the one at the configured level is made (started here, once, as for a hit)."""
        encodings = entry.encodings
        if encodings is None or coding in encodings or not self.memory.holds(entry):
            return
        self._compress(entry, coding)
        if (id(entry), coding) not in self._compressing:
            return  # skipped (backlog full) or done inline: the stand-in would stay for good
        if coding not in encodings and len(data) < len(entry.body):
            encodings[coding] = encoded_sibling(entry, coding, data, weak=True)
            self.memory.recharge(entry)

    def representation(self, entry: Entry, req: Request) -> Entry:
        """The stored representation to send: a compressed sibling when the client takes one.

        Range requests get identity, as nginx does: a range of a compressed body is
        rarely what a client wants. A sibling still being made is not waited for.
        """
        encodings = entry.encodings
        if encodings is None or b"range" in req.fields:
            return entry
        coding = self._coding_for(req)
        if coding == IDENTITY:
            return entry
        sibling = encodings.get(coding)
        if sibling is not None:
            return sibling
        return self._compress(entry, coding)

    def settled(self, entry: Entry, chosen: Entry, req: Request) -> bool:
        """Whether ``chosen`` (what :meth:`representation` gave ``req`` for ``entry``) is what
        the same request gets until ``entry.encodings`` changes: False while identity stands
        in for a sibling that is being made or was skipped (a later request starts it), and
        while a miss's streamed body stands in for the one being made (:meth:`streamed`: the
        replacement leaves the number of siblings as it was)."""
        encodings = entry.encodings
        if encodings is None:
            return True
        coding = self._coding_for(req)
        return coding == IDENTITY or (
            encodings.get(coding) is chosen and (id(entry), coding) not in self._compressing
        )

    @property
    def pending(self) -> int:
        """Compressions queued or running in the thread."""
        return len(self._queue) + self._busy

    def _compress(self, entry: Entry, coding: bytes) -> Entry:
        """Start making ``coding`` for ``entry`` once; return the sibling if it is ready now."""
        token = (id(entry), coding)
        if token in self._compressing:
            return entry
        body = entry.body
        if len(body) <= INLINE_COMPRESS_LIMIT:
            self._attach(entry, coding, compress(coding, body, self.levels[coding]))
            return (entry.encodings or {}).get(coding, entry)
        if self._closed:
            return entry
        if self._busy and (
            len(self._queue) >= BACKLOG_JOBS or self._backlog_bytes + len(body) > BACKLOG_BYTES
        ):
            self.skipped += 1  # a later request for the object starts it once the backlog shrinks
            return entry
        self._compressing.add(token)
        self._queue.append((entry, coding))
        self._backlog_bytes += len(body)
        if not self._busy:
            self._next(asyncio.get_running_loop())
        return entry

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        """Give the thread the oldest queued job whose entry is still stored (on the loop)."""
        while self._queue:
            entry, coding = self._queue.popleft()
            if not self.memory.holds(entry):
                self._forget(entry, coding)
                self.dropped += 1
                continue
            self._busy = True
            future = self._pool.submit(compress, coding, entry.body, self.levels[coding])
            future.add_done_callback(partial(self._done, loop, entry, coding))
            return

    def _done(self, loop: asyncio.AbstractEventLoop, entry: Entry, coding: bytes, f: Future[bytes]) -> None:
        """In the thread: hand the result to the loop, unless the node stopped meanwhile."""
        if self._closed or f.cancelled():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed first: nothing to attach to
            loop.call_soon_threadsafe(self._compressed, loop, entry, coding, f)

    def _compressed(
        self, loop: asyncio.AbstractEventLoop, entry: Entry, coding: bytes, f: Future[bytes]
    ) -> None:
        self._busy = False
        if self._closed:
            return
        self._forget(entry, coding)
        try:
            data = f.result()
        except Exception:
            log.exception("compressing %r as %s failed", entry.key, coding.decode())
        else:
            self._attach(entry, coding, data)
        self._next(loop)

    def _forget(self, entry: Entry, coding: bytes) -> None:
        self._compressing.discard((id(entry), coding))
        self._backlog_bytes -= len(entry.body)

    def _attach(self, entry: Entry, coding: bytes, data: bytes) -> None:
        self.counts[coding] += 1
        if entry.encodings is None:
            return
        # A coding that does not shrink the body is not worth a second copy: send identity.
        entry.encodings[coding] = (
            entry if len(data) >= len(entry.body) else encoded_sibling(entry, coding, data)
        )
        self.memory.recharge(entry)

    def close(self) -> None:
        """Stop: queued jobs are dropped, a running one ends in its thread and is discarded."""
        self._closed = True
        self._queue.clear()
        self._compressing.clear()
        self._backlog_bytes = 0
        self._pool.shutdown(wait=False, cancel_futures=True)
