"""Cache-Control (RFC 9111 §5.2) and its targeted variants (RFC 9213).

Rules this module guarantees:
- directive names are case-insensitive and returned lower-case;
- a directive that appears twice is recorded in ``duplicates``; callers decide
  what that means (for freshness it makes the value invalid, RFC 9111 §4.2.1);
- delta-seconds larger than 2^31 are clamped to 2147483648 (RFC 9111 §1.2.2);
- quoted-string arguments are unquoted, so ``private="Set-Cookie"`` yields
  the field-name list ``[b"set-cookie"]``.
"""

from __future__ import annotations

from collections.abc import Iterable

from edge.http.fields import split_list, unquote

DELTA_MAX = 2147483648
INVALID = -1
"""Returned by :meth:`Directives.delta` for a directive present with a bad value."""


class Directives:
    """Parsed directives: name → argument (bytes, unquoted) or None for no argument."""

    __slots__ = ("args", "duplicates")

    def __init__(self, args: dict[bytes, bytes | None], duplicates: frozenset[bytes]) -> None:
        self.args = args
        self.duplicates = duplicates

    def __contains__(self, name: bytes) -> bool:
        return name in self.args

    def __bool__(self) -> bool:
        return bool(self.args)

    def __repr__(self) -> str:
        return f"Directives({self.args!r})"

    def delta(self, name: bytes) -> int | None:
        """delta-seconds of ``name``: None if absent, INVALID if malformed or duplicated."""
        if name not in self.args:
            return None
        if name in self.duplicates:
            return INVALID
        return parse_delta(self.args[name])

    def field_names(self, name: bytes) -> frozenset[bytes] | None:
        """Field names qualifying ``no-cache`` / ``private``; empty set when unqualified."""
        if name not in self.args:
            return None
        arg = self.args[name]
        if not arg:
            return frozenset()
        return frozenset(f.lower() for f in split_list([arg]))


def parse_delta(arg: bytes | None) -> int:
    if not arg or not arg.isdigit():
        return INVALID
    value = int(arg)
    return DELTA_MAX if value > DELTA_MAX else value


EMPTY = Directives({}, frozenset())
_NO_DUPLICATES: frozenset[bytes] = frozenset()
_PARSED_LIMIT = 1024
_parsed: dict[tuple[bytes, ...], Directives] = {}
"""Directives by field lines. Every stored entry keeps its Directives, and most responses
of an origin carry the same few Cache-Control values: one shared object each saves about
600 bytes per cached object (Directives are never changed after parsing)."""


def parse_cache_control(values: Iterable[bytes]) -> Directives:
    """Parse every Cache-Control field line of a message into one Directives."""
    lines = tuple(values)
    directives = _parsed.get(lines)
    if directives is None:
        directives = _parse(lines)
        if len(_parsed) >= _PARSED_LIMIT:
            _parsed.clear()
        _parsed[lines] = directives
    return directives


def _parse(values: tuple[bytes, ...]) -> Directives:
    args: dict[bytes, bytes | None] = {}
    duplicates: set[bytes] = set()
    for member in split_list(values):
        name, eq, arg = member.partition(b"=")
        name = name.strip(b" \t").lower()
        if not name:
            continue
        value = unquote(arg.strip(b" \t")) if eq else None
        if name in args:
            duplicates.add(name)
            continue  # first occurrence wins for field lists; deltas become INVALID
        args[name] = value
    if not args:
        return EMPTY
    return Directives(args, frozenset(duplicates) if duplicates else _NO_DUPLICATES)
