"""The memory tier as the cache sees it: which kind of value is stored under which key.

The LRU store (``edge.cache.store``) maps keys to any object within a byte budget.
This module is the one place that decides what goes into it; every other module
reads and writes through :class:`MemoryTier`, whose methods say the kind they
take and return:

=====================================  =============================================
key                                    value
=====================================  =============================================
primary key (``scheme://host/target``)  :class:`Entry`, or :class:`Variants` when the
                                       response varies (RFC 9111 §4.1)
primary key + ``\\x00slices``           :class:`SliceMeta` of an object kept as slices
``SliceMeta.slice_key(i)``             :class:`SliceBody`, the bytes of slice ``i``
=====================================  =============================================

Rules this module guarantees:

- a URL keeps at most ``MAX_VARIANTS`` variants, the oldest dropped first;
- a variant in a coding the upstream chose is found only by a request that accepts
  that coding (``edge.cache.key.accepts_coding``);
- a slice is stored only while the SliceMeta that asked for it (same token) is
  the one stored, so a slice of an object that changed upstream is never kept;
- a value whose charge exceeds the whole capacity is not stored (the store's
  ``ValueError``) and whatever it replaced is dropped, never left stale;
- with a tier below (``lower``, the disk tier), every response stored is handed to it
  (``spill``: written through once), as is every response evicted or too large for
  memory, and a dropped URL is forgotten there too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

from edge.cache.entry import ENTRY_OVERHEAD, Entry, Variants
from edge.cache.key import accepts_coding, secondary_key
from edge.cache.slices import SliceBody, SliceMeta, meta_key
from edge.cache.store import Store
from edge.http.message import Request

__all__ = ["MAX_VARIANTS", "Lower", "MemoryTier", "Stored"]

MAX_VARIANTS = 32
"""Variants kept per URL; a response varying on a field with many values cannot flood the store."""

Stored = Entry | Variants | SliceMeta | SliceBody
"""Every kind of value the memory tier holds."""


class Lower(Protocol):
    """The tier below memory (the disk tier): what memory hands it and tells it."""

    def spill(self, entry: Entry, secondary: bytes) -> None:
        """Keep ``entry`` (evicted from memory, or larger than memory): it may be asked for again."""

    def spill_meta(self, meta: SliceMeta) -> None:
        """Keep the description of a sliced object."""

    def spill_slice(self, key: bytes, data: bytes) -> None:
        """Keep the bytes of one slice, stored under its slice key ``key``."""

    def forget(self, key: bytes) -> None:
        """The URL's responses may no longer be served (an unsafe method, permission withdrawn)."""


