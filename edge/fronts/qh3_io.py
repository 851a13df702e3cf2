"""What the HTTP/3 server needs from qh3 beyond its public API: Chromium's zero-length
connection IDs, batched UDP I/O, and no per-packet log parsing.

Measured here (256 KiB hits over HTTP/3, the edge pinned to one core, py-spy): one
``sendto`` per 1200-byte packet took 42 % of the edge's CPU, and qh3's packet logging,
which parses every sent packet's header even with no logger attached, another 7 %.
qh3 2.1 ships a datagram transport with GSO/GRO (recvmmsg and segmented sendmsg through
quinn-udp) that its *client* uses and its ``serve()`` does not; :func:`open_endpoint`
puts our server on it and :class:`batched_server_class` hands each run of short-header
packets for one connection to the Rust core in one call (``receive_many_datagrams``).

:func:`connection_class` and :func:`open_endpoint` check that the qh3 internals they rely
on exist and fall back when they do not; :func:`batched_server_class` uses QuicServer's
``_protocols``, ``_configuration`` and ``_loop``, which a test exercises on every run.
qh3 is pinned to 2.1.x.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

__all__ = ["batched_server_class", "connection_class", "open_endpoint"]

_QUIC_V1 = 0x00000001
_QUIC_V1_INITIAL_SALT = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")  # RFC 9001 §5.2


def connection_class() -> type | None:
    """A qh3 ``QuicConnection`` subclass for the server side, or ``None`` if qh3 differs.

    1. Serves clients with a zero-length connection ID. Chromium's QUIC clients send a
       zero-length Source Connection ID, which qh3 2.1.0 mishandles twice on the server
       side: its Rust core only adopts a *non-empty* client SCID, so every reply goes to
       the client's original Destination CID, which Chromium drops (it never sees a
       ServerHello); and its TLS bridge records the client's SCID only when non-empty, so
       the client's empty ``initial_source_connection_id`` fails validation
       (TRANSPORT_PARAMETER_ERROR). RFC 9000 §5.1 and §7.3 allow zero-length IDs. For an
       Initial with an empty SCID (QUIC v1, a Destination CID of the length the server
       routes by) this builds the core with an empty peer CID, uses the client's chosen
       Destination CID as our own (the core accepts the client's Initials by local CID),
       installs the Initial keys derived from it, and records the empty
       ``initial_source_connection_id``. Other connections are untouched.
    2. Skips packet logging when no QUIC logger is configured: qh3 parses the header of
       every packet it sends before finding out there is no logger.
    """
    try:
        from qh3._hazmat import pull_quic_header
        from qh3.quic.connection import QuicConnection
        from qh3.quic.crypto import derive_key_iv_hp
        from qh3.quic.packet import QuicPacketType
        from qh3.tls import CipherSuite, hkdf_expand_label, hkdf_extract
    except ImportError:
        return None
    needed = ("_create_core", "_learn_remote_source_cid", "_log_packets")
    if not all(hasattr(QuicConnection, name) for name in needed):
        return None

    class EdgeQuicConnection(QuicConnection):
        _zero_length_peer_cid = False

        def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
            if self._core is None and not self._is_client and len(data) >= 1200:
                try:
                    header = pull_quic_header(data, 0, self._configuration.connection_id_length)
                except ValueError:
                    header = None
                if (
                    header is not None
                    and header[0] == _QUIC_V1
                    and header[1] == int(QuicPacketType.INITIAL)
                    and header[4] == b""
                    and len(header[3]) == self._configuration.connection_id_length
                ):
                    self._zero_length_peer_cid = True
                    self.host_cid = header[3]  # QuicServer also routes this CID to us
            super().receive_datagram(data, addr, now)

        def _create_core(self, remote_addr: Any, initial_dcid: bytes, now: float) -> None:
            if not self._zero_length_peer_cid:
                super()._create_core(remote_addr, initial_dcid, now)
                return
            super()._create_core(remote_addr, b"", now)
            core = self._require_core()
            initial_secret = hkdf_extract(256, _QUIC_V1_INITIAL_SALT, initial_dcid)
            for label, direction in ((b"client in", "receive"), (b"server in", "send")):
                secret = hkdf_expand_label(256, initial_secret, label, b"", 32)
                key, iv, hp = derive_key_iv_hp(
                    cipher_suite=CipherSuite.AES_128_GCM_SHA256, secret=secret, version=_QUIC_V1
                )
                core.install_packet_key(direction, 0, ("aes-128-gcm", "aes-128-ecb"), key, iv, hp, 0)

        def _learn_remote_source_cid(self, data: bytes) -> None:
            super()._learn_remote_source_cid(data)
            if self._zero_length_peer_cid and self._tls is not None and not self._handshake_complete:
                self._tls.remote_initial_source_connection_id = b""

        def _log_packets(self, event: str, data: bytes) -> None:
            if getattr(self, "_quic_logger", None) is not None:
                super()._log_packets(event, data)

    return EdgeQuicConnection


def batched_server_class(base: type) -> type:
    """``base`` (qh3's ``QuicServer``) with a batch receive path for GRO/recvmmsg transports.

    The transport calls ``datagrams_received`` with every datagram one read returned from
    one address. Long-header packets (handshakes, new connections) take the library's own
    per-datagram path; each run of short-header packets addressed to one connection ID goes
    to that connection in one call, so the connection processes the run and transmits once.
    Packets for an unknown connection ID are dropped, as the per-datagram path does. One read
    can hold packets of many connections: an error raised by one connection is reported and
    the others still get theirs.
    """

    class BatchedQuicServer(base):  # type: ignore[misc]
        def datagrams_received(self, datagrams: list[bytes], addr: Any) -> None:
            cid_end = 1 + self._configuration.connection_id_length
            protocols = self._protocols
            count = len(datagrams)
            i = 0
            while i < count:
                first = datagrams[i]
                if not first or first[0] & 0x80:
                    if first:
                        self._deliver(self.datagram_received, first, addr)
                    i += 1
                    continue
                cid = first[1:cid_end]
                j = i + 1
                while j < count and datagrams[j][:1] and not datagrams[j][0] & 0x80:
                    if datagrams[j][1:cid_end] != cid:
                        break
                    j += 1
                protocol = protocols.get(cid)
                if protocol is not None:
                    if j - i == 1:
                        self._deliver(protocol.datagram_received, first, addr)
                    else:
                        self._deliver(protocol.datagrams_received, datagrams[i:j], addr)
                i = j

        def _deliver(self, receive: Any, data: Any, addr: Any) -> None:
            try:
                receive(data, addr)
            except Exception as exc:  # one connection's fault must not drop the others' packets
                self._loop.call_exception_handler(
                    {"message": "QUIC connection failed on received packets", "exception": exc}
                )

    return BatchedQuicServer


async def open_endpoint(factory: Any, sock: socket.socket) -> tuple[Any, Any]:
    """Serve ``sock`` with qh3's GSO/GRO transport when it is there, else the loop's own."""
    loop = asyncio.get_running_loop()
    try:
        from qh3.asyncio._transport import create_optimized_datagram_transport
    except ImportError:
        return await loop.create_datagram_endpoint(factory, sock=sock)
    return await create_optimized_datagram_transport(loop, factory, sock=sock)
