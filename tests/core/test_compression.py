"""Compression at the edge: negotiated, compressed once per object and coding, never twice."""

from __future__ import annotations

import random

import pytest

from edge.codecs import decompress
from tests.support.nodes import Edge
from tests.support.scripted_origin import ScriptedOrigin, fixed
from tests.support.waiting import compressions_settled, fills_settled

pytestmark = pytest.mark.asyncio

rng = random.Random(7)
WORDS = [b"function", b"return", b"const", b"value", b"export", b"import", b"=>", b"{", b"}", b"(x)"]
BIG_JS = b" ".join(rng.choice(WORDS) for _ in range(20000))  # ~100 KiB, compresses well
SMALL_JS = BIG_JS[:5000]
JS = [("Content-Type", "text/javascript; charset=utf-8"), ("Cache-Control", "max-age=600"), ("ETag", '"js1"')]


async def get(edge: Edge, path: str, **headers: str):  # type: ignore[no-untyped-def]
    async with edge.client() as client:
        return await client.get(path, headers=headers)


async def wait_for_compressions(edge: Edge, coding: bytes, count: int) -> None:
    await compressions_settled(edge)
    assert edge.core.compressions[coding] >= count, f"{coding!r} was never compressed"


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip"])
async def test_compressed_hit_decompresses_to_identity(
    origin: ScriptedOrigin, edge: Edge, coding: str
) -> None:
    origin.routes["/app.js"] = fixed(200, BIG_JS, JS)
    miss = await get(edge, "/app.js", **{"Accept-Encoding": coding})
    assert miss.headers["x-cache"] == "MISS"
    assert miss.headers["content-encoding"] == coding, "the miss is encoded as it streams"
    assert miss.headers["etag"] == f'W/"js1-{coding}"'
    assert miss.headers["vary"] == "Accept-Encoding"
    await fills_settled(edge)  # stored: the next request is a hit
    first_hit = await get(edge, "/app.js", **{"Accept-Encoding": coding})
    assert first_hit.headers["x-cache"] == "HIT"
    assert first_hit.headers["content-encoding"] == coding
    await wait_for_compressions(edge, coding.encode(), 1)
    for _ in range(5):
        hit = await get(edge, "/app.js", **{"Accept-Encoding": coding})
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers["content-encoding"] == coding
    assert hit.headers["vary"] == "Accept-Encoding"
    raw = hit.content if coding != "gzip" else None
    # httpx decodes gzip (and br/zstd when their packages are present); compare decoded bytes.
    assert hit.content == BIG_JS or (raw is not None and decompress(coding.encode(), raw) == BIG_JS)
    assert int(hit.headers["content-length"]) < len(BIG_JS) // 2
    assert hit.headers["etag"] == f'"js1-{coding}"'
    assert edge.core.compressions[coding.encode()] == 1, "compressed once, whatever the number of hits"
    assert origin.count("/app.js") == 1


async def test_raw_compressed_bytes_over_the_wire(origin: ScriptedOrigin, edge: Edge) -> None:
    from tests.support.nodes import raw_exchange

    origin.routes["/small.js"] = fixed(200, SMALL_JS, JS)
    await get(edge, "/small.js")
    request = (
        b"GET /small.js HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept-Encoding: br\r\nConnection: close\r\n\r\n"
        % edge.port
    )
    out = await raw_exchange(edge.port, request)
    head, body = out.split(b"\r\n\r\n", 1)
    assert b"Content-Encoding: br" in head, "small bodies are compressed inline on first demand"
    assert decompress(b"br", body) == SMALL_JS
    assert b"Content-Length: %d" % len(body) in head


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("br, gzip", "br"),
        ("gzip, deflate, br, zstd", "br"),
        ("gzip;q=1, br;q=0.5", "gzip"),
        ("br;q=0, zstd, gzip", "zstd"),
        ("gzip", "gzip"),
        ("identity", None),
        ("*", "br"),
        ("*;q=0, identity", None),
        ("deflate", None),
    ],
)
async def test_negotiation(origin: ScriptedOrigin, edge: Edge, accept: str, expected: str | None) -> None:
    from tests.support.nodes import raw_exchange

    origin.routes["/n.js"] = fixed(200, SMALL_JS, JS)
    await get(edge, "/n.js")
    out = await raw_exchange(
        edge.port,
        f"GET /n.js HTTP/1.1\r\nHost: 127.0.0.1:{edge.port}\r\nAccept-Encoding: {accept}\r\nConnection: close\r\n\r\n".encode(),
    )
    head = out.split(b"\r\n\r\n", 1)[0].decode()
    coding = next(
        (line.split(": ")[1] for line in head.split("\r\n") if line.startswith("Content-Encoding")), None
    )
    assert coding == expected


