"""Stateful property tests: the C store against its Python model.

`StoreComparison` drives `edge._lru.LRU` and `edge.cache.store.PyLRU` (and, in
test_s3fifo.py, `S3FIFO` and `PyS3FIFO`) with the
same random operations — puts (including replacements, oversized and
negative charges), gets, peeks, pops, clears, capacity changes, iteration
interleaved with mutation — and requires identical answers, identical
eviction order and identical counters after every step. Some values run
read-only code on their store from their destructor.

`ReentrantChaos` drives the C store alone while destructors and key
comparisons mutate it mid-operation (no oracle can predict those results),
and checks the structural invariants after every step.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from edge._lru import LRU
from edge.cache.store import PyLRU

NAMES = [f"k{i}" for i in range(6)]
SETTINGS = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def fresh(name: str, as_bytes: bool) -> Any:
    """An equal key that is never the same object as a previous one."""
    return name.encode() if as_bytes else "".join(list(name))


keys = st.builds(fresh, st.sampled_from(NAMES), st.booleans())
# Mostly small charges so the store fills up; sometimes oversized or negative.
charges = st.one_of(st.integers(0, 6), st.integers(0, 6), st.integers(-2, 70))


class Val:
    """A value compared by identity number; optionally its destructor reads
    its store (read-only, so both implementations stay comparable)."""

    __slots__ = ("ident", "store")

    def __init__(self, ident: int, store: Any = None) -> None:
        self.ident = ident
        self.store = store

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Val) and other.ident == self.ident

    def __hash__(self) -> int:
        return self.ident

    def __repr__(self) -> str:
        return f"Val({self.ident})"

    def __del__(self) -> None:
        s = self.store
        if s is not None:
            s.peek("k0")
            len(s)
            "k1" in s  # noqa: B015
            s.items_lru()
            s.stats()


def outcome(fn: Any) -> tuple[str, Any]:
    try:
        return ("ok", fn())
    except Exception as exc:
        return ("raise", type(exc))


class StoreComparison(RuleBasedStateMachine):
    NATIVE: Any = LRU
    MODEL: Any = PyLRU

    def __init__(self) -> None:
        super().__init__()
        self.native: Any = None
        self.model: Any = None
        self.evicted_native: list[Any] = []
        self.evicted_model: list[Any] = []
        self.counter = 0
        self.iters: list[tuple[Any, Any]] = []

    @initialize(capacity=st.one_of(st.integers(0, 5), st.integers(10, 60)))
    def setup(self, capacity: int) -> None:
        self.native = self.NATIVE(capacity, lambda k, v: self.evicted_native.append((k, v)))
        self.model = self.MODEL(capacity, lambda k, v: self.evicted_model.append((k, v)))

    def both(self, op: Any) -> Any:
        a = outcome(lambda: op(self.native, True))
        b = outcome(lambda: op(self.model, False))
        assert a == b, (a, b)
        return a

    @rule(key=keys, charge=charges, reentrant=st.booleans())
    def put(self, key: Any, charge: int, reentrant: bool) -> None:
        self.counter += 1
        ident = self.counter

        def op(s: Any, native: bool) -> Any:
            return s.put(key, Val(ident, s if reentrant else None), charge)

        self.both(op)

    @rule(items=st.lists(st.tuples(keys, st.integers(0, 8)), max_size=8))
    def put_many(self, items: list[tuple[Any, int]]) -> None:
        for key, charge in items:
            self.put(key, charge, False)

    @rule(key=keys, default=st.sampled_from([None, "dflt"]))
    def get(self, key: Any, default: Any) -> None:
        self.both(lambda s, _: s.get(key) if default is None else s.get(key, default))

    @rule(key=keys)
    def peek(self, key: Any) -> None:
        self.both(lambda s, _: s.peek(key))

    @rule(key=keys)
    def contains(self, key: Any) -> None:
        self.both(lambda s, _: key in s)

    @rule(key=keys, with_default=st.booleans(), rare=st.integers(0, 2))
    def pop(self, key: Any, with_default: bool, rare: int) -> None:
        if rare == 0:
            self.both(lambda s, _: s.pop(key, None) if with_default else s.pop(key))

    @rule(rare=st.integers(0, 4))
    def clear(self, rare: int) -> None:
        if rare == 0:
            self.both(lambda s, _: s.clear())

    @rule(capacity=st.one_of(st.integers(-1, 5), st.integers(10, 60)), rare=st.integers(0, 2))
    def set_capacity(self, capacity: int, rare: int) -> None:
        if rare != 0:
            return

        def op(s: Any, _: bool) -> Any:
            s.capacity = capacity

        self.both(op)
        assert self.evicted_native == self.evicted_model

    @rule()
    def iterate(self) -> None:
        self.both(lambda s, _: list(s))

    @rule(op=st.sampled_from(["get", "peek", "contains", "len", "put", "pop"]), key=keys)
    def op_during_iteration(self, op: str, key: Any) -> None:
        its = (iter(self.native), iter(self.model))
        a = [outcome(partial(next, it)) for it in its]
        assert a[0] == a[1], a
        for s in (self.native, self.model):
            if op == "get":
                s.get(key)
            elif op == "peek":
                s.peek(key)
            elif op == "contains":
                key in s  # noqa: B015
            elif op == "len":
                len(s)
            elif op == "put":
                outcome(lambda: s.put(key, Val(-1), 1))  # noqa: B023
            else:
                s.pop(key, None)
        b = [outcome(partial(list, it)) for it in its]
        assert b[0] == b[1], b

    @rule()
    def start_iterator(self) -> None:
        self.iters.append((iter(self.native), iter(self.model)))

    @precondition(lambda self: self.iters)
    @rule(data=st.data())
    def step_iterator(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.iters) - 1))
        it_native, it_model = self.iters[i]
        a = outcome(lambda: next(it_native))
        b = outcome(lambda: next(it_model))
        assert a == b, (a, b)

    @invariant()
    def same_state(self) -> None:
        if self.native is None:
            return
        n, m = self.native, self.model
        n._selfcheck()
        assert n.items_lru() == m.items_lru()
        assert n.stats() == m.stats()
        assert (n.hits, n.misses, n.inserts, n.evictions) == (
            m.hits,
            m.misses,
            m.inserts,
            m.evictions,
        )
        assert (n.capacity, n.total_charge, len(n)) == (m.capacity, m.total_charge, len(m))
        assert n.total_charge <= n.capacity

    def teardown(self) -> None:
        # Drop iterators first so the stores' destructors run here, not later.
        self.iters.clear()


StoreComparison.TestCase.settings = SETTINGS
TestStoreComparison = StoreComparison.TestCase


# ---------------------------------------------------------------------------


class Mutator:
    """A value whose destructor runs an arbitrary mutation on its store."""

    def __init__(self, store: Any, action: int, key: Any) -> None:
        self.store = store
        self.action = action
        self.key = key

    def __del__(self) -> None:
        s, a, k = self.store, self.action, self.key
        if a == 0:
            s.put(k, a, 0)  # a plain value: no chain reaction
        elif a == 1:
            s.pop(k, None)
        elif a == 2:
            s.clear()
        elif a == 3:
            s.capacity = max(0, s.capacity - 3)
        elif a == 4:
            s.get(k)
            list(s)


class SideEffectKey:
    """Compares equal by name; the comparison may mutate the store."""

    def __init__(self, name: str, store: Any, action: int) -> None:
        self.name = name
        self.store = store
        self.action = action

    def __hash__(self) -> int:
        return hash(self.name) & 3  # plenty of collisions

    def __eq__(self, other: object) -> bool:
        s, self.store = self.store, None  # act once
        if s is not None:
            if self.action == 0:
                with contextlib.suppress(ValueError):  # capacity 0: a charge of 1 does not fit
                    s.put(f"side-{self.name}", 0, 1)
            elif self.action == 1:
                s.clear()
            elif self.action == 2:
                for i in range(30):
                    s.put(f"grow{i}", i, 0)
        return isinstance(other, SideEffectKey) and other.name == self.name


class ReentrantChaos(RuleBasedStateMachine):
    STORE: Any = LRU

    def __init__(self) -> None:
        super().__init__()
        self.s = self.STORE(20)

    @rule(
        name=st.sampled_from(NAMES),
        charge=st.integers(0, 8),
        action=st.integers(-1, 4),
        victim=st.sampled_from(NAMES),
    )
    def put(self, name: str, charge: int, action: int, victim: str) -> None:
        value: Any = Mutator(self.s, action, victim) if action >= 0 else name
        try:
            evicted = self.s.put(name, value, charge)
        except ValueError:
            assert charge > self.s.capacity
            return
        self.s._selfcheck()
        del evicted  # drop the evicted values: their destructors run now

    @rule(name=st.sampled_from(NAMES), charge=st.integers(0, 8), action=st.integers(0, 2))
    def put_side_effect_key(self, name: str, charge: int, action: int) -> None:
        with contextlib.suppress(ValueError):
            self.s.put(SideEffectKey(name, self.s, action), name, charge)

    @rule(name=st.sampled_from(NAMES), action=st.integers(0, 2))
    def get_side_effect_key(self, name: str, action: int) -> None:
        self.s.get(SideEffectKey(name, self.s, action))

    @rule(name=st.sampled_from(NAMES))
    def pop(self, name: str) -> None:
        self.s.pop(name, None)

    @rule(name=st.sampled_from(NAMES))
    def get(self, name: str) -> None:
        self.s.get(name)

    @rule()
    def clear(self) -> None:
        self.s.clear()

    @rule(capacity=st.integers(0, 30))
    def set_capacity(self, capacity: int) -> None:
        self.s.capacity = capacity

    @invariant()
    def consistent(self) -> None:
        self.s._selfcheck()
        assert len(list(self.s)) == len(self.s)


ReentrantChaos.TestCase.settings = settings(SETTINGS, max_examples=100)
TestReentrantChaos = ReentrantChaos.TestCase
