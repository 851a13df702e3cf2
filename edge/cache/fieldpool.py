"""One shared copy of each header field that many stored responses carry.

Most of a stored response's fields are the same across a site: ``Server``,
``Content-Type``, ``Cache-Control``, ``Accept-Ranges``, this node's ``Via``, and
``Date``/``Last-Modified`` for objects made or fetched in the same second. Each
``(name, value)`` pair is a tuple of two bytes objects, about 120 bytes for a short
field; a cache of small objects holds millions of them. :func:`pooled` hands out one
copy per distinct pair, so a stored 1 KiB object costs a pointer per common field
instead (``docs/architecture.md``, "Memory per object").

Guarantees: :func:`pooled` returns a pair equal to the one given (bytes are immutable,
so sharing one is never visible); the pool holds at most ``POOL_SIZE`` pairs and is
emptied when full, so fields that never repeat cannot grow it (pairs already handed
out stay shared by the responses holding them). ``ETag`` values are unique per
representation and never pooled, nor is ``Set-Cookie``.
"""

from __future__ import annotations

from edge.http.fields import Headers

__all__ = ["POOL_SIZE", "pooled", "pooled_fields"]

POOL_SIZE = 4096
"""Distinct pairs kept at once."""

_POOL: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}

_NEVER_POOLED = frozenset(
    {b"etag", b"content-md5", b"digest", b"content-digest", b"repr-digest", b"set-cookie"}
)
"""Fields whose values identify one representation or one client (a pass-through's
Set-Cookie): pooling them would only churn the pool."""


def pooled(field: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    """The pool's copy of ``field`` (``field`` itself the first time it is seen)."""
    shared = _POOL.get(field)
    if shared is None:
        if len(_POOL) >= POOL_SIZE:
            _POOL.clear()
        shared = _POOL[field] = field
    return shared


def pooled_fields(fields: Headers) -> Headers:
    """``fields`` with every pair but the never-pooled ones replaced by its pooled copy."""
    return [field if field[0].lower() in _NEVER_POOLED else pooled(field) for field in fields]
