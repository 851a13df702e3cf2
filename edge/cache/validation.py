"""Validating a stored response with the upstream (RFC 9111 §4.3).

A stale entry is revalidated with its own validators; a 304 then freshens the
stored header fields (§3.2, §4.3.4) and the stored body is served again. A 200 to a
HEAD request that describes the stored GET response updates its fields the same way
(§4.3.5); one that does not makes it stale.
"""

from __future__ import annotations

from edge.cache.entry import Entry
from edge.http.fields import HOP_BY_HOP, Headers, get_one

NOT_UPDATED_BY_304 = HOP_BY_HOP | {b"content-length", b"content-range", b"content-encoding"}
"""Fields a 304 must not change in the stored response: framing and the body's own coding."""


def conditional_fields(entry: Entry) -> Headers:
    """If-None-Match and If-Modified-Since built from the entry's validators."""
    fields: Headers = []
    if entry.etag is not None:
        fields.append((b"If-None-Match", entry.etag))
    if entry.last_modified is not None:
        fields.append((b"If-Modified-Since", entry.last_modified))
    return fields


def merge_not_modified(stored: Headers, fresh: Headers) -> Headers:
    """Stored fields with every field the 304 carries replaced by the 304's lines."""
    updated = {k.lower() for k, _ in fresh} - NOT_UPDATED_BY_304
    merged = [(k, v) for k, v in stored if k.lower() not in updated]
    merged += [(k, v) for k, v in fresh if k.lower() in updated]
    return merged


def validators_match(entry: Entry, fresh: Headers) -> bool:
    """A 304 applies to the entry only if its ETag (when it sends one) is the entry's."""
    for name, value in fresh:
        if name.lower() == b"etag":
            return entry.etag is not None and value.strip() == entry.etag.strip()
    return True


def head_describes(entry: Entry, head: Headers, length: int | None) -> bool:
    """RFC 9111 §4.3.5: may a 200 to HEAD (end-to-end ``head`` fields) update the stored GET ``entry``?

    Only when it sends a validator (ETag or Last-Modified), every one it sends is the
    entry's (ETags compared strongly: the same characters), the Content-Length it declares
    (``length``), if any, is the stored body's, and its Content-Encoding is the entry's
    (another coding is another representation). Otherwise the stored response is to be
    considered stale. Conservative where §4.3.5 says "any received validator": a HEAD
    response without one describes nothing in particular.
    """
    etag = get_one(head, b"etag")
    modified = get_one(head, b"last-modified")
    if etag is None and modified is None:
        return False
    if etag is not None and (entry.etag is None or etag.strip() != entry.etag.strip()):
        return False
    if modified is not None and (
        entry.last_modified is None or modified.strip() != entry.last_modified.strip()
    ):
        return False
    if length is not None and length != len(entry.body):
        return False
    return get_one(head, b"content-encoding") == get_one(entry.headers, b"content-encoding")
