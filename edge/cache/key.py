"""Cache keys: the primary key (RFC 9111 §2) and Vary's secondary key (§4.1).

Everything that decides *which stored response a request may match* lives here.
"""

from __future__ import annotations

from edge.http.accept_encoding import normalise_for_key
from edge.http.fields import Headers, get_all, split_list
from edge.http.message import Request


def primary_key(req: Request) -> bytes:
    """scheme://host + target. The target is kept as received so distinct queries stay distinct.

    The fast hit, the full path, purge and invalidation all key through this module
    (:func:`url_key` for a URL that is not a request's), so they can never disagree.
    """
    return req.scheme + b"://" + req.host + req.target


def url_key(scheme: bytes, host: bytes, target: bytes) -> bytes:
    """The key :func:`primary_key` gives a request for ``scheme://host`` + ``target``.

    ``host`` must already be normalised as requests' hosts are (``normalize_host``).
    """
    return scheme + b"://" + host + target


def vary_names(values: list[bytes]) -> tuple[bytes, ...] | None:
    """Lower-cased, de-duplicated, sorted Vary field names; None for ``Vary: *``."""
    names = {n.lower() for n in split_list(values)}
    if b"*" in names:
        return None
    return tuple(sorted(names))


def with_vary(headers: Headers, names: tuple[bytes, ...]) -> Headers:
    """``headers`` plus a Vary field naming those of ``names`` it does not list yet; as is
    when ``Vary: *`` (nothing to add) or every name is listed."""
    listed = vary_names(get_all(headers, b"vary"))
    if listed is None:
        return headers
    missing = [name for name in names if name not in listed]
    if not missing:
        return headers
    return [*headers, (b"Vary", b", ".join(missing))]


def _normalise(value: bytes) -> bytes:
    # RFC 9111 §4.1: whitespace and list-member differences do not make a
    # different variant; case of the value is significant for most fields.
    return b",".join(m for m in split_list([value]))


def secondary_key(req: Request, names: tuple[bytes, ...]) -> bytes:
    """The request's values for the Vary fields, normalised, in ``names`` order.

    Accept-Encoding is keyed by the coding the request would get (br, zstd,
    gzip or identity), not its spelling: browsers send dozens of spellings of
    the same preference, and keying by them would store the same bytes many
    times. This is what CDNs do; the upstream is assumed to pick as we do.
    """
    fields = req.fields
    parts = []
    for name in names:
        value = fields.get(name)
        if name == b"accept-encoding":
            parts.append(b"identity" if value is None else normalise_for_key(value))
        else:
            parts.append(b"\x00" if value is None else _normalise(value))
    return b"\x01".join(parts)
