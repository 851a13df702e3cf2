"""The disk tier: stored responses below the memory tier, in files, off the event loop.

``DiskTier`` keeps one file per stored response (``edge.cache.disk_format``) under
``DIR/objects/XX/NAME``, indexes them in memory (``edge.cache.disk_index``) within
``disk_size`` bytes, and does every file operation in its own thread pool: the loop
only submits work and applies results.

Rules this module guarantees:

- **A record is visible only when complete.** A write goes to ``.tmp-*`` in the record's
  own directory, is written whole, ``fdatasync``-ed, then renamed over the record's name
  (atomic on POSIX). The directory is not fsynced per write: a crash may lose the last
  renames (the object is fetched again), never tear a record. Leftover ``.tmp-*`` files
  are removed at load.
- **Nothing corrupt is served.** A record loaded at start is verified (length and
  XXH3-128 of the body) on its first read; records written by this process are
  verified on one read in ``VERIFY_EVERY``. A record that fails (or cannot be read) is
  unlinked and forgotten, and the caller fetches the object again.
- **A purge outlives a restart.** ``purge`` applies to the index at once and appends a
  line to ``DIR/purges.log`` (fsynced before :meth:`flush` returns); the loader applies
  every line to the records written before it. A write submitted before a purge and
  finished after it is checked against that purge before it is indexed.
- **A failing disk is not an error to clients.** Any ``OSError`` while writing (ENOSPC,
  EROFS, EIO, ...) turns writes off for ``RETRY_AFTER`` seconds with one log line (and
  ``disk_degraded`` = 1 in ``/stats`` and ``edge_disk_degraded``); the node serves from
  memory meanwhile. A failing read is a miss.
- **Bounded.** At most ``MAX_PENDING_BYTES`` of bodies wait to be written; an eviction
  beyond that is not written (``disk_writes_skipped``).
- **Large bodies are sent from the file, never read whole.** A record whose body is over
  ``PROMOTE_MAX`` is answered as a :class:`FileBody` (an open descriptor, the body's offset
  and length; not promoted to memory): ``os.sendfile`` where the sink can
  (``send_file``: cleartext HTTP/1.1), else read ``READ_PIECE`` at a time in the pool as the
  client takes it, one piece read ahead. Before a byte of it is sent, the file's length is
  checked (always) and, when due (first read since start, one in ``VERIFY_EVERY``), the
  body's digest, read in pieces in the pool. A body that fails while it is sent (short,
  or an error reading it) drops the record; the sink is aborted. Smaller records are read
  whole and promoted (the memory store's policy decides, as for any new entry).
- **Workers.** ``owns(key)`` says whether this worker owns a key (rendezvous over the
  node's workers): only the owner writes, reads and loads it, so workers sharing one
  directory never write the same file; other workers reach the key through the owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import xxhash

from edge.cache.disk_format import (
    KIND_ENTRY,
    KIND_META,
    KIND_SLICE,
    PREFIX,
    CorruptRecord,
    RecordHead,
    decode_head,
    encode_head,
    file_name,
    from_entry,
    head_length,
    slice_head,
    to_entry,
    verify_body,
)
from edge.cache.disk_index import (
    DiskIndex,
    Item,
    decode_snapshot,
    encode_snapshot,
    format_purge,
    item_of,
    matcher,
    parse_purges,
)
from edge.cache.entry import Entry
from edge.cache.key import accepts_coding, secondary_key
from edge.cache.slices import SliceMeta, meta_key
from edge.http.message import Request

__all__ = ["DiskTier", "FileBody"]

log = logging.getLogger("edge.disk")

MAX_PENDING_BYTES = 64 * 1024**2
VERIFY_EVERY = 16
RETRY_AFTER = 30.0
HEAD_READ = 4096
"""Bytes read first from a record at load; a longer head is read in a second call."""
THREADS = 4
LOAD_BATCH = 20_000
"""Records indexed per event-loop turn at start."""
SNAPSHOT_EVERY = 60.0
"""Seconds between index snapshots (when the index changed), besides one at a clean stop."""
PROMOTE_MAX = 64 * 1024
"""Largest body a disk hit reads into memory and promotes; a larger one is sent from its file
(``FileBody``) and stays on disk, where the page cache keeps it warm while it is popular."""
READ_PIECE = 256 * 1024
"""Bytes read per pool call when a file body goes to a sink that cannot ``send_file``, and per
call when a body's digest is checked."""
STUBS = 4096
"""Heads (body-less entries) of large records kept in memory, so a repeated disk hit neither
reads nor decodes its head (least recently used out)."""
NO_FD = -1


