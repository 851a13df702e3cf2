"""A bounded flood of QUIC Initials against one edge: its memory, a normal client's latency,
and the bytes the edge sends back to the flooding addresses.

One edge process (``--quic-backend``, one worker) with HTTP/3 on loopback, in front of the
fleet's origin. ``--initials`` client Initials (real ones: built by aioquic's client
``QuicConnection``, 1200-byte datagrams, ALPN h3, SNI localhost; built before the flood
starts) leave from ``--ports`` UDP sockets, spread evenly over ``--seconds``; the flooders
never answer. Meanwhile a normal HTTP/3 client (aioquic, certificate verified, a new
connection per request, as a browser's first visit) fetches a 1 KiB object again and again.
After the flood the run waits ``--settle`` seconds for the edge's retransmissions to arrive.

Reported: the edge's RSS before, at its peak (sampled every 50 ms) and after; the victim's
request count, failures, median and max latency; per flooding port, bytes received / bytes
sent (RFC 9000 §8.1 allows at most 3 before validation), the worst and the total. Usage::

    python -m benchmarks.quic_flood                       # 3,000 Initials, 300 ports, 6 s
    python -m benchmarks.quic_flood --quic-backend aioquic --json

Only loopback; every loop is bounded in time and count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.fleet import Fleet, h3_get

__all__ = ["FloodReport", "build_initials", "flood", "run"]

VICTIM_TIMEOUT = 10.0


@dataclass
class FloodReport:
    backend: str
    initials: int
    ports: int
    seconds: float
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_after_mib: float = 0.0
    victim_requests: int = 0
    victim_failures: int = 0
    victim_median_s: float = 0.0
    victim_max_s: float = 0.0
    sent_bytes: int = 0
    received_bytes: int = 0
    worst_port_ratio: float = 0.0
    """Max over flooding ports of bytes received from the edge / bytes sent to it."""
    errors_logged: int = 0
    """'QUIC connection failed' lines in the edge's log during the run."""
    victim_latencies: list[float] = field(default_factory=list)


def build_initials(count: int, port: int) -> list[bytes]:
    """``count`` first datagrams of distinct aioquic client connections to 127.0.0.1:``port``."""
    from aioquic.h3.connection import H3_ALPN
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    out: list[bytes] = []
    now = time.time()
    for _ in range(count):
        quic = QuicConnection(configuration=config)
        quic.connect(("127.0.0.1", port), now=now)
        out.extend(data for data, _ in quic.datagrams_to_send(now=now))
    return out


class Counter(asyncio.DatagramProtocol):
    """A flooding socket: counts what the edge sends back, never answers."""

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += len(data)


async def flood(port: int, initials: list[bytes], ports: int, seconds: float, settle: float) -> list[Counter]:
    """Send ``initials`` from ``ports`` sockets over ``seconds``; count replies until ``settle`` after."""
    loop = asyncio.get_running_loop()
    endpoints = []
    for _ in range(ports):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        endpoints.append(await loop.create_datagram_endpoint(Counter, sock=sock))
    began = loop.time()
    step = seconds / max(1, len(initials))
    try:
        for i, data in enumerate(initials):
            delay = began + i * step - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            transport, counter = endpoints[i % ports]
            transport.sendto(data, ("127.0.0.1", port))
            counter.sent += len(data)
        await asyncio.sleep(settle)
    finally:
        for transport, _ in endpoints:
            transport.close()
    return [counter for _, counter in endpoints]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _run(fleet: Fleet, node: Any, path: str, args: argparse.Namespace, report: FloodReport) -> None:
    assert node.quic_port is not None and fleet.ca is not None and node.proc is not None
    pid, port, ca = node.proc.pid, node.quic_port, fleet.ca
    initials = build_initials(args.initials, port)
    for _ in range(3):  # warm: the object is cached, the first connection's costs are paid
        await h3_get(port, path, ca, host=fleet.host, timeout=VICTIM_TIMEOUT)
    report.rss_before_mib = report.rss_peak_mib = rss_mib(pid)
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            report.rss_peak_mib = max(report.rss_peak_mib, rss_mib(pid))
            await asyncio.sleep(0.05)

    async def victim() -> None:
        while not done.is_set():
            began = time.monotonic()
            try:
                reply = await h3_get(port, path, ca, host=fleet.host, timeout=VICTIM_TIMEOUT)
                ok = reply.status == 200
            except Exception:
                ok = False
            report.victim_requests += 1
            report.victim_failures += not ok
            report.victim_latencies.append(round(time.monotonic() - began, 4))
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(sample()), asyncio.create_task(victim())]
    await asyncio.sleep(0.2)
    counters = await flood(port, initials, args.ports, args.seconds, args.settle)
    done.set()
    await asyncio.wait_for(asyncio.gather(*tasks), VICTIM_TIMEOUT + 5)
    report.rss_after_mib = rss_mib(pid)
    report.sent_bytes = sum(c.sent for c in counters)
    report.received_bytes = sum(c.received for c in counters)
    report.worst_port_ratio = round(max((c.received / c.sent for c in counters if c.sent), default=0.0), 3)
    latencies = report.victim_latencies
    if latencies:
        report.victim_median_s = round(statistics.median(latencies), 4)
        report.victim_max_s = round(max(latencies), 4)


def run(args: argparse.Namespace) -> FloodReport:
    report = FloodReport(args.quic_backend, args.initials, args.ports, args.seconds)
    with Fleet() as fleet:
        path = fleet.add_object("/flood/victim.bin", 1024)
        fleet.start_origin()
        node = fleet.start_node(
            fleet.edge_spec("flooded", h3=True, options={"quic-backend": args.quic_backend})
        )
        logged = node.log.stat().st_size
        asyncio.run(_run(fleet, node, path, args, report))
        with node.log.open("rb") as log:
            log.seek(logged)
            report.errors_logged = log.read().count(b"QUIC connection failed")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--initials", type=int, default=3000)
    parser.add_argument("--ports", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to count replies after the flood")
    parser.add_argument("--quic-backend", default="qh3", choices=("qh3", "aioquic"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not (0 < args.initials <= 20_000 and 0 < args.ports <= 2_000 and 0 < args.seconds <= 60):
        parser.error("bounded runs only: initials ≤ 20000, ports ≤ 2000, seconds ≤ 60")
    report = run(args)
    figures = asdict(report)
    if args.json:
        print(json.dumps(figures))
        return 0
    figures.pop("victim_latencies")
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
