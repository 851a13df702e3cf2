"""The first visit of a compressible object is compressed as it streams (issue 19).

A real origin (ScriptedOrigin on loopback) and an edge on its HTTP/1.1 front; the raw
bytes on the wire are decoded here and compared with the origin's by SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import zlib

import brotli  # type: ignore[import-untyped]
import httpx
import pytest
import zstandard

from edge.codecs import decompress
from tests.support.nodes import Edge
from tests.support.scripted_origin import Gate, OriginConnection, ScriptedOrigin, Seen, fixed
from tests.support.waiting import compressions_settled, eventually, fill_readers, fills_settled, within

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

rng = random.Random(19)
WORDS = [b"function", b"return", b"const", b"value", b"export", b"import", b"=>", b"{", b"}", b"(x)"]
BIG_JS = b" ".join(rng.choice(WORDS) + b"%d" % rng.randint(0, 99) for _ in range(40000))  # ~200 KiB
JS = [("Content-Type", "text/javascript"), ("Cache-Control", "max-age=600"), ("ETag", '"js1"')]
SHA = hashlib.sha256(BIG_JS).hexdigest()


async def fetch(client: httpx.AsyncClient, path: str, **headers: str) -> tuple[httpx.Response, bytes]:
    """The response and its body exactly as sent (Content-Encoding not undone); without an
    Accept-Encoding in ``headers`` the request has none (not httpx's default)."""
    request = client.build_request("GET", path, headers=headers)
    if "Accept-Encoding" not in headers:
        del request.headers["Accept-Encoding"]
    resp = await client.send(request, stream=True)
    try:
        raw = b"".join([chunk async for chunk in resp.aiter_raw()])
    finally:
        await resp.aclose()
    return resp, raw


def decoded(resp: httpx.Response, raw: bytes) -> bytes:
    coding = resp.headers.get("content-encoding")
    return raw if coding is None else decompress(coding.encode(), raw)


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip", None])
async def test_the_first_visit_is_encoded_as_negotiated(
    origin: ScriptedOrigin, edge: Edge, coding: str | None
) -> None:
    origin.routes["/app.js"] = fixed(200, BIG_JS, JS)
    headers = {} if coding is None else {"Accept-Encoding": coding}
    async with edge.client() as client:
        miss, raw = await fetch(client, "/app.js", **headers)
        assert miss.headers["x-cache"] == "MISS"
        assert miss.headers.get("content-encoding") == coding
        assert miss.headers["vary"] == "Accept-Encoding"
        assert hashlib.sha256(decoded(miss, raw)).hexdigest() == SHA
        if coding is None:
            assert miss.headers["etag"] == '"js1"'
            return
        assert len(raw) < len(BIG_JS) // 2
        # Its own validator, weak: its bytes are not those of the variant stored later.
        assert miss.headers["etag"] == f'W/"js1-{coding}"'
        await fills_settled(edge)
        await compressions_settled(edge)
        hit, raw = await fetch(client, "/app.js", **headers)
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers["content-encoding"] == coding
    assert hit.headers["etag"] == f'"js1-{coding}"', "the stored variant is made at the configured level"
    assert hashlib.sha256(decoded(hit, raw)).hexdigest() == SHA
    assert edge.core.compressions[coding.encode()] == 1, "the stored variant is made once"
    assert origin.count("/app.js") == 1


async def test_collapsed_readers_each_get_their_coding(origin: ScriptedOrigin, edge: Edge) -> None:
    gate = Gate()
    origin.routes["/app.js"] = fixed(200, BIG_JS, JS, gate=gate)
    codings = ["br", "zstd", "gzip", None]
    async with edge.client() as client:
        tasks = [
            asyncio.create_task(fetch(client, "/app.js", **({} if c is None else {"Accept-Encoding": c})))
            for c in codings
        ]
        await gate.reached()
        await eventually(lambda: fill_readers(edge) == len(codings), "every client joined the one fill")
        gate.open()
        results = await within(asyncio.gather(*tasks), "the collapsed responses")
    collapsed = 0
    for coding, (resp, raw) in zip(codings, results, strict=True):
        assert resp.headers.get("content-encoding") == coding
        assert hashlib.sha256(decoded(resp, raw)).hexdigest() == SHA
        collapsed += "collapsed" in resp.headers["cache-status"]
    assert collapsed == len(codings) - 1
    assert origin.count("/app.js") == 1


def stream_decoder(coding: str):  # type: ignore[no-untyped-def]
    if coding == "br":
        return brotli.Decompressor().process
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress
    return zlib.decompressobj(31).decompress


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip"])
async def test_each_upstream_chunk_is_flushed_to_the_client(
    origin: ScriptedOrigin, edge: Edge, coding: str
) -> None:
    gate = Gate()
    first, second = b"line one of a log\n" * 200, b"line two\n" * 200

    async def route(seen: Seen, conn: OriginConnection) -> None:
        conn.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=60\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(first), first)
        )
        await gate.hold()
        conn.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(second), second))

    origin.routes["/log"] = route
    decode = stream_decoder(coding)
    async with (
        edge.client() as client,
        client.stream("GET", "/log", headers={"Accept-Encoding": coding}) as resp,
    ):
        assert resp.headers["content-encoding"] == coding
        chunks = resp.aiter_raw()
        got = b""
        while len(got) < len(first):  # decodable before the origin sends the rest
            got += decode(await within(chunks.__anext__(), "the first chunk, encoded and flushed"))
        assert got == first and not gate.is_open
        gate.open()
        rest = b"".join([decode(chunk) async for chunk in chunks])
    assert rest == second


