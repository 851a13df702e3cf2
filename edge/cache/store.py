"""The memory tier: a byte-bounded map, LRU or S3-FIFO, native by default.

Everything the cache core may assume about its store lives here:

- ``Store`` is the interface the core programs against. Both implementations
  below satisfy it, and nothing else about them may be relied on.
- ``edge._lru.LRU`` (C, ``native/lru.c``) is what runs in production.
- ``PyLRU`` is the executable specification of ``LRU``: same names, same
  results, same eviction order, same counters, same errors. The stateful
  tests drive both with identical operations and compare every answer, so a
  behaviour change must land in both or the tests fail.
- ``edge._lru.S3FIFO`` (same file) is the S3-FIFO policy behind the same
  interface, and ``PyS3FIFO`` its model, compared by the same tests.
- ``make_store`` picks the implementation: the native one unless the
  environment says ``EDGE_STORE=python`` (debugging) or the extension is not
  built (a warning, then the model); ``policy`` (the ``eviction`` setting)
  picks LRU or S3-FIFO.

Semantics shared by both implementations:

- ``put`` inserts or replaces (re-charging the key) as most recently used,
  then evicts from the least recently used end until
  ``total_charge <= capacity`` and returns the evicted ``(key, value)``
  pairs, least recently used first. A negative charge, or one larger than the
  capacity, raises ``ValueError`` and leaves the store unchanged.
- ``get`` promotes and counts a hit or a miss; ``peek``, ``in`` and ``len``
  neither promote nor count.
- Shrinking ``capacity`` evicts; those pairs go to ``on_evict(key, value)``
  when one was given, otherwise they are dropped.
- Iteration yields keys least recently used first. A get hit, put, pop,
  clear or eviction during iteration makes the next step raise
  ``RuntimeError``; snapshot with ``list(store)`` to mutate while walking.
- ``inserts`` counts every successful put (new keys and replacements);
  ``evictions`` counts entries pushed out by capacity, not pops or clears.

S3-FIFO (Yang et al., SOSP 2023), byte-bounded, differs only in which entries
go and in the order ``put`` returns, ``items_lru`` lists and iteration yields:

- two FIFO queues: *small* (new keys; its target is ``capacity // 10`` bytes)
  and *main*. Iteration and ``items_lru`` give the small queue oldest first,
  then the main one.
- ``get`` hit raises the entry's frequency (at most 3) and moves nothing.
- ``put`` of a new key first makes room (below), then appends the key to the
  small queue, or to main when its tag is in the ghost. A replacement takes
  the key out, makes room, and appends it to the tail of the queue it was in
  with its frequency + 1 (the key is never evicted by its own put).
- Making room, while the total exceeds the limit: if the small queue holds
  more than its target or main is empty, its oldest entry moves to main's tail
  with frequency 0 when its frequency is > 0, else it is evicted and its tag
  and charge enter the ghost; otherwise main's oldest entry moves to main's
  tail with frequency - 1 when > 0, else it is evicted.
- The ghost is a FIFO of (tag, charge) of keys evicted from the small queue:
  keys only, by the 32-bit tag of their hash (``_tag``), bounded to
  ``capacity - capacity // 10`` bytes of charges and ``capacity // 1024 + 64``
  entries (oldest forgotten first). A key found there is not removed from it.
  ``clear`` forgets the ghost too; a capacity change trims it.
"""

from __future__ import annotations

import operator
import os
import sys
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Protocol, runtime_checkable

__all__ = ["MAX_CAPACITY", "POLICIES", "PyLRU", "PyS3FIFO", "Store", "make_store", "native_available"]

POLICIES = ("lru", "s3fifo")
"""The eviction policies ``make_store`` builds (the ``eviction`` setting)."""

#: Largest capacity either implementation accepts (keeps sums from overflowing).
MAX_CAPACITY = sys.maxsize // 2

EvictCallback = Callable[[Any, Any], object]

_MISSING: Any = object()


@runtime_checkable
class Store(Protocol):
    """A byte-bounded map (LRU or S3-FIFO) of hashable keys (``str``/``bytes``) to objects."""

    @property
    def capacity(self) -> int: ...
    @capacity.setter
    def capacity(self, value: int) -> None: ...
    @property
    def total_charge(self) -> int: ...
    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def inserts(self) -> int: ...
    @property
    def evictions(self) -> int: ...

    def get(self, key: Hashable, default: Any = None) -> Any: ...
    def peek(self, key: Hashable, default: Any = None) -> Any: ...
    def put(self, key: Hashable, value: Any, charge: int) -> list[tuple[Any, Any]]: ...
    def pop(self, key: Hashable, default: Any = ...) -> Any: ...
    def clear(self) -> None: ...
    def items_lru(self) -> list[tuple[Any, Any]]: ...
    def stats(self) -> dict[str, int]: ...
    def __contains__(self, key: object) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...


