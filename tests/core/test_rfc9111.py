"""RFC 9111 / 5861 / 9213 behaviour over real HTTP, section by section.

The edge runs with a settable clock, so freshness is tested by moving time,
not by sleeping; the upstream is a scripted origin on a loopback socket.
"""

from __future__ import annotations

import asyncio

import pytest

from edge.http.dates import format_http_date
from tests.support.nodes import Clock, Edge, start_edge
from tests.support.scripted_origin import Gate, OriginConnection, ScriptedOrigin, Seen, fixed, response
from tests.support.waiting import fills_in_flight, fills_settled

pytestmark = pytest.mark.asyncio


def validating(
    body: bytes,
    etag: str,
    headers: list[tuple[str, str]],
    not_modified_headers: list[tuple[str, str]] | None = None,
):  # type: ignore[no-untyped-def]
    """A route that answers 304 to a matching If-None-Match, else 200 with ``body``."""

    async def route(seen: Seen, conn: OriginConnection) -> None:
        if seen.header(b"if-none-match") == etag.encode():
            conn.write(
                response(
                    304, b"", [("ETag", etag), *(not_modified_headers or headers)], "Not Modified", False
                )
            )
        else:
            conn.write(response(200, body, [("ETag", etag), *headers]))

    return route


async def get(edge: Edge, path: str, **headers: str):  # type: ignore[no-untyped-def]
    async with edge.client() as client:
        return await client.get(path, headers=headers)


# -- §4.2 freshness ------------------------------------------------------------------


async def test_fresh_while_lifetime_greater_than_age(
    origin: ScriptedOrigin, edge: Edge, clock: Clock
) -> None:
    origin.routes["/f"] = fixed(200, b"v", [("Cache-Control", "max-age=60")])
    await get(edge, "/f")
    clock.advance(59.5)
    assert (await get(edge, "/f")).headers["x-cache"] == "HIT"
    clock.advance(0.5)  # age == lifetime: stale
    stale = await get(edge, "/f")
    assert stale.headers["x-cache"] == "MISS"
    assert "fwd=stale" in stale.headers["cache-status"]
    assert origin.count("/f") == 2


async def test_s_maxage_wins_for_a_shared_cache(origin: ScriptedOrigin, edge: Edge, clock: Clock) -> None:
    origin.routes["/s"] = fixed(200, b"v", [("Cache-Control", "max-age=600, s-maxage=10")])
    await get(edge, "/s")
    clock.advance(11)
    assert (await get(edge, "/s")).headers["x-cache"] == "MISS"


async def test_expires_minus_date(origin: ScriptedOrigin, edge: Edge, clock: Clock) -> None:
    date = format_http_date(clock.now).decode()
    expires = format_http_date(clock.now + 30).decode()
    origin.routes["/e"] = fixed(200, b"v", [("Date", date), ("Expires", expires)])
    await get(edge, "/e")
    clock.advance(29)
    assert (await get(edge, "/e")).headers["x-cache"] == "HIT"
    clock.advance(2)
    assert (await get(edge, "/e")).headers["x-cache"] == "MISS"


