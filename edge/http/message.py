"""The protocol-neutral request every adapter hands to the core, and the status facts fronts share."""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus

from edge.http.fields import Headers

NO_BODY_STATUSES = frozenset({204, 304})
"""Final statuses whose responses never carry content (RFC 9110 §6.4.1); 1xx never do either."""


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase of ``status`` (RFC 9110 §15), ``b"Unknown"`` for others."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


class Request:
    """One client request, whichever protocol it arrived on.

    Adapters fill it once; the core never re-parses the wire. ``fields`` maps
    each lower-case field name to its combined value (RFC 9110 §5.3) so rule
    code can look fields up without scanning ``headers``. Every argument may be
    passed by position: fronts build one per request, and keywords cost about
    0.2 µs more per call.
    """

    __slots__ = (
        "body",
        "client",
        "fields",
        "headers",
        "host",
        "http_version",
        "method",
        "scheme",
        "target",
        "upstream_time",
    )

    upstream_time: float
    """Seconds from sending this request upstream to the response head (see __init__)."""

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        fields: dict[bytes, bytes],
        scheme: bytes = b"http",
        host: bytes = b"",
        client: str = "",
        http_version: str = "1.1",
        body: bytes = b"",
    ) -> None:
        self.method = method
        """Request method as sent, e.g. ``b"GET"`` (methods are case-sensitive)."""
        self.target = target
        """Origin-form target: path plus optional ``?query``, exactly as received."""
        self.headers = headers
        """All header fields in wire order, names as received."""
        self.fields = fields
        """Lower-case name → combined value."""
        self.scheme = scheme
        self.host = host
        """Lower-cased authority from Host / :authority, default port removed."""
        self.client = client
        """Client address, for X-Forwarded-For and logs."""
        self.http_version = http_version
        self.body = body
        """The request body, buffered (bounded by config.max_request_body)."""
        # ``upstream_time`` (seconds to the upstream's response head, for the access log and
        # metrics) is set only when the request went upstream itself: read it with
        # getattr(req, "upstream_time", None). Not assigned here, so a hit pays nothing for it.

    def __repr__(self) -> str:
        return f"Request({self.method!r}, {self.scheme!r}://{self.host!r}{self.target!r})"


def fields_of(headers: Headers) -> dict[bytes, bytes]:
    """Build the lower-case lookup map for ``headers``, combining repeats with ", "."""
    fields: dict[bytes, bytes] = {}
    for name, value in headers:
        lname = name.lower()
        if lname in fields:
            # Cookie is the one field RFC 9110 §5.3 says to combine with "; ".
            sep = b"; " if lname == b"cookie" else b", "
            fields[lname] = fields[lname] + sep + value
        else:
            fields[lname] = value
    return fields


_AUTHORITY = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
"""RFC 3986 host (reg-name, IPv4 or [IPv6]) with an optional port: no "/", "?", "#", "@" or spaces."""


def split_pseudo(
    pairs: Iterable[tuple[bytes, bytes]],
) -> tuple[bytes | None, bytes | None, bytes | None, Headers]:
    """``(:method, :path, :authority, regular fields)`` of an HTTP/2 or HTTP/3 field list."""
    method = path = authority = None
    headers: Headers = []
    for name, value in pairs:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
        else:
            headers.append((name, value))
    return method, path, authority, headers


def request_path_ok(path: bytes, method: bytes) -> bool:
    """Whether an HTTP/2 or HTTP/3 ``:path`` is origin form, or ``*`` for OPTIONS.

    RFC 9113 §8.3.1 / RFC 9114 §4.3.1. The cache key joins authority and path, so
    ``example.co`` + ``m/app.js`` must never read as ``example.com/app.js``. (The
    HTTP/1.1 front applies the same rule inline and also takes the absolute form.)
    """
    return path[:1] == b"/" or (path == b"*" and method == b"OPTIONS")


def valid_authority(host: bytes) -> bool:
    """Whether a Host value (or absolute-form authority) is syntactically an authority.

    A Host such as ``example.com/foo`` must be refused: the cache key joins host
    and path, so it would otherwise alias ``example.com`` + ``/foo/...``.
    """
    return _AUTHORITY.fullmatch(host) is not None


def normalize_host(host: bytes, scheme: bytes) -> bytes:
    """Lower-case a Host value and drop the scheme's default port."""
    host = host.strip().lower()
    default = b":80" if scheme == b"http" else b":443"
    if host.endswith(default):
        host = host[: -len(default)]
    return host
