"""Issue 17: odd upstream framing, ranges over slices, HEAD updating stored fields.

Real servers on loopback: a scripted origin sends the exact bytes, an edge on the
HTTP/1.1 front relays them.
"""

from __future__ import annotations

import asyncio
import hashlib
import re

import httpx
import pytest

from edge.upstream.client import UpstreamPool, UpstreamTarget
from tests.core.test_slices import MiB, content, get, ranged, ranges_seen
from tests.support.nodes import Clock, Edge, raw_exchange
from tests.support.scripted_origin import Gate, OriginConnection, ScriptedOrigin, Seen, fixed, response
from tests.support.waiting import eventually, fill_readers

pytestmark = pytest.mark.asyncio

BODY = b"".join(b"line %04d of a body framed by the close\n" % i for i in range(2000))


def coded_until_close(coding: bytes, body: bytes = BODY, cache: bytes = b"max-age=60") -> object:
    """A route answering with ``Transfer-Encoding: coding`` and a body ended by closing."""

    async def route(seen: Seen, conn: OriginConnection) -> None:
        conn.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: "
            + coding
            + b"\r\nCache-Control: "
            + cache
            + b"\r\nContent-Type: text/plain\r\n\r\n"
        )
        for i in range(0, len(body), 7000):
            await conn.send(body[i : i + 7000])
            await asyncio.sleep(0)
        conn.close()

    return route


async def test_upstream_client_reads_a_transfer_coded_body_until_the_close(origin: ScriptedOrigin) -> None:
    origin.routes["/foo"] = coded_until_close(b"foo")  # type: ignore[assignment]
    pool = UpstreamPool(UpstreamTarget("127.0.0.1", origin.port, b"127.0.0.1"), read_timeout=5)
    resp = await pool.request(b"GET", b"/foo", [(b"Host", b"127.0.0.1")])
    got = b"".join([c async for c in resp.chunks()])
    assert got == BODY
    assert resp.complete and resp.close_delimited
    resp.close()
    pool.close()


@pytest.mark.parametrize("coding", [b"foo", b"chunked, foo", b"gzip"])
async def test_a_transfer_coding_other_than_chunked_is_read_until_close_and_relayed_whole(
    origin: ScriptedOrigin, edge: Edge, coding: bytes
) -> None:
    origin.routes["/coded"] = coded_until_close(coding)  # type: ignore[assignment]
    raw = await raw_exchange(
        edge.port, b"GET /coded HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"
    )
    head, _, rest = raw.partition(b"\r\n\r\n")
    fields = head.lower()
    assert head.startswith(b"HTTP/1.1 200 ")
    # the node's own framing (chunked to an HTTP/1.1 client), never the upstream's coding
    assert b"transfer-encoding: chunked" in fields
    assert coding not in fields.replace(b"transfer-encoding: chunked", b"")
    assert _dechunk(rest) == BODY
    async with edge.client() as client:
        again = await client.get("/coded")
    assert again.content == BODY
    assert "transfer-encoding" not in {k.lower() for k, v in again.headers.items() if v.lower() != "chunked"}
    # not stored: a close-delimited, transfer-coded body is never kept (see edge/cache/storability.py)
    assert origin.count("/coded") == 2
    assert "detail=transfer-coded" in again.headers["cache-status"]


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out += data[:size]
        data = data[size + 2 :]


# -- several ranges of an object kept as slices ------------------------------------------------


