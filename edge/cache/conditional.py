"""Answering a client's own conditional request from a stored response (RFC 9110 §13).

Only the GET/HEAD preconditions a cache evaluates are here: If-None-Match
(weak comparison) and, when that is absent, If-Modified-Since.
"""

from __future__ import annotations

from edge.http.dates import parse_http_date
from edge.http.fields import split_list
from edge.http.message import Request

NOT_MODIFIED_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified"}
)
"""Fields a 304 carries (RFC 9110 §15.4.5), plus Last-Modified as nginx does."""


def _opaque(tag: bytes) -> bytes:
    return tag[2:] if tag[:2] == b"W/" else tag


def is_not_modified(req: Request, etag: bytes | None, last_modified: bytes | None) -> bool:
    """True when a 200 for ``req`` may be replaced by 304 Not Modified."""
    fields = req.fields
    inm = fields.get(b"if-none-match")
    if inm is not None:
        if etag is None:
            return False
        wanted = _opaque(etag.strip())
        return any(member == b"*" or _opaque(member) == wanted for member in split_list([inm]))
    ims = fields.get(b"if-modified-since")
    if ims is not None and last_modified is not None:
        since = parse_http_date(ims)
        modified = parse_http_date(last_modified)
        return since is not None and modified is not None and modified <= since
    return False
