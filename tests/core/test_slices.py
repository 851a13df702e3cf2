"""Large objects as slices: only the slices a request needs are fetched, and each once."""

from __future__ import annotations

import asyncio
import hashlib
import re

import httpx
import pytest

from tests.support.nodes import Edge
from tests.support.scripted_origin import OriginConnection, ScriptedOrigin, Seen, response
from tests.support.waiting import within

pytestmark = pytest.mark.asyncio

MiB = 1024 * 1024
PATTERN = bytes(range(251)) * (MiB // 251 + 2)  # period 251: no slice looks like another


def content(start: int, end: int) -> bytes:
    """Bytes ``start``..``end`` inclusive of the virtual object (offset o holds o % 251)."""
    out = bytearray()
    pos = start
    while pos <= end:
        take = min(end - pos + 1, MiB)
        out += PATTERN[pos % 251 : pos % 251 + take]
        pos += take
    return bytes(out)


def ranged(length: int, etag: str = '"big-1"', honour_range: bool = True):  # type: ignore[no-untyped-def]
    """A route for an object of ``length`` bytes that answers single Range requests like nginx."""

    async def route(seen: Seen, conn: OriginConnection) -> None:
        fields = [
            ("Cache-Control", "max-age=600"),
            ("ETag", etag),
            ("Content-Type", "application/octet-stream"),
            ("Accept-Ranges", "bytes"),
        ]
        spec = seen.header(b"range")
        m = re.fullmatch(rb"bytes=(\d*)-(\d*)", spec or b"")
        if not honour_range or m is None:
            conn.write(response(200, b"", fields, length=False)[:-2] + b"Content-Length: %d\r\n\r\n" % length)
            for start in range(0, length, MiB):
                await conn.send(content(start, min(length, start + MiB) - 1))
            return
        first, last = m.groups()
        if not first:
            start, end = max(0, length - int(last)), length - 1
        else:
            start, end = int(first), min(length - 1, int(last)) if last else length - 1
        body = content(start, end)
        conn.write(
            response(
                206, body, [*fields, ("Content-Range", f"bytes {start}-{end}/{length}")], "Partial Content"
            )
        )

    return route


def ranges_seen(origin: ScriptedOrigin, path: str) -> list[str | None]:
    return [
        s.header(b"range").decode() if s.header(b"range") else None
        for s in origin.seen
        if s.target == path.encode()
    ]


async def get(edge: Edge, path: str, **headers: str) -> httpx.Response:
    async with edge.client(timeout=60) as client:
        return await client.get(path, headers=headers)


async def test_tail_of_a_256_mib_object_fetches_only_the_tail(origin: ScriptedOrigin, edge: Edge) -> None:
    length = 256 * MiB
    origin.routes["/huge.bin"] = ranged(length)
    tail = await get(edge, "/huge.bin", Range=f"bytes=-{MiB}")
    assert tail.status_code == 206
    assert tail.headers["content-range"] == f"bytes {length - MiB}-{length - 1}/{length}"
    assert tail.content == content(length - MiB, length - 1)
    again = await get(edge, "/huge.bin", Range=f"bytes={length - 100}-")
    assert again.status_code == 206 and again.content == content(length - 100, length - 1)
    assert again.headers["x-cache"] == "HIT"
    head = await get(edge, "/huge.bin", Range="bytes=10-20")
    assert head.content == content(10, 20)
    assert ranges_seen(origin, "/huge.bin") == [f"bytes=-{MiB}", f"bytes=0-{MiB - 1}"]
    assert sum(s.target == b"/huge.bin" for s in origin.seen) == 2


async def test_range_spanning_slices_and_whole_object_from_slices(origin: ScriptedOrigin, edge: Edge) -> None:
    length = 5 * MiB + 123
    origin.routes["/five.bin"] = ranged(length)
    span = await get(edge, "/five.bin", Range=f"bytes={MiB - 10}-{2 * MiB + 10}")
    assert span.status_code == 206 and span.content == content(MiB - 10, 2 * MiB + 10)
    whole = await get(edge, "/five.bin")
    assert whole.status_code == 200 and whole.headers["x-cache"] == "HIT"
    assert hashlib.sha256(whole.content).digest() == hashlib.sha256(content(0, length - 1)).digest()
    # slice 0 came with the first request's alignment, then 1 and 2; 3, 4 and 5 for the whole.
    fetched = ranges_seen(origin, "/five.bin")
    assert fetched[:3] == [
        f"bytes=0-{MiB - 1}",
        f"bytes={MiB}-{2 * MiB - 1}",
        f"bytes={2 * MiB}-{3 * MiB - 1}",
    ]
    assert len(fetched) == len(set(fetched)) == 6, fetched
    assert (await get(edge, "/five.bin")).content == whole.content
    assert len(ranges_seen(origin, "/five.bin")) == 6


async def test_cold_full_get_is_stored_as_slices(origin: ScriptedOrigin, edge: Edge) -> None:
    length = 3 * MiB + 7
    origin.routes["/full.bin"] = ranged(length)
    whole = await get(edge, "/full.bin")
    assert whole.status_code == 200 and whole.content == content(0, length - 1)
    part = await get(edge, "/full.bin", Range=f"bytes={2 * MiB}-{2 * MiB + 9}")
    assert part.status_code == 206 and part.content == content(2 * MiB, 2 * MiB + 9)
    assert part.headers["x-cache"] == "HIT"
    assert ranges_seen(origin, "/full.bin") == [None], "one plain GET, cut into slices as it passed"


async def test_concurrent_requests_for_one_slice_fetch_it_once(origin: ScriptedOrigin, edge: Edge) -> None:
    length = 4 * MiB
    origin.routes["/c.bin"] = ranged(length)
    await get(edge, "/c.bin", Range="bytes=0-0")  # learn the object
    responses = await asyncio.gather(
        *(get(edge, "/c.bin", Range=f"bytes={3 * MiB + i}-{3 * MiB + i + 9}") for i in range(20))
    )
    assert all(r.content == content(3 * MiB + i, 3 * MiB + i + 9) for i, r in enumerate(responses))
    assert ranges_seen(origin, "/c.bin").count(f"bytes={3 * MiB}-{4 * MiB - 1}") == 1


async def test_object_changed_upstream_discards_its_slices(origin: ScriptedOrigin, edge: Edge) -> None:
    length = 3 * MiB
    origin.routes["/ch.bin"] = ranged(length, etag='"v1"')
    await get(edge, "/ch.bin", Range="bytes=0-9")
    origin.routes["/ch.bin"] = ranged(length, etag='"v2"')
    # slice 1 comes back with another ETag before a byte was sent: answered afresh, not cut
    # (a change found after bytes went out cuts: tests/core/test_odd_upstreams.py)
    changed = await get(edge, "/ch.bin", Range=f"bytes=0-{2 * MiB}")
    assert changed.status_code == 206 and changed.headers["etag"] == '"v2"'
    assert changed.content == content(0, 2 * MiB)
    fresh = await get(edge, "/ch.bin", Range=f"bytes={2 * MiB}-{2 * MiB + 9}")
    assert fresh.status_code == 206 and fresh.headers["etag"] == '"v2"'
    assert fresh.content == content(2 * MiB, 2 * MiB + 9)


async def test_upstream_without_range_support_is_cut_locally(origin: ScriptedOrigin, edge: Edge) -> None:
    length = 2 * MiB + 5
    origin.routes["/nr.bin"] = ranged(length, honour_range=False)
    part = await get(edge, "/nr.bin", Range="bytes=100-199")
    assert part.status_code == 206 and part.content == content(100, 199)


async def test_purging_the_url_drops_its_slices(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/p.bin"] = ranged(2 * MiB)
    await get(edge, "/p.bin", Range="bytes=0-9")
    assert edge.core.purge("url", f"{edge.url}/p.bin") == 1
    again = await get(edge, "/p.bin", Range="bytes=0-9")
    assert again.headers["x-cache"] == "MISS"
    assert len(ranges_seen(origin, "/p.bin")) == 2


async def test_a_stalled_reader_does_not_hold_up_ranges_of_the_same_object(
    origin: ScriptedOrigin, edge: Edge
) -> None:
    length = 32 * MiB
    origin.routes["/stall.bin"] = ranged(length)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /stall.bin HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % edge.port)
    await reader.readuntil(b"\r\n\r\n")  # A reads the head, then stops reading
    # A's stream is stuck: the edge stopped reading the whole-object response, far short
    # of the last slice (buffers hold a few MiB of 32), and it stays stuck while A waits.
    await origin.held_back("/stall.bin")
    whole_requests = len(ranges_seen(origin, "/stall.bin"))
    # A broken edge would wait for A's stream to reach the tail, which never happens: the
    # bound only turns that hang into a failure.
    tail = await within(get(edge, "/stall.bin", Range="bytes=-100"), "the tail waited for the stalled stream")
    assert tail.status_code == 206 and tail.content == content(length - 100, length - 1)
    assert ranges_seen(origin, "/stall.bin")[whole_requests:] == [f"bytes={31 * MiB}-{length - 1}"], (
        "the tail is one slice fetched with Range of its own"
    )
    writer.transport.abort()


async def test_reload_of_a_sliced_object_revalidates_with_one_byte(
    origin: ScriptedOrigin, edge: Edge
) -> None:
    length = 8 * MiB
    origin.routes["/r.bin"] = ranged(length)
    first = await get(edge, "/r.bin")
    assert first.content == content(0, length - 1)
    sent_before = origin.sent
    reload = await get(edge, "/r.bin", **{"Cache-Control": "no-cache"})
    assert reload.status_code == 200 and reload.content == content(0, length - 1)
    assert "fwd=request; fwd-status=304" in reload.headers["cache-status"]
    assert origin.sent - sent_before < 4096, "a reload cost a full refetch"
    assert ranges_seen(origin, "/r.bin")[-1] == "bytes=0-0"