def parts_of(resp: httpx.Response) -> list[tuple[str, bytes]]:
    """The (Content-Range, bytes) of each part of a multipart/byteranges body."""
    ctype = resp.headers["content-type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.partition("boundary=")[2].encode()
    body = resp.content
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    parts = []
    for chunk in body[: -len(boundary) - 6].split(b"--" + boundary + b"\r\n")[1:]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n"))
        assert fields[b"Content-Type"] == b"application/octet-stream"
        parts.append((fields[b"Content-Range"].decode(), data))
    assert int(resp.headers["content-length"]) == len(body)
    return parts


async def test_several_ranges_of_a_sliced_object_are_a_multipart_206_from_the_needed_slices(
    origin: ScriptedOrigin, edge: Edge
) -> None:
    length = 6 * MiB + 123  # seven slices
    origin.routes["/six.bin"] = ranged(length)
    # cold: the first range's slice describes the object; the others are fetched as needed
    first = await get(edge, "/six.bin", range="bytes=0-9,20-29")
    assert first.status_code == 206
    assert parts_of(first) == [
        (f"bytes 0-9/{length}", content(0, 9)),
        (f"bytes 20-29/{length}", content(20, 29)),
    ]
    assert ranges_seen(origin, "/six.bin") == [f"bytes=0-{MiB - 1}"]

    wanted = [(40, 49), (2 * MiB - 5, 2 * MiB + 4), (5 * MiB + 7, 5 * MiB + 7), (length - 3, length - 1)]
    spec = ",".join(f"{a}-{b}" for a, b in wanted)
    resp = await get(edge, "/six.bin", range=f"bytes={spec}")
    assert resp.status_code == 206
    assert parts_of(resp) == [(f"bytes {a}-{b}/{length}", content(a, b)) for a, b in wanted]
    # slice 0 was stored; slices 1, 2, 5 and 6 hold the other ranges; 3 and 4 are never asked for
    assert ranges_seen(origin, "/six.bin") == [
        f"bytes=0-{MiB - 1}",
        f"bytes={MiB}-{2 * MiB - 1}",
        f"bytes={2 * MiB}-{3 * MiB - 1}",
        f"bytes={5 * MiB}-{6 * MiB - 1}",
        f"bytes={6 * MiB}-{length - 1}",
    ]
    # all from the store now, and the same bytes again
    again = await get(edge, "/six.bin", range=f"bytes={spec}")
    assert parts_of(again) == parts_of(resp)
    assert len(ranges_seen(origin, "/six.bin")) == 5
    # one range and none still work as before
    one = await get(edge, "/six.bin", range="bytes=100-199")
    assert (one.status_code, one.content) == (206, content(100, 199))
    bad = await get(edge, "/six.bin", range=f"bytes={length + 5}-")
    assert bad.status_code == 416


# -- a stored partial object whose next slice shows it changed ---------------------------------


def versioned(length: int, state: dict[str, str | int]):  # type: ignore[no-untyped-def]
    """An object of ``length`` bytes whose ETag and bytes the test changes through ``state``."""

    async def route(seen: Seen, conn: OriginConnection) -> None:
        seed = int(state["seed"])
        fields = [("Cache-Control", "max-age=600"), ("ETag", str(state["etag"]))]
        fields.append(("Content-Type", "application/octet-stream"))
        m = re.fullmatch(rb"bytes=(\d+)-(\d+)", seen.header(b"range") or b"")
        if m is None:
            conn.write(response(200, b"", fields, length=False)[:-2] + b"Content-Length: %d\r\n\r\n" % length)
            for start in range(0, length, MiB):
                await conn.send(content(start + seed, min(length, start + MiB) - 1 + seed))
            return
        start, end = int(m[1]), min(length - 1, int(m[2]))
        part = [*fields, ("Content-Range", f"bytes {start}-{end}/{length}")]
        conn.write(response(206, content(start + seed, end + seed), part, "Partial Content"))

    return route


async def test_a_partial_object_asked_whole_after_it_changed_is_fetched_afresh_not_cut(
    origin: ScriptedOrigin, edge: Edge
) -> None:
    length = 3 * MiB + 10
    state: dict[str, str | int] = {"etag": '"v1"', "seed": 0}
    origin.routes["/moving.bin"] = versioned(length, state)
    first = await get(edge, "/moving.bin", range="bytes=0-9")
    assert (first.status_code, first.content) == (206, content(0, 9))  # slice 0 of v1 is stored
    state.update(etag='"v2"', seed=7)
    # The whole object: slice 0 is stored, slice 1 is not. Its answer shows the change before
    # a byte went out, so the client gets v2 whole instead of v1's first MiB and a cut.
    whole = await get(edge, "/moving.bin")
    assert whole.status_code == 200
    assert whole.headers["etag"] == '"v2"'
    assert hashlib.sha256(whole.content).digest() == hashlib.sha256(content(7, length - 1 + 7)).digest()
    assert ranges_seen(origin, "/moving.bin") == [f"bytes=0-{MiB - 1}", f"bytes={MiB}-{2 * MiB - 1}", None]
    # v2 was cut into slices as it streamed: the next whole request is a hit from them
    again = await get(edge, "/moving.bin")
    assert again.content == whole.content and "hit" in again.headers["cache-status"]
    assert len(ranges_seen(origin, "/moving.bin")) == 3


async def test_ranges_of_a_partial_object_that_changed_are_answered_afresh(
    origin: ScriptedOrigin, edge: Edge
) -> None:
    length = 4 * MiB
    state: dict[str, str | int] = {"etag": '"v1"', "seed": 0}
    origin.routes["/moving.bin"] = versioned(length, state)
    assert (await get(edge, "/moving.bin", range="bytes=0-9")).status_code == 206
    state.update(etag='"v2"', seed=3)
    wanted = [(0, 9), (2 * MiB, 2 * MiB + 9)]
    resp = await get(edge, "/moving.bin", range="bytes=0-9,2097152-2097161")
    assert resp.status_code == 206 and resp.headers["etag"] == '"v2"'
    assert parts_of(resp) == [(f"bytes {a}-{b}/{length}", content(a + 3, b + 3)) for a, b in wanted]
    # the changed slice 2, then afresh: slice 0 (describes v2) and slice 2 again, of v2
    assert ranges_seen(origin, "/moving.bin") == [
        f"bytes=0-{MiB - 1}",
        f"bytes={2 * MiB}-{3 * MiB - 1}",
        f"bytes=0-{MiB - 1}",
        f"bytes={2 * MiB}-{3 * MiB - 1}",
    ]


async def test_a_slice_that_cannot_be_fetched_before_the_response_starts_is_a_502(
    origin: ScriptedOrigin, edge: Edge
) -> None:
    length = 3 * MiB
    state: dict[str, str | int] = {"etag": '"v1"', "seed": 0}
    origin.routes["/moving.bin"] = versioned(length, state)
    assert (await get(edge, "/moving.bin", range="bytes=0-9")).status_code == 206

    async def broken(seen: Seen, conn: OriginConnection) -> None:
        conn.abort()

    origin.routes["/moving.bin"] = broken
    resp = await get(edge, "/moving.bin")
    assert resp.status_code == 502
    assert "fwd=partial" in resp.headers["cache-status"]


async def test_a_change_found_after_bytes_went_out_still_cuts_the_response(
    origin: ScriptedOrigin, edge: Edge
) -> None:
    length = 3 * MiB
    state: dict[str, str | int] = {"etag": '"v1"', "seed": 0}
    versions = versioned(length, state)
    origin.routes["/moving.bin"] = versions
    assert (await get(edge, "/moving.bin", range="bytes=0-9")).status_code == 206

    async def changes_after_slice_1(seen: Seen, conn: OriginConnection) -> None:
        await versions(seen, conn)
        if seen.header(b"range") == f"bytes={MiB}-{2 * MiB - 1}".encode():
            state.update(etag='"v2"', seed=5)

    origin.routes["/moving.bin"] = changes_after_slice_1
    with pytest.raises(httpx.RemoteProtocolError):
        await get(edge, "/moving.bin")  # slices 0 and 1 of v1 went out; slice 2 is v2's
    fresh = await get(edge, "/moving.bin")
    assert fresh.headers["etag"] == '"v2"' and fresh.content == content(5, length - 1 + 5)


# -- a HEAD answered upstream updates the stored GET (RFC 9111 §4.3.5) -------------------------


def by_language(state: dict[str, str], gate: Gate):  # type: ignore[no-untyped-def]
    """/v varies on Accept-Language; ``fr`` waits at ``gate``; HEAD answers with ``state``."""

    async def route(seen: Seen, conn: OriginConnection) -> None:
        lang = (seen.header(b"accept-language") or b"en").decode()
        if lang == "fr":
            await gate.hold()
        body = f"hello {lang}\n".encode()
        fields = [("Vary", "Accept-Language"), ("Content-Type", "application/octet-stream")]
        if seen.method == b"HEAD":
            fields += [("ETag", state["etag"]), ("Cache-Control", "max-age=100"), ("X-Rev", state["rev"])]
            conn.write(response(200, body, fields)[: -len(body)])
        else:
            fields += [("ETag", f'"{lang}-1"'), ("Cache-Control", "max-age=10"), ("X-Rev", "1")]
            conn.write(response(200, body, fields))

    return route


@pytest.mark.parametrize("same", [True, False], ids=["same-validator", "changed"])
async def test_a_head_sent_upstream_updates_the_stored_get_it_describes(
    origin: ScriptedOrigin, edge: Edge, clock: Clock, same: bool
) -> None:
    state = {"etag": '"en-1"' if same else '"en-2"', "rev": "2"}
    gate = Gate()
    origin.routes["/v"] = by_language(state, gate)
    async with edge.client() as client:
        first = await client.get("/v", headers={"accept-language": "en"})
        assert first.headers["x-rev"] == "1"
        # The en HEAD must go upstream: the stored en GET is stale (same), or the HEAD says
        # no-cache while it is fresh (changed: the HEAD must then make it stale).
        head_fields = {"accept-language": "en"}
        if same:
            clock.advance(20)
        else:
            head_fields["cache-control"] = "no-cache"
        # A HEAD goes upstream only when the cache cannot answer it otherwise: here it
        # collapses on another language's fill, whose Vary shows it is not its response.
        other = asyncio.ensure_future(client.get("/v", headers={"accept-language": "fr"}))
        await gate.reached()
        head = asyncio.ensure_future(client.head("/v", headers=head_fields))
        await eventually(lambda: fill_readers(edge) == 2, "the HEAD joined the fr fill")
        gate.open()
        assert (await other).status_code == 200
        answered = await head
        assert (answered.status_code, answered.headers["x-rev"]) == (200, "2")
        assert origin.count("/v", b"HEAD") == 1
        after = await client.get("/v", headers={"accept-language": "en"})
    en_gets = [s for s in origin.seen if s.method == b"GET" and s.header(b"accept-language") == b"en"]
    assert after.content == b"hello en\n"
    if same:
        # a new entry with the HEAD's fields: fresh again (max-age=100), from the store
        assert after.headers["x-rev"] == "2" and after.headers["x-cache"] == "HIT"
        assert "hit" in after.headers["cache-status"]
        assert len(en_gets) == 1
    else:
        # the HEAD described another object: the stored GET, fresh until then, is now stale
        # and is validated
        assert after.headers["x-cache"] == "MISS"
        assert len(en_gets) == 2 and en_gets[1].header(b"if-none-match") == b'"en-1"'


# -- a targeted field that is not a valid Structured Field is ignored ------------------------


@pytest.mark.parametrize("cdn", ['max-age="600"', "max-age=a", "max-age=600, public=?0", "Max-Age=600"])
async def test_an_invalid_cdn_cache_control_leaves_cache_control_in_charge(
    origin: ScriptedOrigin, edge: Edge, cdn: str
) -> None:
    headers = [("CDN-Cache-Control", cdn), ("Cache-Control", "no-store"), ("ETag", '"t"')]
    origin.routes["/t"] = fixed(200, b"targeted\n", headers)
    async with edge.client() as client:
        first = await client.get("/t")
        assert first.status_code == 200 and "detail=no-store" in first.headers["cache-status"]
        assert (await client.get("/t")).headers["x-cache"] == "MISS"
    assert origin.count("/t") == 2  # Cache-Control's no-store ruled: never stored


async def test_a_valid_cdn_cache_control_overrides_cache_control(origin: ScriptedOrigin, edge: Edge) -> None:
    headers = [("CDN-Cache-Control", "max-age=600"), ("Cache-Control", "no-store"), ("ETag", '"t"')]
    origin.routes["/t"] = fixed(200, b"targeted\n", headers)
    async with edge.client() as client:
        await client.get("/t")
        assert (await client.get("/t")).headers["x-cache"] == "HIT"
    assert origin.count("/t") == 1


async def test_a_coding_under_chunked_is_never_stored(origin: ScriptedOrigin, edge: Edge) -> None:
    """``Transfer-Encoding: gzip, chunked``: llhttp removes the chunking, the bytes stay gzip;
    they are not the representation, so they must never be stored and served as one."""
    import gzip

    coded = gzip.compress(b"the representation\n")

    async def route(seen: Seen, conn: OriginConnection) -> None:
        conn.write(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(coded), coded)
        )

    origin.routes["/gz"] = route  # type: ignore[assignment]
    async with edge.client() as client:
        first = await client.get("/gz")
        again = await client.get("/gz")
    assert origin.count("/gz") == 2
    assert "detail=transfer-coded" in again.headers["cache-status"]
    assert "stored" not in first.headers["cache-status"].split("; ")
