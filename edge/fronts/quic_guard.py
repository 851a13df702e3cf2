"""Connection state before address validation, bounded: QUIC Retry above a threshold.

A QUIC server keeps a connection (TLS state, keys, buffers: ≈40 KB on qh3) for every Initial
with an unknown Destination Connection ID, before anything proves the client owns its source
address. Measured here before this module (issue 17): 3,000 aioquic Initials from 300 source
ports in 6 s cost the edge +129 MiB RSS and made a normal HTTP/3 client wait 4.7 s.

:func:`guarded_server_class` puts :class:`HalfOpen` in front of the library's ``QuicServer``
(qh3 or aioquic, the same code): each new connection is *half-open* until its handshake
completes or it goes away. A new Initial is

- admitted while its listener has fewer than ``retry_above`` half-open connections and its
  source address fewer than ``retry_above_per_address``;
- otherwise answered with a Retry (RFC 9000 §8.1.2): one packet, no state kept; a client that
  owns its address comes back with the token and is admitted as validated (its connection has
  no amplification limit), a spoofed or fire-and-forget source costs nothing more;
- dropped when the listener already has ``max_half_open`` half-open connections, token or not.

Before validation a server sends at most three times what it received from an address
(RFC 9000 §8.1): the QUIC library enforces it per connection (see ``edge/fronts/qh3_io.py``
for qh3's counting), and a Retry is smaller than the Initial it answers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HalfOpen", "HalfOpenLimits", "guarded_server_class", "initial_header"]

_QUIC_V1 = b"\x00\x00\x00\x01"
_QUIC_V2 = b"\x6b\x33\x43\xcf"
_INITIAL_TYPE = {_QUIC_V1: 0, _QUIC_V2: 1}  # RFC 9000 §17.2.2, RFC 9369 §3.2
_TOKEN_SIZE = 256
"""Both libraries' Retry tokens: the address and connection IDs under RSA-2048."""


@dataclass(frozen=True)
class HalfOpenLimits:
    retry_above: int = 64
    """Half-open connections of a listener from which new Initials get a Retry."""
    retry_above_per_address: int = 8
    """Half-open connections from one source address from which its new Initials get a Retry."""
    max_half_open: int = 1024
    """Half-open connections of a listener beyond which new Initials are dropped."""


@dataclass
class HalfOpen:
    """Half-open connections of one listener, per source address; sans-I/O."""

    limits: HalfOpenLimits = field(default_factory=HalfOpenLimits)
    conns: dict[Any, tuple[str, bytes]] = field(default_factory=dict)
    """protocol → (source host, a connection ID it is routed by)."""
    per_host: Counter[str] = field(default_factory=Counter)
    admitted: int = 0
    retries: int = 0
    dropped: int = 0

    def add(self, protocol: Any, host: str, cid: bytes) -> None:
        self.conns[protocol] = (host, cid)
        self.per_host[host] += 1
        self.admitted += 1

    def prune(self, routes: dict[bytes, Any]) -> None:
        """Forget connections whose handshake completed or which the server no longer routes."""
        for protocol, (host, cid) in list(self.conns.items()):
            quic = getattr(protocol, "_quic", None)
            if routes.get(cid) is not protocol or getattr(quic, "_handshake_complete", True):
                del self.conns[protocol]
                self.per_host[host] -= 1
                if not self.per_host[host]:
                    del self.per_host[host]

    def verdict(self, host: str, validated: bool) -> str:
        """``"admit"``, ``"retry"`` or ``"drop"`` for a new connection's Initial from ``host``."""
        limits = self.limits
        total = len(self.conns)
        if total >= limits.max_half_open:
            self.dropped += 1
            return "drop"
        if validated or (total < limits.retry_above and self.per_host[host] < limits.retry_above_per_address):
            return "admit"
        self.retries += 1
        return "retry"


def initial_header(data: bytes) -> tuple[bytes, bytes] | None:
    """(Destination CID, token) of a QUIC v1/v2 Initial packet at the start of ``data``, else None."""
    if len(data) < 7 or data[0] & 0xC0 != 0xC0:
        return None
    packet_type = _INITIAL_TYPE.get(data[1:5])
    if packet_type is None or (data[0] >> 4) & 0x03 != packet_type:
        return None
    dcid_end = 6 + data[5]
    if data[5] > 20 or dcid_end >= len(data):
        return None
    at = dcid_end + 1 + data[dcid_end]
    if at >= len(data):
        return None
    size = 1 << (data[at] >> 6)
    token_length = int.from_bytes(data[at : at + size], "big") & ((1 << (8 * size - 2)) - 1)
    token_start = at + size
    if token_start + token_length > len(data):
        return None
    return data[6:dcid_end], data[token_start : token_start + token_length]


def guarded_server_class(base: type, limits: HalfOpenLimits | None = None) -> type:
    """``base`` (qh3's or aioquic's ``QuicServer``) with new connections bounded by :class:`HalfOpen`.

    Uses the server's ``_protocols`` (connection ID → protocol) and ``_retry`` (the token
    handler, consulted per Initial): the same names in both libraries.
    """

    class GuardedQuicServer(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["retry"] = True  # builds the token handler; used only when a verdict says so
            super().__init__(*args, **kwargs)
            self._tokens: Any = self._retry
            self._retry: Any = None
            self.half_open = HalfOpen(limits or HalfOpenLimits())
            self.draining = False
            """Set by a graceful shutdown: Initials of new connections are dropped (the
            client goes to another node), open connections are served on."""

        def datagram_received(self, data: bytes, addr: Any) -> None:
            if len(data) < 1200 or not data[0] & 0x80:  # no Initial that could open a connection
                super().datagram_received(data, addr)
                return
            header = initial_header(data)
            if header is None or header[0] in self._protocols:
                super().datagram_received(data, addr)
                return
            if self.draining:
                return
            dcid, token = header
            ours = len(token) == _TOKEN_SIZE  # a Retry token of ours (no NEW_TOKEN is issued)
            half_open = self.half_open
            limits = half_open.limits
            if len(half_open.conns) >= min(limits.retry_above, limits.retry_above_per_address):
                half_open.prune(self._protocols)
            verdict = half_open.verdict(addr[0], ours)
            if verdict == "drop":
                return
            # With the handler set the library answers a token-less Initial with a Retry and
            # admits one whose token it validates (as validated: no amplification limit), and
            # drops it otherwise; without it, it admits the Initial and ignores any token.
            self._retry = self._tokens if verdict == "retry" or ours else None
            try:
                super().datagram_received(data, addr)
            finally:
                self._retry = None
            protocol = self._protocols.get(dcid)
            if protocol is not None and protocol not in half_open.conns:
                half_open.add(protocol, addr[0], dcid)

    return GuardedQuicServer
