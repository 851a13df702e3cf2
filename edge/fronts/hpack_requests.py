"""HPACK for the HTTPS front's requests: a header block that leaves the dynamic table as it
was is decoded once per connection and table state.

Why: a client repeating requests (a browser's subresources, a load tool, an API client)
sends, from its second request on, header blocks that only point into the tables (indexed
fields, RFC 7541 §6.1) plus literals that are not indexed (§6.2.2, §6.2.3: nghttp2, curl and
h2load never index ``:path``). ``hpack.Decoder`` still walks such a block field by field in
Python (integers, Huffman-coded strings, a ``HeaderTuple`` per field): ≈ 15 % of the front's
CPU for a 1 KiB hit. The decoded list of a block depends only on its bytes and on the
dynamic table; so this decoder counts every change of the table (an insertion, a size
change) and keeps, per connection, the lists of the blocks decoded since the last change
that did not change it themselves. Any change drops them all.

A kept list was accepted under the header list limit and table size limits it is kept with;
a change of either limit drops the memo too. The memo is bounded (``_MEMO_BLOCKS`` blocks of
at most ``_MEMO_MAX_BLOCK`` bytes) and each hit returns a new list.
"""

from __future__ import annotations

from typing import Any

from hpack import Decoder
from hpack.table import HeaderTable

__all__ = ["RequestDecoder"]

_MEMO_BLOCKS = 32
"""Blocks kept per connection; the memo is dropped and refilled when it is full."""
_MEMO_MAX_BLOCK = 1024
"""Longer blocks are decoded each time."""


class _CountingTable(HeaderTable):
    """A header table that counts its changes: ``changes`` moves on every insertion and
    every size change, the only ways its entries (and so a block's meaning) change."""

    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.changes += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class RequestDecoder(Decoder):
    """An ``hpack.Decoder`` that remembers the lists of blocks that left the table unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table = table = _CountingTable()
        self.header_table = table
        self.max_allowed_table_size = table.maxsize
        self._memo: dict[bytes, list[Any]] = {}
        self._memo_state: tuple[int, int, int] = (-1, -1, -1)
        """The table's change count and the two limits the memo's lists were decoded under."""

    def decode(self, data: bytes, raw: bool = False) -> Any:
        if not raw or len(data) > _MEMO_MAX_BLOCK:
            return super().decode(data, raw)
        if type(data) is not bytes:
            data = bytes(data)
        table = self.table
        state = (table.changes, self.max_allowed_table_size, self.max_header_list_size)
        memo = self._memo
        if state != self._memo_state:
            memo.clear()
            self._memo_state = state
        else:
            kept = memo.get(data)
            if kept is not None:
                return list(kept)
        headers = list(super().decode(data, raw))
        if table.changes == state[0]:  # this block changed nothing: same bytes, same list
            if len(memo) >= _MEMO_BLOCKS:
                memo.clear()
            memo[data] = headers[:]
        return headers
