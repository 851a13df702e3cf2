"""Shared header fields and policies: what a stored small object costs in memory.

A pooled pair must always be equal to the pair given (so sharing one is invisible), the
pool must stay bounded whatever the fields, and two stored responses with the same
common fields must hold one copy of them. An entry never hit holds no memo dict of its
own, and its first hit gives it one that no other entry sees.
"""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from edge.cache import fieldpool
from edge.cache.admission import stored_fields
from edge.cache.entry import NO_WIRE, Entry
from edge.cache.fieldpool import POOL_SIZE, pooled, pooled_fields
from edge.cache.freshness import freshness_policy
from edge.fronts.hit import WireHitHead, remember

field = st.tuples(st.binary(min_size=1, max_size=12), st.binary(max_size=40))


@given(st.lists(field, max_size=50))
def test_pooled_fields_are_equal_to_the_fields_given_and_in_order(fields: list[tuple[bytes, bytes]]) -> None:
    assert pooled_fields(fields) == fields


@given(st.lists(field, min_size=1, max_size=300))
def test_the_pool_stays_bounded_and_hands_out_one_copy_per_pair(fields: list[tuple[bytes, bytes]]) -> None:
    for pair in fields:
        first = pooled(pair)
        again = pooled((bytes(pair[0]), bytes(pair[1])))
        assert first == pair
        assert again is first or len(fieldpool._POOL) <= 1  # (emptied in between when it was full)
        assert len(fieldpool._POOL) <= POOL_SIZE


def test_the_pool_is_emptied_when_full_and_keeps_working() -> None:
    for i in range(POOL_SIZE + 10):
        pooled((b"X-N", b"%d" % i))
    assert len(fieldpool._POOL) <= POOL_SIZE
    assert pooled((b"X-N", b"1")) == (b"X-N", b"1")


def upstream(etag: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"Server", b"origin/1.0"),
        (b"Content-Type", b"application/javascript"),
        (b"Cache-Control", b"public, max-age=300"),
        (b"ETag", etag),
        (b"Accept-Ranges", b"bytes"),
        (b"Date", b"Mon, 30 Nov 2026 16:00:00 GMT"),
        (b"Content-Length", b"1024"),
    ]


def test_two_stored_responses_share_their_common_fields_and_policy_but_not_their_etag() -> None:
    now = time.time()
    a, _ = stored_fields(upstream(b'"a"'), now, b"1.1 edge")
    b, _ = stored_fields(upstream(b'"b"'), now, b"1.1 edge")
    assert a != b
    shared = {name for (name, _), x, y in zip(a, a, b, strict=True) if x is y}
    assert shared == {b"Server", b"Content-Type", b"Cache-Control", b"Accept-Ranges", b"Date", b"Via"}
    assert dict(a)[b"ETag"] == b'"a"' and dict(b)[b"ETag"] == b'"b"'
    assert freshness_policy(200, a, now) is freshness_policy(200, b, now)
    assert freshness_policy(200, a, now).lifetime == 300.0


def test_an_entry_gets_its_own_memo_dict_on_its_first_hit() -> None:
    now = time.time()
    fields, _ = stored_fields(upstream(b'"a"'), now, b"1.1 edge")
    policy = freshness_policy(200, fields, now)
    one = Entry(b"http://h/one", 200, b"OK", fields, b"1", policy, now, 0.0)
    two = Entry(b"http://h/two", 200, b"OK", fields, b"22", policy, now, 0.0)
    assert one.wire is NO_WIRE and two.wire is NO_WIRE
    memo = remember(one, "h1", WireHitHead(one, b""))
    assert one.wire == {"h1": memo} and one.wire is not NO_WIRE
    assert two.wire is NO_WIRE and len(NO_WIRE) == 0
    assert one.stale_copy().wire is NO_WIRE
