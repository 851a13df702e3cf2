"""Unit tests of the store: behaviour (both implementations), then what only
the C extension can get wrong — reference counts, leaks, cyclic GC and
re-entrancy (Python code running in the middle of an operation)."""

from __future__ import annotations

import gc
import sys
import tracemalloc
import weakref
from typing import Any

import pytest

from edge._lru import LRU
from edge.cache.store import MAX_CAPACITY, PyLRU, make_store

IMPLS = [LRU, PyLRU]


@pytest.fixture(params=IMPLS, ids=["native", "python"])
def impl(request: pytest.FixtureRequest) -> Any:
    return request.param


def check(store: Any) -> None:
    """The C store's own invariant check, plus what any store must satisfy."""
    if isinstance(store, LRU):
        store._selfcheck()
    assert store.total_charge <= store.capacity
    assert len(list(store)) == len(store)
    assert sum(1 for _ in store.items_lru()) == len(store)


class Obj:
    """A weak-referenceable value."""

    def __init__(self, name: str = "") -> None:
        self.name = name


# ---------------------------------------------------------------------------
# behaviour, both implementations


def test_get_put_peek_contains_len(impl: Any) -> None:
    s = impl(100)
    assert len(s) == 0 and "a" not in s
    assert s.put("a", 1, 10) == []
    assert s.put(b"b", 2, 10) == []
    assert len(s) == 2 and "a" in s and b"b" in s and "b" not in s
    assert s.get("a") == 1
    assert s.get("zz") is None
    assert s.get("zz", 7) == 7
    assert s.get("zz", default=8) == 8
    assert s.peek("a") == 1 and s.peek("zz", 3) == 3 and s.peek("zz", default=4) == 4
    assert s.total_charge == 20
    assert (s.hits, s.misses, s.inserts, s.evictions) == (1, 3, 2, 0)
    assert s.stats() == {
        "hits": 1,
        "misses": 3,
        "inserts": 2,
        "evictions": 0,
        "bytes": 20,
        "entries": 2,
    }
    check(s)


def test_eviction_order_and_promotion(impl: Any) -> None:
    s = impl(30)
    for k in "abc":
        s.put(k, k.upper(), 10)
    assert list(s) == ["a", "b", "c"]
    s.get("a")  # promotes
    s.peek("b")  # does not
    assert "b" in s  # neither does `in`
    assert list(s) == ["b", "c", "a"]
    assert s.put("d", "D", 10) == [("b", "B")]
    assert s.put("e", "E", 25) == [("c", "C"), ("a", "A"), ("d", "D")]
    assert s.items_lru() == [("e", "E")]
    assert s.evictions == 4
    check(s)


def test_replace_recharges_and_promotes(impl: Any) -> None:
    s = impl(30)
    s.put("a", 1, 10)
    s.put("b", 2, 10)
    assert s.put("a", 3, 5) == []
    assert s.total_charge == 15
    assert s.items_lru() == [("b", 2), ("a", 3)]
    # Growing the replaced entry evicts others, never itself.
    assert s.put("a", 4, 30) == [("b", 2)]
    assert s.items_lru() == [("a", 4)] and s.total_charge == 30
    assert s.inserts == 4
    check(s)


def test_replace_keeps_original_key_object(impl: Any) -> None:
    s = impl(10)
    k1 = "".join(["ke", "y"])
    k2 = "".join(["k", "ey"])
    assert k1 == k2 and k1 is not k2
    s.put(k1, 1, 1)
    s.put(k2, 2, 1)
    assert len(s) == 1
    assert next(iter(s)) is k1
    assert s.get(k2) == 2


def test_oversized_and_negative_charge_leave_store_unchanged(impl: Any) -> None:
    s = impl(10)
    s.put("a", 1, 4)
    s.put("b", 2, 4)
    before = (s.items_lru(), s.stats())
    with pytest.raises(ValueError, match="exceeds the store capacity"):
        s.put("c", 3, 11)
    with pytest.raises(ValueError, match="exceeds the store capacity"):
        s.put("a", 3, 11)  # replacement too
    with pytest.raises(ValueError, match=">= 0"):
        s.put("c", 3, -1)
    with pytest.raises(TypeError):
        s.put("c", 3, "1")
    with pytest.raises(TypeError):
        s.put(["unhashable"], 3, 1)
    assert (s.items_lru(), s.stats()) == before
    # Exactly the capacity is fine, and clears everything else.
    assert s.put("c", 3, 10) == [("a", 1), ("b", 2)]
    check(s)


