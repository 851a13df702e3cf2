"""Cache-Status (RFC 9211): one cache's member of the list, as a value.

Every response the node sends carries the member of this node, built here and
nowhere else. A member is written as the cache's name followed by the parameters
that apply, always in one order (``hit``, ``fwd``, ``fwd-status``, ``ttl``,
``stored``, ``detail``, ``collapsed``), so two members with the same facts are the
same bytes. Rules this module guarantees:

- the name is written as a Structured Fields token when it is one (RFC 8941 §3.3.4),
  otherwise as a quoted string, so any configured node name gives a valid field;
- ``fwd`` is one of the values RFC 9211 §2.2 lists, ``detail`` a token; both are
  checked when the member is made, not when it is sent;
- ``hit`` and ``fwd`` are exclusive: a member says the cache answered, or why it
  went upstream (a served stale response goes upstream and is not a hit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["FWD_REASONS", "CacheStatus", "Fwd", "cache_name"]

Fwd = Literal[b"bypass", b"method", b"uri-miss", b"vary-miss", b"miss", b"request", b"stale", b"partial"]
"""Why a request went forward (RFC 9211 §2.2)."""

FWD_REASONS: frozenset[bytes] = frozenset(
    (b"bypass", b"method", b"uri-miss", b"vary-miss", b"miss", b"request", b"stale", b"partial")
)

_TOKEN = re.compile(rb"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
"""An RFC 8941 sf-token."""


def cache_name(name: str | bytes) -> bytes:
    """A node name as it appears in Cache-Status: a token, or a quoted string when it is not one."""
    raw = name.encode() if isinstance(name, str) else name
    if _TOKEN.fullmatch(raw):
        return raw
    if any(c < 0x20 or c > 0x7E for c in raw):
        raise ValueError(f"a Cache-Status name must be printable ASCII: {raw!r}")
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


@dataclass(frozen=True, slots=True)
class CacheStatus:
    """This node's member of a response's Cache-Status list."""

    cache: bytes
    """The node's name as written in the field (see :func:`cache_name`)."""
    hit: bool = False
    """The response was served from the cache without going forward."""
    fwd: Fwd | None = None
    """Why the request went forward, when it did."""
    fwd_status: int | None = None
    """The status the next hop answered."""
    ttl: int | None = None
    """Seconds of freshness the served response has left (negative when stale)."""
    stored: bool = False
    """The response went into the cache."""
    detail: bytes | None = None
    """A token saying more (why not stored, which stale rule applied, ...)."""
    collapsed: bool = False
    """The request joined a fetch another request had started."""

    def __post_init__(self) -> None:
        if self.hit and self.fwd is not None:
            raise ValueError("a Cache-Status member is a hit or goes forward, not both")
        if self.fwd is not None and self.fwd not in FWD_REASONS:
            raise ValueError(f"not a Cache-Status fwd value: {self.fwd!r}")
        if self.detail is not None and not _TOKEN.fullmatch(self.detail):
            raise ValueError(f"Cache-Status detail must be a token: {self.detail!r}")

    def __bytes__(self) -> bytes:
        parts = [self.cache]
        if self.hit:
            parts.append(b"hit")
        if self.fwd is not None:
            parts.append(b"fwd=" + self.fwd)
        if self.fwd_status is not None:
            parts.append(b"fwd-status=%d" % self.fwd_status)
        if self.ttl is not None:
            parts.append(b"ttl=%d" % self.ttl)
        if self.stored:
            parts.append(b"stored")
        if self.detail is not None:
            parts.append(b"detail=" + self.detail)
        if self.collapsed:
            parts.append(b"collapsed")
        return b"; ".join(parts)