def _as_ssize(value: object) -> int:
    n = operator.index(value)  # type: ignore[arg-type]
    if not -sys.maxsize - 1 <= n <= sys.maxsize:
        raise OverflowError("Python int too large to convert to C ssize_t")
    return n


def _check_capacity(value: object) -> int:
    cap = _as_ssize(value)
    if not 0 <= cap <= MAX_CAPACITY:
        raise ValueError(f"capacity must be between 0 and {MAX_CAPACITY} bytes, got {cap}")
    return cap


class PyLRU:
    """Pure-Python model of ``edge._lru.LRU``: the test oracle, and the
    fallback when the extension is not built. O(1) operations, but several
    times slower than the native store."""

    __slots__ = (
        "_capacity",
        "_data",
        "_total",
        "_version",
        "evictions",
        "hits",
        "inserts",
        "misses",
        "on_evict",
    )

    def __init__(self, capacity: int, on_evict: EvictCallback | None = None) -> None:
        if on_evict is not None and not callable(on_evict):
            raise TypeError("on_evict must be callable or None")
        self._capacity = _check_capacity(capacity)
        # key -> [value, charge]; order is least recently used first.
        self._data: OrderedDict[Hashable, list[Any]] = OrderedDict()
        self._total = 0
        self._version = 0
        self.hits = 0
        self.misses = 0
        self.inserts = 0
        self.evictions = 0
        self.on_evict = on_evict

    # -- lookups ---------------------------------------------------------

    def get(self, key: Hashable, default: Any = None) -> Any:
        entry = self._data.get(key)
        if entry is None:
            self.misses += 1
            return default
        self.hits += 1
        self._version += 1
        self._data.move_to_end(key)
        return entry[0]

    def peek(self, key: Hashable, default: Any = None) -> Any:
        entry = self._data.get(key)
        return default if entry is None else entry[0]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    # -- updates ---------------------------------------------------------

    def _check_charge(self, charge: int) -> None:
        if charge < 0:
            raise ValueError(f"charge must be >= 0, got {charge}")
        if charge > self._capacity:
            raise ValueError(
                f"charge {charge} exceeds the store capacity {self._capacity}: the object cannot be cached"
            )

    def put(self, key: Hashable, value: Any, charge: int) -> list[tuple[Any, Any]]:
        charge = _as_ssize(charge)
        self._check_charge(charge)
        hash(key)
        data = self._data
        entry = data.get(key)
        if entry is not None:
            self._total += charge - entry[1]
            entry[0] = value
            entry[1] = charge
            data.move_to_end(key)
        else:
            data[key] = [value, charge]
            self._total += charge
        self.inserts += 1
        self._version += 1
        return self._evict(self._capacity)

    def _evict(self, limit: int) -> list[tuple[Any, Any]]:
        evicted: list[tuple[Any, Any]] = []
        data = self._data
        while self._total > limit:
            key, (value, charge) = data.popitem(last=False)
            self._total -= charge
            self.evictions += 1
            evicted.append((key, value))
        if evicted:
            self._version += 1
        return evicted

    def pop(self, key: Hashable, default: Any = _MISSING) -> Any:
        entry = self._data.pop(key, None)
        if entry is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        self._total -= entry[1]
        self._version += 1
        return entry[0]

    def clear(self) -> None:
        data = self._data
        self._data = OrderedDict()
        self._total = 0
        self._version += 1
        data.clear()  # values' destructors see the already-empty store

    # -- capacity --------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        cap = _check_capacity(value)
        self._capacity = cap
        evicted = self._evict(cap)
        if self.on_evict is not None:
            for key, val in evicted:
                self.on_evict(key, val)

    @capacity.deleter
    def capacity(self) -> None:
        raise TypeError("cannot delete capacity")

    @property
    def total_charge(self) -> int:
        return self._total

    # -- inspection ------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        return _PyLRUIterator(self)

    def _keys(self) -> list[Any]:
        return list(self._data)

    def items_lru(self) -> list[tuple[Any, Any]]:
        return [(key, entry[0]) for key, entry in self._data.items()]

    def stats(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "inserts": self.inserts,
            "evictions": self.evictions,
            "bytes": self._total,
            "entries": len(self._data),
        }

    def __repr__(self) -> str:
        return (
            f"<edge.cache.store.PyLRU entries={len(self._data)} bytes={self._total} "
            f"capacity={self._capacity}>"
        )