async def test_range_head_and_conditional_first_visits(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/app.js"] = fixed(200, BIG_JS, JS)
    async with edge.client() as client:
        ranged, raw = await fetch(client, "/app.js", **{"Accept-Encoding": "br", "Range": "bytes=10-19"})
        assert ranged.status_code == 206 and "content-encoding" not in ranged.headers
        assert raw == BIG_JS[10:20]
        head = await client.head("/app.js?h", headers={"Accept-Encoding": "gzip"})
        assert head.headers["content-encoding"] == "gzip" and head.headers["etag"] == 'W/"js1-gzip"'
        assert head.content == b""
        # The stored variant's validator matches the one encoded as it streamed (weak comparison).
        same = await client.get("/app.js?c1", headers={"Accept-Encoding": "br", "If-None-Match": '"js1-br"'})
        assert same.status_code == 304 and same.headers["etag"] == 'W/"js1-br"'
        # The identity validator does not describe the br variant.
        other, raw = await fetch(client, "/app.js?c2", **{"Accept-Encoding": "br", "If-None-Match": '"js1"'})
        assert other.status_code == 200 and other.headers["content-encoding"] == "br"
        assert hashlib.sha256(decompress(b"br", raw)).hexdigest() == SHA


async def test_an_encoded_miss_past_max_object_size_holds_no_copy_of_what_it_sent(
    origin: ScriptedOrigin,
) -> None:
    """A compressible response of unknown length that outgrows max_object_size is relayed
    encoded, but nothing of it is kept: not the fill's chunks, not the encoded output."""
    import tracemalloc

    from tests.support.nodes import start_edge

    chunk = b" ".join(rng.choice(WORDS) + b"%d" % rng.randint(0, 99) for _ in range(30000))  # ~150 KiB
    rounds = 100  # ~15 MiB in all, against a 1 MiB max_object_size

    async def endless(seen: Seen, conn: OriginConnection) -> None:
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=60\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        for _ in range(rounds):
            conn.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await asyncio.sleep(0)
        conn.write(b"0\r\n\r\n")

    origin.routes["/log.txt"] = endless
    edge = await start_edge(origin.url, None, max_object_size="1MiB")
    expected = hashlib.sha256(chunk * rounds).hexdigest()
    got = hashlib.sha256()
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    tracemalloc.start()
    try:
        async with (
            edge.client() as client,
            client.stream("GET", "/log.txt", headers={"Accept-Encoding": "gzip"}) as resp,
        ):
            assert resp.headers["content-encoding"] == "gzip"
            async for piece in resp.aiter_raw():  # never held whole on this side
                got.update(inflate.decompress(piece))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        edge.server.close()
        await edge.core.aclose()
    got.update(inflate.flush())
    assert got.hexdigest() == expected
    # About 4 MiB went out encoded: an edge keeping each encoded chunk (or the fill's
    # chunks) would peak above that; its bounded buffers stay well under.
    assert peak < 3 * 1024 * 1024, peak


async def test_past_the_encoder_bound_a_first_visit_is_identity(
    origin: ScriptedOrigin, edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge.core import misses

    monkeypatch.setattr(misses, "MAX_STREAM_ENCODERS", 0)
    origin.routes["/app.js"] = fixed(200, BIG_JS, JS)
    async with edge.client() as client:
        miss, raw = await fetch(client, "/app.js", **{"Accept-Encoding": "br"})
    assert miss.headers["x-cache"] == "MISS" and "content-encoding" not in miss.headers
    assert raw == BIG_JS
