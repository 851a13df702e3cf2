"""The disk tier's index and purge log, sans-I/O.

:class:`DiskIndex` knows every record on disk by its file name and by its keys, in least
recently used order, within a byte budget; what it evicts, replaces or forgets is returned
for the caller to unlink. Nothing here touches a file.

The purge log is what makes a purge outlive a restart: every purge is a line
(:func:`format_purge`) appended to ``purges.log`` before the purge is acknowledged, and a
record is purged at load by every line written after the record was (``stored_at``), by
the same matching as a live purge (:func:`matcher`). Soft purges mark the record stale
(it stays for revalidation); hard ones drop it.
"""

from __future__ import annotations

import json
import marshal
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import xxhash

from edge.cache.disk_format import RecordHead
from edge.cache.entry import TAG_FIELDS
from edge.cache.purge import PURGE_KINDS, PurgeError, url_keys
from edge.cache.slices import meta_key

__all__ = [
    "DiskIndex",
    "Item",
    "PurgeLine",
    "decode_snapshot",
    "encode_snapshot",
    "format_purge",
    "item_of",
    "matcher",
    "parse_purges",
]


@dataclass(slots=True, eq=False)
class Item:
    """One record on disk as the index knows it (its head, without the fields)."""

    name: str
    key: bytes
    secondary: bytes
    vary: tuple[bytes, ...]
    size: int
    """Bytes the file takes (head + body), charged against the budget."""
    fresh_until: float
    stored_at: float
    response_time: float
    body_length: int
    tags: frozenset[bytes] = field(default_factory=frozenset)
    verified: bool = False
    """Checked since this process wrote or loaded it (objects loaded at start are not), and no
    sampled check of its digest is due (``edge.core.disk``: one read in ``VERIFY_EVERY``)."""
    inode: int = 0
    """The file's inode when this process wrote or checked it (0: not yet): a file renamed over
    the name since is another inode, so its body is never sent under this item's head."""

    @property
    def fingerprint(self) -> tuple[float, int, float]:
        return (self.response_time, self.body_length, self.fresh_until)


def _tags(head: RecordHead) -> frozenset[bytes]:
    tags: set[bytes] = set()
    for name, value in head.headers:
        if name.lower() in TAG_FIELDS:
            tags.update(value.replace(b",", b" ").split())
    return frozenset(tags)


def item_of(name: str, head: RecordHead, *, verified: bool) -> Item:
    return Item(
        name=name,
        key=head.key,
        secondary=head.secondary,
        vary=head.vary,
        size=head.head_length + head.body_length,
        fresh_until=float("-inf") if head.stale else head.fresh_until,
        stored_at=head.stored_at,
        response_time=head.response_time,
        body_length=head.body_length,
        tags=_tags(head),
        verified=verified,
    )


class DiskIndex:
    """Records by file name (least recently used first) and by primary key, byte-bounded."""

    __slots__ = ("by_key", "by_name", "capacity", "total")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.total = 0
        self.by_name: OrderedDict[str, Item] = OrderedDict()
        self.by_key: dict[bytes, Item | dict[bytes, Item]] = {}
        """The record of a primary key, or its records by secondary key when it has several (a
        dict per key would cost ≈ 200 bytes more per record)."""

    def __len__(self) -> int:
        return len(self.by_name)

    def __iter__(self) -> Iterator[Item]:
        return iter(list(self.by_name.values()))

    def variants(self, key: bytes) -> dict[bytes, Item] | None:
        """The records of primary key ``key`` by secondary key (not promoted)."""
        found = self.by_key.get(key)
        if found is None or type(found) is dict:
            return found
        assert type(found) is Item
        return {found.secondary: found}

    def touch(self, item: Item) -> None:
        if self.by_name.get(item.name) is item:
            self.by_name.move_to_end(item.name)

    def add(self, item: Item) -> list[Item]:
        """Index ``item`` as most recently used; the items it replaced or pushed out, to unlink.

        An item larger than the whole budget is returned itself (not indexed).
        """
        if item.size > self.capacity:
            return [item]
        gone: list[Item] = []
        old = self.by_name.get(item.name)
        if old is not None:
            self._drop(old)
            # Same file name: the caller has already replaced the file, nothing to unlink.
        self.by_name[item.name] = item
        found = self.by_key.get(item.key)
        if found is None or (type(found) is Item and found.secondary == item.secondary):
            self.by_key[item.key] = item
        elif type(found) is Item:
            self.by_key[item.key] = {found.secondary: found, item.secondary: item}
        else:
            assert type(found) is dict
            found[item.secondary] = item
        self.total += item.size
        while self.total > self.capacity:
            _name, oldest = next(iter(self.by_name.items()))
            self._drop(oldest)
            gone.append(oldest)
        return gone

    def remove(self, item: Item) -> bool:
        """Forget ``item`` if it is the indexed one for its name; whether it was."""
        if self.by_name.get(item.name) is not item:
            return False
        self._drop(item)
        return True

    def remove_key(self, key: bytes) -> list[Item]:
        """Forget every record of primary key ``key``; them, to unlink."""
        items = list((self.variants(key) or {}).values())
        for item in items:
            self._drop(item)
        return items

    def matching(self, match: Callable[[Item], bool]) -> list[Item]:
        return [item for item in self.by_name.values() if match(item)]

    def _drop(self, item: Item) -> None:
        del self.by_name[item.name]
        self.total -= item.size
        found = self.by_key.get(item.key)
        if found is item:
            del self.by_key[item.key]
        elif type(found) is dict and found.get(item.secondary) is item:
            del found[item.secondary]
            if len(found) == 1:
                self.by_key[item.key] = next(iter(found.values()))


