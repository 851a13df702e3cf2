"""The memory tier: a byte-bounded LRU map, native by default.

Everything the cache core may assume about its store lives here:

- ``Store`` is the interface the core programs against. Both implementations
  below satisfy it, and nothing else about them may be relied on.
- ``edge._lru.LRU`` (C, ``native/lru.c``) is what runs in production.
- ``PyLRU`` is the executable specification of ``LRU``: same names, same
  results, same eviction order, same counters, same errors. The stateful
  tests drive both with identical operations and compare every answer, so a
  behaviour change must land in both or the tests fail.
- ``make_store`` picks the implementation: the native one unless the
  environment says ``EDGE_STORE=python`` (debugging) or the extension is not
  built (a warning, then the model).

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
"""

from __future__ import annotations

import operator
import os
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Protocol, runtime_checkable

__all__ = ["MAX_CAPACITY", "PyLRU", "Store", "make_store", "native_available"]

#: Largest capacity either implementation accepts (keeps sums from overflowing).
MAX_CAPACITY = sys.maxsize // 2

EvictCallback = Callable[[Any, Any], object]

_MISSING: Any = object()


@runtime_checkable
class Store(Protocol):
    """A byte-bounded LRU map of hashable keys (``str``/``bytes``) to objects."""

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


class _PyLRUIterator:
    """Keys in LRU order; raises once the store changed (like the C iterator)."""

    __slots__ = ("_keys", "_store", "_version")

    def __init__(self, store: PyLRU) -> None:
        self._store: PyLRU | None = store
        self._version = store._version
        self._keys = iter(list(store._data))

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


def make_store(capacity: int, on_evict: EvictCallback | None = None) -> Store:
    """The store the cache should use: ``edge._lru.LRU`` unless
    ``EDGE_STORE=python`` asks for the model, or the extension is missing
    (then the model, with a ``RuntimeWarning``). ``EDGE_STORE=native`` makes
    a missing extension an ``ImportError`` instead."""
    choice = os.environ.get("EDGE_STORE", "").strip().lower()
    if choice == "python":
        return PyLRU(capacity, on_evict)
    try:
        from edge._lru import LRU
    except ImportError as exc:
        if choice == "native":
            raise ImportError("EDGE_STORE=native but edge._lru is not built") from exc
        warnings.warn(
            "edge._lru is not built (pip install -e . builds it); falling back to the slow pure-Python store",
            RuntimeWarning,
            stacklevel=2,
        )
        return PyLRU(capacity, on_evict)
    return LRU(capacity, on_evict)
