"""Large disk hits sent from their record files (issue 20): ``os.sendfile`` on cleartext
HTTP/1.1, pieces read in the pool on HTTP/2; exact bytes, never a corrupt record, bounded
memory for a client that stops reading, and a disk failing mid-body cutting one response.

Real edge and origin on loopback, real clients (httpx, raw sockets). Memory is 1 MiB, so
every body here is over ``PROMOTE_MAX`` and lives on disk only; "a restart" is a new core
on the same directory (its records then are unchecked until first read).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from edge.cache.disk_format import decode_head
from edge.fronts.h1 import LIVE
from edge.wiring.devcert import DevCert
from tests.support.nodes import Edge, start_edge, start_secure_edge
from tests.support.scripted_origin import ScriptedOrigin, fixed
from tests.support.waiting import unchanged_for, within

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]

FIELDS = [("Content-Type", "application/octet-stream"), ("Cache-Control", "max-age=600"), ("ETag", '"v1"')]
WHOLE = os.urandom(3 * 1024 * 1024 + 777)
"""Kept whole (slice_size 32 MiB): one record."""
SLICED = os.urandom(4 * 1024 * 1024 + 12345)
"""Kept as slices of 1 MiB (the last one short), one record each, beside its description."""
SMALL = os.urandom(32 * 1024)
"""Read whole and promoted to memory, as before."""
HUGE = os.urandom(16 << 20)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Node:
    def __init__(self, origin: ScriptedOrigin, directory: Path) -> None:
        self.origin = origin
        self.directory = directory
        self.edge: Edge | None = None
        self.port = 0

    async def start(self, **settings: Any) -> Edge:
        flags = {"disk_cache": str(self.directory), "disk_size": "256MiB", "cache_size": "1MiB", **settings}
        edge = await start_edge(self.origin.url, None, (), **flags)
        assert edge.core._disk_start is not None
        await edge.core._disk_start
        self.edge = edge
        self.port = self.port or edge.port  # the key's authority: kept across restarts
        return edge

    async def stop(self) -> None:
        assert self.edge is not None
        self.edge.server.close()
        await self.edge.core.aclose()
        self.edge = None

    def client(self) -> Any:
        assert self.edge is not None
        return self.edge.client(headers={"Host": f"127.0.0.1:{self.port}"}, timeout=30)

    def stats(self) -> dict[str, Any]:
        assert self.edge is not None
        return self.edge.core.stats()

    def records(self, path: str) -> list[Path]:
        """The record files holding ``path``'s body: its entry, or each of its slices."""
        key = f"http://127.0.0.1:{self.port}{path}".encode()
        found = []
        for record in (self.directory / "objects").rglob("*"):
            if record.is_file() and not record.name.startswith(".tmp"):
                head = decode_head(record.read_bytes())
                if head.key == key or head.key.startswith(key + b"\x00slice\x00"):
                    found.append(record)
        return found


@pytest_asyncio.fixture
async def node(origin: ScriptedOrigin, tmp_path: Path) -> AsyncIterator[Node]:
    origin.routes["/whole"] = fixed(200, WHOLE, FIELDS)
    origin.routes["/sliced"] = fixed(200, SLICED, FIELDS)
    origin.routes["/small"] = fixed(200, SMALL, FIELDS)
    origin.routes["/huge"] = fixed(200, HUGE, FIELDS)
    n = Node(origin, tmp_path / "disk")
    yield n
    if n.edge is not None:
        await n.stop()


async def fill(node: Node, *paths: str) -> None:
    async with node.client() as c:
        for path in paths:
            r = await c.get(path)
            assert r.status_code == 200
    assert node.edge is not None and node.edge.core.disk is not None
    await node.edge.core.disk.drain()


RANGES = [
    ("bytes=0-0", [(0, 0)]),
    ("bytes=1000-2000000", [(1000, 2000000)]),
    ("bytes=-70000", None),  # suffix
    ("bytes=1048570-1048580", [(1048570, 1048580)]),  # across a slice boundary
    ("bytes=5-9,2000000-2100000", [(5, 9), (2000000, 2100000)]),  # multipart
]


def expected(body: bytes, spec: str, spans: list[tuple[int, int]] | None) -> list[bytes]:
    if spans is None:
        return [body[-int(spec.split("-")[1]) :]]
    return [body[a : b + 1] for a, b in spans]


