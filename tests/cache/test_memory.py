"""The memory tier's typed view of the store: what goes under which key, on both store implementations."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edge.cache.entry import ENTRY_OVERHEAD, Entry, Variants
from edge.cache.freshness import freshness_policy
from edge.cache.memory import MAX_VARIANTS, MemoryTier
from edge.cache.slices import SliceBody, SliceMeta, meta_key
from edge.cache.store import make_store
from edge.http.message import Request, fields_of

NOW = 1_700_000_000.0
KEY = b"http://h/v"


def entry(body: bytes = b"x" * 100, vary: tuple[bytes, ...] = (), key: bytes = KEY) -> Entry:
    fields = [(b"Cache-Control", b"max-age=60")]
    return Entry(key, 200, b"OK", fields, body, freshness_policy(200, fields, NOW), NOW, 0.0, vary)


def request(**headers: str) -> Request:
    hs = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Request(b"GET", b"/v", hs, fields_of(hs), host=b"h")


@pytest.fixture(params=["native", "python"])
def tier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryTier]:
    monkeypatch.setenv("EDGE_STORE", request.param)
    yield MemoryTier(make_store(1 << 20))


def test_a_response_and_its_variants(tier: MemoryTier) -> None:
    plain = entry()
    tier.put_response(plain, b"")
    assert tier.response(request(), KEY) == (plain, False)
    assert tier.lookup(KEY) is plain
    fr, de = entry(vary=(b"accept-language",)), entry(vary=(b"accept-language",))
    tier.put_response(fr, b"fr")
    tier.put_response(de, b"de")
    assert type(tier.lookup(KEY)) is Variants
    assert tier.response(request(Accept_Language="fr"), KEY) == (fr, True)
    assert tier.response(request(Accept_Language="it"), KEY) == (None, True)
    assert tier.holds(fr) and tier.holds(de) and not tier.holds(plain)


def test_a_url_keeps_at_most_max_variants_oldest_dropped(tier: MemoryTier) -> None:
    entries = [entry(vary=(b"x",)) for _ in range(MAX_VARIANTS + 3)]
    for i, e in enumerate(entries):
        tier.put_response(e, b"%d" % i)
    variants = tier.lookup(KEY)
    assert type(variants) is Variants and len(variants.by_secondary) == MAX_VARIANTS
    assert not tier.holds(entries[0]) and tier.holds(entries[-1])
    assert tier.lru.total_charge == variants.charge


def test_recharge_counts_a_new_sibling_only_while_stored(tier: MemoryTier) -> None:
    e = entry()
    e.encodings = {}
    tier.put_response(e, b"")
    before = tier.lru.total_charge
    e.encodings[b"br"] = entry(body=b"z" * 10)
    tier.recharge(e)
    assert tier.lru.total_charge == before + e.encodings[b"br"].charge
    tier.drop_response(KEY)
    tier.recharge(e)
    assert tier.lru.total_charge == 0, "a dropped entry is not brought back by its sibling"


def test_a_response_larger_than_the_cache_is_not_kept_nor_is_what_it_replaced(tier: MemoryTier) -> None:
    tier.put_response(entry(), b"")
    tier.put_response(entry(body=b"x" * (2 << 20)), b"")
    assert tier.lookup(KEY) is None and len(tier) == 0


def test_slices_are_kept_only_for_the_stored_object(tier: MemoryTier) -> None:
    meta = SliceMeta(entry(body=b""), 3000, 1000)
    tier.put_sliced(meta)
    assert tier.sliced(KEY) is meta and tier.is_current(meta)
    tier.put_slice(meta, 0, b"a" * 1000)
    assert tier.slice_data(meta, 0) == b"a" * 1000
    assert type(tier.peek(meta.slice_key(0))) is SliceBody
    assert tier.lru.peek(meta.slice_key(0)) is not None
    assert tier.lru.total_charge == meta.charge + 1000 + ENTRY_OVERHEAD
    fresh = meta.with_entry(entry(body=b""))
    tier.replace_sliced(fresh)
    assert tier.sliced(KEY) is fresh and tier.is_current(meta), "a freshened description keeps its slices"
    assert tier.slice_data(fresh, 0) == b"a" * 1000
    changed = SliceMeta(entry(body=b""), 3000, 1000)
    tier.put_sliced(changed)
    assert not tier.is_current(meta)
    tier.put_slice(meta, 1, b"b" * 1000)
    assert tier.slice_data(meta, 1) is None, "a slice of the old object is never kept"
    tier.replace_sliced(fresh)
    assert tier.sliced(KEY) is changed, "a freshened old description never replaces a changed object"
    tier.drop_sliced(KEY, only=meta)
    assert tier.sliced(KEY) is changed
    tier.drop_sliced(KEY, only=changed)
    assert tier.peek(meta_key(KEY)) is None