async def test_invalid_expires_means_stale(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/x"] = fixed(200, b"v", [("Expires", "0"), ("ETag", '"a"')])
    await get(edge, "/x")
    assert (await get(edge, "/x")).headers["x-cache"] == "MISS"


async def test_heuristic_freshness_from_last_modified(
    origin: ScriptedOrigin, edge: Edge, clock: Clock
) -> None:
    date = format_http_date(clock.now).decode()
    modified = format_http_date(clock.now - 1000).decode()
    origin.routes["/h"] = fixed(200, b"v", [("Date", date), ("Last-Modified", modified)])
    await get(edge, "/h")
    clock.advance(99)
    assert (await get(edge, "/h")).headers["x-cache"] == "HIT"  # 10% of 1000 s
    clock.advance(2)
    assert (await get(edge, "/h")).headers["x-cache"] == "MISS"


async def test_apparent_age_from_an_old_date(origin: ScriptedOrigin, edge: Edge, clock: Clock) -> None:
    date = format_http_date(clock.now - 100).decode()
    origin.routes["/old"] = fixed(200, b"v", [("Date", date), ("Cache-Control", "max-age=60")])
    await get(edge, "/old")
    assert (await get(edge, "/old")).headers["x-cache"] == "MISS"


@pytest.mark.parametrize(
    ("fields", "fresh_for"),
    [
        ([("CDN-Cache-Control", "max-age=10"), ("Cache-Control", "max-age=600")], 10),
        ([("Edge-Cache-Control", "max-age=5"), ("CDN-Cache-Control", "max-age=10")], 5),
        ([("CDN-Cache-Control", "max-age=600"), ("Cache-Control", "no-store")], 600),
    ],
)
async def test_targeted_fields_take_precedence(
    origin: ScriptedOrigin, edge: Edge, clock: Clock, fields: list[tuple[str, str]], fresh_for: int
) -> None:
    origin.routes["/t"] = fixed(200, b"v", fields)
    first = await get(edge, "/t")
    assert "stored" in first.headers["cache-status"]
    assert first.headers.get("cache-control") == dict(fields).get("Cache-Control"), "relayed untouched"
    clock.advance(fresh_for - 1)
    assert (await get(edge, "/t")).headers["x-cache"] == "HIT"
    clock.advance(2)
    assert (await get(edge, "/t")).headers["x-cache"] == "MISS"


# -- §4.3 validation -------------------------------------------------------------------


async def test_stale_entry_revalidated_with_304_serves_stored_body(
    origin: ScriptedOrigin, edge: Edge, clock: Clock
) -> None:
    origin.routes["/v"] = validating(
        b"stored body",
        '"e1"',
        [("Cache-Control", "max-age=10"), ("X-Version", "1")],
        [("Cache-Control", "max-age=100"), ("X-Version", "2")],
    )
    await get(edge, "/v")
    clock.advance(11)
    refreshed = await get(edge, "/v")
    assert refreshed.content == b"stored body"
    assert refreshed.headers["x-version"] == "2", "the 304's fields replace the stored ones"
    assert refreshed.headers["cache-status"].startswith("edge; fwd=stale; fwd-status=304; stored")
    assert origin.seen[-1].header(b"if-none-match") == b'"e1"'
    clock.advance(90)  # freshened by the 304's max-age=100
    hit = await get(edge, "/v")
    assert hit.headers["x-cache"] == "HIT" and hit.headers["x-version"] == "2"
    assert hit.headers["content-length"] == str(len(b"stored body"))
    assert origin.count("/v") == 2


async def test_stale_entry_replaced_by_200(origin: ScriptedOrigin, edge: Edge, clock: Clock) -> None:
    origin.routes["/r"] = fixed(200, b"one", [("Cache-Control", "max-age=10"), ("ETag", '"1"')])
    await get(edge, "/r")
    origin.routes["/r"] = fixed(200, b"two", [("Cache-Control", "max-age=10"), ("ETag", '"2"')])
    clock.advance(11)
    assert (await get(edge, "/r")).content == b"two"
    hit = await get(edge, "/r")
    assert hit.headers["x-cache"] == "HIT" and hit.content == b"two"


async def test_if_modified_since_sent_when_only_last_modified(
    origin: ScriptedOrigin, edge: Edge, clock: Clock
) -> None:
    modified = format_http_date(clock.now - 50).decode()
    origin.routes["/lm"] = fixed(200, b"v", [("Cache-Control", "max-age=1"), ("Last-Modified", modified)])
    await get(edge, "/lm")
    clock.advance(2)
    await get(edge, "/lm")
    assert origin.seen[-1].header(b"if-modified-since") == modified.encode()


# -- §5.2.1 request directives -----------------------------------------------------


async def test_request_no_cache_and_max_age_0_force_validation(
    origin: ScriptedOrigin, edge: Edge, clock: Clock
) -> None:
    origin.routes["/n"] = validating(b"body", '"n"', [("Cache-Control", "max-age=600")])
    await get(edge, "/n")
    for headers in ({"Cache-Control": "no-cache"}, {"Cache-Control": "max-age=0"}, {"Pragma": "no-cache"}):
        clock.advance(1)  # max-age=0 accepts an age of exactly 0
        resp = await get(edge, "/n", **headers)
        assert resp.content == b"body"
        assert "fwd=request" in resp.headers["cache-status"]
        assert origin.seen[-1].header(b"if-none-match") == b'"n"'
    assert origin.count("/n") == 4


async def test_request_max_stale_accepts_stale(origin: ScriptedOrigin, edge: Edge, clock: Clock) -> None:
    origin.routes["/ms"] = fixed(200, b"v", [("Cache-Control", "max-age=10")])
    await get(edge, "/ms")
    clock.advance(15)
    ok = await get(edge, "/ms", **{"Cache-Control": "max-stale=10"})
    assert ok.headers["x-cache"] == "HIT" and "ttl=-5" in ok.headers["cache-status"]
    too_old = await get(edge, "/ms", **{"Cache-Control": "max-stale=2"})
    assert too_old.headers["x-cache"] == "MISS"


async def test_request_min_fresh(origin: ScriptedOrigin, edge: Edge, clock: Clock) -> None:
    origin.routes["/mf"] = fixed(200, b"v", [("Cache-Control", "max-age=60")])
    await get(edge, "/mf")
    clock.advance(30)
    assert (await get(edge, "/mf", **{"Cache-Control": "min-fresh=20"})).headers["x-cache"] == "HIT"
    assert (await get(edge, "/mf", **{"Cache-Control": "min-fresh=40"})).headers["x-cache"] == "MISS"


async def test_only_if_cached(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/o"] = fixed(200, b"v", [("Cache-Control", "max-age=60")])
    absent = await get(edge, "/o", **{"Cache-Control": "only-if-cached"})
    assert absent.status_code == 504
    assert origin.count("/o") == 0
    await get(edge, "/o")
    present = await get(edge, "/o", **{"Cache-Control": "only-if-cached"})
    assert present.status_code == 200 and present.headers["x-cache"] == "HIT"


async def test_request_no_store_not_stored(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/rns"] = fixed(200, b"v", [("Cache-Control", "max-age=60")])
    await get(edge, "/rns", **{"Cache-Control": "no-store"})
    assert (await get(edge, "/rns")).headers["x-cache"] == "MISS"


# -- §5.2.2 response directives ------------------------------------------------------


async def test_response_no_cache_is_stored_but_always_validated(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/nc"] = validating(b"body", '"nc"', [("Cache-Control", "no-cache, max-age=600")])
    await get(edge, "/nc")
    again = await get(edge, "/nc")
    assert again.content == b"body"
    assert "fwd=stale; fwd-status=304" in again.headers["cache-status"]
    assert origin.seen[-1].header(b"if-none-match") == b'"nc"'


async def test_private_with_field_names_strips_them(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/pf"] = fixed(
        200, b"v", [("Cache-Control", 'max-age=60, private="Set-Cookie"'), ("Set-Cookie", "sid=1")]
    )
    await get(edge, "/pf")
    hit = await get(edge, "/pf")
    assert hit.headers["x-cache"] == "HIT"
    assert "set-cookie" not in hit.headers


async def test_must_revalidate_never_served_stale_on_error(origin: ScriptedOrigin, clock: Clock) -> None:
    node = await start_edge(origin.url, clock, stale_grace="3600", read_timeout="1")
    try:
        origin.routes["/mr"] = fixed(200, b"v", [("Cache-Control", "max-age=1, must-revalidate")])
        await get(node, "/mr")
        origin.routes["/mr"] = fixed(503, b"down")
        clock.advance(5)
        resp = await get(node, "/mr")
        assert resp.status_code == 503 and resp.content == b"down"
    finally:
        node.server.close()
        await node.core.aclose()


# -- §4.1 Vary -----------------------------------------------------------------------


async def test_vary_keeps_several_variants(origin: ScriptedOrigin, edge: Edge) -> None:
    async def by_language(seen: Seen, conn: OriginConnection) -> None:
        lang = seen.header(b"accept-language") or b"none"
        conn.write(
            response(200, b"hello-" + lang, [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")])
        )

    origin.routes["/v"] = by_language
    en = await get(edge, "/v", **{"Accept-Language": "en"})
    fr = await get(edge, "/v", **{"Accept-Language": "fr"})
    en2 = await get(edge, "/v", **{"Accept-Language": "en"})
    fr2 = await get(edge, "/v", **{"Accept-Language": "fr"})
    none = await get(edge, "/v")
    assert (en.content, fr.content, none.content) == (b"hello-en", b"hello-fr", b"hello-none")
    assert en2.headers["x-cache"] == fr2.headers["x-cache"] == "HIT"
    assert en2.content == b"hello-en" and fr2.content == b"hello-fr"
    assert "fwd=vary-miss" in fr.headers["cache-status"]
    assert origin.count("/v") == 3


async def test_vary_normalises_whitespace(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/w"] = fixed(200, b"v", [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")])
    await get(edge, "/w", **{"Accept-Language": "en,fr"})
    assert (await get(edge, "/w", **{"Accept-Language": "en,   fr"})).headers["x-cache"] == "HIT"
    assert (await get(edge, "/w", **{"Accept-Language": "fr"})).headers["x-cache"] == "MISS"


async def test_vary_accept_encoding_keyed_by_chosen_coding(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/ae"] = fixed(200, b"v", [("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding")])
    await get(edge, "/ae", **{"Accept-Encoding": "gzip, deflate, br"})
    assert (await get(edge, "/ae", **{"Accept-Encoding": "br"})).headers["x-cache"] == "HIT"
    assert (await get(edge, "/ae", **{"Accept-Encoding": "gzip"})).headers["x-cache"] == "MISS"
    assert (await get(edge, "/ae", **{"Accept-Encoding": "identity"})).headers["x-cache"] == "MISS"


async def test_vary_star_never_matches(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/star"] = fixed(200, b"v", [("Cache-Control", "max-age=60"), ("Vary", "*")])
    await get(edge, "/star")
    assert (await get(edge, "/star")).headers["x-cache"] == "MISS"


# -- RFC 5861 stale content -------------------------------------------------------------


async def test_stale_while_revalidate_serves_stale_and_refreshes_once(
    origin: ScriptedOrigin, clock: Clock
) -> None:
    version = 0
    refresh = Gate()

    async def counting(seen: Seen, conn: OriginConnection) -> None:
        nonlocal version
        version += 1
        answer = response(200, b"v%d" % version, [("Cache-Control", "max-age=10, stale-while-revalidate=60")])
        if version > 1:
            await refresh.hold()  # every refresh waits until the stale hits are all answered
        conn.write(answer)

    origin.routes["/swr"] = counting
    # The origin holds the refresh while ten clients are answered: an edge that waits only 2 s
    # for upstream bytes (the shared fixture) could give up on a busy machine.
    edge = await start_edge(origin.url, clock, read_timeout="30", connect_timeout="1")
    try:
        await get(edge, "/swr")
        clock.advance(15)
        responses = await asyncio.gather(*(get(edge, "/swr") for _ in range(10)))
        # Answered while the refresh is provably still held at the origin: stale, at once.
        assert all(r.content == b"v1" for r in responses), "stale served at once"
        assert all("stale-while-revalidate" in r.headers["cache-status"] for r in responses)
        await origin.requested("/swr", 2)
        assert fills_in_flight(edge) == 1, "one background refresh for ten stale hits"
        refresh.open()
        await fills_settled(edge, "the background refresh finished")
        fresh = await get(edge, "/swr")
        assert fresh.content == b"v2" and fresh.headers["x-cache"] == "HIT"
        assert origin.count("/swr") == 2, "one background refresh for ten stale hits"
    finally:
        edge.server.close()
        await edge.core.aclose()


async def test_stale_while_revalidate_window_ends(origin: ScriptedOrigin, edge: Edge, clock: Clock) -> None:
    origin.routes["/swr2"] = fixed(200, b"v", [("Cache-Control", "max-age=10, stale-while-revalidate=5")])
    await get(edge, "/swr2")
    clock.advance(20)
    late = await get(edge, "/swr2")
    assert late.headers["x-cache"] == "MISS"


async def test_stale_if_error_on_500(origin: ScriptedOrigin, edge: Edge, clock: Clock) -> None:
    origin.routes["/sie"] = fixed(200, b"good", [("Cache-Control", "max-age=10, stale-if-error=60")])
    await get(edge, "/sie")
    origin.routes["/sie"] = fixed(500, b"broken")
    clock.advance(20)
    resp = await get(edge, "/sie")
    assert resp.status_code == 200 and resp.content == b"good"
    assert "stale-if-error" in resp.headers["cache-status"]
    clock.advance(60)  # beyond the window: the error goes through
    assert (await get(edge, "/sie")).status_code == 500


async def test_stale_if_error_when_upstream_is_down_or_slow(clock: Clock) -> None:
    origin = ScriptedOrigin()
    await origin.start()
    origin.routes["/down"] = fixed(200, b"good", [("Cache-Control", "max-age=10, stale-if-error=600")])
    node = await start_edge(origin.url, clock, read_timeout="0.5", connect_timeout="0.5")
    try:
        await get(node, "/down")
        # An origin that never answers (a gate never opened): the 0.5 s read timeout must fire.
        origin.routes["/down"] = fixed(200, b"late", gate=Gate())
        clock.advance(20)
        slow = await get(node, "/down")
        assert slow.content == b"good" and "stale-if-error" in slow.headers["cache-status"]
        await origin.stop()
        for conn in list(origin.live):
            conn.abort()
        down = await get(node, "/down")
        assert down.status_code == 200 and down.content == b"good"
    finally:
        node.server.close()
        await node.core.aclose()


async def test_request_stale_if_error(origin: ScriptedOrigin, edge: Edge, clock: Clock) -> None:
    origin.routes["/rsie"] = fixed(200, b"good", [("Cache-Control", "max-age=10")])
    await get(edge, "/rsie")
    origin.routes["/rsie"] = fixed(502, b"bad")
    clock.advance(20)
    assert (await get(edge, "/rsie")).status_code == 502
    resp = await get(edge, "/rsie", **{"Cache-Control": "stale-if-error=60"})
    assert resp.status_code == 200 and resp.content == b"good"


async def test_grace_serves_stale_when_origin_fails(origin: ScriptedOrigin, clock: Clock) -> None:
    node = await start_edge(origin.url, clock, stale_grace="300")
    try:
        origin.routes["/g"] = fixed(200, b"good", [("Cache-Control", "max-age=10")])
        await get(node, "/g")
        origin.routes["/g"] = fixed(503, b"down")
        clock.advance(100)
        assert (await get(node, "/g")).content == b"good"
        clock.advance(300)
        assert (await get(node, "/g")).status_code == 503
    finally:
        node.server.close()
        await node.core.aclose()


# -- §4.4 invalidation, operator TTL --------------------------------------------------


async def test_unsafe_method_invalidates_location_and_content_location(
    origin: ScriptedOrigin, edge: Edge
) -> None:
    for path in ("/list", "/item/1", "/item/2"):
        origin.routes[path] = fixed(200, path.encode(), [("Cache-Control", "max-age=60")])
        await get(edge, path)
    origin.routes["/list"] = fixed(
        201,
        b"",
        [("Location", "/item/1"), ("Content-Location", f"http://127.0.0.1:{edge.port}/item/2")],
    )
    async with edge.client() as client:
        assert (await client.post("/list", content=b"new")).status_code == 201
    origin.routes["/list"] = fixed(200, b"/list", [("Cache-Control", "max-age=60")])
    for path in ("/list", "/item/1", "/item/2"):
        assert (await get(edge, path)).headers["x-cache"] == "MISS", path


async def test_failed_unsafe_method_does_not_invalidate(origin: ScriptedOrigin, edge: Edge) -> None:
    origin.routes["/keep"] = fixed(200, b"v", [("Cache-Control", "max-age=60")])
    await get(edge, "/keep")
    origin.routes["/keep"] = fixed(500, b"no")
    async with edge.client() as client:
        await client.delete("/keep")
    assert (await get(edge, "/keep")).headers["x-cache"] == "HIT"


async def test_operator_default_ttl_per_path(origin: ScriptedOrigin, clock: Clock) -> None:
    node = await start_edge(origin.url, clock, default_ttl="/static/*=30")
    try:
        origin.routes["/static/a.css"] = fixed(200, b"css")
        origin.routes["/other"] = fixed(200, b"other")
        for path in ("/static/a.css", "/other"):
            await get(node, path)
        assert (await get(node, "/static/a.css")).headers["x-cache"] == "HIT"
        assert (await get(node, "/other")).headers["x-cache"] == "MISS"
        clock.advance(31)
        assert (await get(node, "/static/a.css")).headers["x-cache"] == "MISS"
    finally:
        node.server.close()
        await node.core.aclose()
