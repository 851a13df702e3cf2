"""The disk tier with a real edge and origin on loopback: restarts, corruption, purges, failing disks.

A "restart" stops an edge (its listener and core) and starts a new one on the same
directory, as a new process would: the new core knows nothing but what it reads there.
The process-level kill -9 run is ``benchmarks/disk_tier.py``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.nodes import Clock, Edge, start_edge
from tests.support.scripted_origin import ScriptedOrigin, fixed

pytestmark = pytest.mark.asyncio

CACHEABLE = [("Cache-Control", "max-age=600"), ("ETag", '"v1"'), ("Surrogate-Key", "group-a")]
BIG = 300 * 1024


def body_of(path: str, size: int = BIG) -> bytes:
    seed = hashlib.sha256(path.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def serve(origin: ScriptedOrigin, *paths: str, headers: list[tuple[str, str]] = CACHEABLE) -> None:
    for path in paths:
        origin.routes[path] = fixed(200, body_of(path), headers)


class Node:
    """Starts and restarts edges on one disk directory."""

    def __init__(self, origin: ScriptedOrigin, directory: Path) -> None:
        self.origin = origin
        self.directory = directory
        self.edge: Edge | None = None

    async def start(self, clock: Clock | None = None, **settings: str) -> Edge:
        flags: dict[str, Any] = {
            "disk_cache": str(self.directory), "disk_size": "64MiB", "cache_size": "1MiB",
            "read_timeout": "2", "connect_timeout": "1", **settings,
        }  # fmt: skip
        edge = await start_edge(self.origin.url, clock, (), **flags)
        assert edge.core._disk_start is not None
        await edge.core._disk_start  # the index rebuilt
        self.edge = edge
        return edge

    async def stop(self) -> None:
        assert self.edge is not None
        self.edge.server.close()
        await self.edge.core.aclose()  # waits for the writes under way
        self.edge = None

    async def restart(self, **settings: str) -> Edge:
        await self.stop()
        return await self.start(None, **settings)

    async def get(self, path: str) -> tuple[int, bytes, str]:
        assert self.edge is not None
        async with self.edge.client() as client:
            r = await client.get(path)
        return r.status_code, r.content, r.headers.get("cache-status", "")

    async def drain(self) -> None:
        assert self.edge is not None and self.edge.core.disk is not None
        await self.edge.core.disk.drain()

    def record(self, path: str) -> Path:
        from edge.cache.disk_format import file_name

        name = file_name(f"http://127.0.0.1:{self.edge_port}{path}".encode(), b"")
        return self.directory / "objects" / name[:2] / name

    @property
    def edge_port(self) -> int:
        assert self.edge is not None
        return self.edge.port


@pytest.fixture
def disk_log() -> Iterator[list[logging.LogRecord]]:
    """The disk tier's log records, whatever earlier tests did to the "edge" logger."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger("edge.disk")
    # tests/architecture runs import-linter in this process, whose dictConfig disables every
    # logger that exists then (disable_existing_loggers); another test may set a level.
    level, disabled = logger.level, logger.disabled
    logger.setLevel(logging.DEBUG)
    logger.disabled = False
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)
    logger.disabled = disabled


@pytest_asyncio.fixture
async def node(origin: ScriptedOrigin, tmp_path: Path) -> AsyncIterator[Node]:
    n = Node(origin, tmp_path / "disk")
    yield n
    if n.edge is not None:
        await n.stop()


