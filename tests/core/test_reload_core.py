"""EdgeCore.reload (what SIGHUP applies): new requests go to the new upstream with the new TTL
rules, and the node's counters carry on from where they were."""

from __future__ import annotations

import pytest

from edge import config as edge_config
from tests.support.nodes import Clock, start_edge
from tests.support.scripted_origin import ScriptedOrigin, fixed


@pytest.mark.asyncio
async def test_reload_sends_new_misses_to_the_new_upstream_with_the_new_ttl_rules(clock: Clock) -> None:
    first, second = ScriptedOrigin(), ScriptedOrigin()
    await first.start()
    await second.start()
    node = await start_edge(first.url, clock)
    try:
        first.routes["/a.css"] = fixed(200, b"first")  # no freshness: stored only under a TTL rule
        second.routes["/b.css"] = fixed(200, b"second")
        async with node.client() as client:
            assert (await client.get("/a.css")).text == "first"
            assert (await client.get("/a.css")).headers["x-cache"] == "MISS"
            before = node.core.stats()["upstream_requests"]

            node.core.reload(edge_config.load(None, {}, {"upstream": second.url, "default_ttl": "*.css=60"}))
            assert (await client.get("/b.css")).text == "second"
            assert (await client.get("/b.css")).headers["x-cache"] == "HIT"
            assert second.count("/b.css") == 1 and first.count("/b.css") == 0
        stats = node.core.stats()
        assert stats["upstream_requests"] == before + 1  # counted on from the old router's figure
        origin = [u for u in node.core.upstreams() if u["kind"] == "origin"]
        assert [u["name"] for u in origin] == [second.url]
    finally:
        node.server.close()
        await node.core.aclose()
        await first.stop()
        await second.stop()