def parts_of(content: bytes, content_type: str) -> list[bytes]:
    boundary = content_type.split("boundary=")[1].encode()
    out = []
    for chunk in content.split(b"--" + boundary)[1:-1]:
        out.append(chunk.split(b"\r\n\r\n", 1)[1][:-2])
    return out


async def check_bodies(c: Any, paths: dict[str, bytes]) -> None:
    for path, body in paths.items():
        r = await c.get(path)
        assert r.status_code == 200 and sha(r.content) == sha(body), path
        assert r.headers["content-length"] == str(len(body))
        for spec, spans in RANGES:
            r = await c.get(path, headers={"Range": spec})
            assert r.status_code == 206, (path, spec)
            want = expected(body, spec, spans)
            got = [r.content] if len(want) == 1 else parts_of(r.content, r.headers["content-type"])
            assert [sha(g) for g in got] == [sha(w) for w in want], (path, spec)
        r = await c.head(path)
        assert r.status_code == 200 and r.headers["content-length"] == str(len(body)) and not r.content


async def test_sendfile_sends_the_origins_exact_bytes_whole_and_in_ranges(node: Node) -> None:
    await node.start(slice_size="1MiB")
    await fill(node, "/sliced", "/small")
    await node.stop()
    await node.start(slice_size="32MiB")
    await fill(node, "/whole")
    async with node.client() as c:
        # twice: the first read after start checks the digest in the pool, the next ones don't
        for _ in range(2):
            await check_bodies(c, {"/whole": WHOLE, "/sliced": SLICED})
    stats = node.stats()
    assert stats["disk_fast_hits"] >= 1  # the HTTP/1.1 front's disk hit, without the full path
    # every byte of the large bodies went by sendfile; none was read into memory
    assert stats["disk_sendfile_bytes"] >= 2 * (len(WHOLE) + len(SLICED))
    assert stats["disk_piece_bytes"] == 0
    assert node.origin.count("/whole") == 1 and node.origin.count("/sliced") <= 5
    # a small record is still read whole and promoted: the next one is a memory hit
    async with node.client() as c:
        r = await c.get("/small")
        assert r.content == SMALL
    assert node.edge is not None and node.edge.core.memory.holds_key(
        f"http://127.0.0.1:{node.port}/small".encode()
    )


async def test_http2_reads_pieces_and_sends_the_exact_bytes(
    origin: ScriptedOrigin, tmp_path: Path, dev_cert: DevCert
) -> None:
    origin.routes["/whole"] = fixed(200, WHOLE, FIELDS)
    flags = {"disk_cache": str(tmp_path / "disk"), "disk_size": "256MiB", "cache_size": "1MiB",
             "slice_size": "32MiB"}  # fmt: skip
    secure = await start_secure_edge(origin.url, dev_cert, **flags)
    try:
        assert secure.core._disk_start is not None
        await secure.core._disk_start
        async with secure.h2_client() as c:
            assert sha((await c.get("/whole")).content) == sha(WHOLE)
            assert secure.core.disk is not None
            await secure.core.disk.drain()
            for _ in range(2):
                r = await c.get("/whole")
                assert r.http_version == "HTTP/2" and sha(r.content) == sha(WHOLE)
                r = await c.get("/whole", headers={"Range": "bytes=100-1500000"})
                assert r.status_code == 206 and sha(r.content) == sha(WHOLE[100:1500001])
        stats = secure.core.stats()
        assert stats["disk_piece_bytes"] >= 2 * len(WHOLE) and stats["disk_sendfile_bytes"] == 0
        assert origin.count("/whole") == 1
    finally:
        await secure.stop()


def flip(record: Path, at_from_end: int) -> None:
    """Flip one bit of the body, ``at_from_end`` bytes before the end of the file."""
    with record.open("r+b") as f:
        f.seek(-at_from_end, os.SEEK_END)
        byte = f.read(1)
        f.seek(-at_from_end, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0x10]))


def all_records(directory: Path) -> list[Path]:
    return [r for r in (directory / "objects").rglob("*") if r.is_file() and not r.name.startswith(".tmp")]