@pytest.mark.parametrize("snapshot", [True, False], ids=["snapshot", "heads-only"])
async def test_restart_on_the_same_directory_hits_without_asking_the_origin(
    node: Node, snapshot: bool
) -> None:
    serve(node.origin, "/a", "/b")
    edge = await node.start()
    port = edge.port
    assert (await node.get("/a"))[1] == body_of("/a")
    assert (await node.get("/b"))[1] == body_of("/b")
    await node.drain()
    await node.stop()  # a clean stop writes the index snapshot; a kill -9 leaves none (or an old one)
    snaps = list(node.directory.glob("index-*.snap"))
    assert len(snaps) == 1
    if not snapshot:
        snaps[0].unlink()
    # Same port is not needed: the key is the Host the client sends, so ask with the old one.
    edge = await node.start()
    stats = edge.core.stats()
    assert stats["disk_entries"] == 2 and stats["disk_loaded_records"] == 2
    async with edge.client(headers={"Host": f"127.0.0.1:{port}"}) as client:
        for path in ("/a", "/b"):
            r = await client.get(path)
            assert r.status_code == 200 and r.content == body_of(path)
            assert "hit" in r.headers["cache-status"]
        # Over PROMOTE_MAX: not promoted; the second read is the disk's fast hit (head in memory).
        r = await client.get("/a")
        assert r.headers["x-cache"] == "HIT" and r.content == body_of("/a")
    assert node.origin.count("/a") == 1 and node.origin.count("/b") == 1
    stats = edge.core.stats()
    assert stats["disk_hits"] == 3 and stats["disk_file_hits"] == 3 and stats["disk_fast_hits"] == 1


async def test_objects_evicted_from_memory_are_served_from_disk(node: Node) -> None:
    paths = [f"/o{i}" for i in range(8)]  # 2.4 MiB through a 1 MiB memory tier
    serve(node.origin, *paths)
    edge = await node.start()
    for path in paths:
        assert (await node.get(path))[1] == body_of(path)
    await node.drain()
    assert edge.core.store.evictions > 0
    for path in paths:
        status, body, cache_status = await node.get(path)
        assert status == 200 and body == body_of(path) and "hit" in cache_status
    assert all(node.origin.count(p) == 1 for p in paths)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
async def test_a_damaged_record_is_refetched_never_served(node: Node, damage: str) -> None:
    serve(node.origin, "/a")
    edge = await node.start()
    port = edge.port
    await node.get("/a")
    await node.drain()
    await node.stop()
    from edge.cache.disk_format import file_name

    name = file_name(f"http://127.0.0.1:{port}/a".encode(), b"")
    path = node.directory / "objects" / name[:2] / name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-1000] ^= 0x01  # one bit of the body: only the digest can tell
    elif damage == "truncate":
        data = data[: len(data) - 1]
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    edge = await node.start()
    async with edge.client(headers={"Host": f"127.0.0.1:{port}"}) as client:
        r = await client.get("/a")
    assert r.status_code == 200 and r.content == body_of("/a")
    assert node.origin.count("/a") == 2
    stats = edge.core.stats()
    # A torn length is found at load (the head's length against the file's); a flipped body
    # bit only by the digest, when first read.
    assert stats["disk_corrupt"] + stats["disk_dropped_at_load"] == 1


async def test_purges_cover_the_disk_and_survive_a_restart(node: Node) -> None:
    tagged = [("Cache-Control", "max-age=600"), ("ETag", '"v1"'), ("Surrogate-Key", "t1")]
    serve(node.origin, "/url", "/pre/1", "/pre/2", "/keep", "/soft")
    serve(node.origin, "/tag", headers=tagged)
    edge = await node.start()
    port = edge.port
    host = f"127.0.0.1:{port}"
    for path in ("/url", "/pre/1", "/pre/2", "/keep", "/soft", "/tag"):
        await node.get(path)
    await node.drain()
    core = edge.core
    core.purge("url", f"http://{host}/url")
    core.purge("prefix", f"http://{host}/pre/")
    core.purge("tag", "t1")
    core.purge("url", f"http://{host}/soft", soft=True)
    await core.flush_purges()
    assert core.stats()["disk_entries"] == 2  # /keep, and /soft kept stale
    edge = await node.restart()
    async with edge.client(headers={"Host": host}) as client:
        for path in ("/url", "/pre/1", "/pre/2", "/tag", "/keep", "/soft"):
            r = await client.get(path)
            assert r.status_code == 200 and r.content == body_of(path)
    assert [node.origin.count(p) for p in ("/url", "/pre/1", "/pre/2", "/tag", "/keep")] == [2, 2, 2, 2, 1]
    # The soft-purged one was revalidated (it stayed for a conditional request), not served fresh.
    assert node.origin.count("/soft") == 2
    soft = [s for s in node.origin.seen if s.target == b"/soft"][-1]
    assert soft.header(b"if-none-match") == b'"v1"'