def test_zero_capacity_and_zero_charges(impl: Any) -> None:
    s = impl(0)
    with pytest.raises(ValueError):
        s.put("a", 1, 1)
    for i in range(100):
        assert s.put(i, i, 0) == []
    assert len(s) == 100 and s.total_charge == 0
    check(s)


def test_pop(impl: Any) -> None:
    s = impl(10)
    s.put("a", 1, 3)
    assert s.pop("a") == 1
    assert s.total_charge == 0 and len(s) == 0
    with pytest.raises(KeyError):
        s.pop("a")
    assert s.pop("a", None) is None
    assert s.pop("a", default=5) == 5
    assert s.evictions == 0
    check(s)


def test_clear_keeps_counters(impl: Any) -> None:
    s = impl(10)
    s.put("a", 1, 3)
    s.get("a")
    s.clear()
    assert len(s) == 0 and s.total_charge == 0 and list(s) == []
    assert s.hits == 1 and s.inserts == 1
    s.put("b", 2, 3)
    assert s.items_lru() == [("b", 2)]
    s.clear()
    s.clear()
    check(s)


def test_capacity_property(impl: Any) -> None:
    seen: list[tuple[Any, Any]] = []
    s = impl(30, lambda k, v: seen.append((k, v)))
    for k in "abc":
        s.put(k, k, 10)
    s.capacity = 100
    assert seen == [] and len(s) == 3
    s.capacity = 15
    assert seen == [("a", "a"), ("b", "b")]
    assert s.capacity == 15 and s.total_charge == 10 and s.evictions == 2
    s.capacity = 0
    assert len(s) == 0 and seen[-1] == ("c", "c")
    for bad in (-1, MAX_CAPACITY + 1):
        with pytest.raises(ValueError):
            s.capacity = bad
    with pytest.raises(ValueError):
        impl(-1)
    with pytest.raises(TypeError):
        s.capacity = "10"
    with pytest.raises(TypeError):
        del s.capacity
    with pytest.raises(TypeError):
        impl(10, on_evict=42)
    check(s)


def test_capacity_shrink_without_callback_discards(impl: Any) -> None:
    s = impl(20)
    v = Obj()
    r = weakref.ref(v)
    s.put("a", v, 10)
    del v
    s.capacity = 5
    assert r() is None and len(s) == 0


def test_on_evict_error_propagates(impl: Any) -> None:
    def boom(k: Any, v: Any) -> None:
        raise RuntimeError("boom")

    s = impl(20, boom)
    s.put("a", 1, 10)
    s.put("b", 2, 10)
    with pytest.raises(RuntimeError, match="boom"):
        s.capacity = 0
    assert s.capacity == 0 and len(s) == 0
    check(s)


def test_iteration_order_and_mutation(impl: Any) -> None:
    s = impl(100)
    for k in "abcd":
        s.put(k, k, 1)
    s.get("b")
    assert list(s) == ["a", "c", "d", "b"]

    def mutations() -> list[Any]:
        return [
            lambda: s.get("a"),
            lambda: s.put("e", 1, 1),
            lambda: s.put("a", 2, 1),
            lambda: s.pop("c"),
            lambda: s.clear(),
        ]

    for mutate in mutations():
        if len(s) < 3:
            for k in "abcd":
                s.put(k, k, 1)
        it = iter(s)
        next(it)
        mutate()
        with pytest.raises(RuntimeError, match="mutated during iteration"):
            next(it)
    # Reads do not invalidate iterators.
    for k in "abcd":
        s.put(k, k, 1)
    it = iter(s)
    first = next(it)
    s.peek("a")
    "a" in s  # noqa: B015
    len(s)
    s.get("nope")  # a miss does not reorder
    s.stats()
    assert [first, *it] == list(s)
    # An exhausted iterator stays exhausted.
    it = iter(s)
    list(it)
    s.put("z", 1, 1)
    assert list(it) == []


