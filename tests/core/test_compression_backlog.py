"""The compression thread's backlog is bounded, and stopping the node leaves it quietly.

Real parts throughout: an ``EdgeCore`` with its C store, its ``Compressor`` and the
compressor's thread, on a running loop. Requests are fed to the fast hit in one
synchronous burst, so no compression can land in between: the counts are exact.
"""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from edge import config as edge_config
from edge.admin.metrics import exposition
from edge.cache.entry import Entry
from edge.cache.freshness import freshness_policy
from edge.core import EdgeCore, codings
from edge.http.message import Request, fields_of
from tests.support.waiting import eventually

NOW = 1_700_000_000.0
rng = random.Random(11)
WORDS = [b"function", b"return", b"const", b"value", b"export", b"import", b"=>", b"{", b"}", b"(x)"]
BODY = b" ".join(rng.choice(WORDS) for _ in range(20000))[: 100 * 1024]
"""100 KiB of text: above the inline limit, so compressed in the thread."""
assert len(BODY) > codings.INLINE_COMPRESS_LIMIT


def make_core(cache_size: str = "64MiB") -> EdgeCore:
    # LRU: the eviction test below needs new objects to push out old ones that were hit once
    # (S3-FIFO, the default, would keep those and evict the new ones: its point).
    flags = {
        "upstream": "http://127.0.0.1:9",
        "listen": "127.0.0.1:1",
        "cache_size": cache_size,
        "eviction": "lru",
    }
    config = edge_config.load(None, {}, flags)
    return EdgeCore(config, clock=lambda: NOW)


def store(core: EdgeCore, path: bytes) -> Entry:
    fields = [(b"Cache-Control", b"max-age=600"), (b"Content-Type", b"text/javascript"), (b"ETag", b'"e"')]
    entry = Entry(b"http://h" + path, 200, b"OK", fields, BODY, freshness_policy(200, fields, NOW), NOW, 0.0)
    entry.encodings = {}
    core.memory.put_response(entry, b"")
    return entry


def hit(core: EdgeCore, path: bytes, accept: bytes = b"br") -> Entry | None:
    headers = [(b"Host", b"h"), (b"Accept-Encoding", accept)]
    return core.fresh_hit(Request(b"GET", path, headers, fields_of(headers), host=b"h"), NOW)


async def settled(core: EdgeCore) -> None:
    await eventually(lambda: core.compressor.pending == 0, "compressions settled")


@pytest.mark.asyncio
async def test_beyond_the_backlog_a_request_gets_identity_and_the_skip_is_counted() -> None:
    core = make_core()
    try:
        paths = [b"/%d.js" % i for i in range(40)]
        for path in paths:
            store(core, path)
        served = [hit(core, path) for path in paths]
        assert all(entry is not None and entry.body is BODY for entry in served), "identity meanwhile"
        queued = 1 + codings.BACKLOG_JOBS  # the running job and the full queue
        assert core.compressor.pending == queued
        stats = core.stats()
        assert stats["compressions_pending"] == queued
        assert stats["compressions_skipped"] == len(paths) - queued
        metrics = exposition({**stats, "purged_objects": 0}, {}).decode()
        assert f"edge_compressions_skipped_total {float(len(paths) - queued)}" in metrics
        await settled(core)
        assert core.compressions[b"br"] == queued
        # A skipped object is compressed by a later request, once there is room.
        assert hit(core, paths[-1]) is not None
        await settled(core)
        later = hit(core, paths[-1])
        assert later is not None and later.body is not BODY and core.compressions[b"br"] == queued + 1
    finally:
        core.compressor.close()


@pytest.mark.asyncio
async def test_the_backlog_is_bounded_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codings, "BACKLOG_BYTES", 2 * len(BODY) + 1)
    core = make_core()
    try:
        for i in range(5):
            store(core, b"/%d.js" % i)
            hit(core, b"/%d.js" % i)
        assert core.compressor.pending == 2, "the running body and one queued fit, not a third"
        assert core.compressor.skipped == 3
        await settled(core)
        assert core.compressions[b"br"] == 2
    finally:
        core.compressor.close()


@pytest.mark.asyncio
async def test_a_queued_compression_of_an_evicted_object_is_dropped() -> None:
    core = make_core("2MiB")
    try:
        first = [b"/old-%d.js" % i for i in range(8)]
        for path in first:
            store(core, path)
            hit(core, path)
        assert core.compressor.pending == 8
        for i in range(24):  # eviction churn: newer objects push every old one out
            store(core, b"/new-%d.js" % i)
        assert not any(core.memory.lookup(b"http://h" + path) for path in first)
        await settled(core)
        assert core.compressor.dropped == 7, "all but the one already running"
        assert core.compressions[b"br"] == 1
        assert core.stats()["compressions_dropped"] == 7
        assert core.store.total_charge <= core.store.capacity
    finally:
        core.compressor.close()


def test_stopping_with_compressions_pending_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """Queued jobs are dropped and the running one is discarded, even after the loop closed."""
    caplog.set_level(logging.DEBUG)
    core = make_core()
    pool = core.compressor._pool

    async def run() -> None:
        for i in range(12):
            store(core, b"/%d.js" % i)
            for coding in (b"br", b"zstd", b"gzip"):
                hit(core, b"/%d.js" % i, coding)
        assert core.compressor.pending > 1
        await asyncio.sleep(0)
        await core.aclose()
        await asyncio.sleep(0.05)  # callbacks of cancelled jobs would run now

    asyncio.run(run())  # the loop closes while the running job may still be compressing
    pool.shutdown(wait=True)  # its result arrives to a closed loop
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]