@pytest.mark.parametrize("how", ["whole", "range", "head-then-whole"])
async def test_a_record_corrupted_after_start_is_never_sent(node: Node, how: str) -> None:
    await node.start(slice_size="1MiB")
    await fill(node, "/sliced")
    await node.stop()
    await node.start(slice_size="32MiB")
    await fill(node, "/whole")
    await node.stop()
    await node.start(slice_size="1MiB")  # records loaded at start: unchecked until first read
    records = node.records("/whole") + node.records("/sliced")
    assert len(records) == 1 + 5
    for record in records:
        flip(record, 1000)
    origin = node.origin
    async with node.client() as c:
        for path, body in (("/whole", WHOLE), ("/sliced", SLICED)):
            if how == "whole":
                r = await c.get(path)
                assert r.status_code == 200 and sha(r.content) == sha(body)
            elif how == "range":
                r = await c.get(path, headers={"Range": "bytes=-5000"})
                assert r.status_code == 206 and r.content == body[-5000:]
            else:
                r = await c.head(path)
                assert r.headers["content-length"] == str(len(body))
                r = await c.get(path)
                assert sha(r.content) == sha(body)
    stats = node.stats()
    assert stats["disk_corrupt"] >= 2, stats
    assert origin.count("/whole") >= 2  # refetched


async def test_a_record_cut_short_after_it_was_checked_is_never_sent(node: Node) -> None:
    await node.start(slice_size="32MiB")
    await fill(node, "/whole")
    async with node.client() as c:
        assert sha((await c.get("/whole")).content) == sha(WHOLE)  # checked now
        (record,) = node.records("/whole")
        os.truncate(record, record.stat().st_size - 10)
        r = await c.get("/whole")  # the fast hit's length check drops it: refetched
        assert r.status_code == 200 and sha(r.content) == sha(WHOLE)
    assert node.stats()["disk_corrupt"] == 1 and node.origin.count("/whole") == 2


async def test_a_record_corrupted_after_start_is_never_sent_over_http2(
    origin: ScriptedOrigin, tmp_path: Path, dev_cert: DevCert
) -> None:
    origin.routes["/whole"] = fixed(200, WHOLE, FIELDS)
    origin.routes["/sliced"] = fixed(200, SLICED, FIELDS)
    directory = tmp_path / "disk"
    flags = {"disk_cache": str(directory), "disk_size": "256MiB", "cache_size": "1MiB"}
    for slice_size, path, body in (
        ("1MiB", "/sliced", SLICED),
        ("32MiB", "/whole", WHOLE),
        ("1MiB", "", b""),
    ):
        secure = await start_secure_edge(origin.url, dev_cert, slice_size=slice_size, **flags)
        try:
            assert secure.core._disk_start is not None and secure.core.disk is not None
            await secure.core._disk_start
            async with secure.h2_client(headers={"Host": "cdn.test"}) as c:  # one key across restarts
                if path:  # filled, then stopped
                    assert sha((await c.get(path)).content) == sha(body)
                    await secure.core.disk.drain()
                    continue
                # restarted: records loaded at start, unchecked until first read; corrupt them
                records = all_records(directory)
                assert len(records) == 1 + 5 + 1  # the entry, the slices, the sliced one's description
                for record in records:
                    if decode_head(record.read_bytes()).body_length:
                        flip(record, 1000)
                for p, b in (("/whole", WHOLE), ("/sliced", SLICED)):
                    r = await c.get(p)
                    assert r.http_version == "HTTP/2" and sha(r.content) == sha(b)
                    r = await c.get(p, headers={"Range": "bytes=-5000"})
                    assert r.content == b[-5000:]
            assert secure.core.stats()["disk_corrupt"] >= 2
            assert origin.count("/whole") >= 2
        finally:
            await secure.stop()


async def stalled_client(port: int, path: bytes) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    sock.send(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (path, port))
    return sock


async def read_all(sock: socket.socket, timeout: float = 30) -> tuple[bytes, bytes]:
    """(head, body bytes until Content-Length or the close)."""
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        head = await within(reader.readuntil(b"\r\n\r\n"), "the head", timeout)
        length = int(next(v for k, v in (line.split(b": ", 1) for line in head.split(b"\r\n")[1:-2])
                          if k.lower() == b"content-length"))  # fmt: skip
        body = bytearray()
        async with asyncio.timeout(timeout):
            while len(body) < length:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    break
                body += chunk
        return head, bytes(body)
    finally:
        writer.close()


