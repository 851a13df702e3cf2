"""The memoised head of a cached hit (edge.fronts.hit), without sockets."""

from __future__ import annotations

import time

from edge.cache.entry import Entry
from edge.cache.freshness import freshness_policy
from edge.fronts.hit import FieldHitHead, WireHitHead, lower_fields
from edge.http.dates import format_http_date


def entry(status: int = 200, body: bytes = b"x" * 10, reason: bytes = b"OK") -> Entry:
    now = time.time()
    stored = [(b"Date", format_http_date(now)), (b"Cache-Control", b"max-age=60"), (b"ETag", b'"e"')]
    return Entry(b"http://h/a", status, reason, stored, body, freshness_policy(status, stored, now), now, 0.0)


def test_wire_head_is_prefix_plus_age_and_cache_status() -> None:
    hit = entry()
    memo = WireHitHead(hit, b"X-Cache: HIT\r\n")
    assert memo.age == -1 and memo.head == b""
    assert memo.prefix == (
        b"HTTP/1.1 200 OK\r\nDate: " + hit.headers[0][1] + b"\r\nCache-Control: max-age=60\r\n"
        b'ETag: "e"\r\nContent-Length: 10\r\nX-Cache: HIT\r\n'
    )
    memo.refresh(7, b"edge; hit; ttl=53")
    assert memo.age == 7
    assert memo.head == memo.prefix + b"Age: 7\r\nCache-Status: edge; hit; ttl=53\r\n\r\n"


def test_wire_head_without_content_and_with_a_missing_reason() -> None:
    memo = WireHitHead(entry(304, b"", b""), b"")
    assert memo.prefix.startswith(b"HTTP/1.1 304 Not Modified\r\n")
    assert b"Content-Length" not in memo.prefix


def test_field_head_for_h2_h3_and_asgi() -> None:
    hit = entry()
    fields = lower_fields(hit.headers)
    tail = [(b"x-cache", b"HIT")]
    h2 = FieldHitHead(hit, fields, tail)
    asgi = FieldHitHead(hit, fields, tail, status_field=False)
    assert h2.prefix == [(b":status", b"200"), *fields, (b"content-length", b"10"), *tail]
    assert asgi.prefix == h2.prefix[1:]
    h2.refresh(3, b"edge; hit; ttl=57")
    assert h2.head == [*h2.prefix, (b"age", b"3"), (b"cache-status", b"edge; hit; ttl=57")]
    before = h2.head
    h2.refresh(4, b"edge; hit; ttl=56")
    assert before[-2] == (b"age", b"3"), "a head already handed out is never changed in place"
    assert h2.age == 4 and h2.head[-2] == (b"age", b"4")
    assert [k for k, _ in FieldHitHead(entry(304, b""), fields, []).prefix].count(b"content-length") == 0