async def test_a_record_cached_again_after_a_purge_survives_a_crash_with_an_older_snapshot(
    node: Node,
) -> None:
    """A kill -9 leaves the snapshot of before the purge: it must not get the new record dropped."""
    serve(node.origin, "/a")
    edge = await node.start()
    port = edge.port
    await node.get("/a")
    await node.drain()
    await node.stop()
    (snap,) = node.directory.glob("index-*.snap")
    before_purge = snap.read_bytes()  # lists /a as stored before the purge below
    edge = await node.start()
    edge.core.purge("url", f"http://127.0.0.1:{port}/a")
    await edge.core.flush_purges()
    async with edge.client(headers={"Host": f"127.0.0.1:{port}"}) as client:
        assert (await client.get("/a")).content == body_of("/a")  # fetched and stored again
    await node.drain()
    await node.stop()
    snap.write_bytes(before_purge)  # what a kill -9 inside the snapshot interval leaves
    edge = await node.start()
    async with edge.client(headers={"Host": f"127.0.0.1:{port}"}) as client:
        r = await client.get("/a")
        assert r.status_code == 200 and r.content == body_of("/a") and "hit" in r.headers["cache-status"]
    assert node.origin.count("/a") == 2
    assert edge.core.stats()["disk_dropped_at_load"] == 0


async def test_a_disk_only_object_is_purged_without_a_restart(node: Node) -> None:
    paths = [f"/o{i}" for i in range(8)]
    serve(node.origin, *paths)
    edge = await node.start()
    for path in paths:
        await node.get(path)
    await node.drain()
    assert edge.core.memory.peek(f"http://127.0.0.1:{edge.port}/o0".encode()) is None  # disk only
    assert edge.core.purge("url", f"http://127.0.0.1:{edge.port}/o0") == 1
    await node.get("/o0")
    assert node.origin.count("/o0") == 2


async def test_a_disk_that_fails_keeps_serving_from_memory(
    node: Node, disk_log: list[logging.LogRecord]
) -> None:
    serve(node.origin, *[f"/o{i}" for i in range(6)])
    edge = await node.start()
    assert (await node.get("/o0"))[1] == body_of("/o0")
    await node.drain()
    shutil.rmtree(node.directory / "objects")
    (node.directory / "objects").write_bytes(b"")  # every write now fails (ENOTDIR)
    for i in range(1, 6):
        status, body, _ = await node.get(f"/o{i}")
        assert status == 200 and body == body_of(f"/o{i}")
    await node.drain()
    stats = edge.core.stats()
    assert stats["disk_degraded"] == 1 and stats["disk_write_errors"] >= 1
    assert sum("degraded to memory only" in r.getMessage() for r in disk_log) == 1
    status, body, cache_status = await node.get("/o5")  # still in memory
    assert status == 200 and body == body_of("/o5") and "hit" in cache_status
    status, body, _ = await node.get("/o0")  # its record is gone: fetched again, not an error
    assert status == 200 and body == body_of("/o0")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
