"""S3-FIFO: `edge._lru.S3FIFO` against its model `edge.cache.store.PyS3FIFO`.

The stateful machines of test_lru_stateful.py run on the S3-FIFO pair (same
operations, identical answers, eviction order, counters and ghost decisions
after every step; reentrant destructors and key comparisons on the C store
alone); the tests below pin the policy itself on both implementations.
"""

from __future__ import annotations

import gc
import sys
import weakref
from typing import Any

import pytest

from edge._lru import LRU, S3FIFO
from edge.cache.store import PyLRU, PyS3FIFO, make_store
from tests.store.test_lru_stateful import SETTINGS, ReentrantChaos, StoreComparison


class S3StoreComparison(StoreComparison):
    NATIVE = S3FIFO
    MODEL = PyS3FIFO


S3StoreComparison.TestCase.settings = SETTINGS
TestS3StoreComparison = S3StoreComparison.TestCase


class S3ReentrantChaos(ReentrantChaos):
    STORE = S3FIFO


S3ReentrantChaos.TestCase.settings = ReentrantChaos.TestCase.settings
TestS3ReentrantChaos = S3ReentrantChaos.TestCase


@pytest.fixture(params=[S3FIFO, PyS3FIFO], ids=["native", "python"])
def impl(request: pytest.FixtureRequest) -> Any:
    return request.param


def check(store: Any) -> None:
    if isinstance(store, S3FIFO):
        store._selfcheck()
    assert store.total_charge <= store.capacity
    assert len(list(store)) == len(store) == len(store.items_lru())


def keys_of(store: Any) -> list[Any]:
    return [k for k, _ in store.items_lru()]


def test_new_keys_enter_small_and_one_hit_wonders_leave_first(impl: Any) -> None:
    s = impl(100)
    for i in range(10):
        assert s.put(f"hot{i}", i, 5) == []
    for i in range(10):
        assert s.get(f"hot{i}") == i
    # A scan of one-hit wonders: the hot keys (hit once) move to main, the scan churns small.
    for i in range(200):
        s.put(f"scan{i}", i, 5)
        check(s)
    assert all(f"hot{i}" in s for i in range(10))
    assert s.evictions == 200 + 10 - len(s)
    # LRU keeps the scan's tail instead.
    lru = LRU(100)
    for i in range(10):
        lru.put(f"hot{i}", i, 5)
        lru.get(f"hot{i}")
    for i in range(200):
        lru.put(f"scan{i}", i, 5)
    assert not any(f"hot{i}" in lru for i in range(10))


def test_put_returns_evictions_and_never_its_own_key(impl: Any) -> None:
    s = impl(10)
    assert s.put("a", "A", 6) == []
    assert s.put("b", "B", 6) == [("a", "A")]  # a: small's oldest, never hit
    assert keys_of(s) == ["b"]
    assert s.put("c", "C", 10) == [("b", "B")]
    assert keys_of(s) == ["c"]
    check(s)


def test_ghost_sends_a_returning_key_to_main(impl: Any) -> None:
    s = impl(100)  # small target 10 bytes
    s.put("a", 1, 8)
    s.put("b", 2, 8)  # small over target: nothing evicted yet (total fits)
    for i in range(11):
        s.put(f"f{i}", i, 8)  # fills to 104 > 100 at the 11th: a leaves, into the ghost
    assert "a" not in s
    s.put("a", 3, 8)  # seen again: straight to main
    assert keys_of(s)[-1] == "a"
    assert s.peek("a") == 3
    # The next evictions come from small, not from main's "a".
    for i in range(20):
        s.put(f"g{i}", i, 8)
    assert "a" in s
    check(s)