@pytest.mark.parametrize("slice_size", ["32MiB", "1MiB"], ids=["whole", "sliced"])
async def test_a_client_that_stops_reading_a_16mib_disk_hit_holds_bounded_memory(
    node: Node, slice_size: str
) -> None:
    await node.start(slice_size=slice_size)
    await fill(node, "/huge", "/whole", "/small")
    async with node.client() as c:
        assert sha((await c.get("/huge")).content) == sha(HUGE)  # checked: sendfile from here on
    tracemalloc.start()
    try:
        before = set(LIVE)
        sock = await stalled_client(node.port, b"/huge")
        sent = lambda: sum(p.file_sent for p in LIVE - before)  # noqa: E731
        while not await unchanged_for(sent):
            pass
        tracemalloc.reset_peak()
        # The node is stuck on that client: nothing of the body is held in memory meanwhile
        # (the old path read the whole record: 16 MiB), the transport's buffer is empty, and
        # another client is served.
        assert sent() < len(HUGE)
        assert sum(p.transport.get_write_buffer_size() for p in LIVE - before if p.transport) == 0
        async with node.client() as c:
            assert sha((await c.get("/small")).content) == sha(SMALL)
        assert tracemalloc.get_traced_memory()[1] < 1024 * 1024, tracemalloc.get_traced_memory()
        async with node.client() as c:
            assert sha((await c.get("/whole")).content) == sha(WHOLE)
    finally:
        tracemalloc.stop()
    _head, body = await read_all(sock)
    assert sha(body) == sha(HUGE)


async def test_a_disk_failing_mid_sendfile_cuts_that_response_and_the_node_keeps_serving(
    node: Node,
) -> None:
    await node.start(slice_size="32MiB")
    await fill(node, "/huge", "/whole")
    async with node.client() as c:
        assert sha((await c.get("/huge")).content) == sha(HUGE)  # checked: sendfile from here on
    before = set(LIVE)
    sock = await stalled_client(node.port, b"/huge")
    sent = lambda: sum(p.file_sent for p in LIVE - before)  # noqa: E731
    while not await unchanged_for(sent):
        pass
    assert sent() < len(HUGE) // 2
    # The disk fails under the body being sent: the file now ends 8 MiB early.
    (record,) = node.records("/huge")
    os.truncate(record, record.stat().st_size - (8 << 20))
    head, body = await read_all(sock)
    assert b"200 OK" in head.split(b"\r\n")[0]
    assert len(body) < len(HUGE) and body == HUGE[: len(body)]  # cut short, never wrong bytes
    stats = node.stats()
    assert stats["disk_corrupt"] + stats["disk_read_errors"] == 1
    async with node.client() as c:
        r = await c.get("/huge")  # the record was dropped: fetched again, whole
        assert sha(r.content) == sha(HUGE)
        assert sha((await c.get("/whole")).content) == sha(WHOLE)
    assert node.origin.count("/huge") == 2


async def test_sendfile_waits_for_the_bytes_already_in_the_transports_buffer(
    node: Node, tmp_path: Path
) -> None:
    """``send_file`` writes to the socket itself: what the transport still holds (a head, the
    end of an earlier response) must leave first, or the bytes would interleave. Driven on a
    real connection of the front, with its transport's buffer filled while the client waits."""
    await node.start()
    data = os.urandom(5 << 20)
    path = tmp_path / "file"
    path.write_bytes(data)
    before = set(LIVE)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", node.port))  # no request
    while not LIVE - before:
        await asyncio.sleep(0)
    (proto,) = LIVE - before
    assert proto.transport is not None
    queued = os.urandom(12 << 20)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(queued) + len(data))
    proto.transport.write(head + queued)
    assert proto.transport.get_write_buffer_size() > 0  # more than the kernel took
    got = bytearray()
    while len(got) < 2 << 20:  # the client reads some now: the kernel has room, the transport
        try:  # has not flushed into it yet (it does when the loop next polls)
            got += sock.recv(1 << 20)
        except BlockingIOError:
            break
    assert got
    fd = os.open(path, os.O_RDONLY)
    try:
        # A task's first step runs before the loop polls: a send_file that did not wait for the
        # transport's buffer would put the file's bytes into that room, ahead of the queued ones.
        sending = asyncio.ensure_future(proto.send_file(fd, 0, len(data)))
        await asyncio.sleep(0)
        assert proto.file_sent == 0
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            total = len(head) + len(queued) + len(data)
            async with asyncio.timeout(30):
                while len(got) < total:
                    chunk = await reader.read(1 << 20)
                    assert chunk, "closed early"
                    got += chunk
        finally:
            writer.close()
        await within(sending, "send_file")
    finally:
        os.close(fd)
    body = bytes(got[len(head) :])
    assert sha(body[: len(queued)]) == sha(queued) and sha(body[len(queued) :]) == sha(data)
