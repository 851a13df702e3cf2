"""Cache-Control (RFC 9111 §5.2) and its targeted variants (RFC 9213).

Rules this module guarantees:
- a targeted field (CDN-Cache-Control, Edge-Cache-Control) is an RFC 8941 Dictionary,
  parsed by the ``http-sf`` library (:func:`parse_targeted`); one that does not parse,
  is empty, or holds a known directive with a value of the wrong type (``max-age="10"``,
  ``max-age=a``, ``no-store=?0``) is ignored whole (None), so Cache-Control rules;
  parameters on directives are ignored (RFC 9213 §2.1);
- directive names are case-insensitive and returned lower-case;
- a directive that appears twice is recorded in ``duplicates``; callers decide
  what that means (for freshness it makes the value invalid, RFC 9111 §4.2.1);
- delta-seconds larger than 2^31 are clamped to 2147483648 (RFC 9111 §1.2.2);
- quoted-string arguments are unquoted, so ``private="Set-Cookie"`` yields
  the field-name list ``[b"set-cookie"]``.
"""

from __future__ import annotations

from collections.abc import Iterable

import http_sf

from edge.http.fields import split_list, unquote

DELTA_MAX = 2147483648
INVALID = -1
"""Returned by :meth:`Directives.delta` for a directive present with a bad value."""
_DELTA_MAX_DIGITS = len(str(DELTA_MAX))


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
    digits = arg.lstrip(b"0") or b"0"
    if len(digits) > _DELTA_MAX_DIGITS:
        return DELTA_MAX  # before int(), which refuses numerals of more than 4,300 digits
    value = int(digits)
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


# --- targeted fields (RFC 9213): Structured Field Dictionaries -----------------------------

TARGETED_DELTAS = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})
"""Directives whose value is delta-seconds: a non-negative Integer in a targeted field."""
TARGETED_FLAGS = frozenset(
    {"no-store", "must-revalidate", "proxy-revalidate", "public", "immutable", "no-transform"}
    | {"must-understand"}
)
"""Directives without an argument: Boolean true (a bare key) in a targeted field."""
TARGETED_FIELD_LISTS = frozenset({"no-cache", "private"})
"""Directives that are Boolean true or a String of comma-separated field names."""

_targeted: dict[tuple[bytes, ...], Directives | None] = {}


def parse_targeted(values: Iterable[bytes]) -> Directives | None:
    """The directives of a targeted field's lines (RFC 9213 §2.1), or None to ignore it.

    The lines are combined (RFC 8941 §4.2) and parsed as a Dictionary by ``http-sf``.
    None when that fails, when it is empty, or when a directive this node knows has a
    value of another type than RFC 9213 §2.1 gives it (the whole field is then ignored,
    not the one directive). Unknown directives are kept by name only.
    """
    lines = tuple(values)
    if lines in _targeted:
        return _targeted[lines]
    directives = _parse_targeted(lines)
    if len(_targeted) >= _PARSED_LIMIT:
        _targeted.clear()
    _targeted[lines] = directives
    return directives


def _parse_targeted(lines: tuple[bytes, ...]) -> Directives | None:
    try:
        parsed = http_sf.parse(b", ".join(lines), tltype="dictionary")
    except ValueError:  # http_sf.StructuredFieldError is one
        return None
    if not isinstance(parsed, dict) or not parsed:
        return None
    args: dict[bytes, bytes | None] = {}
    try:
        for name, member in parsed.items():
            value = member[0] if isinstance(member, tuple) else member  # parameters are ignored
            args[name.encode("ascii")] = _targeted_arg(name, value)
    except _WrongType:
        return None
    return Directives(args, _NO_DUPLICATES)


class _WrongType(Exception):
    """A known directive with a value of another type than RFC 9213 §2.1 gives it."""


def _targeted_arg(name: str, value: object) -> bytes | None:
    """The directive's argument as Cache-Control parsing gives it (raises ``_WrongType``)."""
    if name in TARGETED_DELTAS:
        if type(value) is int and value >= 0:  # a Boolean is an int in Python, but not here
            return b"%d" % value
        raise _WrongType(name)
    if name in TARGETED_FLAGS:
        if value is True:
            return None
        raise _WrongType(name)
    if name in TARGETED_FIELD_LISTS:
        if value is True:
            return None
        if type(value) is str:
            return value.encode("ascii")
        raise _WrongType(name)
    return None  # an extension directive: its name is all this node could act on
