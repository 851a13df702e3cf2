"""Large objects cached as fixed-size slices fetched with Range on demand (like nginx's slice module).

Rules this module guarantees:
- an object is described once by a :class:`SliceMeta` (length, validators,
  fields, freshness); each slice is cached under its own key, so a request
  for the last megabyte of a gigabyte fetches and stores only that megabyte;
- slice keys carry the meta's random ``token``, so slices of an object that
  changed upstream (new meta) can never be served with the new description;
  a meta freshened by revalidation (or soft-purged) is a new SliceMeta with the
  same token, since its slices are still the object's bytes;
- a slice response is accepted only when its Content-Range is exactly the
  slice asked for, its total length is the meta's and its validator is the
  meta's (the ETag when the meta has one, else its Last-Modified when it has
  one); anything else means the object changed upstream.
"""

from __future__ import annotations

import os
from typing import final

from edge.cache.entry import Entry
from edge.http.fields import Headers, get_one
from edge.http.ranges import parse_content_range

META_SUFFIX = b"\x00slices"
"""Appended to a primary key to find the object's SliceMeta."""


def meta_key(key: bytes) -> bytes:
    return key + META_SUFFIX


@final
class SliceMeta:
    """What is known of a sliced object, and the key of each of its slices."""

    __slots__ = ("entry", "length", "slice_size", "token")

    def __init__(self, entry: Entry, length: int, slice_size: int, token: bytes | None = None) -> None:
        self.entry = entry
        """Status 200, the object's end-to-end fields (no Content-Range/Length), freshness, tags; no body."""
        self.length = length
        self.slice_size = slice_size
        self.token = token or os.urandom(6).hex().encode()
        """Names this object's slices: a changed object gets a new token, a freshened one keeps it."""

    def with_entry(self, entry: Entry) -> SliceMeta:
        """The same object (same slices) described by ``entry``: after a revalidation or a soft purge."""
        return SliceMeta(entry, self.length, self.slice_size, self.token)

    @property
    def charge(self) -> int:
        return self.entry.charge

    def count(self) -> int:
        return max(1, -(-self.length // self.slice_size))

    def span(self, index: int) -> tuple[int, int]:
        """Inclusive byte range of slice ``index``."""
        start = index * self.slice_size
        return start, min(self.length, start + self.slice_size) - 1

    def covering(self, start: int, end: int) -> range:
        """Indexes of the slices holding bytes ``start``..``end`` inclusive."""
        return range(start // self.slice_size, end // self.slice_size + 1)

    def slice_key(self, index: int) -> bytes:
        return self.entry.key + b"\x00slice\x00" + self.token + b"\x00%d" % index

    def accepts(self, index: int, status: int, fields: Headers) -> bool:
        """Is this upstream answer exactly slice ``index`` of this very object?"""
        if status != 206:
            return False
        if parse_content_range(get_one(fields, b"content-range")) != (*self.span(index), self.length):
            return False
        etag = self.entry.etag
        if etag is not None:
            return get_one(fields, b"etag") == etag
        modified = self.entry.last_modified
        return modified is None or get_one(fields, b"last-modified") == modified


@final
class SliceBody:
    """The bytes of one slice as stored (a type of its own, so no store value is a bare ``bytes``)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def aligned_spec(start: int, slice_size: int) -> tuple[int, bytes]:
    """The slice holding byte ``start`` and its Range value."""
    index = start // slice_size
    first = index * slice_size
    return index, b"bytes=%d-%d" % (first, first + slice_size - 1)