def test_key_types(impl: Any) -> None:
    s = impl(1000)
    keys: list[Any] = ["s", b"b", 1, (1, "t"), frozenset({1}), "é", "😀", b""]
    for i, k in enumerate(keys):
        s.put(k, i, 1)
    for i, k in enumerate(keys):
        assert s.get(k) == i
    assert s.get(1.0) == 2 and s.get(True) == 2  # 1 == 1.0 == True, as in dict
    # Equal but not identical keys.
    assert s.get("".join(["\u00e9"])) == 5
    assert s.get(bytes(bytearray(b"b"))) == 1
    assert s.get(b"s") is None and s.get("b") is None
    check(s)


def test_many_entries_grow_and_shrink(impl: Any) -> None:
    n = 20_000
    s = impl(n)
    keys = [f"/asset/{i}.js" for i in range(n)]
    for k in keys:
        s.put(k, k, 1)
    assert len(s) == n
    for k in keys[::3]:
        assert s.pop(k) == k
    for k in keys[1::3]:
        assert s.get(k) == k
    check(s)
    assert s.put("big", 0, n) != []
    assert len(s) == 1
    check(s)


def test_make_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_STORE", raising=False)
    assert isinstance(make_store(10), LRU)
    monkeypatch.setenv("EDGE_STORE", "python")
    assert isinstance(make_store(10), PyLRU)
    monkeypatch.setenv("EDGE_STORE", "native")
    assert isinstance(make_store(10), LRU)


def test_make_store_falls_back_with_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_STORE", raising=False)
    monkeypatch.setitem(sys.modules, "edge._lru", None)  # import fails
    with pytest.warns(RuntimeWarning, match="not built"):
        assert isinstance(make_store(10), PyLRU)
    monkeypatch.setenv("EDGE_STORE", "native")
    with pytest.raises(ImportError):
        make_store(10)


# ---------------------------------------------------------------------------
# native only: types, reference counts, leaks