async def test_no_accept_encoding_gets_identity(origin: ScriptedOrigin, edge: Edge) -> None:
    from tests.support.nodes import raw_exchange

    origin.routes["/id.js"] = fixed(200, SMALL_JS, JS)
    await get(edge, "/id.js")
    out = await raw_exchange(
        edge.port, b"GET /id.js HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % edge.port
    )
    assert b"Content-Encoding" not in out.split(b"\r\n\r\n")[0]
    assert out.endswith(SMALL_JS)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ([("Content-Type", "image/png"), ("Cache-Control", "max-age=600")], BIG_JS),
        ([("Content-Type", "text/javascript"), ("Cache-Control", "max-age=600")], b"tiny"),
        ([("Content-Type", "text/javascript"), ("Cache-Control", "max-age=600, no-transform")], BIG_JS),
        ([("Content-Type", "font/woff2"), ("Cache-Control", "max-age=600")], BIG_JS),
    ],
    ids=["image", "below-min-size", "no-transform", "woff2"],
)
async def test_not_compressed(
    origin: ScriptedOrigin, edge: Edge, headers: list[tuple[str, str]], body: bytes
) -> None:
    origin.routes["/x"] = fixed(200, body, headers)
    await get(edge, "/x", **{"Accept-Encoding": "br, gzip"})
    await fills_settled(edge)  # stored: the next requests are hits, where compressing would start
    for _ in range(2):
        resp = await get(edge, "/x", **{"Accept-Encoding": "br, gzip"})
        assert resp.headers["x-cache"] == "HIT"
    await compressions_settled(edge)  # a compression the hits started (wrongly) has landed by now
    assert "content-encoding" not in resp.headers
    assert resp.content == body
    assert sum(edge.core.compressions.values()) == 0


async def test_upstream_compression_is_kept_not_doubled(origin: ScriptedOrigin, edge: Edge) -> None:
    from edge.codecs import compress

    gz = compress(b"gzip", BIG_JS, 6)
    origin.routes["/pre.js"] = fixed(
        200, gz, [*JS, ("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")]
    )
    for _ in range(3):
        resp = await get(edge, "/pre.js", **{"Accept-Encoding": "gzip"})
    assert resp.headers["content-encoding"] == "gzip"
    assert resp.content == BIG_JS  # httpx decoded it once: it was encoded once
    assert sum(edge.core.compressions.values()) == 0
    assert origin.count("/pre.js") == 1


async def test_upstream_variants_keyed_by_chosen_coding(origin: ScriptedOrigin, edge: Edge) -> None:
    from edge.codecs import compress

    async def by_coding(seen, conn) -> None:  # type: ignore[no-untyped-def]
        from tests.support.scripted_origin import response

        accept = (seen.header(b"accept-encoding") or b"").decode()
        if "br" in accept:
            conn.write(
                response(
                    200,
                    compress(b"br", BIG_JS, 5),
                    [*JS, ("Content-Encoding", "br"), ("Vary", "Accept-Encoding")],
                )
            )
        else:
            conn.write(
                response(
                    200,
                    compress(b"gzip", BIG_JS, 6),
                    [*JS, ("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")],
                )
            )

    origin.routes["/v.js"] = by_coding
    for accept in ("gzip, deflate, br", "br, gzip", "gzip", "gzip, deflate", "br"):
        await get(edge, "/v.js", **{"Accept-Encoding": accept})
    assert origin.count("/v.js") == 2, "two variants (br, gzip), however the header was spelled"


async def test_range_request_gets_identity(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/r.js"] = fixed(200, SMALL_JS, JS)
    await get(edge, "/r.js")
    await get(edge, "/r.js", **{"Accept-Encoding": "br"})
    resp = await get(edge, "/r.js", **{"Accept-Encoding": "br", "Range": "bytes=0-99"})
    assert "content-encoding" not in resp.headers
    assert resp.content == SMALL_JS[:100] or resp.content == SMALL_JS


async def test_client_revalidation_of_a_compressed_variant(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/c.js"] = fixed(200, SMALL_JS, JS)
    await get(edge, "/c.js")
    first = await get(edge, "/c.js", **{"Accept-Encoding": "br"})
    assert first.headers["etag"] == '"js1-br"'
    again = await get(edge, "/c.js", **{"Accept-Encoding": "br", "If-None-Match": '"js1-br"'})
    assert again.status_code == 304
    identity = await get(edge, "/c.js", **{"Accept-Encoding": "identity", "If-None-Match": '"js1-br"'})
    assert identity.status_code == 200, "the br validator does not match the identity representation"