async def test_a_full_disk_keeps_serving_from_memory(origin: ScriptedOrigin, tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        node = Node(origin, mount)
        paths = [f"/o{i}" for i in range(6)]  # 1.8 MiB onto 512 KiB: ENOSPC
        serve(origin, *paths)
        edge = await node.start()
        for path in paths:
            status, body, _ = await node.get(path)
            assert status == 200 and body == body_of(path)
        await node.drain()
        assert edge.core.stats()["disk_degraded"] == 1
        for path in paths:
            status, body, _ = await node.get(path)
            assert status == 200 and body == body_of(path)
        await node.stop()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_an_unusable_directory_is_memory_only(origin: ScriptedOrigin, tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    node = Node(origin, tmp_path / "file" / "disk")
    serve(origin, "/a")
    edge = await node.start()
    assert edge.core.stats()["disk_degraded"] == 1
    assert (await node.get("/a"))[1] == body_of("/a")
    assert (await node.get("/a"))[2].find("hit") >= 0
    await node.stop()


async def _two_workers(origin: ScriptedOrigin, run: Path, disk: Path) -> tuple[list[Edge], list[object]]:
    """Two workers of one node sharing ``disk``, each serving its sibling on a cache socket."""
    import asyncio

    from edge.fronts.sibling import SiblingProtocol
    from edge.wiring.process import bind_unix
    from edge.wiring.workers import WorkerPlace

    run.mkdir()
    places = [WorkerPlace(i, 2, run, "token") for i in range(2)]
    nodes = [
        await start_edge(
            origin.url,
            siblings=p.siblings(),
            name="node",
            node_id="n1",
            disk_cache=str(disk),
            disk_size="64MiB",
            cache_size="1MiB",
        )
        for p in places
    ]
    servers: list[object] = []
    for place, n in zip(places, nodes, strict=True):
        core, config = n.core, n.core.config
        servers.append(
            await asyncio.get_running_loop().create_unix_server(
                lambda core=core, config=config: SiblingProtocol(core, config),  # type: ignore[misc]
                sock=bind_unix(place.cache_socket(place.index)),
            )
        )
        assert core._disk_start is not None
        await core._disk_start
    return nodes, servers


async def test_workers_share_one_disk_each_key_written_and_read_by_its_owner(
    origin: ScriptedOrigin, tmp_path: Path
) -> None:
    paths = [f"/w{i}" for i in range(10)]
    serve(origin, *paths)
    disk = tmp_path / "disk"
    nodes, servers = await _two_workers(origin, tmp_path / "run1", disk)
    for path in paths:
        for n in nodes:  # through both workers, whichever owns the key
            async with n.client(headers={"Host": "cdn.example"}) as client:
                assert (await client.get(path)).content == body_of(path)
    for n in nodes:
        assert n.core.disk is not None
        await n.core.disk.drain()
    assert sum(n.core.stats()["disk_capacity"] for n in nodes) == 64 * 1024**2  # disk_size shared out
    owned = [n.core.stats()["disk_entries"] for n in nodes]
    assert sum(owned) == len(paths) and min(owned) > 0, owned  # one record per key, by its owner
    assert len(list((disk / "objects").rglob("*"))) - 256 == len(paths)
    for s in servers:
        s.close()  # type: ignore[attr-defined]
    for n in nodes:
        n.server.close()
        await n.core.aclose()
    # A restarted node: each worker indexes only its own keys; the other one asks it.
    nodes, servers = await _two_workers(origin, tmp_path / "run2", disk)
    assert [n.core.stats()["disk_entries"] for n in nodes] == owned
    for path in paths:
        for n in reversed(nodes):
            async with n.client(headers={"Host": "cdn.example"}) as client:
                r = await client.get(path)
            assert r.status_code == 200 and r.content == body_of(path)
    assert all(origin.count(p) == 1 for p in paths)
    for s in servers:
        s.close()  # type: ignore[attr-defined]
    for n in nodes:
        n.server.close()
        await n.core.aclose()


async def test_slices_of_a_large_object_are_kept_per_slice_and_survive_a_restart(node: Node) -> None:
    from tests.core.test_slices import MiB, content, ranged

    length = 5 * MiB + 123  # six 1 MiB slices through a 1 MiB memory tier
    node.origin.routes["/big"] = ranged(length)
    edge = await node.start(slice_size="1MiB")
    port = edge.port
    async with edge.client(timeout=60) as client:
        r = await client.get("/big")
        assert r.status_code == 200 and r.content == content(0, length - 1)
    await node.drain()
    fetched = node.origin.count("/big")
    edge = await node.restart(slice_size="1MiB")
    async with edge.client(timeout=60, headers={"Host": f"127.0.0.1:{port}"}) as client:
        r = await client.get("/big", headers={"Range": "bytes=3000000-3000099"})  # one slice, from disk
        assert r.status_code == 206 and r.content == content(3000000, 3000099)
        assert node.origin.count("/big") == fetched, "the slice came from disk"
        r = await client.get("/big")
        assert r.status_code == 200 and r.content == content(0, length - 1)
    assert node.origin.count("/big") == fetched
    stats = edge.core.stats()
    assert stats["disk_hits"] >= 7  # the description and six slices
    # A URL purge drops the description: the next request goes to the origin, never to old slices.
    edge.core.purge("url", f"http://127.0.0.1:{port}/big")
    await edge.core.flush_purges()
    async with edge.client(timeout=60, headers={"Host": f"127.0.0.1:{port}"}) as client:
        r = await client.get("/big", headers={"Range": "bytes=0-9"})
        assert r.status_code == 206 and r.content == content(0, 9)
    assert node.origin.count("/big") > fetched


async def test_load_removes_temporary_files_of_dead_writers_only(node: Node) -> None:
    sub = node.directory / "objects" / "00"
    sub.mkdir(parents=True)
    mine = sub / f".tmp-{'0' * 32}-{os.getppid()}-1"  # a live process (another worker) still writing
    dead = sub / f".tmp-{'1' * 32}-999999999-1"  # a writer killed mid-write
    mine.write_bytes(b"half")
    dead.write_bytes(b"half")
    await node.start()
    assert mine.exists() and not dead.exists()


async def test_after_a_restart_a_stale_record_is_revalidated_not_served_fresh(node: Node) -> None:
    serve(node.origin, "/short", headers=[("Cache-Control", "max-age=60"), ("ETag", '"v1"')])
    clock = Clock()
    edge = await node.start(clock)
    port = edge.port
    await node.get("/short")
    await node.stop()
    clock.advance(120)  # the record outlived its freshness while the node was down
    edge = await node.start(clock)
    async with edge.client(headers={"Host": f"127.0.0.1:{port}"}) as client:
        r = await client.get("/short")
    assert r.status_code == 200 and r.content == body_of("/short")
    assert node.origin.count("/short") == 2
    last = [s for s in node.origin.seen if s.target == b"/short"][-1]
    assert last.header(b"if-none-match") == b'"v1"'  # the disk copy's validator, as for memory


async def test_a_purge_made_while_the_index_is_rebuilt_covers_the_records_being_loaded(
    node: Node,
) -> None:
    import asyncio
    import threading

    from edge.core.disk import DiskTier

    serve(node.origin, "/a", "/b")
    edge = await node.start()
    port = edge.port
    await node.get("/a")
    await node.get("/b")
    await node.stop()
    tier = DiskTier(str(node.directory), 64 * 1024**2)
    release = threading.Event()
    load = tier._load

    def slow_load():  # type: ignore[no-untyped-def]
        found = load()  # the directory and the purge log read: the purge below is not in them
        release.wait(10)
        return found

    tier._load = slow_load  # type: ignore[method-assign]
    started = asyncio.ensure_future(tier.start())
    await asyncio.sleep(0.05)
    assert not tier.loaded
    tier.purge("url", f"http://127.0.0.1:{port}/a", soft=False)
    release.set()
    await started
    assert [item.key for item in tier.index] == [f"http://127.0.0.1:{port}/b".encode()]
    await tier.aclose()
