"""A response is only ever sent in a coding the request accepts, or in identity.

Variants of ``Vary: Accept-Encoding`` are keyed by the coding the node would choose
(``edge.cache.key.secondary_key``), but an upstream may choose otherwise: an origin
that keeps only a ``.gz`` sibling answers gzip to a browser whose request the node
keys as ``br``. Such a variant is sent only to requests that accept its coding
(``edge.cache.key.accepts_coding``), on the fast hit, the full path and to clients
collapsing onto the fill that fetches it.
"""

from __future__ import annotations

import asyncio
import gzip

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import config as edge_config
from edge.cache.entry import Entry
from edge.cache.freshness import freshness_policy
from edge.cache.key import secondary_key
from edge.core import EdgeCore
from edge.http.accept_encoding import ABSENT, parse_accept_encoding
from edge.http.fields import get_one
from edge.http.message import Request, fields_of
from tests.support.nodes import Edge
from tests.support.scripted_origin import Gate, OriginConnection, ScriptedOrigin, Seen, response
from tests.support.waiting import eventually, fill_readers, fills_settled

TEXT = b"function edge() { return cache; }\n" * 300
BROWSER = "gzip, deflate, br, zstd"


def gzip_only_origin(gate: Gate | None = None):  # type: ignore[no-untyped-def]
    """An origin with only a gzip sibling: gzip when the request accepts it, else identity."""

    async def route(seen: Seen, conn: OriginConnection) -> None:
        accept = (seen.header(b"accept-encoding") or b"").lower()
        fields = [
            ("Cache-Control", "public, max-age=300"),
            ("Content-Type", "text/plain"),
            ("Vary", "Accept-Encoding"),
        ]
        if b"gzip" in accept:
            if gate is not None:
                await gate.hold()
            conn.write(response(200, gzip.compress(TEXT, mtime=0), [*fields, ("Content-Encoding", "gzip")]))
        else:
            conn.write(response(200, TEXT, fields))

    return route


async def get(edge: Edge, path: str, accept: str):  # type: ignore[no-untyped-def]
    async with edge.client() as client:
        return await client.get(path, headers={"Accept-Encoding": accept})


@pytest.mark.asyncio
async def test_a_br_only_client_replaces_the_upstream_gzip_variant_and_both_are_then_hits(
    origin: ScriptedOrigin, edge: Edge
) -> None:
    origin.routes["/app.txt"] = gzip_only_origin()
    first = await get(edge, "/app.txt", BROWSER)
    assert first.headers["content-encoding"] == "gzip" and first.content == TEXT
    await fills_settled(edge)
    assert (await get(edge, "/app.txt", BROWSER)).headers["x-cache"] == "HIT"
    br_only = await get(edge, "/app.txt", "br")
    assert br_only.headers.get("content-encoding") in (None, "br"), "never the gzip variant"
    assert br_only.headers["x-cache"] == "MISS" and br_only.content == TEXT
    await fills_settled(edge)
    # The identity response now holds the key both requests share; the node encodes it for each.
    for accept in ("br", BROWSER, "br"):
        hit = await get(edge, "/app.txt", accept)
        assert hit.headers["x-cache"] == "HIT"
        assert hit.headers.get("content-encoding") in (None, "br")
        assert hit.content == TEXT or hit.headers.get("content-encoding") == "br"
    assert origin.count("/app.txt") == 2


@pytest.mark.asyncio
async def test_a_br_only_client_does_not_read_a_gzip_fill_it_collapsed_onto(
    origin: ScriptedOrigin, edge: Edge
) -> None:
    gate = Gate()
    origin.routes["/slow.txt"] = gzip_only_origin(gate)
    browser = asyncio.create_task(get(edge, "/slow.txt", BROWSER))
    await gate.reached()
    br_only = asyncio.create_task(get(edge, "/slow.txt", "br"))
    await eventually(lambda: fill_readers(edge) == 2, "the br-only client joined the fill")
    gate.open()
    gzipped, plain = await asyncio.gather(browser, br_only)
    assert gzipped.headers["content-encoding"] == "gzip"
    assert plain.headers.get("content-encoding") is None and plain.content == TEXT


# -- the property, on the fast hit and the full path's lookup, without sockets --------------

NOW = 1_700_000_000.0
CODINGS = [b"gzip", b"x-gzip", b"br", b"zstd", b"deflate", b"compress", b"identity", b"*"]
member = st.tuples(st.sampled_from(CODINGS), st.sampled_from([None, b"0", b"0.5", b"1"])).map(
    lambda m: m[0] if m[1] is None else m[0] + b";q=" + m[1]
)
accept_encoding = st.none() | st.lists(member, max_size=4).map(b", ".join)
upstream_coding = st.sampled_from([None, b"gzip", b"br", b"zstd", b"deflate", b"gzip, br"])


def acceptable(accept: bytes | None, content_coding: bytes | None) -> bool:
    """The oracle: RFC 9110 §12.5.3 read directly off the parsed field."""
    if content_coding is None:
        return True
    parsed = parse_accept_encoding(accept)
    if parsed is ABSENT:
        return True
    return all(parsed.get(coding, parsed.get(b"*")) for coding in content_coding.split(b", "))


def request(accept: bytes | None) -> Request:
    headers = [(b"Host", b"h")] + ([] if accept is None else [(b"Accept-Encoding", accept)])
    return Request(b"GET", b"/v.txt", headers, fields_of(headers), host=b"h")


@pytest.fixture(scope="module")
def config() -> edge_config.Config:
    return edge_config.load(None, {}, {"upstream": "http://127.0.0.1:9", "listen": "127.0.0.1:1"})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stored=st.lists(st.tuples(accept_encoding, upstream_coding), min_size=1, max_size=4),
    asked=accept_encoding,
)
def test_a_variant_is_only_sent_in_a_coding_the_request_accepts(
    config: edge_config.Config, stored: list[tuple[bytes | None, bytes | None]], asked: bytes | None
) -> None:
    core = EdgeCore(config, clock=lambda: NOW)
    try:
        vary = (b"accept-encoding",)
        for fetched_by, coding in stored:
            fields = [
                (b"Cache-Control", b"max-age=600"),
                (b"Content-Type", b"text/plain"),
                (b"Vary", b"Accept-Encoding"),
                *([] if coding is None else [(b"Content-Encoding", coding)]),
            ]
            entry = Entry(
                b"http://h/v.txt",
                200,
                b"OK",
                fields,
                TEXT[:2000],
                freshness_policy(200, fields, NOW),
                NOW,
                0.0,
                vary,
            )
            if coding is None:
                entry.encodings = {}  # identity and compressible: the node makes its own codings
            core.memory.put_response(entry, secondary_key(request(fetched_by), vary))
        req = request(asked)
        for sent in (core.fresh_hit(req, NOW), core.memory.response(req, b"http://h/v.txt")[0]):
            if sent is None:
                continue
            sent = core.compressor.representation(sent, req)  # what send_entry sends (no-op for a fast hit)
            content_coding = get_one(sent.headers, b"content-encoding")
            assert acceptable(asked, content_coding), (asked, content_coding)
    finally:
        core.compressor.close()