def test_main_reinserts_by_frequency(impl: Any) -> None:
    s = impl(100)  # small target: 10 bytes
    for k in ("m1", "m2", "m3", "m4"):
        s.put(k, k, 20)
        s.get(k)
    s.put("s1", "S1", 20)
    # small over target: the hit keys move to main (frequency 0), s1 (no hit) leaves, to the ghost
    assert s.put("s2", "S2", 20) == [("s1", "S1")]
    assert keys_of(s) == ["s2", "m1", "m2", "m3", "m4"]
    s.pop("s2")
    s.get("m2")
    s.get("m2")
    s.get("m3")
    # s1 is in the ghost: it goes to main; small is empty, so main's oldest (m1, no hit) leaves
    assert s.put("s1", "S1", 40) == [("m1", "m1")]
    assert keys_of(s) == ["m2", "m3", "m4", "s1"]
    # m2 (2 hits) and m3 (1) go round again with one hit fewer; m4 (none) leaves
    assert s.put("s1", "S1b", 60) == [("m4", "m4")]
    assert keys_of(s) == ["m2", "m3", "s1"]
    assert s.put("x", "X", 10) == [("m3", "m3")]  # m2 had one hit left, m3 none
    check(s)


def test_replacement_keeps_queue_object_and_counts_a_hit(impl: Any) -> None:
    s = impl(50)
    k1 = "".join(["k", "1"])
    s.put(k1, 1, 4)
    s.put("k2", 2, 4)
    k1b = "".join(["k", "1"])
    assert s.put(k1b, 10, 6) == []
    assert s.total_charge == 10
    assert keys_of(s) == ["k2", "k1"]  # to the tail of its queue
    if isinstance(s, S3FIFO):
        assert next(k for k in s if k == "k1") is k1
    assert s.inserts == 3 and s.hits == 0
    check(s)


def test_errors_leave_the_store_unchanged(impl: Any) -> None:
    s = impl(10)
    s.put("a", 1, 5)
    with pytest.raises(ValueError):
        s.put("b", 2, 11)
    with pytest.raises(ValueError):
        s.put("b", 2, -1)
    with pytest.raises(TypeError):
        s.put(["unhashable"], 2, 1)
    assert keys_of(s) == ["a"] and s.total_charge == 5
    with pytest.raises(KeyError):
        s.pop("b")
    with pytest.raises(ValueError):
        s.capacity = -1
    check(s)


def test_capacity_shrink_goes_to_on_evict_and_trims_the_ghost(impl: Any) -> None:
    got: list[Any] = []
    s = impl(1000, lambda k, v: got.append((k, v)))
    for i in range(100):
        s.put(f"k{i}", i, 10)
    s.capacity = 100
    assert len(got) + len(s) == 100
    assert s.total_charge <= 100
    check(s)
    s.capacity = 0
    assert len(s) == 0 and s.evictions == 100
    check(s)


def test_clear_keeps_counters_and_forgets_the_ghost(impl: Any) -> None:
    s = impl(20)
    for i in range(10):
        s.put(f"k{i}", i, 5)
    s.get("k9")
    s.get("nope")
    s.clear()
    assert len(s) == 0 and s.total_charge == 0
    assert s.stats() == {"hits": 1, "misses": 1, "inserts": 10, "evictions": 6, "bytes": 0, "entries": 0}
    s.put("k0", 0, 5)  # k0 was in the ghost: forgotten by clear, so small
    s.put("n", 0, 5)
    assert keys_of(s) == ["k0", "n"]
    check(s)


def test_iteration_raises_after_mutation(impl: Any) -> None:
    s = impl(100)
    for i in range(5):
        s.put(f"k{i}", i, 1)
    it = iter(s)
    assert next(it) == "k0"
    s.get("k1")
    with pytest.raises(RuntimeError):
        next(it)
    assert list(iter(impl(5))) == []


def test_same_api_as_lru() -> None:
    public = {n for n in dir(LRU) if not n.startswith("__")}
    assert public <= set(dir(S3FIFO))
    assert public - {"_selfcheck", "on_evict"} <= set(dir(PyS3FIFO)) | {"on_evict"}
    assert {n for n in dir(PyLRU) if not n.startswith("_")} <= set(dir(PyS3FIFO))


