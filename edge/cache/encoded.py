"""Encoded siblings of a stored identity response (RFC 9110 §8.4, §8.8.3, §12.5.3).

The node compresses a compressible object once per coding and keeps each
result next to the identity entry. Rules this module guarantees:
- only a 200 with no Content-Encoding, no ``no-transform`` (RFC 9110 §7.7), a
  compressible type and at least ``min_size`` bytes is ever compressed;
- every sibling carries ``Content-Encoding`` and its own strong validator (the
  entity-tag with ``-<coding>`` appended inside the quotes), because two
  representations must never share an ETag;
- the identity entry and its siblings say ``Vary: Accept-Encoding``;
- a body encoded as a miss streamed (a fast level, flushed per chunk) carries the weak
  form of that validator (``W/"abc-br"``): its bytes differ from the stored variant made
  later at the configured level, which says the same under weak comparison.
"""

from __future__ import annotations

from edge.cache.entry import Entry
from edge.cache.freshness import Policy
from edge.http.cache_control import Directives
from edge.http.compressible import is_compressible
from edge.http.fields import Headers, get_all, get_one, split_list


def may_compress(
    status: int, headers: Headers, directives: Directives, length: int | None, min_size: int
) -> bool:
    """Whether a response is a candidate for compression by this node."""
    if status != 200 or b"no-transform" in directives:
        return False
    encoding = get_one(headers, b"content-encoding")
    if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
        return False
    if get_one(headers, b"content-range") is not None:
        return False
    if length is not None and length < min_size:
        return False
    return is_compressible(get_one(headers, b"content-type"))


def with_vary_accept_encoding(headers: Headers) -> Headers:
    """``headers`` plus ``Vary: Accept-Encoding`` unless Vary already lists it (or is ``*``)."""
    listed = {name.lower() for name in split_list(get_all(headers, b"vary"))}
    if b"accept-encoding" in listed or b"*" in listed:
        return headers
    return [*headers, (b"Vary", b"Accept-Encoding")]


def sibling_etag(etag: bytes, coding: bytes, weak: bool = False) -> bytes:
    """``"abc"`` → ``"abc-br"`` (``W/"abc-br"`` when ``weak``); ``W/"abc"`` → ``W/"abc-br"``."""
    etag = etag.strip()
    if etag.endswith(b'"') and len(etag) >= 2:
        prefix = b"W/" if weak and not etag.startswith(b"W/") else b""
        return prefix + etag[:-1] + b"-" + coding + b'"'
    return etag


def encoded_fields(headers: Headers, coding: bytes, weak: bool = False) -> Headers:
    """The fields of ``headers``' representation encoded in ``coding``: its own validator
    (weak for a body encoded as it streamed) and Content-Encoding."""
    out: Headers = []
    for name, value in headers:
        lname = name.lower()
        if lname == b"etag":
            value = sibling_etag(value, coding, weak)
        elif lname == b"content-encoding":
            continue
        out.append((name, value))
    out.append((b"Content-Encoding", coding))
    return out


def is_weak(entry: Entry) -> bool:
    """Whether ``entry``'s validator is weak (a variant encoded as it streamed has one)."""
    etag = get_one(entry.headers, b"etag")
    return etag is not None and etag.lstrip().startswith(b"W/")


def encoded_sibling(entry: Entry, coding: bytes, body: bytes, weak: bool = False) -> Entry:
    """The entry for ``coding``: same freshness and fields, its own body, coding and validator."""
    headers = encoded_fields(entry.headers, coding, weak)
    sibling = Entry(
        entry.key,
        entry.status,
        entry.reason,
        headers,
        body,
        entry.policy,
        entry.response_time,
        entry.corrected_initial_age,
        entry.vary,
    )
    sibling.fresh_until = entry.fresh_until
    return sibling


def freshened(stale: Entry, fields: Headers, policy: Policy, response_time: float, age: float) -> Entry:
    """A new entry for ``stale``'s body after a 304: new fields and freshness, the same siblings' bodies.

    The siblings are rebuilt on the new entry (their fields follow the identity
    entry's), so a freshened object does not lose its compressed variants.
    """
    entry = Entry(
        stale.key, stale.status, stale.reason, fields, stale.body, policy, response_time, age, stale.vary
    )
    if stale.encodings is not None:
        entry.encodings = {
            coding: entry
            if sibling is stale
            else encoded_sibling(entry, coding, sibling.body, is_weak(sibling) and not is_weak(stale))
            for coding, sibling in stale.encodings.items()
        }
    return entry