def _tag(key_hash: int) -> int:
    """The 32-bit tag the native store keeps of a key's hash (its ghost remembers only this)."""
    u = key_hash & 0xFFFFFFFFFFFFFFFF
    return (u & 0xFFFFFFFF) ^ (u >> 32)


class PyS3FIFO:
    """Pure-Python model of ``edge._lru.S3FIFO`` (see the module's text for the policy)."""

    __slots__ = (
        "_capacity",
        "_ghost",
        "_ghost_count",
        "_ghost_total",
        "_main",
        "_small",
        "_small_total",
        "_total",
        "_version",
        "evictions",
        "hits",
        "inserts",
        "misses",
        "on_evict",
    )

    def __init__(self, capacity: int, on_evict: EvictCallback | None = None) -> None:
        if on_evict is not None and not callable(on_evict):
            raise TypeError("on_evict must be callable or None")
        self._capacity = _check_capacity(capacity)
        # key -> [value, charge, frequency, tag]; each queue oldest first.
        self._small: OrderedDict[Hashable, list[Any]] = OrderedDict()
        self._main: OrderedDict[Hashable, list[Any]] = OrderedDict()
        self._ghost: deque[tuple[int, int]] = deque()
        self._ghost_count: dict[int, int] = {}
        self._ghost_total = 0
        self._total = 0
        self._small_total = 0
        self._version = 0
        self.hits = 0
        self.misses = 0
        self.inserts = 0
        self.evictions = 0
        self.on_evict = on_evict

    def _find(self, key: object) -> list[Any] | None:
        entry = self._small.get(key)
        return self._main.get(key) if entry is None else entry

    def get(self, key: Hashable, default: Any = None) -> Any:
        entry = self._find(key)
        if entry is None:
            self.misses += 1
            return default
        self.hits += 1
        self._version += 1
        entry[2] = min(entry[2] + 1, 3)
        return entry[0]

    def peek(self, key: Hashable, default: Any = None) -> Any:
        entry = self._find(key)
        return default if entry is None else entry[0]

    def __contains__(self, key: object) -> bool:
        return key in self._small or key in self._main

    def __len__(self) -> int:
        return len(self._small) + len(self._main)

    def _check_charge(self, charge: int) -> None:
        PyLRU._check_charge(self, charge)  # type: ignore[arg-type]  # reads only _capacity

    def put(self, key: Hashable, value: Any, charge: int) -> list[tuple[Any, Any]]:
        charge = _as_ssize(charge)
        self._check_charge(charge)
        tag = _tag(hash(key))
        in_main = False
        entry = self._small.pop(key, None)
        if entry is None:
            entry = self._main.pop(key, None)
            in_main = entry is not None
        else:
            self._small_total -= entry[1]
        if entry is not None:
            self._total -= entry[1]
            freq = min(entry[2] + 1, 3)
        else:
            in_main = tag in self._ghost_count
            freq = 0
        evicted = self._evict(self._capacity - charge)
        (self._main if in_main else self._small)[key] = [value, charge, freq, tag]
        if not in_main:
            self._small_total += charge
        self._total += charge
        self.inserts += 1
        self._version += 1
        return evicted

    def _evict(self, limit: int) -> list[tuple[Any, Any]]:
        evicted: list[tuple[Any, Any]] = []
        small, main = self._small, self._main
        changed = False
        while self._total > limit:
            changed = True
            if self._small_total > self._capacity // 10 or not main:
                key, entry = small.popitem(last=False)
                self._small_total -= entry[1]
                if entry[2]:
                    entry[2] = 0
                    main[key] = entry
                    continue
                self._ghost_add(entry[3], entry[1])
            else:
                key, entry = next(iter(main.items()))
                if entry[2]:
                    entry[2] -= 1
                    main.move_to_end(key)
                    continue
                del main[key]
            self._total -= entry[1]
            self.evictions += 1
            evicted.append((key, entry[0]))
        if changed:
            self._version += 1
        return evicted

    def _ghost_add(self, tag: int, charge: int) -> None:
        self._ghost.append((tag, charge))
        self._ghost_count[tag] = self._ghost_count.get(tag, 0) + 1
        self._ghost_total += charge
        self._ghost_trim()

    def _ghost_trim(self) -> None:
        max_bytes = self._capacity - self._capacity // 10
        max_count = self._capacity // 1024 + 64
        ghost, count = self._ghost, self._ghost_count
        while ghost and (self._ghost_total > max_bytes or len(ghost) > max_count):
            tag, charge = ghost.popleft()
            self._ghost_total -= charge
            if count[tag] == 1:
                del count[tag]
            else:
                count[tag] -= 1

    def pop(self, key: Hashable, default: Any = _MISSING) -> Any:
        entry = self._small.pop(key, None)
        if entry is not None:
            self._small_total -= entry[1]
        else:
            entry = self._main.pop(key, None)
        if entry is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        self._total -= entry[1]
        self._version += 1
        return entry[0]

    def clear(self) -> None:
        small, main = self._small, self._main
        self._small, self._main = OrderedDict(), OrderedDict()
        self._ghost.clear()
        self._ghost_count.clear()
        self._ghost_total = 0
        self._total = self._small_total = 0
        self._version += 1
        small.clear()  # values' destructors see the already-empty store
        main.clear()

    @property
    def capacity(self) -> int:
        return self._capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        cap = _check_capacity(value)
        self._capacity = cap
        evicted = self._evict(cap)
        self._ghost_trim()
        if self.on_evict is not None:
            for key, val in evicted:
                self.on_evict(key, val)

    @capacity.deleter
    def capacity(self) -> None:
        raise TypeError("cannot delete capacity")

    @property
    def total_charge(self) -> int:
        return self._total

    def _keys(self) -> list[Any]:
        return [*self._small, *self._main]

    def __iter__(self) -> Iterator[Any]:
        return _PyLRUIterator(self)

    def items_lru(self) -> list[tuple[Any, Any]]:
        return [(key, entry[0]) for q in (self._small, self._main) for key, entry in q.items()]

    def stats(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "inserts": self.inserts,
            "evictions": self.evictions,
            "bytes": self._total,
            "entries": len(self),
        }

    def __repr__(self) -> str:
        return (
            f"<edge.cache.store.PyS3FIFO entries={len(self)} bytes={self._total} capacity={self._capacity}>"
        )


