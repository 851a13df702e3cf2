"""Cache keys: the primary key (RFC 9111 §2) and Vary's secondary key (§4.1).

Everything that decides *which stored response a request may match* lives here.
"""

from __future__ import annotations

from edge.http.accept_encoding import accepts, normalise_for_key
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
    times. This is what CDNs do. The upstream need not pick as we do: a variant
    it encoded is stored under this key too, and :func:`accepts_coding` keeps it
    from a request with the same key that does not accept its coding.
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


def negotiated_coding(headers: Headers, vary: tuple[bytes, ...] | None) -> bytes | None:
    """The Content-Encoding a request must accept to be sent this response, lower-cased.

    None when the response does not vary on Accept-Encoding (the upstream says every
    client gets it; a shared cache sends it as is) or carries no coding but identity.
    """
    if not vary or b"accept-encoding" not in vary:
        return None
    values = get_all(headers, b"content-encoding")
    if not values:
        return None
    coding = b", ".join(split_list(values)).lower()
    return None if coding in (b"", b"identity") else coding


def accepts_coding(req: Request, coding: bytes | None) -> bool:
    """Whether ``req`` may be sent a stored response whose :func:`negotiated_coding` is ``coding``.

    Keys by the node's choice put a variant the upstream encoded in gzip under ``br`` when
    the fetching request took both; a request keyed ``br`` that does not take gzip must not
    be given it (it is a miss, and its own response replaces the variant).
    """
    return coding is None or accepts(req.fields.get(b"accept-encoding"), coding)
