"""Large cached hits over the ngh2 engine: handed to nghttp2 whole, written a budget per turn.

``NgH2Protocol.send_hit`` gives nghttp2 the stored body at once and ``flush`` writes at most
``WRITE_BUDGET`` bytes per connection per event-loop turn, continuing from the next turn
(``flush_more``). These tests shrink the budget so that every response crosses many turns,
and check that every byte arrives, in order, on concurrent streams and connections.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from edge.fronts import h2_ngh2
from edge.wiring.devcert import DevCert
from tests.support.nodes import start_secure_edge
from tests.support.scripted_origin import ScriptedOrigin, fixed

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

BIG = bytes(range(251)) * (6 * 1024 * 1024 // 251)  # 6 MiB, no two aligned pieces alike


async def test_hits_larger_than_the_write_budget_arrive_whole(
    dev_cert: DevCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h2_ngh2, "WRITE_BUDGET", 64 * 1024)
    turns = [0]
    flush_more = h2_ngh2.NgH2Protocol.flush_more

    def counting(self: h2_ngh2.NgH2Protocol) -> None:
        turns[0] += 1
        flush_more(self)

    monkeypatch.setattr(h2_ngh2.NgH2Protocol, "flush_more", counting)
    origin = ScriptedOrigin({"/big.bin": fixed(200, BIG, [("Cache-Control", "max-age=300")])})
    await origin.start()
    edge = await start_secure_edge(origin.url, dev_cert, h2_engine="ngh2")
    try:
        async with edge.h2_client() as first, edge.h2_client() as second:
            assert (await first.get("/big.bin")).content == BIG  # the miss stores it
            turns[0] = 0
            fetches = (c.get("/big.bin") for c in (first, first, first, second, second))
            got = await asyncio.wait_for(asyncio.gather(*fetches), 30)
        want = hashlib.sha256(BIG).digest()
        for response in got:
            assert response.headers["x-cache"] == "HIT"
            assert hashlib.sha256(response.content).digest() == want
        assert turns[0] >= 5 * len(BIG) // (64 * 1024) // 2  # most of it went from later turns
        assert origin.count("/big.bin") == 1
    finally:
        await edge.stop()
        assert origin.server is not None
        origin.server.close()
