"""The pooled upstream client: connections are reused one request at a time and never leak."""

from __future__ import annotations

import asyncio

import pytest

from edge.upstream.client import UpstreamPool, UpstreamTarget
from tests.support.scripted_origin import Gate, ScriptedOrigin, fixed

pytestmark = pytest.mark.asyncio


async def test_a_finished_connection_returns_to_the_pool_once(origin: ScriptedOrigin) -> None:
    origin.routes["/a"] = fixed(200, b"x" * 1000)
    pool = UpstreamPool(UpstreamTarget.from_url(origin.url))
    resp = await pool.request(b"GET", b"/a", [(b"Host", b"t")])
    body = b"".join([c async for c in resp.chunks()])  # releases at the end of the body
    resp.close()  # and again, as every caller does in a finally
    assert body == b"x" * 1000
    assert len(pool._idle) == 1
    results = await asyncio.gather(*(pool.request(b"GET", b"/a", [(b"Host", b"t")]) for _ in range(5)))
    bodies = [b"".join([c async for c in r.chunks()]) for r in results]
    assert bodies == [b"x" * 1000] * 5
    assert origin.connections == 5, "one request per connection at a time"
    pool.close()


async def test_a_cancelled_request_closes_its_connection(origin: ScriptedOrigin) -> None:
    gate = Gate()  # never opened: the origin holds the answer for as long as the connection lives
    origin.routes["/slow"] = fixed(200, b"late", gate=gate)
    pool = UpstreamPool(UpstreamTarget.from_url(origin.url))
    task = asyncio.ensure_future(pool.request(b"GET", b"/slow", [(b"Host", b"t")]))
    await gate.reached()  # the request is on the wire, waiting for its head
    assert len(origin.live) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not pool._idle, "a connection with a request in flight went back to the pool"
    # The origin would hold this connection open for ever: only the pool closing it ends it.
    await origin.until(lambda: not origin.live, "the upstream connection was closed, not leaked")
    assert not pool._idle
    pool.close()