class DiskBodyError(OSError):
    """The record's body could not be sent whole: the file ended early or could not be read."""


class FileBody:
    """The body of a record, sent from its file: ``length`` bytes at ``offset`` of ``fd``.

    The owner calls :meth:`close` when done (also when cancelled); a read still running in the
    pool closes the descriptor when it ends, never under it.
    """

    __slots__ = ("_reading", "fd", "item", "length", "offset", "tier")

    def __init__(self, tier: DiskTier, item: Item, fd: int, offset: int, length: int) -> None:
        self.tier = tier
        self.item = item
        self.fd = fd
        self.offset = offset
        self.length = length
        self._reading: asyncio.Future[bytes] | None = None

    async def send(self, sink: Any, start: int, end: int) -> bool:
        """Send bytes ``start``..``end`` (inclusive) of the body to ``sink``; False when the
        disk failed (the record is dropped; the caller aborts the response)."""
        by_file = getattr(sink, "can_send_file", False)
        try:
            if by_file:
                await sink.send_file(self.fd, self.offset + start, end - start + 1)
            else:
                await self._send_pieces(sink, start, end)
        except DiskBodyError as exc:
            self.tier.failed(self.item, exc)
            return False
        self.tier.counts["sendfile_bytes" if by_file else "piece_bytes"] += end - start + 1
        return True

    async def send_file_to(self, send_file: Callable[[int, int, int], Awaitable[None]]) -> bool:
        """The whole body through ``send_file(fd, offset, count)`` (a front's own sendfile);
        False when the disk failed (the record is dropped; the caller aborts the response)."""
        try:
            await send_file(self.fd, self.offset, self.length)
        except DiskBodyError as exc:
            self.tier.failed(self.item, exc)
            return False
        self.tier.counts["sendfile_bytes"] += self.length
        return True

    async def _send_pieces(self, sink: Any, start: int, end: int) -> None:
        """Pieces of ``READ_PIECE`` read in the pool as the sink takes them, one read ahead."""
        loop = asyncio.get_running_loop()
        pool = self.tier.pool
        fd, base = self.fd, self.offset
        pos, stop = start, end + 1
        ahead: asyncio.Future[bytes] | None = None
        while pos < stop:
            n = min(READ_PIECE, stop - pos)
            reading = ahead or loop.run_in_executor(pool, _pread, fd, n, base + pos)
            self._reading = reading
            data = await reading
            pos += n
            ahead = None
            if pos < stop:  # the next piece is read while this one is written
                ahead = loop.run_in_executor(pool, _pread, fd, min(READ_PIECE, stop - pos), base + pos)
                self._reading = ahead
            await sink.write(data)
        self._reading = None

    def close(self) -> None:
        fd, self.fd = self.fd, NO_FD
        if fd == NO_FD:
            return
        reading = self._reading
        if reading is not None and not reading.done():
            reading.add_done_callback(lambda f: _close_after(f, fd))
        else:
            os.close(fd)


def _close_after(read: asyncio.Future[bytes], fd: int) -> None:
    """A read nobody awaits any more has ended: close its descriptor (its error, if any, is
    taken here, not logged as never retrieved)."""
    if not read.cancelled():
        read.exception()
    os.close(fd)


def _pread(fd: int, n: int, offset: int) -> bytes:
    """(thread) Exactly ``n`` bytes at ``offset``, or DiskBodyError."""
    try:
        data = os.pread(fd, n, offset)
    except OSError as exc:
        raise DiskBodyError(exc.errno, f"reading the body failed: {exc.strerror}") from None
    if len(data) != n:
        raise DiskBodyError(f"the body ends early ({len(data)} of {n} bytes at {offset})")
    return data


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _primary(key: bytes) -> bytes:
    """The primary key a record belongs to (a slice's or a description's key starts with it)."""
    return key.split(b"\x00", 1)[0]


