"""The router over real loopback servers: which upstream a key goes to, retries, health, probes.

Shields and the origin here are scripted HTTP/1.1 servers (tests/support/scripted_origin.py),
so each test says exactly how an upstream fails. The clock is the loop's.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from edge.upstream.client import UpstreamError, UpstreamPool, UpstreamTarget
from edge.upstream.health import Health
from edge.upstream.rendezvous import rank
from edge.upstream.router import NoUpstream, Router, Upstream, relayed_5xx
from tests.support.scripted_origin import Gate, ScriptedOrigin, fixed
from tests.support.waiting import eventually

OK = fixed(200, b"ok")


def upstream(url: str, kind: str = "shield", threshold: int = 2, probe: float = 0.05) -> Upstream:
    pool = UpstreamPool(UpstreamTarget.from_url(url), connect_timeout=1, read_timeout=2)
    return Upstream(url.encode(), kind, pool, 1.0, Health(threshold, probe, probe * 4), url)  # type: ignore[arg-type]


def dead_url() -> str:
    with socket.socket() as s:  # nothing listens here once it is closed: connection refused
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest_asyncio.fixture
async def servers() -> AsyncIterator[list[ScriptedOrigin]]:
    """Three scripted servers: two shields and an origin."""
    started = [ScriptedOrigin() for _ in range(3)]
    for server in started:
        await server.start()
    yield started
    for server in started:
        await server.stop()


def router(shields: list[Upstream], origin: Upstream, fallback: bool = True) -> Router:
    return Router(origin, shields, fallback_to_origin=fallback, clock=time.monotonic)


def key_for(first: Upstream, shields: list[Upstream]) -> bytes:
    """A key whose first choice is ``first``."""
    for i in range(1000):
        key = b"http://h/object-%d" % i
        if rank(key, shields)[0] is first:
            return key
    raise AssertionError("no key found")


async def get(r: Router, key: bytes, method: bytes = b"GET") -> tuple[int, str]:
    resp, used = await r.request(key, method, b"/o", lambda u: [(b"Host", b"h")])
    async for _ in resp.chunks():
        pass
    resp.close()
    return resp.status, used.kind


@pytest.mark.asyncio
async def test_each_key_goes_to_its_own_shield_and_never_to_the_origin(servers: list[ScriptedOrigin]) -> None:
    for server in servers:
        server.routes["/o"] = OK
    shields = [upstream(servers[0].url), upstream(servers[1].url)]
    r = router(shields, upstream(servers[2].url, "origin"))
    for first, server in zip(shields, servers[:2], strict=True):
        for _ in range(3):
            assert await get(r, key_for(first, shields)) == (200, "shield")
        assert server.count("/o") == 3
    assert servers[2].count("/o") == 0
    r.close()


@pytest.mark.asyncio
async def test_a_dead_shield_is_retried_on_the_next_choice_then_skipped(
    servers: list[ScriptedOrigin],
) -> None:
    servers[1].routes["/o"] = OK
    dead = upstream(dead_url())
    alive = upstream(servers[1].url)
    shields = [dead, alive]
    r = router(shields, upstream(servers[2].url, "origin"))
    key = key_for(dead, shields)
    assert await get(r, key) == (200, "shield")  # refused by the first choice, answered by the second
    assert dead.health.up and dead.health.failures_total == 1
    assert await get(r, key) == (200, "shield")
    assert not dead.health.up, "two failures open the circuit"
    assert r.choices(key) == [alive, r.origin]
    attempts = dead.requests
    assert await get(r, key) == (200, "shield")
    assert dead.requests == attempts, "a down shield is not tried"
    assert servers[1].count("/o") == 3
    r.close()


@pytest.mark.asyncio
async def test_no_retry_for_a_request_that_is_not_idempotent(servers: list[ScriptedOrigin]) -> None:
    servers[1].routes["/o"] = OK
    dead, alive = upstream(dead_url()), upstream(servers[1].url)
    r = router([dead, alive], upstream(servers[2].url, "origin"))
    with pytest.raises(UpstreamError):
        await get(r, key_for(dead, [dead, alive]), method=b"POST")
    assert servers[1].count("/o") == 0
    assert await get(r, key_for(dead, [dead, alive]), method=b"PUT") == (200, "shield"), "PUT is idempotent"
    r.close()


@pytest.mark.asyncio
async def test_a_shields_own_5xx_is_retried_but_a_relayed_one_is_returned(
    servers: list[ScriptedOrigin],
) -> None:
    shields = [upstream(servers[0].url), upstream(servers[1].url)]
    servers[1].routes["/o"] = OK
    r = router(shields, upstream(servers[2].url, "origin"))
    key = key_for(shields[0], shields)
    servers[0].routes["/o"] = fixed(503, b"overloaded")
    assert await get(r, key) == (200, "shield")
    assert shields[0].health.failures_total == 1
    relayed = [("Cache-Status", "shield-1; fwd=uri-miss; fwd-status=503")]
    servers[0].routes["/o"] = fixed(503, b"origin down", relayed)
    assert await get(r, key) == (503, "shield"), "the origin's 503: retrying elsewhere would not help"
    assert shields[0].health.failures_total == 1 and shields[0].health.up
    r.close()


def test_relayed_5xx_reads_the_last_member() -> None:
    assert relayed_5xx([(b"Cache-Status", b"s; fwd=uri-miss; fwd-status=502")])
    assert relayed_5xx(
        [(b"Cache-Status", b"o; hit"), (b"Cache-Status", b"s; fwd=miss; detail=upstream-timeout")]
    )
    assert not relayed_5xx([(b"Cache-Status", b"s; fwd=uri-miss; fwd-status=500, s2; detail=broken")])
    assert not relayed_5xx([])
    assert not relayed_5xx([(b"Cache-Status", b"%%% not structured")])


@pytest.mark.asyncio
async def test_with_fallback_error_no_healthy_shield_means_no_upstream(servers: list[ScriptedOrigin]) -> None:
    servers[2].routes["/o"] = OK
    dead = upstream(dead_url(), threshold=1)
    r = router([dead], upstream(servers[2].url, "origin"), fallback=False)
    with pytest.raises(UpstreamError):
        await get(r, b"http://h/o")
    with pytest.raises(NoUpstream):
        await get(r, b"http://h/o")
    assert servers[2].count("/o") == 0, "the origin is never asked"
    r.close()


@pytest.mark.asyncio
async def test_a_down_shield_is_probed_and_comes_back(servers: list[ScriptedOrigin]) -> None:
    servers[0].routes["/o"] = fixed(500, b"broken")
    servers[1].routes["/o"] = OK
    shields = [upstream(servers[0].url, threshold=1), upstream(servers[1].url)]
    r = router(shields, upstream(servers[2].url, "origin"))
    key = key_for(shields[0], shields)
    assert await get(r, key) == (200, "shield")
    assert not shields[0].health.up
    servers[0].routes["*"] = fixed(200, b"")  # OPTIONS * answers: the shield is back
    await servers[0].responded("*")
    await eventually(lambda: shields[0].health.up, "the probe's answer closes the circuit")
    probe = next(s for s in servers[0].seen if s.target == b"*")
    assert (probe.method, probe.header(b"max-forwards")) == (b"OPTIONS", b"0")
    servers[0].routes["/o"] = OK
    assert await get(r, key) == (200, "shield")
    assert servers[0].count("/o") == 2, "its keys are its own again"
    r.close()


@pytest.mark.asyncio
async def test_a_read_timeout_is_not_retried_elsewhere(servers: list[ScriptedOrigin]) -> None:
    """A shield that got the request and says nothing in time may be waiting on the origin:
    asking the next shield (and then the origin) would only multiply that wait."""
    gate = Gate()
    servers[0].routes["/o"] = fixed(200, b"late", gate=gate)
    servers[1].routes["/o"] = OK
    slow = Upstream(
        servers[0].url.encode(), "shield",
        UpstreamPool(UpstreamTarget.from_url(servers[0].url), connect_timeout=1, read_timeout=0.2),
        1.0, Health(3, 0.05, 0.2), servers[0].url,
    )  # fmt: skip
    shields = [slow, upstream(servers[1].url)]
    r = router(shields, upstream(servers[2].url, "origin"))
    with pytest.raises(UpstreamError):
        await get(r, key_for(slow, shields))
    assert servers[1].count("/o") == 0 and servers[2].count("/o") == 0
    assert slow.health.failures_total == 1, "it still counts against the slow shield"
    gate.open()
    r.close()
