"""The host allow-list: which Host / :authority values a node serves (``hosts`` setting).

Sans-I/O and pure. The fronts refuse a request for any other host with 421 Misdirected
Request (``edge.fronts.request``), so a node never answers for a site it was not set up
for, whatever a client writes in Host.

Guarantees:
- a pattern is a host name (``example.com``), a wildcard (``*.example.com``: any name
  ending in ``.example.com`` with at least one more label, not ``example.com`` itself)
  or an IP address (IPv6 in brackets), as ``edge.config.parse_hosts`` reads them;
- a host matches on its name alone: lower-cased, the port and one trailing dot removed
  (``Example.COM.:8080`` is ``example.com``); nothing else is undone (a percent-encoded
  name never matches a plain pattern, so it is refused, never aliased);
- matching is by string comparison only: no DNS, no regular expressions built from
  operator input.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["HostAllowList", "host_name"]


def host_name(authority: bytes) -> bytes:
    """The name of a Host value: lower-cased, without the port and one trailing dot."""
    authority = authority.strip().lower()
    if authority[:1] == b"[":
        end = authority.find(b"]")
        name = authority[: end + 1] if end > 0 else authority
    else:
        name = authority.partition(b":")[0]
    return name[:-1] if name[-1:] == b"." else name


class HostAllowList:
    """The hosts a node serves: exact names and ``*.suffix`` wildcards."""

    __slots__ = ("exact", "patterns", "suffixes")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        """The patterns as configured (lower-cased by ``parse_hosts``); also the identity of
        the list, so fronts with the same list share their verdicts."""
        self.exact = frozenset(p.encode() for p in self.patterns if not p.startswith("*."))
        self.suffixes = tuple(p[1:].encode() for p in self.patterns if p.startswith("*."))
        """``.example.com`` for ``*.example.com``."""

    @classmethod
    def of(cls, patterns: Iterable[str]) -> HostAllowList | None:
        """The allow-list of ``patterns``; None when there are none (any host is served)."""
        patterns = tuple(patterns)
        return cls(patterns) if patterns else None

    def allows(self, authority: bytes) -> bool:
        """Whether a request whose Host (or :authority) is ``authority`` may be served."""
        name = host_name(authority)
        if name in self.exact:
            return True
        return any(len(name) > len(suffix) and name.endswith(suffix) for suffix in self.suffixes)

    def __repr__(self) -> str:
        return f"HostAllowList({', '.join(self.patterns)})"
