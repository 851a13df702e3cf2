"""The field a worker adds when it asks a sibling worker of the same node for an object.

A node's workers ask each other over private Unix sockets (the owner of a key fetches
it once for the node). The asking worker forwards the client's request as it came and
adds ``Edge-Internal`` saying what the socket cannot: the client's address, the scheme
the request arrived with (part of the cache key) and its HTTP version.

Guarantees:
- the field is only ever believed on a sibling socket (a public front never reads
  it), and the gateway drops a client's own ``Edge-Internal`` from everything it
  forwards, so a client cannot speak for a worker;
- a value that does not parse is refused (None), never half-read.
"""

from __future__ import annotations

__all__ = ["INTERNAL_FIELD", "format_internal", "parse_internal"]

INTERNAL_FIELD = b"edge-internal"

_SCHEMES = (b"http", b"https")
_VERSIONS = (b"1.0", b"1.1", b"2", b"3")


def format_internal(client: str, scheme: bytes, http_version: str) -> bytes:
    """``client=192.0.2.7; scheme=https; version=2``."""
    return b"client=%s; scheme=%s; version=%s" % (client.encode(), scheme, http_version.encode())


def parse_internal(value: bytes) -> tuple[str, bytes, str] | None:
    """``(client, scheme, http_version)`` from a value :func:`format_internal` made, else None."""
    params: dict[bytes, bytes] = {}
    for part in value.split(b";"):
        name, sep, val = part.strip().partition(b"=")
        if not sep or name in params:
            return None
        params[name] = val
    client, scheme, version = params.get(b"client"), params.get(b"scheme"), params.get(b"version")
    if client is None or scheme not in _SCHEMES or version not in _VERSIONS or len(params) != 3:
        return None
    if any(c in client for c in b' ,"\\'):
        return None
    return client.decode("latin-1"), scheme, version.decode()