# -- purge -------------------------------------------------------------------------------


def matcher(kind: str, target: str) -> Callable[[Item], bool]:
    """Which records a purge of ``kind`` covers: the same URL keys as ``edge.cache.purge``.

    A URL or tag purge drops a sliced object's description, not its slices: their keys carry
    the description's token, which no later description has, so they are never read again
    and leave by eviction."""
    if kind == "url":
        bases = url_keys(target)
        keys = frozenset([*bases, *(meta_key(base) for base in bases)])  # the object, or its slices'
        return lambda item: item.key in keys
    if kind == "prefix":
        starts = tuple(url_keys(target))
        return lambda item: item.key.startswith(starts)
    if kind == "tag":
        wanted = target.strip().encode("latin-1")
        return lambda item: wanted in item.tags
    if kind == "all":
        return lambda _item: True
    raise PurgeError(f"unknown purge kind {kind!r}")


@dataclass(frozen=True, slots=True)
class PurgeLine:
    at: float
    kind: str
    target: str
    soft: bool

    def covers(self) -> Callable[[Item], bool]:
        """Whether this purge, made after an item was written, applies to it."""
        match, at = matcher(self.kind, self.target), self.at
        return lambda item: item.stored_at <= at and match(item)


def format_purge(at: float, kind: str, target: str, soft: bool) -> bytes:
    """One line of the purge log (JSON, newline-terminated)."""
    return json.dumps({"at": at, "kind": kind, "target": target, "soft": soft}).encode() + b"\n"


def parse_purges(data: bytes) -> list[PurgeLine]:
    """Every complete, well-formed line of a purge log (a torn last line is skipped)."""
    lines: list[PurgeLine] = []
    for raw in data.split(b"\n")[:-1]:  # what follows the last newline is a torn line
        try:
            obj = json.loads(raw)
            line = PurgeLine(float(obj["at"]), str(obj["kind"]), str(obj["target"]), bool(obj["soft"]))
        except (ValueError, KeyError, TypeError):
            continue
        if line.kind in PURGE_KINDS:
            lines.append(line)
    return lines


# -- snapshots ------------------------------------------------------------------------------

_SNAP_MAGIC = b"EDGS2"


def encode_snapshot(items: list[Item]) -> bytes:
    """The index as one blob (marshal of plain tuples, with an XXH3-128 check): read at start
    instead of every record's head."""
    rows = [
        (i.name, i.key, i.secondary, i.vary, i.size, i.fresh_until, i.stored_at, i.response_time,
         i.body_length, tuple(i.tags))
        for i in items
    ]  # fmt: skip
    payload = marshal.dumps(rows)
    return _SNAP_MAGIC + xxhash.xxh3_128_digest(payload) + payload


def decode_snapshot(data: bytes) -> list[Item]:
    """The items of a snapshot; ValueError unless it is whole and of this version."""
    if not data.startswith(_SNAP_MAGIC):
        raise ValueError("not an index snapshot")
    check, payload = data[5:21], data[21:]
    if xxhash.xxh3_128_digest(payload) != check:
        raise ValueError("index snapshot check differs")
    return [
        Item(name, key, sec, vary, size, fresh, stored, resp, length, frozenset(tags))
        for name, key, sec, vary, size, fresh, stored, resp, length, tags in marshal.loads(payload)
    ]
