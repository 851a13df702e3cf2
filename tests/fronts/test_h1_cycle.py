"""The edge over HTTP/1.1: miss → hit, keys, HEAD, pass-through, storability, upstream faults."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest

from tests.support.nodes import Edge, raw_exchange
from tests.support.scripted_origin import Gate, OriginConnection, ScriptedOrigin, Seen, fixed, response
from tests.support.waiting import WAIT, eventually, fill_readers, within

pytestmark = pytest.mark.asyncio

BODY = bytes(range(256)) * 64  # 16 KiB, every byte value


async def test_miss_then_hit_sends_identical_bytes(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/app.js"] = fixed(
        200, BODY, [("Content-Type", "text/javascript"), ("Cache-Control", "max-age=60"), ("ETag", '"v1"')]
    )
    async with edge.client(headers={"Accept-Encoding": "identity"}) as client:
        first = await client.get("/app.js")
        second = await client.get("/app.js")
    assert first.status_code == second.status_code == 200
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert hashlib.sha256(first.content).digest() == hashlib.sha256(BODY).digest()
    assert second.content == first.content
    assert first.headers["cache-status"] == "edge; fwd=uri-miss; fwd-status=200; stored"
    assert second.headers["cache-status"] == "edge; hit; ttl=60"
    assert second.headers["age"].isdigit()
    assert second.headers["etag"] == '"v1"'
    assert second.headers["content-type"] == "text/javascript"
    assert "1.1 edge" in second.headers["via"]
    assert origin.count("/app.js") == 1


async def test_upstream_age_counts_toward_freshness(origin: ScriptedOrigin, edge: Edge) -> None:
    # Already 50 s old with a 60 s lifetime: fresh now, Age reported from the upstream's value.
    origin.routes["/aged"] = fixed(200, b"x", [("Cache-Control", "max-age=60"), ("Age", "50")])
    async with edge.client() as client:
        await client.get("/aged")
        hit = await client.get("/aged")
    assert hit.headers["x-cache"] == "HIT"
    assert 50 <= int(hit.headers["age"]) <= 52


async def test_expired_by_upstream_age_is_not_served_as_hit(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/old"] = fixed(200, b"x", [("Cache-Control", "max-age=60"), ("Age", "60")])
    async with edge.client() as client:
        await client.get("/old")
        again = await client.get("/old")
    assert again.headers["x-cache"] == "MISS"
    assert origin.count("/old") == 2


async def test_query_and_host_are_part_of_the_key(origin: ScriptedOrigin, edge: Edge) -> None:
    async def echo(seen: Seen, conn: OriginConnection) -> None:
        body = seen.target + b" @ " + (seen.header(b"host") or b"")
        conn.write(response(200, body, [("Cache-Control", "max-age=60")]))

    origin.routes["/page"] = echo
    async with edge.client() as client:
        a = await client.get("/page?a=1")
        b = await client.get("/page?a=2")
        a2 = await client.get("/page?a=1")
        other = await client.get("/page?a=1", headers={"Host": "other.example"})
        other2 = await client.get("/page?a=1", headers={"Host": "OTHER.example:80"})
    assert a.content.startswith(b"/page?a=1 @ 127.0.0.1")
    assert b.content.startswith(b"/page?a=2")
    assert a2.headers["x-cache"] == "HIT" and a2.content == a.content
    assert other.headers["x-cache"] == "MISS"
    assert other.content == b"/page?a=1 @ other.example"
    assert other2.headers["x-cache"] == "HIT", "host is case-insensitive and :80 is the default port"
    assert origin.count("/page?a=1") == 2


async def test_head_miss_then_get_hit(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/h"] = fixed(200, BODY, [("Cache-Control", "max-age=60")])
    async with edge.client() as client:
        head = await client.head("/h")
        get = await client.get("/h")
        head2 = await client.head("/h")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(BODY))
    assert get.headers["x-cache"] == "HIT" and get.content == BODY
    assert head2.headers["x-cache"] == "HIT" and head2.content == b""
    assert head2.headers["content-length"] == str(len(BODY))
    # HEAD was fetched upstream as GET, once, as nginx's proxy_cache_convert_head does.
    assert [s.method for s in origin.seen] == [b"GET"]


@pytest.mark.parametrize(
    "cache_control",
    ["no-store", "private", "private, max-age=60", "max-age=60, no-store", 'private="x", no-store'],
)
async def test_no_store_and_private_are_never_stored(
    origin: ScriptedOrigin, edge: Edge, cache_control: str
) -> None:
    origin.routes["/p"] = fixed(200, b"secret", [("Cache-Control", cache_control)])
    async with edge.client() as client:
        first = await client.get("/p")
        second = await client.get("/p")
    assert first.content == second.content == b"secret"
    assert second.headers["x-cache"] == "MISS"
    assert "stored" not in second.headers["cache-status"]
    assert origin.count("/p") == 2


async def test_set_cookie_response_not_shared(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/c"] = fixed(200, b"hi", [("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1")])
    async with edge.client() as client:
        await client.get("/c")
        second = await client.get("/c")
    assert second.headers["x-cache"] == "MISS"
    assert origin.count("/c") == 2


async def test_authorization_not_stored_unless_public(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/auth"] = fixed(200, b"mine", [("Cache-Control", "max-age=60")])
    origin.routes["/pub"] = fixed(200, b"ours", [("Cache-Control", "public, max-age=60")])
    async with edge.client() as client:
        for path in ("/auth", "/pub"):
            await client.get(path, headers={"Authorization": "Bearer t"})
        auth2 = await client.get("/auth")
        pub2 = await client.get("/pub")
    assert auth2.headers["x-cache"] == "MISS"
    assert pub2.headers["x-cache"] == "HIT"


async def test_no_explicit_freshness_and_no_validator_not_stored(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/bare"] = fixed(200, b"bare")
    async with edge.client() as client:
        await client.get("/bare")
        again = await client.get("/bare")
    assert again.headers["x-cache"] == "MISS"
    assert origin.count("/bare") == 2


async def test_post_is_forwarded_with_body_and_never_cached(origin: ScriptedOrigin, edge: Edge) -> None:
    async def echo(seen: Seen, conn: OriginConnection) -> None:
        conn.write(response(200, seen.method + b":" + seen.body, [("Cache-Control", "max-age=60")]))

    origin.routes["/form"] = echo
    async with edge.client() as client:
        cached = await client.get("/form")
        posted = await client.post("/form", content=b"a=1&b=2")
        put = await client.put("/form", content=b"x" * 100_000)
        after = await client.get("/form")
    assert cached.content == b"GET:"
    assert posted.content == b"POST:a=1&b=2"
    assert posted.headers["x-cache"] == "MISS"
    assert put.content == b"PUT:" + b"x" * 100_000
    # The successful POST invalidated the stored GET (RFC 9111 §4.4).
    assert after.headers["x-cache"] == "MISS"
    assert [s.method for s in origin.seen] == [b"GET", b"POST", b"PUT", b"GET"]


async def test_delete_and_patch_are_forwarded(origin: ScriptedOrigin, edge: Edge) -> None:
    async def echo(seen: Seen, conn: OriginConnection) -> None:
        conn.write(response(202, seen.method, reason="Accepted"))

    origin.routes["/r"] = echo
    async with edge.client() as client:
        deleted = await client.delete("/r")
        patched = await client.patch("/r", content=b"{}")
    assert (deleted.status_code, deleted.content) == (202, b"DELETE")
    assert (patched.status_code, patched.content) == (202, b"PATCH")


async def test_hop_by_hop_fields_stripped_both_ways(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/hop"] = fixed(
        200,
        b"ok",
        [
            ("Cache-Control", "max-age=60"),
            ("Connection", "X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
        ],
    )
    async with edge.client() as client:
        resp = await client.get(
            "/hop", headers={"Connection": "X-Client-Hop", "X-Client-Hop": "1", "TE": "trailers"}
        )
    assert "x-secret" not in resp.headers and "keep-alive" not in resp.headers
    seen = origin.seen[0]
    names = {k.lower() for k, _ in seen.headers}
    assert b"x-client-hop" not in names and b"te" not in names
    assert seen.header(b"via") == b"1.1 edge"
    assert seen.header(b"x-forwarded-for") == b"127.0.0.1"


async def test_upstream_down_gives_502_and_node_keeps_serving(origin: ScriptedOrigin) -> None:
    from tests.support.nodes import free_port, start_edge

    node = await start_edge(f"http://127.0.0.1:{free_port()}", connect_timeout="1")
    try:
        async with node.client() as client:
            resp = await client.get("/x")
            again = await client.get("/x")
        assert resp.status_code == 502 and again.status_code == 502
        assert "upstream-error" in resp.headers["cache-status"]
        assert b"cannot connect" in resp.content
    finally:
        node.server.close()
        await node.core.aclose()


async def test_upstream_timeout_gives_504(origin: ScriptedOrigin, edge: Edge) -> None:
    # A gate never opened: the origin never answers, however long the edge's 2 s timeout takes.
    origin.routes["/slow"] = fixed(200, b"late", [("Cache-Control", "max-age=60")], gate=Gate())
    origin.routes["/fast"] = fixed(200, b"fast", [("Cache-Control", "max-age=60")])
    async with edge.client() as client:
        slow = await client.get("/slow")
        fast = await client.get("/fast")
    assert slow.status_code == 504
    assert "upstream-timeout" in slow.headers["cache-status"]
    assert fast.status_code == 200


async def test_truncated_upstream_body_is_not_stored(origin: ScriptedOrigin, edge: Edge) -> None:
    cut = Gate()

    async def truncated(seen: Seen, conn: OriginConnection) -> None:
        raw = response(200, BODY, [("Cache-Control", "max-age=60")])
        conn.write(raw[: len(raw) - 1000])
        await cut.hold()  # until the client is reading the body: the cut comes mid-body
        conn.abort()

    origin.routes["/cut"] = truncated
    async with edge.client() as client, client.stream("GET", "/cut") as streamed:
        assert streamed.status_code == 200
        cut.open()
        with pytest.raises(httpx.RemoteProtocolError):
            await streamed.aread()
    origin.routes["/cut"] = fixed(200, BODY, [("Cache-Control", "max-age=60")])
    async with edge.client() as client:
        whole = await client.get("/cut")
    assert whole.headers["x-cache"] == "MISS" and whole.content == BODY


async def test_concurrent_misses_are_collapsed(origin: ScriptedOrigin, edge: Edge) -> None:
    gate = Gate()
    origin.routes["/big"] = fixed(200, BODY, [("Cache-Control", "max-age=60")], gate=gate)
    limits = httpx.Limits(max_connections=100)
    async with edge.client(limits=limits) as client:
        pending = asyncio.gather(*(client.get("/big") for _ in range(100)))
        # The origin holds the answer until all 100 clients wait on the one fill.
        await eventually(lambda: fill_readers(edge) == 100, "100 clients joined the fill")
        gate.open()
        responses = await within(pending, "every client got the body")
    assert all(r.status_code == 200 and r.content == BODY for r in responses)
    assert origin.count("/big") == 1
    collapsed = [r for r in responses if "collapsed" in r.headers["cache-status"]]
    assert len(collapsed) == 99, "every client but the one that started the fill"


async def test_uncacheable_collapsed_waiters_go_upstream_themselves(
    origin: ScriptedOrigin, edge: Edge
) -> None:
    counter = 0
    first = Gate()

    async def private(seen: Seen, conn: OriginConnection) -> None:
        nonlocal counter
        counter += 1
        body = b"user-%d" % counter
        if counter == 1:
            await first.hold()
        conn.write(response(200, body, [("Cache-Control", "private")]))

    origin.routes["/me"] = private
    async with edge.client(limits=httpx.Limits(max_connections=10)) as client:
        pending = asyncio.gather(*(client.get("/me") for _ in range(5)))
        # The first answer (private) comes only once the other four wait on its fill.
        await eventually(lambda: fill_readers(edge) == 5, "5 clients joined the fill")
        first.open()
        responses = await within(pending, "every client got an answer")
    bodies = [r.content for r in responses]
    assert len(set(bodies)) == 5, "nobody received another client's private response"
    assert origin.count("/me") == 5


async def test_pipelined_requests_answered_in_order(origin: ScriptedOrigin, edge: Edge) -> None:
    gate = Gate()
    origin.routes["/a"] = fixed(200, b"AAAA", [("Cache-Control", "max-age=60")], gate=gate)
    origin.routes["/b"] = fixed(200, b"BBBB", [("Cache-Control", "max-age=60")])
    async with edge.client() as client:
        await client.get("/b")  # /b is now a hit, /a a miss the origin holds
    raw = (
        b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
        b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % edge.port
    )
    exchange = asyncio.ensure_future(raw_exchange(edge.port, raw, timeout=WAIT))
    # /a reached the origin: the edge has read all three (one write), and the hit /b is ready
    # to send while /a's answer is held. Only then may /a complete.
    await gate.reached()
    gate.open()
    out = await exchange
    bodies = [part[-4:] for part in out.split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies == [b"AAAA", b"BBBB", b"AAAA"]


async def test_http10_client_gets_close_delimited_or_sized_response(
    origin: ScriptedOrigin, edge: Edge
) -> None:
    origin.routes["/old"] = fixed(200, b"hello", [("Cache-Control", "max-age=60")])
    out1 = await raw_exchange(edge.port, b"GET /old HTTP/1.0\r\n\r\n")
    out2 = await raw_exchange(edge.port, b"GET /old HTTP/1.0\r\n\r\n")
    assert out1.startswith(b"HTTP/1.1 200 OK") and out1.endswith(b"\r\n\r\nhello")
    assert b"X-Cache: HIT" in out2 and out2.endswith(b"hello")
    assert b"Connection: close" in out2


async def test_interim_103_is_relayed(origin: ScriptedOrigin, edge: Edge) -> None:
    final = Gate()

    async def hints(seen: Seen, conn: OriginConnection) -> None:
        conn.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        await final.hold()
        conn.write(response(200, b"page", [("Cache-Control", "no-store")]))

    origin.routes["/hints"] = hints
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /hints HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    # The 103 is relayed as it arrives: the final response does not exist yet.
    interim = await within(reader.readuntil(b"\r\n\r\n"), "the 103 was held back")
    assert interim == b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    final.open()
    out = interim + await within(reader.read(), "the final response")
    writer.close()
    assert out.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
    assert b"HTTP/1.1 200 OK" in out and out.endswith(b"page")


async def test_unusual_status_passes_through(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/odd"] = fixed(599, b"odd")
    async with edge.client() as client:
        resp = await client.get("/odd")
    assert resp.status_code == 599 and resp.content == b"odd"


async def test_not_found_is_cached_when_fresh(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/gone"] = fixed(404, b"nope", [("Cache-Control", "max-age=30")])
    async with edge.client() as client:
        await client.get("/gone")
        again = await client.get("/gone")
    assert again.status_code == 404 and again.headers["x-cache"] == "HIT"


async def test_client_conditional_answered_304_from_cache(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/e"] = fixed(200, BODY, [("Cache-Control", "max-age=60"), ("ETag", '"abc"')])
    async with edge.client() as client:
        await client.get("/e")
        cond = await client.get("/e", headers={"If-None-Match": 'W/"abc"'})
        other = await client.get("/e", headers={"If-None-Match": '"zzz"'})
    assert cond.status_code == 304 and cond.content == b""
    assert cond.headers["etag"] == '"abc"'
    assert other.status_code == 200 and other.content == BODY
    assert origin.count("/e") == 1


async def test_alt_svc_advertised_on_hits_and_misses(origin: ScriptedOrigin) -> None:
    from tests.support.nodes import start_edge

    node = await start_edge(origin.url, alt_svc='h3=":8443"; ma=86400')
    origin.routes["/alt"] = fixed(200, b"x", [("Cache-Control", "max-age=60")])
    try:
        async with node.client() as client:
            miss = await client.get("/alt")
            hit = await client.get("/alt")
        assert miss.headers["alt-svc"] == hit.headers["alt-svc"] == 'h3=":8443"; ma=86400'
        assert hit.headers["x-cache"] == "HIT"
    finally:
        node.server.close()
        await node.core.aclose()


async def test_extension_methods_are_forwarded_with_their_body(origin: ScriptedOrigin, edge: Edge) -> None:
    async def echo(seen: Seen, conn: OriginConnection) -> None:
        conn.write(response(200, seen.method + b":" + seen.body))

    origin.routes["/ext"] = echo
    async with edge.client() as client:
        for method in ("FROBNICATE", "BAN", "PROPFIND"):
            resp = await client.request(method, "/ext", content=b"payload")
            assert resp.status_code == 200 and resp.content == method.encode() + b":payload"
            assert resp.headers["x-cache"] == "MISS"
    assert [s.method for s in origin.seen] == [b"FROBNICATE", b"BAN", b"PROPFIND"]


@pytest.mark.parametrize(
    "fields",
    [[("Cache-Control", "public, max-age=60")], [("CDN-Cache-Control", "max-age=60")]],
    ids=["public", "targeted"],
)
async def test_set_cookie_never_reaches_another_client(
    origin: ScriptedOrigin, edge: Edge, fields: list[tuple[str, str]]
) -> None:
    origin.routes["/ck"] = fixed(200, b"page", [*fields, ("Set-Cookie", "session=alice-secret")])
    async with edge.client() as alice:
        first = await alice.get("/ck")
    async with edge.client() as bob:
        second = await bob.get("/ck")
    assert first.headers["set-cookie"] == "session=alice-secret", "the client that asked gets its cookie"
    assert second.headers["x-cache"] == "HIT" and second.content == b"page"
    assert "set-cookie" not in second.headers


async def test_stored_entries_share_field_names_and_directives(origin: ScriptedOrigin, edge: Edge) -> None:
    """Memory per cached object: entries of one origin hold one copy of each field name and
    of each parsed Cache-Control, not one per entry (3.7 -> 2.5 KB RSS per 1 KiB object)."""
    for i in range(3):
        origin.routes[f"/a{i}.css"] = fixed(
            200,
            b"a" * 100,
            [("Content-Type", "text/css"), ("Cache-Control", "max-age=60"), ("ETag", f'"{i}"')],
        )
    async with edge.client(headers={"Accept-Encoding": "identity"}) as client:
        for i in range(3):
            assert (await client.get(f"/a{i}.css")).status_code == 200
    host = edge.url.split("://", 1)[1].encode()
    entries = [edge.core.store.get(b"http://%s/a%d.css" % (host, i)) for i in range(3)]
    assert all(entry is not None for entry in entries)
    names = [{name: name for name, _ in entry.headers} for entry in entries]
    for name in names[0]:
        assert names[1][name] is names[0][name] and names[2][name] is names[0][name], name
    assert entries[0].policy.directives is entries[1].policy.directives is entries[2].policy.directives
    assert entries[0].tags is entries[1].tags  # no purge tags: the shared empty set
