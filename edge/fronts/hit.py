"""The memoised head of a cached hit, one per entry and front (``entry.wire[front]``).

A hit's head is the entry's fields (built once per entry: the *prefix*) followed by
``Age`` and ``Cache-Status``, which change once a second. A front keeps a
:class:`HitHead` per entry, compares ``memo.age`` with the hit's age inline and calls
:meth:`HitHead.refresh` only when the second changed, so the per-hit cost is an
attribute read and a comparison; no call, allocation or await is added per hit.

Guarantees: ``head`` is always ``prefix`` plus the ``Age`` and ``Cache-Status`` of the
``age`` it was refreshed for; a new memo has ``age == -1``, so its first hit refreshes it.
:class:`WireHitHead` is HTTP/1.1 bytes (status line to blank line); :class:`FieldHitHead`
is a field list with lower-case names for HTTP/2, HTTP/3 and ASGI.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from edge.cache.entry import NO_WIRE, Entry
from edge.core.observe import FrontTally
from edge.http.fields import Headers
from edge.http.message import NO_BODY_STATUSES, reason_phrase

__all__ = ["FieldHitHead", "HitHead", "WireHitHead", "lower_fields", "remember"]

_Head = TypeVar("_Head", bytes, Headers)


class HitHead(Generic[_Head]):
    """``prefix`` (per entry), ``age`` (the second ``head`` is for) and ``head`` itself.

    It is also where the front counts the entry's fast hits (``hits``, ``heads``; see
    ``edge.core.observe``): registered with the front's tally when made, it hands its
    counts back to the tally when it is freed with its entry. It holds no reference to
    the entry, so it is freed as soon as the entry is.
    """

    __slots__ = (
        "__weakref__", "age", "cache_status", "head", "heads", "hits", "length", "prefix", "status", "tally",
    )  # fmt: skip

    def __init__(
        self, prefix: _Head, head: _Head, entry: Entry | None = None, tally: FrontTally | None = None
    ) -> None:
        self.prefix: _Head = prefix
        self.age = -1
        """The Age ``head`` carries; -1 until the first refresh."""
        self.head: _Head = head
        self.cache_status = b""
        """The Cache-Status member ``head`` carries (for the access log)."""
        self.hits = 0
        self.heads = 0
        self.status = entry.status if entry is not None else 0
        self.length = len(entry.body) if entry is not None else 0
        self.tally = tally
        if tally is not None:
            tally.register(self)

    def __del__(self) -> None:
        if self.tally is not None and self.hits:
            self.tally.retire(self)

    def refresh(self, age: int, cache_status: bytes) -> None:
        """Rebuild ``head`` for ``age`` (once a second per entry, not per hit)."""
        raise NotImplementedError


class WireHitHead(HitHead[bytes]):
    """An HTTP/1.1 hit head: status line, fields, Content-Length, the front's own fields."""

    __slots__ = ()

    def __init__(
        self, entry: Entry, tail: bytes, tally: FrontTally | None = None, length: int | None = None
    ) -> None:
        """``tail``: serialised fields every hit on the listener carries (X-Cache, Alt-Svc);
        ``tally``: where the hits counted on this head are summed; ``length``: the body's
        length when it is not ``entry.body`` (a disk record sent from its file)."""
        status = entry.status
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, entry.reason or reason_phrase(status))]
        for name, value in entry.headers:
            lines.append(name + b": " + value + b"\r\n")
        if status not in NO_BODY_STATUSES and status >= 200:
            lines.append(b"Content-Length: %d\r\n" % (len(entry.body) if length is None else length))
        lines.append(tail)
        super().__init__(b"".join(lines), b"", entry, tally)
        if length is not None:
            self.length = length

    def refresh(self, age: int, cache_status: bytes) -> None:
        self.head = self.prefix + b"Age: %d\r\nCache-Status: %s\r\n\r\n" % (age, cache_status)
        self.cache_status = cache_status
        self.age = age


class FieldHitHead(HitHead[Headers]):
    """A hit's field list, lower-case names: ``:status`` first where the protocol has one."""

    __slots__ = ()

    def __init__(
        self,
        entry: Entry,
        fields: Headers,
        tail: Headers,
        status_field: bool = True,
        tally: FrontTally | None = None,
    ) -> None:
        """``fields``: the entry's fields as the front sends them (:func:`lower_fields` or
        stricter); ``tail``: fields every hit carries; ``status_field``: begin with
        ``:status`` (HTTP/2, HTTP/3), not for ASGI, which passes the status apart."""
        status = entry.status
        prefix: Headers = [(b":status", b"%d" % status)] if status_field else []
        prefix += fields
        if status not in NO_BODY_STATUSES and status >= 200:
            prefix.append((b"content-length", b"%d" % len(entry.body)))
        prefix += tail
        super().__init__(prefix, [], entry, tally)

    def refresh(self, age: int, cache_status: bytes) -> None:
        self.head = [*self.prefix, (b"age", b"%d" % age), (b"cache-status", cache_status)]
        self.cache_status = cache_status
        self.age = age


_Memo = TypeVar("_Memo", bound=HitHead)  # type: ignore[type-arg]


def remember(entry: Entry, front: str, memo: _Memo) -> _Memo:
    """Keep ``memo`` as ``front``'s head of ``entry`` (``entry.wire[front]``), and return it.

    An entry starts with the shared, read-only ``NO_WIRE`` (most stored objects are never
    hit, or only by one front): it gets a dict of its own here, on its first hit.
    """
    wire = entry.wire
    if wire is NO_WIRE:
        wire = entry.wire = {}
    wire[front] = memo
    return memo


def lower_fields(headers: Headers) -> Headers:
    """``headers`` with lower-case names, as HTTP/2, HTTP/3 and ASGI carry them."""
    return [(name.lower(), value) for name, value in headers]
