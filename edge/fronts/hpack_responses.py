"""HPACK for the HTTPS front's responses: no dynamic table, so a field block is encoded once.

Why: ``h2`` hands every response's fields to ``hpack.Encoder``, which searches its dynamic
table and Huffman-codes literals in Python per field; that was the largest single cost of
a 1 KiB hit on the HTTPS front (profiled in-process: ≈ a quarter of the front's CPU). An
encoder that never inserts into the dynamic table (as nginx's does for responses) makes a
block depend only on its fields, so the block of a hit's field list, memoised per entry
and second by the front, is encoded once and reused by every connection. Fields are
sent as static-table references or as literals without indexing (RFC 7541 §6.1, §6.2.2);
a ``NeverIndexedHeaderTuple`` keeps its never-indexed form. A change of the peer's
SETTINGS_HEADER_TABLE_SIZE is still signalled at the start of the next block (§4.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hpack import Encoder, HeaderTuple

__all__ = ["ResponseEncoder"]

_INDEX_NONE = b"\x00"
_INDEX_NEVER = b"\x10"
_MEMO_LIMIT = 4096
"""Distinct field blocks kept; the memo is dropped and refilled when it is full."""
_MEMO_MAX_BLOCK = 2048
"""Larger blocks are encoded each time: the memo stays under ``_MEMO_LIMIT`` x 2 KiB."""

_blocks: dict[tuple[tuple[bytes, bytes], ...], bytes] = {}
"""Encoded blocks by their fields. Valid for every connection: no block reads a dynamic table."""


class ResponseEncoder(Encoder):
    """An ``hpack.Encoder`` whose blocks use the static table and literals only.

    ``memoise`` is set by the front around a cache hit's fields, the ones that repeat;
    other responses (misses, errors, interim) are looked up but not kept.
    """

    memoise = False

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        prefix = b""
        if self.header_table.resized:
            prefix = self._encode_table_size_change()
            self.header_table.resized = False
        fields = tuple(headers)
        if any(isinstance(field, HeaderTuple) for field in fields):
            return prefix + self._encode_block(fields, huffman)  # sensitivity marks: not memoised
        block = _blocks.get(fields)
        if block is None:
            block = self._encode_block(fields, huffman)
            if self.memoise and len(block) <= _MEMO_MAX_BLOCK:
                if len(_blocks) >= _MEMO_LIMIT:
                    _blocks.clear()
                _blocks[fields] = block
        return prefix + block

    def encode_plain(self, headers: Iterable[Any]) -> bytes:
        """The block of ``headers`` without the table size update a resize owes (which the
        next :meth:`encode` sends): the memoised block a front frames itself."""
        fields = tuple(headers)
        block = _blocks.get(fields)
        if block is None:
            block = self._encode_block(fields, True)
            if self.memoise and len(block) <= _MEMO_MAX_BLOCK:
                if len(_blocks) >= _MEMO_LIMIT:
                    _blocks.clear()
                _blocks[fields] = block
        return block

    def _encode_block(self, fields: tuple[Any, ...], huffman: bool) -> bytes:
        out = []
        for field in fields:
            name, value = bytes(field[0]), bytes(field[1])
            never = isinstance(field, HeaderTuple) and not field.indexable
            match = self.header_table.search(name, value)  # the dynamic table stays empty
            if match is not None and match[2] is not None and not never:
                out.append(self._encode_indexed(match[0]))
            elif match is not None:
                out.append(
                    self._encode_indexed_literal(
                        match[0], value, _INDEX_NEVER if never else _INDEX_NONE, huffman
                    )
                )
            else:
                out.append(self._encode_literal(name, value, _INDEX_NEVER if never else _INDEX_NONE, huffman))
        return b"".join(out)
