"""Generic field-value helpers (RFC 9110 §5): lists, tokens, quoted strings, hop-by-hop.

Everything that decides how a header *list* is split or combined lives here, so
Cache-Control, Vary and Connection parsing agree on the grammar.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

Headers = list[tuple[bytes, bytes]]
"""Header fields in wire order: (name as received, value). Names compare case-insensitively."""

TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

# RFC 9110 §7.6.1 plus the legacy fields every proxy strips.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def is_token(value: bytes) -> bool:
    return bool(value) and all(c in TCHAR for c in value)


def get_all(headers: Headers, name: bytes) -> list[bytes]:
    """Every value of field ``name`` (lower-case) in order."""
    return [v for k, v in headers if k.lower() == name]


def get_one(headers: Headers, name: bytes) -> bytes | None:
    """The combined value of ``name`` (RFC 9110 §5.3), or None when absent."""
    values = get_all(headers, name)
    if not values:
        return None
    return values[0] if len(values) == 1 else b", ".join(values)


def split_list(values: Iterable[bytes]) -> Iterator[bytes]:
    """Split comma-separated list members, honouring quoted strings; empties dropped."""
    for value in values:
        start = 0
        in_quotes = False
        escaped = False
        for i, c in enumerate(value):
            if escaped:
                escaped = False
            elif in_quotes:
                if c == 0x5C:  # backslash
                    escaped = True
                elif c == 0x22:
                    in_quotes = False
            elif c == 0x22:
                in_quotes = True
            elif c == 0x2C:  # comma
                member = value[start:i].strip(b" \t")
                if member:
                    yield member
                start = i + 1
        member = value[start:].strip(b" \t")
        if member:
            yield member


def unquote(value: bytes) -> bytes:
    """Strip a quoted-string's quotes and backslash escapes; tokens pass through."""
    if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
        out = bytearray()
        escaped = False
        for c in value[1:-1]:
            if escaped:
                out.append(c)
                escaped = False
            elif c == 0x5C:
                escaped = True
            else:
                out.append(c)
        return bytes(out)
    return value


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """Lower-cased options named in Connection: those fields are hop-by-hop too."""
    return frozenset(t.lower() for t in split_list(get_all(headers, b"connection")))


def strip_hop_by_hop(headers: Headers) -> Headers:
    """Drop hop-by-hop fields and any field the Connection header names."""
    named = connection_tokens(headers)
    return [(k, v) for k, v in headers if (lk := k.lower()) not in HOP_BY_HOP and lk not in named]


def transfer_codings(headers: Headers) -> list[bytes]:
    """The transfer codings a message's Transfer-Encoding lists, lower-cased, in order."""
    return [
        c.split(b";")[0].strip(b" \t").lower() for c in split_list(get_all(headers, b"transfer-encoding"))
    ]


def read_until_close(headers: Headers) -> tuple[bool, bool]:
    """A response's framing by RFC 9112 §6.3: (its body ends with the close, it is transfer-coded).

    Transfer-coded: a Transfer-Encoding naming any coding besides ``chunked`` (``gzip,
    chunked`` too: llhttp removes the chunking, the bytes stay gzip); such bytes are not the
    representation and are never stored. A body whose final coding is not ``chunked`` is
    read until the connection closes. With neither Transfer-Encoding nor Content-Length a
    body also ends with the close.
    """
    codings = transfer_codings(headers)
    if codings:
        until_close = codings[-1] != b"chunked"
        return until_close, until_close or any(coding != b"chunked" for coding in codings)
    return not get_all(headers, b"content-length"), False


def declared_length(headers: Headers) -> int | None:
    """The body length a message's Content-Length declares (RFC 9112 §6.3), or None.

    None when Transfer-Encoding is present, when there is no Content-Length, when the
    Content-Length lines disagree or when the value is not a number (or a numeral of more
    than 18 digits, which no body reaches and ``int()`` may refuse).
    """
    if get_one(headers, b"transfer-encoding") is not None:
        return None
    values = get_all(headers, b"content-length")
    if not values:
        return None
    distinct = {v.strip() for value in values for v in value.split(b",")}
    if len(distinct) != 1:
        return None
    raw = distinct.pop()
    digits = raw.lstrip(b"0") or b"0"
    return int(digits) if raw.isdigit() and len(digits) <= 18 else None
