"""The access log: one JSON line per answered request, written in batches off the event loop.

Records come from :class:`edge.core.observe.RequestLog` as plain dicts; structlog's
processor chain (a maintained structured-logging library: a time stamp processor, then
its ``JSONRenderer`` with orjson) renders each one into an in-memory batch. A batch is
handed to a writer thread when it reaches :data:`BATCH_BYTES` or :data:`FLUSH_AFTER`
seconds after its first line, so a request costs the rendering and no system call.

Guarantees:
- every line is one complete JSON object followed by ``\\n``; workers of one node write
  to the same stdout or file: to a pipe in writes of at most ``PIPE_BUF`` bytes ending at
  a line boundary, to a file opened ``O_APPEND``, so lines of two workers do not mix (one
  line longer than ``PIPE_BUF`` written to a shared pipe can);
- the event loop never blocks on the destination: a stalled reader (a full pipe, a slow
  disk) fills a bounded queue of batches, after which batches are dropped and counted
  (:attr:`AccessLog.dropped`, exported as ``edge_access_log_dropped_lines_total``);
- :meth:`AccessLog.reopen` (SIGHUP) reopens a file destination after logrotate moved it;
- :meth:`AccessLog.close` writes what is buffered before the process exits.
"""

from __future__ import annotations

import asyncio
import os
import queue
import select
import stat
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, cast

import orjson
import structlog

from edge.core.observe import AccessRecord

__all__ = ["AccessLog"]

BATCH_BYTES = 64 * 1024
"""A batch this big is handed to the writer at once."""

FLUSH_AFTER = 0.1
"""Seconds a line waits at most before its batch is handed to the writer."""

MAX_BATCHES = 64
"""Batches queued for the writer before new ones are dropped (a stalled destination)."""


class _Batch:
    """Rendered lines collected in memory until the batch is handed to the writer."""

    __slots__ = ("lines", "size")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.size = 0


class _Stamp:
    """structlog processor: the record's epoch ``time`` as ISO 8601 UTC with milliseconds."""

    __slots__ = ("prefix", "second")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        when = event["time"]
        second = int(when)
        if second != self.second:  # formatted once a second, not per line
            self.second = second
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["time"] = f"{self.prefix}.{int((when - second) * 1000):03d}Z"
        return event


class AccessLog:
    """Renders records into batches on the loop; a thread writes them to ``destination``.

    ``destination``: ``-`` for stdout, otherwise a file path (created, appended to).
    """

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self.fd = self._open()
        self.dropped = 0
        """Lines dropped because the destination did not keep up."""
        self.batch = _Batch()
        self._stamp = _Stamp()
        self._render = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        self._timer: asyncio.TimerHandle | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(MAX_BATCHES)
        self._reopen = threading.Event()
        self._thread = threading.Thread(target=self._write_batches, name="access-log", daemon=True)
        self._thread.start()

    def _open(self) -> int:
        if self.destination == "-":
            return 1  # the process's stdout, also when sys.stdout was replaced
        return os.open(self.destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    # -- on the event loop -------------------------------------------------------------
    def __call__(self, record: AccessRecord) -> None:
        """Render ``record`` into the current batch (the AccessWriter of RequestLog).

        The record goes through structlog's processor chain (time stamp, then JSONRenderer)
        called directly: a bound logger's own machinery (context copy, method dispatch,
        the logger's lock and flush) measured 4.7 µs a line against 1.5 µs for the chain.
        """
        event = self._stamp(None, "info", dict(record))
        line = cast(bytes, self._render(None, "info", event))  # orjson renders bytes
        batch = self.batch
        batch.lines.append(line + b"\n")
        batch.size += len(line) + 1
        if batch.size >= BATCH_BYTES:
            self.flush()
        elif self._timer is None:  # the batch's first line: flush it soon
            self._timer = asyncio.get_running_loop().call_later(FLUSH_AFTER, self.flush)

    def flush(self) -> None:
        """Hand the current batch to the writer thread (dropped and counted when it is behind)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self.batch
        if not batch.lines:
            return
        data = b"".join(batch.lines)
        count = len(batch.lines)
        batch.lines.clear()
        batch.size = 0
        try:
            self._queue.put_nowait(data)
        except queue.Full:
            self.dropped += count

    def reopen(self) -> None:
        """Reopen a file destination before the next batch (after logrotate moved the file)."""
        if self.destination != "-":
            self._reopen.set()

    def close(self, timeout: float = 2.0) -> None:
        """Write what is buffered, then stop the writer thread (waiting at most ``timeout``)."""
        self.flush()
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    # -- the writer thread -------------------------------------------------------------
    def _write_batches(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                break
            if self._reopen.is_set():
                try:
                    fresh = self._open()
                except OSError as exc:  # keep writing where it was; the next SIGHUP tries again
                    why = exc.strerror or exc
                    print(f"edge: access log {self.destination} not reopened: {why}", file=sys.stderr)
                else:
                    old, self.fd = self.fd, fresh
                    os.close(old)
                self._reopen.clear()
            try:
                self._write(data)
            except OSError as exc:
                print(f"edge: access log {self.destination}: {exc.strerror or exc}", file=sys.stderr)
        if self.destination != "-":
            os.close(self.fd)

    def _write(self, data: bytes) -> None:
        fd = self.fd
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            # Writes to a pipe are atomic up to PIPE_BUF: cut at line ends below it.
            view = memoryview(data)
            start = 0
            while start < len(data):
                end = (
                    len(data)
                    if len(data) - start <= select.PIPE_BUF
                    else data.rfind(b"\n", start, start + select.PIPE_BUF) + 1
                )
                if end <= start:  # one line longer than PIPE_BUF: written whole, may interleave
                    end = data.index(b"\n", start) + 1
                _write_all(fd, view[start:end])
                start = end
        else:
            _write_all(fd, memoryview(data))


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]