class MemoryTier:
    """Typed access to one node's byte-bounded LRU store."""

    __slots__ = ("lookup", "lower", "lru")

    def __init__(self, lru: Store) -> None:
        self.lru = lru
        self.lower: Lower | None = None
        """The tier below (``edge.core.disk``): evicted responses are handed to it; None: none."""
        """The store itself, for its counters, capacity and size."""
        self.lookup: Callable[[bytes], Entry | Variants | None] = lru.get
        """The fast path's lookup by primary key (the store's own ``get``: no Python frame)."""

    # -- responses under their primary key ---------------------------------------------
    def response(self, req: Request, key: bytes) -> tuple[Entry | None, bool]:
        """The stored response matching ``req``, and whether the URL has variants at all."""
        found = self.lookup(key)
        if found is None:
            return None, False
        if type(found) is Variants:
            entry = found.by_secondary.get(secondary_key(req, found.names))
            if entry is not None and not accepts_coding(req, entry.negotiated):
                return None, True  # the upstream's coding, which this request does not take
            return entry, True
        return found, False

    def put_response(self, entry: Entry, secondary: bytes) -> None:
        """Store ``entry`` as the URL's response, or as its variant for ``secondary``."""
        if not entry.vary:
            self._put(entry.key, entry, entry.charge)
            if self.lower is not None:
                self.lower.spill(entry, b"")  # written through once, so a restart finds it
            return
        current = self.lru.peek(entry.key)
        if type(current) is Variants and current.names == entry.vary:
            variants = current
        else:
            variants = Variants(entry.vary)
        variants.by_secondary.pop(secondary, None)
        variants.by_secondary[secondary] = entry
        while len(variants.by_secondary) > MAX_VARIANTS:
            del variants.by_secondary[next(iter(variants.by_secondary))]
        self._put(entry.key, variants, variants.charge)
        if self.lower is not None:
            self.lower.spill(entry, secondary)  # written through once, so a restart finds it

    def holds_key(self, key: bytes) -> bool:
        """Whether a response (or variants) is stored under primary key ``key`` (not a use)."""
        return self.lru.peek(key) is not None

    def holds(self, entry: Entry) -> bool:
        """Whether ``entry`` is still stored (itself, or as one of its URL's variants)."""
        current = self.lru.peek(entry.key)
        return current is entry or (type(current) is Variants and entry in current.by_secondary.values())

    def recharge(self, entry: Entry) -> None:
        """Charge ``entry``'s new size (a compressed sibling was added) if it is still stored."""
        if self.holds(entry):
            current = self.lru.peek(entry.key)
            self._put(entry.key, current, current.charge)

    def drop_response(self, key: bytes) -> None:
        """Forget the URL's response(s): the upstream withdrew permission, or an unsafe method ran."""
        self.lru.pop(key, None)
        if self.lower is not None:
            self.lower.forget(key)

    # -- objects kept as slices --------------------------------------------------------
    def sliced(self, key: bytes) -> SliceMeta | None:
        """The description of the sliced object stored for primary key ``key`` (promoted as used)."""
        meta: SliceMeta | None = self.lru.get(meta_key(key))
        return meta

    def put_sliced(self, meta: SliceMeta) -> None:
        self._put(meta_key(meta.entry.key), meta, meta.charge)
        if self.lower is not None:
            self.lower.spill_meta(meta)

    def is_current(self, meta: SliceMeta) -> bool:
        """Whether ``meta`` (or a freshened copy with its token) is the stored description."""
        current = self.lru.peek(meta_key(meta.entry.key))
        return type(current) is SliceMeta and current.token == meta.token

    def replace_sliced(self, meta: SliceMeta) -> None:
        """Store a freshened description of the same object, unless the object changed meanwhile."""
        if self.is_current(meta):
            self.put_sliced(meta)

    def drop_sliced(self, key: bytes, only: SliceMeta | None = None) -> None:
        """Forget the sliced object at ``key`` (only when ``only``'s object is the stored one, if given)."""
        if only is None or self.is_current(only):
            self.lru.pop(meta_key(key), None)

    def slice_data(self, meta: SliceMeta, index: int) -> bytes | None:
        body: SliceBody | None = self.lru.get(meta.slice_key(index))
        return None if body is None else body.data

    def put_slice(self, meta: SliceMeta, index: int, data: bytes) -> None:
        """Keep slice ``index`` of ``meta``'s object, while that object is the stored one."""
        if self.is_current(meta):
            with contextlib.suppress(ValueError):  # a slice larger than the cache is served, not kept
                key = meta.slice_key(index)
                evicted = self.lru.put(key, SliceBody(data), len(data) + ENTRY_OVERHEAD)
                if evicted and self.lower is not None:
                    self._spill(evicted)
            if self.lower is not None:
                self.lower.spill_slice(meta.slice_key(index), data)

    # -- what purge needs ----------------------------------------------------------------
    def peek(self, key: bytes) -> Stored | None:
        """The value at ``key`` without promoting it."""
        value: Stored | None = self.lru.peek(key)
        return value

    def keys(self) -> list[bytes]:
        """Every key, least recently used first (a snapshot: the store may change meanwhile)."""
        return list(self.lru)

    def items(self) -> Iterator[tuple[bytes, Stored]]:
        """Every (key, value), least recently used first, over a snapshot of the keys."""
        for key in self.keys():
            value = self.peek(key)
            if value is not None:
                yield key, value

    def replace(self, key: bytes, value: Entry | Variants | SliceMeta) -> None:
        """Store ``value`` at ``key`` with its charge (a purge re-storing a smaller or staler value)."""
        self._put(key, value, value.charge)

    def remove(self, key: bytes) -> Stored | None:
        value: Stored | None = self.lru.pop(key, None)
        return value

    def clear(self) -> None:
        self.lru.clear()

    def __len__(self) -> int:
        return len(self.lru)

    def _put(self, key: bytes, value: Stored, charge: int) -> None:
        try:
            evicted = self.lru.put(key, value, charge)
        except ValueError:
            self.lru.pop(key, None)  # larger than the whole cache: never leave the old value behind
            evicted = [(key, value)]  # ... but the tier below may keep it
        if evicted and self.lower is not None:
            self._spill(evicted)

    def _spill(self, evicted: list[tuple[bytes, Stored]]) -> None:
        """Hand evicted responses, slice descriptions and slices to the tier below."""
        lower = self.lower
        assert lower is not None
        for key, value in evicted:
            if type(value) is Entry:
                lower.spill(value, b"")
            elif type(value) is Variants:
                for secondary, entry in value.by_secondary.items():
                    lower.spill(entry, secondary)
            elif type(value) is SliceMeta:
                lower.spill_meta(value)
            elif type(value) is SliceBody:
                lower.spill_slice(key, value.data)
