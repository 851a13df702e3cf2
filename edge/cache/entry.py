"""A stored response and the Vary container that holds several of them.

What an Entry says never changes once it is stored: status, fields, body and
freshness stay as they were when the response arrived. A new response, a 304
that freshens the fields, or a soft purge makes a new Entry that replaces the old
one in the store (:meth:`Entry.stale_copy` for a soft purge), so a client already
being sent the old one is never sent a mix. Two things are added to a stored
Entry later, and neither changes what a client receives for a given
representation:

- ``encodings`` gains each compressed sibling once it is made (see
  ``edge.cache.encoded``); a sibling, once there, is never replaced;
- ``wire`` holds the fronts' memoised serialisation of the head (built once per
  entry, refreshed when the Age second changes), so the cache never needs to
  know about HTTP/1.1 framing or QPACK.

A :class:`Variants` container is the one mutable holder: the variants of a URL
are added and dropped in place, each one an immutable Entry.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, cast, final

from edge.cache.freshness import Policy
from edge.cache.key import negotiated_coding
from edge.http.fields import Headers

TAG_FIELDS = (b"surrogate-key", b"cache-tag")

ENTRY_OVERHEAD = 512
"""Bytes charged per entry beyond body and headers, for Python object overhead."""


_NO_TAGS: frozenset[bytes] = frozenset()
"""Shared by the entries without purge tags: an empty frozenset per entry is 216 bytes."""

NO_WIRE: dict[str, Any] = cast(dict[str, Any], MappingProxyType({}))
"""``wire`` of an entry no front has sent as a hit yet: read-only and shared (an empty dict
per entry is 64 bytes); ``edge.fronts.hit.remember`` gives the entry its own on the first."""


@final
class Entry:
    """One stored response (RFC 9111 §3)."""

    __slots__ = (
        "body",
        "corrected_initial_age",
        "encodings",
        "etag",
        "fresh_until",
        "headers",
        "key",
        "last_modified",
        "negotiated",
        "policy",
        "reason",
        "response_time",
        "status",
        "tags",
        "vary",
        "wire",
    )

    def __init__(
        self,
        key: bytes,
        status: int,
        reason: bytes,
        headers: Headers,
        body: bytes,
        policy: Policy,
        response_time: float,
        corrected_initial_age: float,
        vary: tuple[bytes, ...] = (),
    ) -> None:
        self.key = key
        self.status = status
        self.reason = reason
        self.headers = headers
        """Stored header fields: hop-by-hop, Age and private-named fields already removed."""
        self.body = body
        self.policy = policy
        self.response_time = response_time
        """When the response arrived (epoch seconds)."""
        self.corrected_initial_age = corrected_initial_age
        self.fresh_until = response_time + policy.lifetime - corrected_initial_age
        """Epoch second at which age reaches the lifetime: fresh while ``now < fresh_until``."""
        if policy.directives.field_names(b"no-cache") == frozenset():
            # Unqualified no-cache: stored, but never used without validation (RFC 9111 §5.2.2.4).
            self.fresh_until = float("-inf")
        self.vary = vary
        """Lower-cased Vary field names, () when the response does not vary."""
        self.negotiated = negotiated_coding(headers, vary) if vary else None
        """The upstream's Content-Encoding of a variant keyed by Accept-Encoding: only a request
        accepting it is sent this entry (``edge.cache.key.accepts_coding``); None for identity."""
        self.etag: bytes | None = None
        self.last_modified: bytes | None = None
        tags: set[bytes] = set()
        for name, value in headers:
            lname = name.lower()
            if lname == b"etag":
                self.etag = value
            elif lname == b"last-modified":
                self.last_modified = value
            elif lname in TAG_FIELDS:
                tags.update(value.replace(b",", b" ").split())
        self.tags = frozenset(tags) if tags else _NO_TAGS
        """Purge tags from Surrogate-Key (space-separated) and Cache-Tag (comma-separated)."""
        self.encodings: dict[bytes, Entry] | None = None
        """Compressed siblings by coding (see edge.cache.encoded); None when not compressible."""
        self.wire: dict[str, Any] = NO_WIRE
        """Adapter-private memo of serialised heads, keyed by adapter name (NO_WIRE until the
        first is kept)."""

    def age(self, now: float) -> int:
        """Current age in whole seconds (RFC 9111 §4.2.3), for the Age field."""
        return int(self.corrected_initial_age + (now - self.response_time))

    def is_fresh(self, now: float) -> bool:
        return now < self.fresh_until

    def stale_copy(self) -> Entry:
        """The same response, never fresh again: what a soft purge stores in place of this one.

        It stays for revalidation (its validators) and stale-if-error; its siblings
        are copied stale too, so no coding of the object is served fresh.
        """
        copy = Entry.__new__(Entry)
        for name in Entry.__slots__:
            setattr(copy, name, getattr(self, name))
        copy.fresh_until = float("-inf")
        copy.wire = NO_WIRE
        if self.encodings is not None:
            copy.encodings = {
                coding: copy if sibling is self else sibling.stale_copy()
                for coding, sibling in self.encodings.items()
            }
        return copy

    @property
    def charge(self) -> int:
        own = len(self.body) + sum(len(k) + len(v) for k, v in self.headers) + ENTRY_OVERHEAD
        if self.encodings:
            # A coding that did not shrink the body maps to the entry itself: no second copy.
            own += sum(sibling.charge for sibling in self.encodings.values() if sibling is not self)
        return own


@final
class Variants:
    """All stored responses for one primary key whose response carried Vary (changed in place)."""

    __slots__ = ("by_secondary", "names")

    def __init__(self, names: tuple[bytes, ...]) -> None:
        self.names = names
        """The Vary names the newest response listed; older variants keep their own."""
        self.by_secondary: dict[bytes, Entry] = {}

    @property
    def charge(self) -> int:
        return sum(e.charge for e in self.by_secondary.values())
