"""The request counters' own rules: cache results read from Cache-Status, fast hits folded in,
latency buckets, and what the Recorder notes of a response."""

from __future__ import annotations

import asyncio
import gc

from hypothesis import given
from hypothesis import strategies as st

from edge.cache.entry import Entry
from edge.cache.freshness import freshness_policy
from edge.cache.status import FWD_REASONS, CacheStatus
from edge.core.observe import LATENCY_BUCKETS, Recorder, RequestLog, cache_result
from edge.fronts.hit import WireHitHead
from edge.http.message import Request


def test_the_cache_result_is_hit_or_the_fwd_reason_of_our_member() -> None:
    assert cache_result(b"edge; hit; ttl=59") == "hit"
    assert cache_result(b"edge; fwd=uri-miss; fwd-status=200; stored") == "uri-miss"
    assert cache_result(b"edge; fwd=stale; fwd-status=503; detail=stale-if-error") == "stale"
    assert cache_result(b'"my edge"; fwd=bypass') == "bypass"
    assert cache_result(None) == "none" and cache_result(b"edge") == "none"


@given(
    hit=st.booleans(),
    fwd=st.sampled_from(sorted(FWD_REASONS)),
    ttl=st.none() | st.integers(-100, 10**6),
    stored=st.booleans(),
    collapsed=st.booleans(),
)
def test_every_member_the_node_writes_maps_to_its_own_result(
    hit: bool, fwd: bytes, ttl: int | None, stored: bool, collapsed: bool
) -> None:
    member = CacheStatus(
        b"edge", hit=hit, fwd=None if hit else fwd, ttl=ttl, stored=stored, collapsed=collapsed
    )  # type: ignore[arg-type]
    assert cache_result(bytes(member)) == ("hit" if hit else fwd.decode())


def request(version: str = "1.1") -> Request:
    return Request(b"GET", b"/a.js", [], {}, b"http", b"cdn.test", "127.0.0.1", version)


class Sink:
    started = False

    def __init__(self) -> None:
        self.written = bytearray()

    def interim(self, status: int, headers: object) -> None: ...

    def start(self, status: int, reason: bytes, headers: object, length: int | None) -> None:
        self.started = True

    async def write(self, data: bytes | memoryview) -> None:
        self.written += data

    def end(self) -> None: ...

    def abort(self) -> None: ...


def test_a_core_response_is_counted_with_our_member_and_the_bytes_sent() -> None:
    log = RequestLog()
    recorder = Recorder(Sink())
    headers = [(b"Cache-Status", b"shield; hit"), (b"Cache-Status", b"edge; fwd=miss; stored; collapsed")]
    recorder.start(200, b"OK", headers, 5)
    asyncio.run(recorder.write(b"hello"))
    assert recorder.started
    req = request("2")
    req.upstream_time = 0.003
    log.done(req, recorder, started=0.0)
    snap = log.snapshot()
    assert snap["requests"] == [["h2", 200, "miss", 1]]
    assert snap["response_bytes"] == {"h2": 5}
    assert snap["collapsed"] == 1
    assert sum(snap["upstream_duration"]["counts"]) == 1 and snap["upstream_duration"]["sum"] == 0.003


def stored(status: int, body: bytes) -> Entry:
    fields = [(b"Cache-Control", b"max-age=60")]
    return Entry(
        b"http://cdn.test/a", status, b"", fields, body, freshness_policy(status, fields, 0.0), 0.0, 0.0
    )


def test_fast_hits_counted_on_hit_heads_are_kept_when_the_heads_are_freed() -> None:
    log = RequestLog()
    tally = log.front("h1")
    ok = WireHitHead(stored(200, b"x" * 1024), b"", tally)
    missing = WireHitHead(stored(404, b"gone"), b"", tally)
    ok.hits += 5
    ok.heads += 1  # a HEAD: no body sent
    missing.hits += 2
    log.refused("h1", "127.0.0.1", None, b"/x" * 5000, 414, 50)
    snap = log.snapshot()
    assert snap["requests"] == [["h1", 200, "hit", 5], ["h1", 404, "hit", 2], ["h1", 414, "none", 1]]
    assert snap["response_bytes"] == {"h1": 4 * 1024 + 2 * 4 + 50}
    assert snap["duration"]["counts"][0] == 8 and snap["duration"]["sum"] == 0.0
    assert len(snap["duration"]["counts"]) == len(LATENCY_BUCKETS) + 1
    del ok, missing  # their entries were evicted: the heads are freed with them
    gc.collect()
    assert log.snapshot() == snap


def test_the_access_writer_gets_a_record_only_when_the_log_is_on() -> None:
    records: list[dict[str, object]] = []
    log = RequestLog()
    tally = log.front("h1")
    assert tally.access is None
    log.set_access(records.append, worker=3)
    assert tally.access is not None  # fronts made before the log was turned on see it too
    log.refused("h2", "::1", b"GET", b"/" + b"a" * 9000, 431, 0)
    assert records[0]["protocol"] == "HTTP/2" and records[0]["worker"] == 3
    assert len(str(records[0]["target"])) == 2048