def _writer_alive(tmp_name: str) -> bool:
    """Whether the process named in a temporary file (``.tmp-NAME-PID-THREAD``) still runs."""
    try:
        pid = int(tmp_name.split("-")[2])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def _checked_head(fd: int, item: Item, kind: int) -> tuple[RecordHead, int, os.stat_result]:
    """(thread) The head of the record open on ``fd``, its length and the file's stat;
    CorruptRecord unless it is ``item``'s record of ``kind`` and the file is as long as the
    head says."""
    data = os.pread(fd, HEAD_READ, 0)
    total = head_length(data[: PREFIX.size])
    if total > len(data):
        data += os.pread(fd, total - len(data), len(data))
    head = decode_head(data)
    if head.key != item.key or head.secondary != item.secondary or head.kind != kind:
        raise CorruptRecord("another object's record")
    st = os.fstat(fd)
    if st.st_size != total + head.body_length:
        raise CorruptRecord("file length differs from the head's")
    return head, total, st


class DiskTier:
    """One worker's view of the node's disk cache directory."""

    def __init__(
        self,
        directory: str,
        capacity: int,
        owns: Callable[[bytes], bool] = lambda _key: True,
        clock: Callable[[], float] = time.time,
        worker: int = 0,
    ) -> None:
        self.root = Path(directory)
        self.snapshot = self.root / f"index-{worker}.snap"
        """This worker's index snapshot; every worker reads all of them at start."""
        self.changes = 0
        """Index changes since the last snapshot."""
        self._snapshots: asyncio.Task[None] | None = None
        self.objects = self.root / "objects"
        self.purge_log = self.root / "purges.log"
        self.index = DiskIndex(capacity)
        self.owns = owns
        self.clock = clock
        self.pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="edge-disk")
        self.pending_bytes = 0
        self.generation = 0
        """Bumped by every purge and forget; a write checks the ones made while it ran."""
        self._since: list[tuple[int, Callable[[Item], bool]]] = []
        self._log_writes: list[asyncio.Future[None]] = []
        self._writes: set[asyncio.Future[Item]] = set()
        self.degraded_until = 0.0
        self.degraded = False
        self.loaded = False
        self.load_seconds = 0.0
        self._reads = 0
        self.stubs: OrderedDict[str, tuple[Item, Entry]] = OrderedDict()
        """Large records' entries without body, by file name (``STUBS``; valid while the index
        holds the same item)."""
        self.counts = dict.fromkeys(
            ("hits", "misses", "writes", "write_bytes", "writes_skipped", "write_errors", "corrupt",
             "read_errors", "evictions", "loaded_records", "dropped_at_load", "file_hits",
             "fast_hits", "sendfile_bytes", "piece_bytes"),
            0,
        )  # fmt: skip

    # -- start -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Rebuild the index from the directory (heads only); the node serves meanwhile."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        gen = self.generation
        try:
            items, dropped = await loop.run_in_executor(self.pool, self._load)
        except OSError as exc:
            self._fail(f"cannot use {self.root}: {exc}")
            self.loaded = True
            return
        gone: list[Item] = []
        for i in range(0, len(items), LOAD_BATCH):  # a million adds would hold the loop ~1 s
            if i:
                await asyncio.sleep(0)
            for item in items[i : i + LOAD_BATCH]:
                if self.generation != gen and any(match(item) for _g, match in self._since):
                    gone.append(item)  # purged (or forgotten) while the index was being rebuilt
                    continue
                gone.extend(self.index.add(item))
        self._unlink_later(gone)
        if not self.pending_bytes:
            self._since.clear()
        self.counts["loaded_records"] = len(self.index)
        self.counts["dropped_at_load"] = dropped
        self.load_seconds = time.perf_counter() - started
        self.loaded = True
        self._snapshots = loop.create_task(self._snapshot_every(SNAPSHOT_EVERY))
        log.info(
            "disk cache %s: %d records (%d bytes) indexed in %.2f s, %d dropped",
            self.root, len(self.index), self.index.total, self.load_seconds, dropped,
        )  # fmt: skip

    def _load(self) -> tuple[list[Item], int]:
        """(thread) Every valid record's item, oldest first; unlinks torn, purged and temp files."""
        for sub in range(256):
            (self.objects / f"{sub:02x}").mkdir(parents=True, exist_ok=True)
        try:
            purges = parse_purges(self.purge_log.read_bytes())
        except FileNotFoundError:
            purges = []
        rules = [(line.soft, line.covers()) for line in purges]
        known = self._read_snapshots()
        items: list[Item] = []
        dropped = 0
        for sub in range(256):
            with os.scandir(self.objects / f"{sub:02x}") as entries:
                for dirent in entries:
                    if dirent.name.startswith(".tmp-"):
                        if not _writer_alive(dirent.name):  # another worker's write under way stays
                            _unlink(Path(dirent.path))
                        continue
                    item = known.get(dirent.name)
                    if item is None:  # written since the last snapshot: its head is read
                        item = self._load_one(dirent.path, dirent.name)
                    if item is None:
                        dropped += 1
                        _unlink(Path(dirent.path))
                        continue
                    if not self.owns(_primary(item.key)):
                        continue  # another worker's: it loads (and serves) it
                    if dirent.name in known and any(covers(item) for _, covers in rules):
                        # The snapshot may describe an older version that a purge covers while
                        # the file was rewritten after it: judge the file's own head.
                        item = self._load_one(dirent.path, dirent.name)
                        if item is None:
                            dropped += 1
                            _unlink(Path(dirent.path))
                            continue
                    hard = False
                    for soft, covers in rules:
                        if covers(item):
                            if soft:
                                item.fresh_until = float("-inf")
                            else:
                                hard = True
                                break
                    if hard:
                        dropped += 1
                        _unlink(Path(dirent.path))
                        continue
                    items.append(item)
        items.sort(key=lambda item: item.stored_at)
        return items, dropped

    def _read_snapshots(self) -> dict[str, Item]:
        """(thread) The items of every worker's snapshot by file name (the newest of a name wins).

        A snapshot may be older than the directory: a record it lists that is gone is skipped
        (only listed files are looked up), one written since is not in it (its head is read),
        and one rewritten since is described by its older version until it is first read,
        which checks the record's own head and digest before anything is served.
        """
        known: dict[str, Item] = {}
        for path in sorted(self.root.glob("index-*.snap")):
            try:
                items = decode_snapshot(path.read_bytes())
            except (OSError, ValueError, EOFError, TypeError) as exc:
                log.warning("disk cache: ignoring the index snapshot %s: %s", path, exc)
                continue
            for item in items:
                old = known.get(item.name)
                if old is None or old.stored_at < item.stored_at:
                    known[item.name] = item
        return known

    async def _snapshot_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            if self.changes:
                await self.write_snapshot()

    async def write_snapshot(self) -> None:
        """Write this worker's index snapshot (the item list is copied on the loop, encoded and
        written in a thread: tmp, fsync, rename)."""
        items = list(self.index.by_name.values())
        self.changes = 0
        try:
            await asyncio.get_running_loop().run_in_executor(self.pool, self._write_snapshot, items)
        except OSError as exc:
            log.warning("disk cache: cannot write the index snapshot: %s", exc)

    def _write_snapshot(self, items: list[Item]) -> None:
        data = encode_snapshot(items)
        tmp = self.snapshot.with_name(f".tmp-{self.snapshot.name}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.snapshot)

    @staticmethod
    def _load_one(path: str, name: str) -> Item | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            data = os.read(fd, HEAD_READ)
            total = head_length(data[: PREFIX.size])
            if total > len(data):
                data += os.pread(fd, total - len(data), len(data))
            head = decode_head(data)
            if file_name(head.key, head.secondary) != name:
                raise CorruptRecord("record under another name")
            if os.fstat(fd).st_size != head.head_length + head.body_length:
                raise CorruptRecord("file length differs from the head's")
        except (CorruptRecord, OSError):
            return None
        finally:
            os.close(fd)
        return item_of(name, head, verified=False)

    # -- writes ----------------------------------------------------------------------------
    def spill(self, entry: Entry, secondary: bytes) -> None:
        """Write ``entry`` (stored in memory, evicted, or too large for it) unless it is there already."""
        name = file_name(entry.key, secondary)
        if self._current(name, entry.response_time, len(entry.body), entry.fresh_until):
            return
        self._submit(
            entry.key, name, len(entry.body), lambda at: from_entry(entry, secondary, at), entry.body
        )

    def spill_meta(self, meta: SliceMeta) -> None:
        """Write the description of a sliced object unless it is there already."""
        entry, key = meta.entry, meta_key(meta.entry.key)
        name = file_name(key, b"")
        if self._current(name, entry.response_time, 0, entry.fresh_until):
            return

        def head(at: float) -> RecordHead:
            h = from_entry(entry, b"", at)
            h.key, h.kind = key, KIND_META
            h.object_length, h.slice_size, h.token = meta.length, meta.slice_size, meta.token
            return h

        self._submit(entry.key, name, 0, head, b"")

    def spill_slice(self, key: bytes, data: bytes) -> None:
        """Write one slice's bytes (``key``: its slice key, naming the object's token) once."""
        name = file_name(key, b"")
        current = self.index.by_name.get(name)
        if current is not None:
            self.index.touch(current)  # a slice key's bytes never change
            return
        self._submit(_primary(key), name, len(data), lambda at: slice_head(key, data, at), data)

    def _current(self, name: str, response_time: float, length: int, fresh_until: float) -> bool:
        current = self.index.by_name.get(name)
        if current is not None and current.fingerprint == (response_time, length, fresh_until):
            self.index.touch(current)
            return True
        return False

    def _submit(
        self, owner_key: bytes, name: str, size: int, head: Callable[[float], RecordHead], body: bytes
    ) -> None:
        if not self.loaded or not self.owns(owner_key):
            return
        if self.degraded and self.clock() < self.degraded_until:
            return
        if self.pending_bytes + size > MAX_PENDING_BYTES or size > self.index.capacity:
            self.counts["writes_skipped"] += 1
            return
        self.pending_bytes += size
        loop = asyncio.get_running_loop()
        gen = self.generation
        future = loop.run_in_executor(self.pool, self._write, head, body, name, self.clock())
        self._writes.add(future)
        future.add_done_callback(lambda f: self._written(f, size, gen))

    def _path(self, name: str) -> Path:
        return self.objects / name[:2] / name

    def _write(
        self, make_head: Callable[[float], RecordHead], body: bytes, name: str, stored_at: float
    ) -> Item:
        """(thread) Write the record under a temporary name, fdatasync, rename."""
        head = make_head(stored_at)
        data = encode_head(head)
        path = self._path(name)
        tmp = path.with_name(f".tmp-{name}-{os.getpid()}-{threading.get_ident()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for chunk in (data, body):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            os.fdatasync(fd)
            inode = os.fstat(fd).st_ino
        except BaseException:
            os.close(fd)
            _unlink(tmp)
            raise
        os.close(fd)
        os.rename(tmp, path)
        item = item_of(name, head, verified=True)
        item.inode = inode
        return item

    def _written(self, future: asyncio.Future[Item], size: int, gen: int) -> None:
        self.pending_bytes -= size
        self._writes.discard(future)
        exc = future.exception()
        if exc is not None:
            self.counts["write_errors"] += 1
            if isinstance(exc, OSError):
                self._fail(f"writing to {self.root} failed: {exc}")
            else:
                log.error("disk cache write failed", exc_info=exc)
            return
        item = future.result()
        if self.degraded:
            self.degraded = False
            log.warning("disk cache %s: writes succeed again", self.root)
        if gen != self.generation and any(g > gen and match(item) for g, match in self._since):
            self._unlink_later([item])  # purged while it was being written
            return
        self.counts["writes"] += 1
        self.counts["write_bytes"] += item.size
        self.changes += 1
        gone = self.index.add(item)
        self.counts["evictions"] += sum(1 for g in gone if g is not item)
        self._unlink_later(gone)
        if not self.pending_bytes:
            self._since.clear()

    def _fail(self, why: str) -> None:
        self.degraded_until = self.clock() + RETRY_AFTER
        if not self.degraded:
            self.degraded = True
            log.error(
                "disk cache degraded to memory only: %s (writes retried every %.0f s)", why, RETRY_AFTER
            )

    def _unlink_later(self, items: list[Item]) -> None:
        if items:
            paths = [self._path(item.name) for item in items]
            self.pool.submit(_unlink_all, paths)

    # -- reads -----------------------------------------------------------------------------
    def _choose(self, req: Request, key: bytes) -> Item | None:
        """The record of ``key`` whose secondary key ``req`` selects (no I/O)."""
        found = self.index.by_key.get(key)
        if found is None:
            return None
        if type(found) is Item:
            if not found.vary or secondary_key(req, found.vary) == found.secondary:
                return found
            return None
        assert type(found) is dict
        for candidate in found.values():
            if not candidate.vary or secondary_key(req, candidate.vary) == candidate.secondary:
                return candidate
        return None

    async def find(
        self, req: Request, key: bytes, whole: bool = False
    ) -> tuple[Entry, bytes, FileBody | None] | None:
        """The stored response on disk matching ``req``, its secondary key and, for a body over
        ``PROMOTE_MAX`` (unless ``whole``), the :class:`FileBody` to send it from (the entry
        then has no body; the caller closes it); or None."""
        item = self._choose(req, key)
        if item is not None and not whole and item.body_length > PROMOTE_MAX:
            opened = await self._open(item, KIND_ENTRY)
            if opened is None:
                return None
            entry, body = opened
            assert entry is not None
            if not accepts_coding(req, entry.negotiated):
                body.close()
                return None
            return entry, item.secondary, body
        value = await self._get(item, KIND_ENTRY)
        if type(value) is not Entry or not accepts_coding(req, value.negotiated):
            return None
        assert item is not None
        return value, item.secondary, None

    def fast_hit(self, req: Request, key: bytes, now: float) -> tuple[Entry, FileBody] | None:
        """A fresh large record for ``req`` whose head is in memory and whose body is sent from
        its file now, without the pool (no check of its digest due); else None. Never awaits."""
        item = self._choose(req, key)
        if item is None or item.body_length <= PROMOTE_MAX or now >= item.fresh_until:
            return None
        stub = self.stubs.get(item.name)
        if stub is None or stub[0] is not item:
            return None
        entry = stub[1]
        if now >= entry.fresh_until or (
            entry.negotiated is not None and not accepts_coding(req, entry.negotiated)
        ):
            return None
        if not item.verified or self._due(item):
            return None  # this read checks the digest: the full path does it in the pool
        body = self._open_now(item)
        if body is None:
            return None
        self.index.touch(item)
        self.stubs.move_to_end(item.name)
        counts = self.counts
        counts["hits"] += 1
        counts["file_hits"] += 1
        counts["fast_hits"] += 1
        return entry, body

    async def find_meta(self, key: bytes) -> SliceMeta | None:
        """The description of the sliced object at primary key ``key``, or None."""
        item = (self.index.variants(meta_key(key)) or {}).get(b"")
        meta = await self._get(item, KIND_META)
        assert meta is None or type(meta) is SliceMeta
        return meta

    def has_slice(self, key: bytes) -> bool:
        """Whether a slice record sent from its file (see :meth:`slice_body`) is indexed."""
        item = self.index.by_key.get(key)
        return type(item) is Item and item.body_length > PROMOTE_MAX

    async def slice_body(self, key: bytes) -> FileBody | None:
        """The bytes stored under slice key ``key`` as a :class:`FileBody` when over
        ``PROMOTE_MAX`` (not promoted), else None (then :meth:`find_slice` reads them)."""
        item = self.index.by_key.get(key)
        if type(item) is not Item or item.body_length <= PROMOTE_MAX:
            return None
        opened = await self._open(item, KIND_SLICE)
        return None if opened is None else opened[1]

    async def find_slice(self, key: bytes) -> bytes | None:
        """The bytes stored under slice key ``key``, or None."""
        item = (self.index.variants(key) or {}).get(b"")
        data = await self._get(item, KIND_SLICE)
        assert data is None or type(data) is bytes
        return data

    def _due(self, item: Item) -> bool:
        """Count a read of ``item``; whether it must check the body's digest (not checked since
        the start, or this read is the sample: then ``item.verified`` stays False until a read
        has checked it, whichever path that read takes)."""
        self._reads += 1
        if self._reads % VERIFY_EVERY == 0:
            item.verified = False
        return not item.verified

    def _drop(self, item: Item, exc: BaseException) -> None:
        corrupt = isinstance(exc, CorruptRecord) or getattr(exc, "errno", None) == errno.ENOENT
        self.counts["corrupt" if corrupt else "read_errors"] += 1
        log.warning("disk cache: dropping %s (%s): %s", item.name, item.key.decode("latin-1"), exc)
        self.stubs.pop(item.name, None)
        if self.index.remove(item):
            self._unlink_later([item])

    def failed(self, item: Item, exc: BaseException) -> None:
        """A body being sent from ``item``'s file could not be read whole: drop the record."""
        self._drop(item, exc)

    def _open_now(self, item: Item) -> FileBody | None:
        """``item``'s body as a FileBody, opened on the loop (a checked record: its length is
        checked, not its digest); None when the file is not the one checked (the caller asks
        the pool) or is gone or of another length (then the record is dropped)."""
        try:
            fd = os.open(self._path(item.name), os.O_RDONLY)
        except OSError as exc:
            self._drop(item, exc)
            return None
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            self._drop(item, exc)
            return None
        if st.st_ino != item.inode:
            os.close(fd)  # renamed over since it was checked: the pool reads its head
            return None
        if st.st_size != item.size:
            os.close(fd)
            self._drop(item, CorruptRecord(f"file is {st.st_size} bytes, the index says {item.size}"))
            return None
        return FileBody(self, item, fd, item.size - item.body_length, item.body_length)

    async def _open(self, item: Item, kind: int) -> tuple[Entry | None, FileBody] | None:
        """``item``'s entry without body (KIND_ENTRY; None for a slice) and its FileBody: opened
        on the loop when its head is known and no digest check is due, else in the pool (head
        read and checked, length, and the digest when due)."""
        if not self.owns(_primary(item.key)):
            self.counts["misses"] += 1
            return None
        stub = self.stubs.get(item.name) if kind == KIND_ENTRY else None
        if stub is not None and stub[0] is not item:
            stub = None
        due = self._due(item)
        body: FileBody | None = None
        entry: Entry | None = None
        if not due and (kind != KIND_ENTRY or stub is not None) and item.inode:
            body = self._open_now(item)
            if body is None and self.index.by_name.get(item.name) is not item:
                return None  # dropped
            entry = stub[1] if stub is not None else None
        if body is None:
            loop = asyncio.get_running_loop()
            try:
                opened = await loop.run_in_executor(self.pool, self._open_record, item, due, kind)
            except (CorruptRecord, OSError) as exc:
                self._drop(item, exc)
                return None
            if opened is None or self.index.by_name.get(item.name) is not item:
                if opened is not None:
                    os.close(opened[0])
                self.counts["misses"] += 1  # replaced, purged or evicted meanwhile
                return None
            fd, head, inode = opened
            item.verified = True
            item.inode = inode
            body = FileBody(self, item, fd, head.head_length, head.body_length)
            if kind == KIND_ENTRY:
                entry = to_entry(head, b"")
                self.stubs[item.name] = (item, entry)
                if len(self.stubs) > STUBS:
                    self.stubs.popitem(last=False)
        if entry is not None and item.fresh_until == float("-inf"):  # soft-purged since written
            entry.fresh_until = item.fresh_until
        self.index.touch(item)
        self.counts["hits"] += 1
        self.counts["file_hits"] += 1
        return entry, body

    def _open_record(self, item: Item, verify: bool, kind: int) -> tuple[int, RecordHead, int] | None:
        """(thread) The open file of ``item``, its head and inode, checked: head, length and (if
        ``verify``) the body's digest, read in pieces; None when the file holds another version
        of the same key (renamed over it, not yet indexed); CorruptRecord when it is not whole."""
        fd = os.open(self._path(item.name), os.O_RDONLY)
        try:
            head, total, st = _checked_head(fd, item, kind)
            if (head.response_time, head.body_length) != (item.response_time, item.body_length):
                os.close(fd)
                return None
            if verify:
                digest = xxhash.xxh3_128()
                pos, end = total, total + head.body_length
                while pos < end:
                    chunk = os.pread(fd, min(4 * READ_PIECE, end - pos), pos)
                    if not chunk:
                        raise CorruptRecord("body shorter than its length")
                    digest.update(chunk)
                    pos += len(chunk)
                if digest.digest() != head.body_digest:
                    raise CorruptRecord("body digest differs")
        except BaseException:
            os.close(fd)
            raise
        return fd, head, st.st_ino

    async def _get(self, item: Item | None, kind: int) -> Entry | SliceMeta | bytes | None:
        if item is None or not self.owns(_primary(item.key)):
            self.counts["misses"] += 1
            return None
        verify = self._due(item)
        loop = asyncio.get_running_loop()
        try:
            value, inode = await loop.run_in_executor(self.pool, self._read, item, verify, kind)
        except (CorruptRecord, OSError) as exc:
            self._drop(item, exc)
            return None
        if self.index.by_name.get(item.name) is not item:  # purged or replaced meanwhile
            self.counts["misses"] += 1
            return None
        item.verified = True
        item.inode = inode
        self.index.touch(item)
        if item.fresh_until == float("-inf"):  # soft-purged since it was written
            if type(value) is Entry:
                value.fresh_until = item.fresh_until
            elif type(value) is SliceMeta:
                value.entry.fresh_until = item.fresh_until
        self.counts["hits"] += 1
        return value

    def _read(self, item: Item, verify: bool, kind: int) -> tuple[Entry | SliceMeta | bytes, int]:
        """(thread) The record's value and inode; CorruptRecord unless it is whole (and, if
        asked, verified)."""
        fd = os.open(self._path(item.name), os.O_RDONLY)
        try:
            head, total, st = _checked_head(fd, item, kind)
            # The body read on its own: one copy from the page cache, none to cut it out.
            body = os.pread(fd, head.body_length, total) if head.body_length else b""
        finally:
            os.close(fd)
        if verify:
            verify_body(head, body)
        elif len(body) != head.body_length:
            raise CorruptRecord("body length differs")
        if kind == KIND_SLICE:
            return body, st.st_ino
        if kind == KIND_META:
            head.key = _primary(head.key)  # the record's key is the description's, the entry's the URL's
            return SliceMeta(to_entry(head, body), head.object_length, head.slice_size, head.token), st.st_ino
        return to_entry(head, body), st.st_ino

    # -- forgetting ------------------------------------------------------------------------
    def forget(self, key: bytes) -> None:
        """Drop the URL's records (an unsafe method, or the upstream withdrew permission)."""
        keys = (key, meta_key(key))
        self._note(lambda item: item.key in keys)
        self._unlink_later(self.index.remove_key(key) + self.index.remove_key(meta_key(key)))

    def purge(self, kind: str, target: str, soft: bool) -> int:
        """Apply a purge to the index now; its log line is durable once :meth:`flush` returns."""
        match = matcher(kind, target)
        self._note(match)
        items = self.index.matching(match)
        if soft:
            for item in items:
                item.fresh_until = float("-inf")
        else:
            for item in items:
                self.index.remove(item)
            self._unlink_later(items)
        line = format_purge(self.clock(), kind, target, soft)
        loop = asyncio.get_running_loop()
        self._log_writes.append(loop.run_in_executor(self.pool, self._append_purge, line))
        return sum(1 for item in items if b"\x00slice\x00" not in item.key)  # responses, not slices

    def _append_purge(self, line: bytes) -> None:
        fd = os.open(self.purge_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def flush(self) -> None:
        """Wait until every purge so far is in the (fsynced) purge log."""
        writes, self._log_writes = self._log_writes, []
        for write in writes:
            try:
                await write
            except OSError as exc:
                self._fail(f"cannot append to {self.purge_log}: {exc}")

    def _note(self, match: Callable[[Item], bool]) -> None:
        self.generation += 1
        self.changes += 1
        if self.pending_bytes or not self.loaded:
            self._since.append((self.generation, match))

    # -- the rest --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "disk_entries": len(self.index),
            "disk_bytes": self.index.total,
            "disk_capacity": self.index.capacity,
            "disk_degraded": int(self.degraded),
            "disk_ready": int(self.loaded),
            "disk_load_seconds": round(self.load_seconds, 3),
            **{f"disk_{name}": value for name, value in self.counts.items()},
        }

    async def drain(self) -> None:
        """Wait for the writes submitted so far (tests, and a graceful stop)."""
        while self._writes:
            await asyncio.wait(list(self._writes))
        await self.flush()

    async def aclose(self) -> None:
        await self.drain()
        if self._snapshots is not None:
            self._snapshots.cancel()
            if self.changes and self.loaded:
                await self.write_snapshot()
        await asyncio.get_running_loop().run_in_executor(None, self.pool.shutdown)
