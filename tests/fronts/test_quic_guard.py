"""Connection state before address validation is bounded (edge/fronts/quic_guard.py): above a
threshold new Initials get a QUIC Retry, and a flood neither grows the listener's connections
nor keeps a normal client from being served; what the edge sends to a flooding address stays
within 3x what it received (RFC 9000 §8.1). On both QUIC backends.

The benchmark at full size (3,000 Initials from 300 ports in 6 s) is
``python -m benchmarks.quic_flood``; the figures are in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.packet import pull_quic_header

from benchmarks.quic_flood import build_initials, flood
from edge.fronts.quic_guard import HalfOpen, HalfOpenLimits, initial_header
from tests.support.h3client import h3_client
from tests.support.nodes import SecureEdge
from tests.support.scripted_origin import ScriptedOrigin, fixed


def test_initial_header_reads_what_aioquic_reads() -> None:
    for initial in build_initials(3, 4433):
        header = pull_quic_header(Buffer(data=initial), host_cid_length=8)
        assert initial_header(initial) == (header.destination_cid, header.token)
    data = bytearray(build_initials(1, 4433)[0])
    assert initial_header(bytes(data[:5]) + b"\x15" + b"\x00" * 40) is None  # a CID over 20 bytes
    assert initial_header(b"\x40" + b"\x01" * 1199) is None  # a short header
    data[0] = (data[0] & 0xCF) | 0x20  # a Handshake packet's type bits
    assert initial_header(bytes(data)) is None


FEW = 16
"""Connections a flood from one address may open: the guard's threshold per address, with room."""


class Quic:
    def __init__(self) -> None:
        self._handshake_complete = False


class Protocol:
    def __init__(self) -> None:
        self._quic = Quic()


def test_half_open_admits_then_retries_per_address_and_listener_then_drops() -> None:
    half_open = HalfOpen(HalfOpenLimits(retry_above=4, retry_above_per_address=2, max_half_open=6))
    routes: dict[bytes, object] = {}

    def open_one(host: str, cid: bytes) -> Protocol:
        protocol = Protocol()
        routes[cid] = protocol
        half_open.add(protocol, host, cid)
        return protocol

    first = open_one("a", b"1")
    open_one("a", b"2")
    assert half_open.verdict("a", validated=False) == "retry"  # this address has 2
    assert half_open.verdict("b", validated=False) == "admit"
    open_one("b", b"3")
    open_one("c", b"4")
    assert half_open.verdict("d", validated=False) == "retry"  # the listener has 4
    assert half_open.verdict("d", validated=True) == "admit"  # came back with a Retry token
    open_one("d", b"5")
    open_one("d", b"6")
    assert half_open.verdict("e", validated=True) == "drop"  # 6: the listener's hard cap
    first._quic._handshake_complete = True
    del routes[b"2"]  # a connection that went away
    half_open.prune(routes)
    assert len(half_open.conns) == 4 and half_open.per_host["a"] == 0
    assert half_open.verdict("a", validated=False) == "retry"  # the listener still has 4
    assert (half_open.retries, half_open.dropped) == (3, 1)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_flood_of_initials_costs_no_connections_and_a_client_is_served(
    origin: ScriptedOrigin, secure_edge: SecureEdge, backend: str
) -> None:
    origin.routes["/ok"] = fixed(200, b"fine", [("Cache-Control", "max-age=60")])
    assert secure_edge.quic is not None
    server = secure_edge.quic.servers[0]
    assert HalfOpenLimits().retry_above_per_address < FEW
    port, ca = secure_edge.port, str(secure_edge.cert.ca)
    initials = build_initials(300, port)
    done = asyncio.Event()
    latencies: list[float] = []

    async def client() -> None:
        while not done.is_set() and len(latencies) < 200:
            began = time.monotonic()
            async with h3_client("127.0.0.1", port, ca) as conn:  # a new connection each time
                reply = await asyncio.wait_for(conn.request("/ok"), 5)
            assert (reply.status, bytes(reply.body)) == (200, b"fine")
            latencies.append(time.monotonic() - began)
            await asyncio.sleep(0.02)

    task = asyncio.create_task(client())
    counters = await flood(port, initials, ports=30, seconds=1.5, settle=1.0)
    done.set()
    await asyncio.wait_for(task, 10)

    # Without the guard each Initial opens a connection (≈40 KB, kept for the idle timeout).
    connections = {id(p) for p in server._protocols.values()}
    assert len(connections) <= FEW + len(latencies), (
        f"{len(connections)} connections after 300 Initials from one address"
    )
    assert server.half_open.retries >= 300 - FEW - len(latencies)
    assert latencies and max(latencies) < 1.0, latencies
    ratios = [c.received / c.sent for c in counters]
    assert max(ratios) <= 3.0, f"a flooding address got {max(ratios):.2f}x what it sent"