def test_native_attributes_are_read_only() -> None:
    s = LRU(10)
    for name in ("hits", "misses", "inserts", "evictions", "total_charge"):
        with pytest.raises(AttributeError):
            setattr(s, name, 1)
    with pytest.raises(TypeError):
        LRU()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        s.get()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        s.get("a", 1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        s.get("a", nope=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        s.put("a", 1)  # type: ignore[call-arg]
    assert s.put(key="a", value=1, charge=2) == []
    assert repr(s) == "<edge._lru.LRU entries=1 bytes=2 capacity=10>"
    assert sys.getsizeof(s) > 0
    with pytest.raises(TypeError):

        class Sub(LRU):  # type: ignore[misc]
            pass


def test_refcounts() -> None:
    key = "".join(["refcount", "-key"])
    value = Obj()
    kbase, vbase = sys.getrefcount(key), sys.getrefcount(value)
    s = LRU(10)
    s.put(key, value, 5)
    assert (sys.getrefcount(key), sys.getrefcount(value)) == (kbase + 1, vbase + 1)
    for _ in range(1000):
        s.get(key)
        s.peek(key)
        key in s  # noqa: B015
        s.put(key, value, 5)  # replace with itself
    list(s)
    s.items_lru()
    assert (sys.getrefcount(key), sys.getrefcount(value)) == (kbase + 1, vbase + 1)
    assert s.pop(key) is value
    assert (sys.getrefcount(key), sys.getrefcount(value)) == (kbase, vbase)
    # Eviction hands the references over to the returned list.
    s.put(key, value, 5)
    evicted = s.put("other", 1, 10)
    assert evicted == [(key, value)]
    assert (sys.getrefcount(key), sys.getrefcount(value)) == (kbase + 1, vbase + 1)
    del evicted
    assert (sys.getrefcount(key), sys.getrefcount(value)) == (kbase, vbase)
    # Capacity shrink, clear and dealloc release too.
    s.put(key, value, 5)
    s.capacity = 0
    assert (sys.getrefcount(key), sys.getrefcount(value)) == (kbase, vbase)
    s.capacity = 10
    s.put(key, value, 5)
    s.clear()
    assert (sys.getrefcount(key), sys.getrefcount(value)) == (kbase, vbase)
    s.put(key, value, 5)
    del s
    assert (sys.getrefcount(key), sys.getrefcount(value)) == (kbase, vbase)
    # A default passed to get/pop is returned with a new reference.
    s = LRU(10)
    d = Obj()
    dbase = sys.getrefcount(d)
    for _ in range(100):
        assert s.get("x", d) is d
        assert s.pop("x", d) is d
    assert sys.getrefcount(d) == dbase


def test_million_operations_flat_memory() -> None:
    keys = [f"/k/{i}" for i in range(5000)]
    values = [Obj() for _ in range(64)]
    s = LRU(2000)

    def run(n: int) -> None:
        get, put, pop = s.get, s.put, s.pop
        nk, nv = len(keys), len(values)
        for i in range(n):
            k = keys[(i * 7919) % nk]
            r = i % 10
            if r < 6:
                if get(k) is None:
                    put(k, values[i % nv], 1 + i % 3)
            elif r < 9:
                put(k, values[i % nv], i % 5)
            else:
                pop(k, None)

    run(200_000)  # warm up: reach the steady-state table and node sizes
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run(1_000_000)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 64 * 1024, f"memory grew by {after - before} bytes"
    s._selfcheck()


def test_overhead_per_entry_at_most_96_bytes() -> None:
    n = 50_000
    keys = [f"/static/{i}.css" for i in range(n)]
    value = Obj()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        s = LRU(n)
        for k in keys:
            s.put(k, value, 1)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    per_entry = (after - before) / n
    assert per_entry <= 96, per_entry
    assert sys.getsizeof(s) <= 96 * n


# ---------------------------------------------------------------------------
# native only: cyclic garbage collection


def test_value_referring_to_store_is_collected() -> None:
    s = LRU(10)
    v = Obj()
    v.store = s  # type: ignore[attr-defined]
    s.put("self", v, 1)
    r_store, r_value = weakref.ref(v), weakref.ref(v)
    del s, v
    gc.collect()
    assert r_store() is None and r_value() is None


def test_store_in_a_cycle_through_its_key_and_callback() -> None:
    class Key(str):
        pass

    class Owner:
        def __init__(self) -> None:
            self.store = LRU(10, self.evicted)

        def evicted(self, k: Any, v: Any) -> None:
            pass

    o = Owner()
    k = Key("k")
    k.owner = o  # type: ignore[attr-defined]
    o.store.put(k, o, 1)
    r = weakref.ref(o)
    del o, k
    gc.collect()
    assert r() is None


def test_iterator_cycle_is_collected() -> None:
    s = LRU(10)
    it = iter(s)
    v = Obj()
    v.it = it  # type: ignore[attr-defined]
    s.put("k", v, 1)
    r = weakref.ref(v)
    del s, it, v
    gc.collect()
    assert r() is None


# ---------------------------------------------------------------------------
# native only: re-entrancy


class Reentrant:
    """A value whose destructor runs `action(store)`."""

    def __init__(self, store: Any, action: Any) -> None:
        self.store = store
        self.action = action

    def __del__(self) -> None:
        self.action(self.store)


def _hammer(st: Any) -> None:
    st.put("from-del-1", 1, 0)
    st.get("a")
    st.pop("b", None)
    list(st)
    st.put("from-del-2", 2, 0)


@pytest.mark.parametrize(
    "operation",
    ["pop", "replace", "evict", "shrink", "clear", "dealloc", "gc"],
)
@pytest.mark.parametrize(
    "action",
    [_hammer, lambda st: st.clear(), lambda st: setattr(st, "capacity", 1)],
    ids=["hammer", "clear", "shrink"],
)
def test_destructor_touching_store(operation: str, action: Any) -> None:
    s = LRU(10)
    for k in "abcdef":
        s.put(k, k, 1)
    s.put("victim", Reentrant(s, action), 1)
    check(s)
    if operation == "pop":
        s.pop("victim")
    elif operation == "replace":
        s.put("victim", 0, 1)
    elif operation == "evict":
        s.capacity = 20
        s.put("victim", s.get("victim"), 1)  # make it MRU, then evict everything
        s.get("a")
        evicted = s.put("huge", 0, 20)
        assert len(evicted) == 7
        del evicted
    elif operation == "shrink":
        s.capacity = 0
    elif operation == "clear":
        s.clear()
    elif operation == "dealloc":
        del s
        return
    elif operation == "gc":
        del s
        gc.collect()
        return
    check(s)
    # Still usable afterwards.
    s.capacity = 100
    s.put("after", 1, 1)
    assert s.get("after") == 1
    check(s)


class EvilKey:
    """Equal to other EvilKeys with the same name; __eq__ runs `action`."""

    action: Any = None

    def __init__(self, name: str) -> None:
        self.name = name

    def __hash__(self) -> int:
        return 42  # every EvilKey collides

    def __eq__(self, other: object) -> bool:
        if EvilKey.action is not None:
            act, EvilKey.action = EvilKey.action, None
            act()
        return isinstance(other, EvilKey) and other.name == self.name


@pytest.mark.parametrize("mutation", ["clear", "pop", "fill", "shrink"])
def test_key_eq_mutating_store(mutation: str) -> None:
    s = LRU(10_000)
    for i in range(20):
        s.put(EvilKey(f"k{i}"), i, 1)

    def act() -> None:
        if mutation == "clear":
            s.clear()
        elif mutation == "pop":
            for i in range(20):
                s.pop(EvilKey(f"k{i}"), None)
        elif mutation == "fill":
            for i in range(1000):  # forces table and node array growth
                s.put(f"filler{i}", i, 1)
        else:
            s.capacity = 3

    for op in ("get", "put", "pop", "peek", "contains"):
        EvilKey.action = act
        k = EvilKey("k19")
        if op == "get":
            s.get(k)
        elif op == "put":
            s.put(k, "new", 1)
        elif op == "pop":
            s.pop(k, None)
        elif op == "peek":
            s.peek(k)
        else:
            k in s  # noqa: B015
        check(s)
        for i in range(20):
            s.put(EvilKey(f"k{i}"), i, 1)
        s.capacity = 10_000
    EvilKey.action = None


def test_key_eq_raising_leaves_store_unchanged() -> None:
    class Bad:
        def __hash__(self) -> int:
            return 1

        def __eq__(self, other: object) -> bool:
            raise ZeroDivisionError

    s = LRU(10)
    s.put(Bad(), 1, 1)
    before = s.items_lru()
    for call in (s.get, s.peek, s.pop, lambda k: s.put(k, 2, 1), lambda k: k in s):
        with pytest.raises(ZeroDivisionError):
            call(Bad())
    assert s.items_lru() == before
    check(s)


def test_hash_mutating_capacity_is_rechecked() -> None:
    s = LRU(10)

    class Shrinker:
        def __hash__(self) -> int:
            s.capacity = 1
            return 7

    with pytest.raises(ValueError, match="exceeds"):
        s.put(Shrinker(), 1, 5)
    assert len(s) == 0
    check(s)


def test_gc_during_allocation_mutating_store() -> None:
    """Allocating the eviction tuples may start a GC pass whose finalizers
    touch the store: put must notice and redo its lookup."""
    s = LRU(50)

    class Garbage:
        def __init__(self, i: int) -> None:
            self.me = self
            self.i = i

        def __del__(self) -> None:
            s.put(f"gc{self.i % 7}", self.i, 3)
            s.pop(f"k{self.i % 13}", None)
            s.get(f"k{self.i % 5}")

    old = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    try:
        for i in range(3000):
            Garbage(i)
            s.put(f"k{i % 17}", i, 1 + i % 9)
            if i % 50 == 0:
                check(s)
    finally:
        gc.set_threshold(*old)
        gc.collect()
    check(s)
