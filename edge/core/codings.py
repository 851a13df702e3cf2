"""Content codings the node makes itself: which one a request gets, and making each once.

Guarantees:
- an object is compressed at most once per coding (``counts`` records each);
- bodies up to 16 KiB are compressed on the loop, larger ones in a one-thread
  pool, and nobody waits for a coding being made: identity is sent meanwhile;
- a sibling is charged to the store with its entry, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor

from edge.cache.encoded import encoded_sibling
from edge.cache.entry import Entry
from edge.cache.memory import MemoryTier
from edge.codecs import compress
from edge.config import Config
from edge.http.accept_encoding import normalise_for_key
from edge.http.message import Request

IDENTITY = b"identity"
INLINE_COMPRESS_LIMIT = 16384
"""Bodies up to this size are compressed on the loop (well under a millisecond); larger in a thread."""

log = logging.getLogger("edge.core")


class Compressor:
    """Chooses and produces the encoded siblings of stored entries."""

    def __init__(self, config: Config, memory: MemoryTier) -> None:
        self.memory = memory
        self.codings = config.codings()
        self.levels = {b"br": config.brotli_level, b"zstd": config.zstd_level, b"gzip": config.gzip_level}
        self._coding_choice: dict[bytes | None, bytes] = {}
        """Accept-Encoding value → coding this node would send; a handful of distinct values in practice."""
        self._compressing: set[tuple[int, bytes]] = set()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-compress")
        self.counts: Counter[bytes] = Counter()
        """How many times each coding was produced: once per object and coding."""

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

    def _compress(self, entry: Entry, coding: bytes) -> Entry:
        """Start making ``coding`` for ``entry`` once; return the sibling if it is ready now."""
        token = (id(entry), coding)
        if token in self._compressing:
            return entry
        body = entry.body
        level = self.levels[coding]
        if len(body) <= INLINE_COMPRESS_LIMIT:
            self._attach(entry, coding, compress(coding, body, level))
            return (entry.encodings or {}).get(coding, entry)
        self._compressing.add(token)
        future = self._pool.submit(compress, coding, body, level)
        loop = asyncio.get_running_loop()

        def done(f: Future[bytes]) -> None:
            loop.call_soon_threadsafe(self._compressed, entry, coding, token, f)

        future.add_done_callback(done)
        return entry

    def _compressed(self, entry: Entry, coding: bytes, token: tuple[int, bytes], f: Future[bytes]) -> None:
        self._compressing.discard(token)
        try:
            data = f.result()
        except Exception:
            log.exception("compressing %r as %s failed", entry.key, coding.decode())
            return
        self._attach(entry, coding, data)

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
        self._pool.shutdown(wait=False, cancel_futures=True)