def test_make_store_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_STORE", raising=False)
    assert type(make_store(100)) is LRU
    assert type(make_store(100, policy="s3fifo")) is S3FIFO
    monkeypatch.setenv("EDGE_STORE", "python")
    assert type(make_store(100, policy="s3fifo")) is PyS3FIFO
    assert type(make_store(100)) is PyLRU
    with pytest.raises(ValueError):
        make_store(100, policy="arc")


def test_refcounts_and_values_released() -> None:
    s = S3FIFO(1000)

    class V:
        pass

    refs = []
    key = "".join(["shared", "key"])
    base = sys.getrefcount(key)
    for i in range(300):
        v = V()
        refs.append(weakref.ref(v))
        s.put(f"k{i}", v, 7)
        if i % 3 == 0:
            s.get(f"k{i}")
        del v
    s.put(key, 1, 1)
    assert sys.getrefcount(key) == base + 1
    s.put(key, 2, 1)
    assert sys.getrefcount(key) == base + 1
    s.pop(key)
    assert sys.getrefcount(key) == base
    s._selfcheck()
    alive = sum(r() is not None for r in refs)
    assert alive == len(s)
    s.clear()
    gc.collect()
    assert all(r() is None for r in refs)


def test_ghost_and_memory_bounded() -> None:
    s = S3FIFO(64 * 1024)  # ghost: at most 64 + 64 entries
    for i in range(200_000):
        s.put(i, None, 100)
    s._selfcheck()
    size = s.__sizeof__()
    for i in range(200_000, 400_000):
        s.put(i, None, 100)
        if i % 7 == 0:
            s.get(i - 3)
    s._selfcheck()
    assert s.__sizeof__() <= size * 2
    assert s.__sizeof__() < 64 * 1024


def test_model_and_native_agree_on_a_long_zipf_trace() -> None:
    import random

    rng = random.Random(7)
    n, m = S3FIFO(5000), PyS3FIFO(5000)
    for step in range(30_000):
        k = f"o{int(rng.paretovariate(0.8)) % 3000}"
        if rng.random() < 0.7:
            assert n.get(k) == m.get(k)
        else:
            charge = rng.randint(1, 400)
            assert n.put(k, step, charge) == m.put(k, step, charge)
    n._selfcheck()
    assert n.items_lru() == m.items_lru()
    assert n.stats() == m.stats()


def test_eviction_setting_makes_the_store() -> None:
    from edge import config as edge_config
    from edge.core import EdgeCore

    base = {"upstream": "http://127.0.0.1:9"}
    assert edge_config.load(None, {}, base).eviction == "s3fifo"
    assert type(EdgeCore(edge_config.load(None, {}, base)).store) is S3FIFO
    assert type(EdgeCore(edge_config.load(None, {"EDGE_EVICTION": "lru"}, base)).store) is LRU
    cfg = edge_config.load(None, {"EDGE_EVICTION": "s3fifo"}, base)
    core = EdgeCore(cfg)
    assert type(core.store) is S3FIFO and core.store.capacity == cfg.cache_size
    assert core.stats()["evictions"] == 0
    with pytest.raises(edge_config.ConfigError, match="eviction must be lru or s3fifo"):
        edge_config.load(None, {}, {**base, "eviction": "arc"})


def test_eviction_benchmark_trace_is_deterministic_and_replays() -> None:
    from benchmarks import eviction

    a = eviction.make_trace(5, 5000, 2000, 0.9, 0.2, 1000, 100)
    assert a == eviction.make_trace(5, 5000, 2000, 0.9, 0.2, 1000, 100)
    keys, sizes, catalog = a
    assert len(keys) == len(sizes) == 5000
    assert min(sizes) >= 1024 and max(sizes) <= 8 * 1024 * 1024
    assert any(k >= 2000 for k in keys)  # one-hit wonders
    results = {
        name: eviction.replay(cls(catalog // 10), keys, sizes, 500) for name, cls in eviction.POLICIES.items()
    }
    for bhr, ohr, ops, _ in results.values():
        assert 0 < bhr < 1 and 0 < ohr < 1 and ops > 5000