class _PyLRUIterator:
    """Keys in the store's order; raises once the store changed (like the C iterator)."""

    __slots__ = ("_keys", "_store", "_version")

    def __init__(self, store: PyLRU | PyS3FIFO) -> None:
        self._store: PyLRU | PyS3FIFO | None = store
        self._version = store._version
        self._keys = iter(store._keys())

    def __iter__(self) -> _PyLRUIterator:
        return self

    def __next__(self) -> Any:
        store = self._store
        if store is None:
            raise StopIteration
        if store._version != self._version:
            raise RuntimeError("LRU mutated during iteration")
        try:
            return next(self._keys)
        except StopIteration:
            self._store = None
            raise


def native_available() -> bool:
    """Whether the C extension ``edge._lru`` is importable."""
    try:
        import edge._lru  # noqa: F401
    except ImportError:
        return False
    return True


def make_store(capacity: int, on_evict: EvictCallback | None = None, policy: str = "lru") -> Store:
    """The store the cache should use: ``edge._lru.LRU`` (``policy="s3fifo"``:
    ``edge._lru.S3FIFO``) unless ``EDGE_STORE=python`` asks for the model, or
    the extension is missing (then the model, with a ``RuntimeWarning``).
    ``EDGE_STORE=native`` makes a missing extension an ``ImportError`` instead."""
    if policy not in POLICIES:
        raise ValueError(f"eviction policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    model: type[PyLRU] | type[PyS3FIFO] = PyS3FIFO if policy == "s3fifo" else PyLRU
    choice = os.environ.get("EDGE_STORE", "").strip().lower()
    if choice == "python":
        return model(capacity, on_evict)
    native: Any
    try:
        if policy == "s3fifo":
            from edge._lru import S3FIFO as native
        else:
            from edge._lru import LRU as native
    except ImportError as exc:
        if choice == "native":
            raise ImportError("EDGE_STORE=native but edge._lru is not built") from exc
        warnings.warn(
            "edge._lru is not built (pip install -e . builds it); falling back to the slow pure-Python store",
            RuntimeWarning,
            stacklevel=2,
        )
        return model(capacity, on_evict)
    store: Store = native(capacity, on_evict)
    return store
