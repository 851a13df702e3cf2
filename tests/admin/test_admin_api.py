"""The admin API over real sockets: purges seen by the next request, tokens, stats, metrics, health."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.admin.app import METRICS_CONTENT_TYPE, create_admin_app
from edge.http.message import Request
from tests.admin.conftest import TOKEN, Admin
from tests.support.nodes import Edge
from tests.support.scripted_origin import Gate, ScriptedOrigin, fixed
from tests.support.waiting import within

pytestmark = pytest.mark.asyncio

CACHEABLE = [("Cache-Control", "max-age=600"), ("ETag", '"v1"')]
TOKEN_PREFIX = TOKEN[:6]  # a prefix of the real token must not pass


async def purge(admin: Admin, **body: object) -> dict[str, object]:
    async with admin.client() as client:
        resp = await client.post("/purge", json=body)
    assert resp.status_code == 200, resp.text
    answer: dict[str, object] = resp.json()
    return answer


async def x_cache(edge: Edge, path: str, **headers: str) -> str:
    async with edge.client() as client:
        resp = await client.get(path, headers=headers)
    assert resp.status_code == 200
    return resp.headers["x-cache"]


async def test_purge_url_removes_all_its_variants(origin: ScriptedOrigin, edge: Edge, admin: Admin) -> None:
    origin.routes["/v.js"] = fixed(200, b"js", [*CACHEABLE, ("Vary", "Accept-Encoding")])
    origin.routes["/w.js"] = fixed(200, b"js", CACHEABLE)
    for enc in ("gzip", "br", "gzip", "br"):
        await x_cache(edge, "/v.js", **{"Accept-Encoding": enc})
    await x_cache(edge, "/w.js")
    assert origin.count("/v.js") == 2
    assert await x_cache(edge, "/v.js", **{"Accept-Encoding": "br"}) == "HIT"

    assert await purge(admin, url=f"{edge.url}/v.js") == {"purged": 2, "soft": False}

    assert await x_cache(edge, "/v.js", **{"Accept-Encoding": "gzip"}) == "MISS"
    assert await x_cache(edge, "/v.js", **{"Accept-Encoding": "br"}) == "MISS"
    assert origin.count("/v.js") == 4
    assert await x_cache(edge, "/w.js") == "HIT"  # another URL is untouched


async def test_purge_url_without_scheme_and_with_host_case(
    origin: ScriptedOrigin, edge: Edge, admin: Admin
) -> None:
    origin.routes["/a"] = fixed(200, b"a", CACHEABLE)
    await x_cache(edge, "/a")
    assert (await purge(admin, url=f"127.0.0.1:{edge.port}/a"))["purged"] == 1
    assert await x_cache(edge, "/a") == "MISS"


async def test_purge_prefix(origin: ScriptedOrigin, edge: Edge, admin: Admin) -> None:
    for path in ("/assets/a.js", "/assets/b/c.css", "/other.js"):
        origin.routes[path] = fixed(200, b"x", CACHEABLE)
        await x_cache(edge, path)
    assert (await purge(admin, prefix=f"{edge.url}/assets/"))["purged"] == 2
    assert await x_cache(edge, "/assets/a.js") == "MISS"
    assert await x_cache(edge, "/assets/b/c.css") == "MISS"
    assert await x_cache(edge, "/other.js") == "HIT"


async def test_purge_tag_from_surrogate_key_and_cache_tag(
    origin: ScriptedOrigin, edge: Edge, admin: Admin
) -> None:
    origin.routes["/sk"] = fixed(200, b"1", [*CACHEABLE, ("Surrogate-Key", "a b")])
    origin.routes["/ct"] = fixed(200, b"2", [*CACHEABLE, ("Cache-Tag", "x,y")])
    origin.routes["/none"] = fixed(200, b"3", [*CACHEABLE, ("Surrogate-Key", "ab")])
    for path in ("/sk", "/ct", "/none"):
        await x_cache(edge, path)
    assert (await purge(admin, tag="b"))["purged"] == 1
    assert (await purge(admin, tag="y"))["purged"] == 1
    assert (await purge(admin, tag="nothing"))["purged"] == 0
    assert await x_cache(edge, "/sk") == "MISS"
    assert await x_cache(edge, "/ct") == "MISS"
    assert await x_cache(edge, "/none") == "HIT"
    assert origin.count("/sk") == origin.count("/ct") == 2


async def soft_purged(origin: ScriptedOrigin, edge: Edge, admin: Admin) -> None:
    origin.routes["/s"] = fixed(200, b"soft", CACHEABLE)
    await x_cache(edge, "/s")
    key = f"http://127.0.0.1:{edge.port}/s".encode()
    entry = edge.core.store.peek(key)
    assert entry is not None

    assert await purge(admin, url=f"{edge.url}/s", soft=True) == {"purged": 1, "soft": True}

    kept = edge.core.store.peek(key)  # still there for stale-if-error / revalidation
    assert kept is not None and kept.body == entry.body and kept.etag == entry.etag
    assert not kept.is_fresh(edge.core.clock())
    assert entry.is_fresh(edge.core.clock()), "a stored entry never changes: a stale copy replaced it"


async def test_soft_purge_keeps_the_entry_and_leaves_the_fast_path(
    origin: ScriptedOrigin, edge: Edge, admin: Admin
) -> None:
    await soft_purged(origin, edge, admin)
    req = Request(b"GET", b"/s", [], {}, host=f"127.0.0.1:{edge.port}".encode())
    assert edge.core.fresh_hit(req, edge.core.clock()) is None


async def test_soft_purge_sends_the_next_request_upstream(
    origin: ScriptedOrigin, edge: Edge, admin: Admin
) -> None:
    await soft_purged(origin, edge, admin)
    async with edge.client() as client:
        resp = await client.get("/s")
    assert resp.status_code == 200 and resp.content == b"soft"
    assert resp.headers["x-cache"] == "MISS"
    assert "fwd=stale" in resp.headers["cache-status"]
    assert origin.count("/s") == 2  # went upstream (refetch or revalidation)


async def test_purge_all(origin: ScriptedOrigin, edge: Edge, admin: Admin) -> None:
    for i in range(5):
        origin.routes[f"/{i}"] = fixed(200, b"x", CACHEABLE)
        await x_cache(edge, f"/{i}")
    assert await purge(admin, all=True, soft=True) == {"purged": 5, "soft": True}
    assert len(edge.core.store) == 5
    assert await purge(admin, all=True) == {"purged": 5, "soft": False}
    assert len(edge.core.store) == 0
    assert await x_cache(edge, "/0") == "MISS"


@pytest.mark.parametrize("path", ["/purge", "/stats", "/metrics"])
async def test_protected_routes_refuse_missing_and_wrong_tokens(edge: Edge, admin: Admin, path: str) -> None:
    method = "POST" if path == "/purge" else "GET"
    body = {"all": True} if path == "/purge" else None
    for client in (admin.client(token=""), admin.client(token="wrong"), admin.client(token=TOKEN_PREFIX)):
        async with client:
            resp = await client.request(method, path, json=body)
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert "token" in resp.json()["error"]
    async with httpx.AsyncClient(base_url=admin.url, trust_env=False) as client:
        basic = {"Authorization": f"Basic {admin.token}"}
        resp = await client.request(method, path, json=body, headers=basic)
    assert resp.status_code == 401


async def test_purge_refused_when_no_token_is_configured(
    origin: ScriptedOrigin, edge: Edge, open_admin: Admin
) -> None:
    origin.routes["/k"] = fixed(200, b"k", CACHEABLE)
    await x_cache(edge, "/k")
    for token in ("", "anything"):
        async with open_admin.client(token=token) as client:
            for method, path in (("POST", "/purge"), ("GET", "/stats"), ("GET", "/metrics")):
                resp = await client.request(method, path, json={"all": True} if method == "POST" else None)
                assert resp.status_code == 403
                assert "not configured" in resp.json()["error"]
            assert (await client.get("/healthz")).status_code == 200
    assert await x_cache(edge, "/k") == "HIT"


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{", 400, "not JSON"),
        (b"[]", 400, "JSON object"),
        (b'{"url": "http://a/", "tag": "t"}', 400, "exactly one"),
        (b"{}", 400, "exactly one"),
        (b'{"soft": true}', 400, "exactly one"),
        (b'{"urls": ["http://a/"]}', 400, "unknown field"),
        (b'{"all": false}', 400, "all must be true"),
        (b'{"all": true, "soft": "yes"}', 400, "soft must be"),
        (b'{"url": ""}', 400, "non-empty string"),
        (b'{"url": 5}', 400, "non-empty string"),
        (b'{"url": "/a.js"}', 400, "no host"),
        (b'{"url": "ftp://a/b"}', 400, "scheme"),
        (b'{"tag": "a b"}', 400, "single tag"),
        (b'{"url": "' + b"a" * 70000 + b'"}', 413, "larger than"),
    ],
)
async def test_bad_purge_bodies_say_why(
    edge: Edge, admin: Admin, body: bytes, status: int, reason: str
) -> None:
    async with admin.client() as client:
        resp = await client.post("/purge", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == status
    assert reason in resp.json()["error"]


async def test_stats_and_metrics_after_traffic(origin: ScriptedOrigin, edge: Edge, admin: Admin) -> None:
    origin.routes["/m"] = fixed(200, b"m" * 1000, CACHEABLE)
    for _ in range(3):
        await x_cache(edge, "/m")
    await purge(admin, tag="none")
    async with admin.client() as client:
        stats = (await client.get("/stats")).json()
        metrics = await client.get("/metrics")
    assert stats["entries"] == 1
    assert stats["bytes"] > 1000
    assert stats["capacity"] == edge.core.config.cache_size
    assert stats["inserts"] == 1
    assert stats["hits"] >= 2 and stats["misses"] >= 1
    assert stats["evictions"] == 0
    assert stats["fills_in_flight"] == 0
    assert stats["upstream_requests"] == 1
    assert stats["purge_requests"] == {"tag": 1}

    assert metrics.status_code == 200
    assert metrics.headers["content-type"] == METRICS_CONTENT_TYPE
    # Parsed with prometheus-client's own parser: what a Prometheus server reads.
    samples: dict[str, float] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(metrics.text):
        types[family.name] = family.type
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    assert all(kind in ("counter", "gauge", "histogram") for kind in types.values()), types
    assert samples['edge_requests_total{cache="uri-miss",protocol="h1",status="200"}'] == 1
    assert samples['edge_requests_total{cache="hit",protocol="h1",status="200"}'] == 2
    assert samples['edge_response_body_bytes_total{protocol="h1"}'] == 3000
    assert samples["edge_request_duration_seconds_count"] == 3
    assert samples['edge_request_duration_seconds_bucket{le="+Inf"}'] == 3
    assert samples["edge_upstream_duration_seconds_count"] == 1
    assert samples["edge_cache_entries"] == 1
    assert samples["edge_cache_bytes"] == stats["bytes"]
    assert samples["edge_upstream_requests_total"] == 1
    assert samples["edge_cache_inserts_total"] == 1
    assert samples['edge_purge_requests_total{kind="tag"}'] == 1
    assert samples['edge_purge_requests_total{kind="url"}'] == 0
    assert samples["edge_fills_in_flight"] == 0
    origin_labels = f'{{kind="origin",upstream="{origin.url}"}}'
    assert samples["edge_upstream_up" + origin_labels] == 1
    assert samples["edge_upstream_attempts_total" + origin_labels] == 1
    assert samples["edge_upstream_failures_total" + origin_labels] == 0
    assert [(u["name"], u["kind"], u["up"], u["requests"]) for u in stats["upstreams"]] == [
        (origin.url, "origin", True, 1)
    ]


async def test_health_and_readiness_need_no_token(edge: Edge, admin: Admin) -> None:
    async with admin.client(token="") as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert (health.status_code, health.text) == (200, "ok\n")
    assert (ready.status_code, ready.text) == (200, "ready\n")


async def test_readyz_follows_the_ready_callback(edge: Edge) -> None:
    state = {"ready": False}
    app = create_admin_app(edge.core, "t", ready=lambda: state["ready"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin") as client:
        assert (await client.get("/readyz")).status_code == 503
        state["ready"] = True
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/purge")).status_code == 405


async def test_purge_during_a_fill_is_not_undone_by_it(
    origin: ScriptedOrigin, edge: Edge, admin: Admin
) -> None:
    import asyncio

    gate = Gate()
    origin.routes["/inflight"] = fixed(200, b"old", CACHEABLE, gate=gate)
    async with edge.client() as client:
        pending = asyncio.ensure_future(client.get("/inflight"))
        await gate.reached()  # the fill has started and the origin holds its answer
        await purge(admin, url=f"{edge.url}/inflight")
        gate.open()  # only now can the fill get its body and (wrongly) store it
        first = await within(pending, "the client of the purged fill got its answer")
    assert first.content == b"old", "the client that started the fetch still gets its answer"
    origin.routes["/inflight"] = fixed(200, b"new", CACHEABLE)
    async with edge.client() as client:
        after = await client.get("/inflight")
    assert after.headers["x-cache"] == "MISS" and after.content == b"new"
