"""A stored response and the Vary container that holds several of them.

An Entry is immutable once stored except for ``wire``, where protocol adapters
memoise their own serialisation of the head (built once per entry, patched
per request), so the cache never needs to know about HTTP/1.1 or QPACK.
"""

from __future__ import annotations

from typing import Any

from edge.cache.freshness import Policy
from edge.http.fields import Headers

TAG_FIELDS = (b"surrogate-key", b"cache-tag")

ENTRY_OVERHEAD = 512
"""Bytes charged per entry beyond body and headers, for Python object overhead."""


_NO_TAGS: frozenset[bytes] = frozenset()
"""Shared by the entries without purge tags: an empty frozenset per entry is 216 bytes."""


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
        self.wire: dict[str, Any] = {}
        """Adapter-private memo of serialised heads, keyed by adapter name."""

    def age(self, now: float) -> int:
        """Current age in whole seconds (RFC 9111 §4.2.3), for the Age field."""
        return int(self.corrected_initial_age + (now - self.response_time))

    def is_fresh(self, now: float) -> bool:
        return now < self.fresh_until

    def mark_stale(self) -> None:
        """Soft purge: the entry stays for stale-if-error and revalidation but is never fresh."""
        self.fresh_until = float("-inf")
        for sibling in (self.encodings or {}).values():
            sibling.fresh_until = float("-inf")

    @property
    def charge(self) -> int:
        own = len(self.body) + sum(len(k) + len(v) for k, v in self.headers) + ENTRY_OVERHEAD
        if self.encodings:
            own += sum(sibling.charge for sibling in self.encodings.values())
        return own


class Variants:
    """All stored responses for one primary key whose response carried Vary."""

    __slots__ = ("by_secondary", "names")

    def __init__(self, names: tuple[bytes, ...]) -> None:
        self.names = names
        """The Vary names the newest response listed; older variants keep their own."""
        self.by_secondary: dict[bytes, Entry] = {}

    @property
    def charge(self) -> int:
        return sum(e.charge for e in self.by_secondary.values())
