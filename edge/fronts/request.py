"""Building and checking the protocol-neutral ``Request``: one set of rules for every front.

Guarantees, on HTTP/1.1, HTTP/2, HTTP/3 and the ASGI adapter alike:

- the same request is refused with the same status and the same body text,
  ``"{status} {reason phrase}: {why}\\n"`` (:attr:`Refusal.body`);
- limits from the node's config: a target (``:path``) longer than ``max_request_line``
  gets 414; more than ``max_header_count`` fields, or a field block (:func:`block_size`)
  larger than ``max_header_bytes + max_request_line``, gets 431; a Content-Length over
  ``max_request_body`` gets 413 before any of the body is buffered;
- CONNECT gets 405; a missing Host (except HTTP/1.0) or one that is not an authority
  gets 400, as do HTTP/2 and HTTP/3 requests without ``:method`` or ``:path``, or whose
  ``:path`` is not in origin form (the cache key joins host and path);
- a Host value is checked and normalised once per scheme and process, then found in a
  bounded cache that every front of that scheme shares: a cached value is valid;
- with a ``hosts`` allow-list (``edge.http.hosts``), a host it does not list gets 421
  Misdirected Request; the check runs when a Host value is first learnt (a separate cache
  per allow-list holds only allowed values), so a known host costs the fast hit nothing;
- the scheme is the listener's, except for a peer in ``trusted_proxies`` (the edges in
  front of a shield, a TLS-terminating load balancer), whose X-Forwarded-Proto says it:
  a shield then keys an https client's request as https, like the edge did.

Nothing here does I/O: a front catches :class:`Refusal` and answers it on its own wire.
The HTTP/1.1 front applies the same limits as the bytes stream in (so unbounded input
is never buffered) with the refusals made here, and ends with :meth:`RequestRules.finish`
like the others. HTTP/2's own field rules (RFC 9113 §8.2-8.3) stay in
:mod:`edge.http.h2_request`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edge.config import Config, parse_hosts
from edge.core.clients import ClientLimits
from edge.http.fields import Headers
from edge.http.hosts import HostAllowList
from edge.http.message import (
    Request,
    fields_of,
    normalize_host,
    reason_phrase,
    request_path_ok,
    valid_authority,
)
from edge.http.peers import TrustedProxies

__all__ = [
    "HOST_CACHE_SIZE",
    "Refusal",
    "RequestRules",
    "block_size",
    "block_too_large",
    "body_too_large",
    "combine_repeated",
    "target_too_long",
    "too_many_fields",
]

HOST_CACHE_SIZE = 4096
"""Distinct raw Host values remembered per scheme; a node sees few, so the cache is simply
emptied when it fills (a flood of made-up hosts costs a re-check, never memory)."""

_HOSTS: dict[bytes, dict[bytes, bytes]] = {b"http": {}, b"https": {}}
"""Per scheme: raw Host / :authority value → normalised host, for values already checked."""

_ALLOWED_HOSTS: dict[tuple[bytes, tuple[str, ...]], dict[bytes, bytes]] = {}
"""The same per scheme and ``hosts`` allow-list, when one is configured: a value in it is
valid *and* allowed, so the allow-list costs nothing once a host is known."""


class Refusal(Exception):
    """A request the node answers itself, with ``status`` and a short reason, ``why``."""

    def __init__(self, status: int, why: str, retry_after: int = 0) -> None:
        super().__init__(why)
        self.status = status
        self.why = why
        self.retry_after = retry_after
        """Seconds a client should wait before asking again (429), 0 for none."""

    @property
    def fields(self) -> list[tuple[bytes, bytes]]:
        """Fields the answer carries besides its type and length: ``Retry-After`` for a 429."""
        return [(b"retry-after", b"%d" % self.retry_after)] if self.retry_after else []

    @property
    def body(self) -> bytes:
        """The text every front sends: ``b"414 URI Too Long: request target too long\\n"``."""
        return b"%d %s: %s\n" % (self.status, reason_phrase(self.status), self.why.encode())


def target_too_long() -> Refusal:
    return Refusal(414, "request target too long")


def too_many_fields() -> Refusal:
    return Refusal(431, "too many header fields")


def block_too_large() -> Refusal:
    return Refusal(431, "request header block too large")


def body_too_large() -> Refusal:
    return Refusal(413, "request body too large")


def block_size(target: bytes, headers: Headers) -> int:
    """Size of a request head as HTTP/1.1 frames it, less method and version: the target,
    plus ``name: value`` and CRLF per field. The HTTP/2 and HTTP/3 sizes count ``:path``
    as the target and ``:authority`` as a field value, so one limit means the same on all."""
    size = len(target) + 4 * len(headers)
    for name, value in headers:  # a plain loop: half the time of sum() over a generator here
        size += len(name) + len(value)
    return size


def combine_repeated(headers: Headers) -> dict[bytes, bytes]:
    """The lookup map of a field list that repeats a name (rare: the fronts try a plain
    dict first); 400 when the repeated name is Host, which would be ambiguous."""
    if sum(1 for name, _ in headers if name.lower() == b"host") > 1:
        raise Refusal(400, "more than one Host field")
    return fields_of(headers)


class RequestRules:
    """The limits and the Host cache for one scheme, from the node's config.

    Cheap to make (one per connection is fine); the Host cache behind it is per process.
    """

    __slots__ = (
        "allowed", "clock", "hosts", "max_block", "max_body", "max_count", "max_target", "rate", "scheme",
        "trusted",
    )  # fmt: skip

    def __init__(
        self,
        config: Config,
        scheme: bytes,
        clients: ClientLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clients``: the worker's per-address budgets; its rate limit, when on, refuses
        requests over it with 429."""
        if scheme not in _HOSTS:
            raise ValueError(f"scheme must be http or https, not {scheme!r}")
        self.scheme = scheme
        self.max_target = config.max_request_line
        """Longest request target or ``:path`` (414 beyond)."""
        self.max_block = config.max_header_bytes + config.max_request_line
        """Largest field block as :func:`block_size` measures it (431 beyond)."""
        self.max_count = config.max_header_count
        """Most header fields, pseudo-headers not counted (431 beyond)."""
        self.max_body = config.max_request_body
        """Largest request body (413 beyond)."""
        self.allowed = HostAllowList.of(parse_hosts(config.hosts))
        """The hosts this node serves (None: any)."""
        if self.allowed is None:
            self.hosts = _HOSTS[scheme]
        else:
            self.hosts = _ALLOWED_HOSTS.setdefault((scheme, self.allowed.patterns), {})
        self.trusted = TrustedProxies.of(config.trusted_proxies)
        """Peers whose X-Forwarded-Proto says the scheme (None: nobody)."""
        self.rate = clients if clients is not None and clients.rate is not None else None
        """The rate limit to charge each request to (None: off, one test per request)."""
        self.clock = clock

    def from_pseudo(
        self,
        method: bytes | None,
        path: bytes | None,
        authority: bytes | None,
        headers: Headers,
        client: str,
        http_version: str,
    ) -> Request:
        """The request of an HTTP/2 or HTTP/3 field block split by
        :func:`edge.http.message.split_pseudo` (the ASGI adapter passes its scope the same
        way, with no ``:authority``); raises :class:`Refusal`.

        ``headers`` must have lower-case names (the HTTP/2 and HTTP/3 libraries and ASGI
        guarantee it). Without a Host field, ``(b"host", :authority)`` is put first in
        ``headers``, as RFC 9113 §8.3.1 asks of a server forwarding over HTTP/1.1.
        """
        if method is None:
            raise Refusal(400, "missing :method")
        if not path:
            if method == b"CONNECT":  # CONNECT carries no :path
                raise _connect_refused()
            raise Refusal(400, "missing :path")
        if len(path) > self.max_target:
            raise target_too_long()
        if len(headers) > self.max_count:
            raise too_many_fields()
        if block_size(path, headers) + (len(authority) if authority else 0) > self.max_block:
            raise block_too_large()
        if not request_path_ok(path, method):
            raise Refusal(400, ":path is not an absolute path")
        fields = dict(headers)
        if len(fields) != len(headers):
            fields = combine_repeated(headers)  # repeated fields (e.g. cookie crumbs): rare
        host = fields.get(b"host")
        if host is None and authority is not None:
            headers.insert(0, (b"host", authority))
            fields[b"host"] = host = authority
            return self.finish(method, path, headers, fields, host, client, http_version, ":authority")
        return self.finish(method, path, headers, fields, host, client, http_version)

    def finish(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        fields: dict[bytes, bytes],
        host: bytes | None,
        client: str,
        http_version: str,
        host_from: str = "Host field",
    ) -> Request:
        """The step every front ends with: CONNECT (405), Host present (but for HTTP/1.0)
        and valid (400) and one this node serves (421), Content-Length within the limit
        (413), then the ``Request`` with the normalised host. ``host_from`` names where
        ``host`` came from in a 400. With a rate limit, a request over it is 429 first."""
        if self.rate is not None:
            wait = self.rate.retry_after(client, self.clock())
            if wait:
                raise Refusal(429, "too many requests from this address", retry_after=wait)
        if method == b"CONNECT":
            raise _connect_refused()
        if host is None:
            if http_version != "1.0":
                raise Refusal(400, "missing Host field")
            host = b""
        normal = self.hosts.get(host)
        if normal is None:
            if not valid_authority(host):
                # The key joins host and path: "example.com/foo" must not alias another URL.
                raise Refusal(400, f"invalid {host_from}")
            normal = self._learn(host)
        length = fields.get(b"content-length")
        if length is not None and length.isdigit() and (len(length) > 18 or int(length) > self.max_body):
            raise body_too_large()  # (more than 18 digits is past any limit, and int() refuses 4,300)
        if self.trusted is not None and b"x-forwarded-proto" in fields and self.trusted.trusts(client):
            scheme = fields[b"x-forwarded-proto"].strip().lower()
            if scheme in _HOSTS and scheme != self.scheme:
                # A trusted edge (or load balancer) says the client came over this scheme:
                # the key must be that scheme's, or http and https answers would mix.
                return Request(
                    method,
                    target,
                    headers,
                    fields,
                    scheme,
                    normalize_host(host, scheme),
                    client,
                    http_version,
                )
        # By position: keywords would cost a hit about 0.2 µs (benchmarks.hit_path_micro).
        return Request(method, target, headers, fields, self.scheme, normal, client, http_version)

    def _learn(self, host: bytes) -> bytes:
        """Normalise a valid Host value not seen before; 421 when the allow-list refuses it
        (a refused value is not remembered, so the cache holds only hosts to serve)."""
        normal = normalize_host(host, self.scheme)
        if self.allowed is not None and not self.allowed.allows(normal):
            raise Refusal(421, "this node does not serve that host")
        hosts = self.hosts
        if len(hosts) >= HOST_CACHE_SIZE:
            hosts.clear()
        hosts[host] = normal
        return normal


def _connect_refused() -> Refusal:
    return Refusal(405, "CONNECT is not supported: this is a cache, not a tunnel")
