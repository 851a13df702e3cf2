"""Byte ranges through the edge (RFC 9110 §14): from cache as slices, and on a miss as it streams."""

from __future__ import annotations

import email.parser

import httpx
import pytest
import pytest_asyncio

from tests.support.nodes import Edge, start_edge
from tests.support.scripted_origin import Gate, OriginConnection, ScriptedOrigin, Seen, fixed
from tests.support.waiting import eventually, every_slice_stored, within

pytestmark = pytest.mark.asyncio

BODY = bytes(range(256)) * 400  # 102400 bytes, position-identifiable
FIELDS = [
    ("Content-Type", "application/octet-stream"),
    ("Cache-Control", "max-age=600"),
    ("ETag", '"r1"'),
    ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ("Date", "Sun, 06 Nov 1994 08:49:40 GMT"),
    ("Accept-Ranges", "bytes"),
]


@pytest_asyncio.fixture
async def cached(origin: ScriptedOrigin, edge: Edge) -> Edge:
    origin.routes["/file"] = fixed(
        200,
        BODY,
        [("Cache-Control", "max-age=600"), ("ETag", '"r1"'), ("Content-Type", "application/octet-stream")],
    )
    async with edge.client() as client:
        await client.get("/file")
    return edge


async def get(edge: Edge, path: str, **headers: str) -> httpx.Response:
    async with edge.client() as client:
        return await client.get(path, headers=headers)


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, len(BODY) - 1),
        ("bytes=-500", len(BODY) - 500, len(BODY) - 1),
        ("bytes=50000-99999999", 50000, len(BODY) - 1),
    ],
)
async def test_single_range_from_cache(cached: Edge, spec: str, start: int, end: int) -> None:
    resp = await get(cached, "/file", Range=spec)
    assert resp.status_code == 206
    assert resp.headers["content-range"] == f"bytes {start}-{end}/{len(BODY)}"
    assert resp.content == BODY[start : end + 1]
    assert resp.headers["x-cache"] == "HIT"


async def test_multiple_ranges_multipart(cached: Edge) -> None:
    resp = await get(cached, "/file", Range="bytes=0-9, 1000-1019, -5")
    assert resp.status_code == 206
    content_type = resp.headers["content-type"]
    assert content_type.startswith("multipart/byteranges; boundary=")
    assert int(resp.headers["content-length"]) == len(resp.content)
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + resp.content
    )
    parts = [(p["Content-Range"], p.get_payload(decode=True)) for p in message.get_payload()]
    assert parts == [
        (f"bytes 0-9/{len(BODY)}", BODY[0:10]),
        (f"bytes 1000-1019/{len(BODY)}", BODY[1000:1020]),
        (f"bytes {len(BODY) - 5}-{len(BODY) - 1}/{len(BODY)}", BODY[-5:]),
    ]


async def test_unsatisfiable_range(cached: Edge) -> None:
    resp = await get(cached, "/file", Range=f"bytes={len(BODY)}-")
    assert resp.status_code == 416
    assert resp.headers["content-range"] == f"bytes */{len(BODY)}"


async def test_invalid_range_is_ignored(cached: Edge) -> None:
    resp = await get(cached, "/file", Range="bytes=oops")
    assert resp.status_code == 200 and resp.content == BODY


async def test_if_range_etag_match_and_mismatch(cached: Edge) -> None:
    match = await get(cached, "/file", Range="bytes=0-9", **{"If-Range": '"r1"'})
    assert match.status_code == 206 and match.content == BODY[:10]
    stale = await get(cached, "/file", Range="bytes=0-9", **{"If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == BODY
    weak = await get(cached, "/file", Range="bytes=0-9", **{"If-Range": 'W/"r1"'})
    assert weak.status_code == 200


async def test_if_range_date(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/dated"] = fixed(200, BODY, FIELDS)
    await get(edge, "/dated")
    match = await get(edge, "/dated", Range="bytes=0-9", **{"If-Range": "Sun, 06 Nov 1994 08:49:37 GMT"})
    assert match.status_code == 206
    older = await get(edge, "/dated", Range="bytes=0-9", **{"If-Range": "Sun, 06 Nov 1994 08:00:00 GMT"})
    assert older.status_code == 200


async def test_range_on_a_miss_is_answered_before_the_body_completes(origin: ScriptedOrigin) -> None:
    block = bytes(range(256)) * 256  # 64 KiB
    rest = Gate()

    async def slow(seen: Seen, conn: OriginConnection) -> None:
        conn.write(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: %d\r\n\r\n" % (len(block) * 64)
        )
        for i in range(64):
            await conn.send(block)
            if i == 1:
                await rest.hold()  # 62 of 64 blocks wait until the client has its range

    origin.routes["/slow"] = slow
    # The origin holds the body while the test checks the client: an edge that waits only 2 s
    # for upstream bytes (the shared fixture) could give up on a busy machine.
    node = await start_edge(origin.url, read_timeout="30", connect_timeout="1")
    try:
        async with node.client(timeout=60) as client:
            first = await within(
                client.get("/slow", headers={"Range": "bytes=100-199"}),
                "the client waited for the whole object",
            )
        assert first.status_code == 206 and first.content == block[100:200]
        assert first.headers["content-range"] == f"bytes 100-199/{len(block) * 64}"
        rest.open()
        await origin.responded("/slow")
        await eventually(lambda: every_slice_stored(node), "the fill the range started stored the object")
        whole = await get(node, "/slow")
        assert whole.headers["x-cache"] == "HIT" and whole.content == block * 64
        assert origin.count("/slow") == 1
    finally:
        node.server.close()
        await node.core.aclose()


async def test_range_on_miss_that_ends_in_later_chunks(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/m"] = fixed(200, BODY, [("Cache-Control", "max-age=600")])
    resp = await get(edge, "/m", Range="bytes=70000-90000")
    assert resp.status_code == 206 and resp.content == BODY[70000:90001]
    multi = await get(edge, "/m", Range="bytes=0-1,5-6")
    assert multi.status_code == 206 and multi.headers["content-type"].startswith("multipart/byteranges")
    origin.routes["/m2"] = fixed(200, BODY, [("Cache-Control", "max-age=600")])
    cold = await get(edge, "/m2", Range="bytes=0-1,5-6")
    assert cold.status_code == 200 and cold.content == BODY, "several ranges on a miss: the whole 200 streams"
    origin.routes["/m3"] = fixed(200, BODY, [("Cache-Control", "max-age=600")])
    unsatisfiable = await get(edge, "/m3", Range="bytes=999999-")
    assert (
        unsatisfiable.status_code == 416 and unsatisfiable.headers["content-range"] == f"bytes */{len(BODY)}"
    )
