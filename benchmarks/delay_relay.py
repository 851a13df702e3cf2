"""A userspace delay relay: a stand-in for ``tc netem delay`` on kernels without netem.

One process serves any number of links. Each link listens on a local address (the
source namespace's loopback, in ``benchmarks/regions.py``), connects to the real
server, and forwards every chunk after the link's one-way delay, in both directions,
keeping order (a chunk read at ``t`` leaves at ``t + delay``; throughput is not
throttled, only latency added). A new TCP connection also pays one extra round trip
before its first byte goes upstream (the handshake a real link would cost).
A UDP link (for QUIC) keeps one upstream socket per client address and delays each
datagram both ways.

    python -m benchmarks.delay_relay --link tcp:127.0.0.1:8080=10.77.0.5:8080@5 \
        --link udp:127.0.0.1:8443=10.77.0.5:8443@5 --ready-file F --lifetime 900

Bounded: the process exits after ``--lifetime`` seconds (or on SIGTERM); each idle
UDP flow is dropped after 60 s; each upstream connect has a 5 s timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CONNECT_TIMEOUT = 5.0
UDP_IDLE = 60.0
CHUNK = 256 * 1024


@dataclass(frozen=True)
class Link:
    proto: str
    listen: tuple[str, int]
    target: tuple[str, int]
    delay: float  # one-way, seconds

    @classmethod
    def parse(cls, text: str) -> Link:
        proto, _, rest = text.partition(":")
        addrs, _, ms = rest.rpartition("@")
        listen, _, target = addrs.partition("=")
        lh, _, lp = listen.rpartition(":")
        th, _, tp = target.rpartition(":")
        if proto not in ("tcp", "udp"):
            raise ValueError(f"link {text!r}: proto must be tcp or udp")
        return cls(proto, (lh, int(lp)), (th, int(tp)), float(ms) / 1000.0)


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, extra: float
) -> None:
    """Read chunks from ``reader`` and write each to ``writer`` ``delay`` seconds later, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError, RuntimeError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(send())
    first = True
    try:
        while True:
            data = await reader.read(CHUNK)
            due = loop.time() + delay + (extra if first else 0.0)
            first = False
            await queue.put((due, data))
            if not data:
                break
        await sender
    finally:
        sender.cancel()


async def _tcp_link(link: Link) -> asyncio.base_events.Server:
    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        uw: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                ur, uw = await asyncio.open_connection(*link.target)
        except (OSError, TimeoutError):
            cw.close()  # the server is down: the client sees its connection closed, as a reset
            return
        up = asyncio.ensure_future(_pump(cr, uw, link.delay, 2 * link.delay))
        down = asyncio.ensure_future(_pump(ur, cw, link.delay, 0.0))
        try:
            done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_EXCEPTION)
            if any(t.exception() for t in done if not t.cancelled()):
                for t in pending:
                    t.cancel()
            elif pending:
                await asyncio.wait(pending)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for t in (up, down):
                t.cancel()
            for w in (cw, uw):
                with contextlib.suppress(Exception):
                    w.close()

    return await asyncio.start_server(handle, *link.listen, reuse_address=True)


class _UpstreamFlow(asyncio.DatagramProtocol):
    def __init__(self, back: asyncio.DatagramTransport, client: tuple[str, int], delay: float) -> None:
        self.back, self.client, self.delay = back, client, delay
        self.transport: asyncio.DatagramTransport | None = None
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.last = time.monotonic()
        asyncio.get_running_loop().call_later(self.delay, self.back.sendto, data, self.client)


class _UdpFront(asyncio.DatagramProtocol):
    def __init__(self, link: Link) -> None:
        self.link = link
        self.flows: dict[tuple[str, int], asyncio.Future[_UpstreamFlow]] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Future[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.ensure_future(self._forward(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _forward(self, data: bytes, addr: tuple[str, int]) -> None:
        # the first datagram of a flow creates its upstream socket; datagrams arriving
        # meanwhile wait for the same one (one upstream source port per client)
        pending = self.flows.get(addr)
        if pending is None:
            pending = asyncio.ensure_future(self._open(addr))
            self.flows[addr] = pending
        flow = await pending
        flow.last = time.monotonic()
        await asyncio.sleep(self.link.delay)
        if flow.transport is not None:
            with contextlib.suppress(OSError):
                flow.transport.sendto(data)

    async def _open(self, addr: tuple[str, int]) -> _UpstreamFlow:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        _, flow = await loop.create_datagram_endpoint(
            lambda: _UpstreamFlow(self.transport, addr, self.link.delay),  # type: ignore[arg-type]
            remote_addr=self.link.target,
        )
        return flow

    def reap(self) -> None:
        now = time.monotonic()
        for addr, pending in list(self.flows.items()):
            if not pending.done() or pending.exception() is not None:
                continue
            flow = pending.result()
            if now - flow.last > UDP_IDLE and flow.transport is not None:
                flow.transport.close()
                del self.flows[addr]


async def serve(links: list[Link], ready_file: Path | None, lifetime: float) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: None if stop.done() else stop.set_result(None))
    servers = []
    fronts = []
    for link in links:
        if link.proto == "tcp":
            servers.append(await _tcp_link(link))
        else:
            front = _UdpFront(link)
            await loop.create_datagram_endpoint(lambda f=front: f, local_addr=link.listen)  # type: ignore[misc]
            fronts.append(front)
    if ready_file is not None:
        ready_file.write_text("ready\n")
    end = loop.time() + lifetime
    while not stop.done() and loop.time() < end:
        await asyncio.wait([stop], timeout=min(5.0, max(0.0, end - loop.time())))
        for front in fronts:
            front.reap()
    for s in servers:
        s.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.delay_relay", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--link", action="append", required=True, help="tcp|udp:LHOST:LPORT=THOST:TPORT@MS")
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--lifetime", type=float, default=900.0, help="exit after this many seconds")
    args = parser.parse_args(argv)
    links = [Link.parse(text) for text in args.link]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(links, args.ready_file, args.lifetime))
    return 0


if __name__ == "__main__":
    sys.exit(main())
