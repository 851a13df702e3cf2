"""The disk record and index, sans-I/O: round trips, and every torn or flipped byte detected."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.cache.disk_format import (
    PREFIX,
    CorruptRecord,
    RecordHead,
    body_digest,
    decode_head,
    encode_head,
    file_name,
    from_entry,
    to_entry,
    verify_body,
)
from edge.cache.disk_index import (
    DiskIndex,
    decode_snapshot,
    encode_snapshot,
    format_purge,
    item_of,
    parse_purges,
)
from edge.cache.entry import Entry
from edge.cache.freshness import freshness_policy

names = st.binary(min_size=1, max_size=20)
heads = st.builds(
    RecordHead,
    key=st.binary(max_size=200),
    secondary=st.binary(max_size=50),
    status=st.integers(100, 599),
    reason=st.binary(max_size=30),
    headers=st.lists(st.tuples(names, st.binary(max_size=100)), max_size=12),
    vary=st.lists(names, max_size=4).map(tuple),
    response_time=st.floats(0, 2e9),
    corrected_initial_age=st.floats(0, 1e6),
    lifetime=st.floats(0, 1e8),
    explicit=st.booleans(),
    targeted=st.booleans(),
    stale=st.booleans(),
    stored_at=st.floats(0, 2e9),
    fresh_until=st.floats(-1e9, 2e9),
    body_length=st.just(0),
    body_digest=st.just(b""),
)


def _record(head: RecordHead, body: bytes) -> bytes:
    head.body_length = len(body)
    head.body_digest = body_digest(body)
    return encode_head(head) + body


def _check(data: bytes) -> tuple[RecordHead, bytes]:
    """What the disk tier does before serving: decode the head, verify the body."""
    head = decode_head(data)
    body = data[head.head_length :]
    verify_body(head, body)
    return head, body


@settings(max_examples=200)
@given(heads, st.binary(max_size=3000))
def test_round_trip(head: RecordHead, body: bytes) -> None:
    data = _record(head, body)
    got, got_body = _check(data)
    assert got == head
    assert got_body == body


@settings(max_examples=200)
@given(heads, st.binary(max_size=500), st.data())
def test_any_truncation_is_detected(head: RecordHead, body: bytes, data: st.DataObject) -> None:
    record = _record(head, body)
    cut = data.draw(st.integers(0, len(record) - 1))
    with pytest.raises(CorruptRecord):
        _check(record[:cut])


@settings(max_examples=300)
@given(heads, st.binary(max_size=500), st.data())
def test_any_bit_flip_is_detected(head: RecordHead, body: bytes, data: st.DataObject) -> None:
    record = bytearray(_record(head, body))
    bit = data.draw(st.integers(0, len(record) * 8 - 1))
    record[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CorruptRecord):
        _check(bytes(record))


@given(heads, st.binary(max_size=100), st.binary(min_size=1, max_size=10))
def test_extra_bytes_after_body_are_detected(head: RecordHead, body: bytes, extra: bytes) -> None:
    with pytest.raises(CorruptRecord):
        _check(_record(head, body) + extra)


def _entry(headers: list[tuple[bytes, bytes]], body: bytes = b"hello", vary: tuple[bytes, ...] = ()) -> Entry:
    policy = freshness_policy(200, headers, 1000.0)
    return Entry(b"http://h/a", 200, b"OK", headers, body, policy, 1000.0, 3.0, vary)


def test_entry_round_trip_keeps_freshness_tags_and_stale_copies() -> None:
    fields = [
        (b"Cache-Control", b"max-age=60, stale-if-error=30"),
        (b"ETag", b'"v"'),
        (b"Surrogate-Key", b"a b"),
    ]
    entry = _entry(fields, vary=(b"accept-encoding",))
    data = encode_head(from_entry(entry, b"gzip", 1001.0)) + entry.body
    head, body = _check(data)
    back = to_entry(head, body)
    assert (back.key, back.status, back.reason, back.headers, back.body) == (
        entry.key, entry.status, entry.reason, entry.headers, entry.body,
    )  # fmt: skip
    assert back.fresh_until == entry.fresh_until == 1057.0
    assert back.tags == entry.tags == {b"a", b"b"}
    assert back.vary == entry.vary and back.etag == b'"v"'
    assert back.policy.directives.delta(b"stale-if-error") == 30
    stale = entry.stale_copy()
    head2, body2 = _check(encode_head(from_entry(stale, b"", 1002.0)) + stale.body)
    assert to_entry(head2, body2).fresh_until == float("-inf")
    assert item_of("n", head2, verified=False).fresh_until == float("-inf")


def test_index_evicts_least_recently_used_within_budget() -> None:
    index = DiskIndex(capacity=1000)

    def item(n: int, size: int = 300):
        head = from_entry(_entry([(b"Cache-Tag", b"t%d" % n)]), b"", float(n))
        head.key = b"http://h/%d" % n
        encode_head(head)
        it = item_of(file_name(head.key, b""), head, verified=True)
        it.size = size
        return it

    a, b, c = item(1), item(2), item(3)
    assert index.add(a) == [] and index.add(b) == [] and index.add(c) == []
    index.touch(a)
    d = item(4)
    assert index.add(d) == [b]
    assert index.variants(b"http://h/2") is None
    assert index.variants(b"http://h/1") == {b"": a}
    assert index.total == 900
    assert index.remove_key(b"http://h/3") == [c]
    assert index.add(item(5, size=2000))[0].key == b"http://h/5"  # larger than the budget: refused
    assert len(index) == 2 and index.total == 600


def test_purge_log_skips_a_torn_line() -> None:
    log = format_purge(5.0, "prefix", "http://h/a", False) + format_purge(6.0, "tag", "t", True)
    lines = parse_purges(log + b'{"at": 7, "ki')
    assert [(p.at, p.kind, p.target, p.soft) for p in lines] == [
        (5.0, "prefix", "http://h/a", False),
        (6.0, "tag", "t", True),
    ]
    assert PREFIX.size == 52


@settings(max_examples=100)
@given(st.lists(heads, max_size=5), st.data())
def test_snapshot_round_trip_and_any_bit_flip_refused(
    items_heads: list[RecordHead], data: st.DataObject
) -> None:
    items = []
    for i, head in enumerate(items_heads):
        encode_head(head)
        items.append(item_of(f"{i:032x}", head, verified=True))
    blob = encode_snapshot(items)
    back = decode_snapshot(blob)
    fields = ("name", "key", "secondary", "vary", "size", "fresh_until", "stored_at", "tags")
    assert [[getattr(i, f) for f in fields] for i in back] == [[getattr(i, f) for f in fields] for i in items]
    assert not any(i.verified for i in back)  # read from a snapshot: checked on first read
    flipped = bytearray(blob)
    bit = data.draw(st.integers(0, len(blob) * 8 - 1))
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ValueError):
        decode_snapshot(bytes(flipped))


@settings(max_examples=100)
@given(heads, st.integers(0, 2**40), st.integers(1, 2**30), st.binary(max_size=16), st.data())
def test_slice_description_round_trip_and_flips(
    head: RecordHead, length: int, slice_size: int, token: bytes, data: st.DataObject
) -> None:
    from edge.cache.disk_format import KIND_META, KIND_SLICE, slice_head

    head.kind, head.object_length, head.slice_size, head.token = KIND_META, length, slice_size, token
    record = _record(head, b"")
    got, _ = _check(record)
    assert got == head
    flipped = bytearray(record)
    bit = data.draw(st.integers(0, len(record) * 8 - 1))
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CorruptRecord):
        _check(bytes(flipped))
    piece = slice_head(b"k\x00slice\x00t\x001", b"bytes", 5.0)
    got, body = _check(encode_head(piece) + b"bytes")
    assert got.kind == KIND_SLICE and body == b"bytes" and got.key == piece.key


@settings(max_examples=200)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 2)), max_size=40))
def test_index_by_key_agrees_with_a_model(ops: list[tuple[bool, int, int]]) -> None:
    from edge.cache.disk_index import Item

    index = DiskIndex(capacity=10_000)
    model: dict[str, Item] = {}
    for add, k, sec in ops:
        key, secondary = b"http://h/%d" % k, b"s%d" % sec
        name = file_name(key, secondary)
        if add:
            item = Item(name, key, secondary, (), 100, 0.0, 0.0, 0.0, 0)
            assert index.add(item) == []
            model[name] = item
        elif name in model:
            assert index.remove(model.pop(name))
    for k in range(4):
        key = b"http://h/%d" % k
        want = {i.secondary: i for i in model.values() if i.key == key}
        assert (index.variants(key) or {}) == want
    assert index.total == 100 * len(model)
