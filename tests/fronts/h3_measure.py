"""Bounded HTTP/3 load on loopback for each QUIC backend: ``python -m tests.fronts.h3_measure``.

Starts the origin package on a temporary root (1 KiB and 256 KiB files) and
``edge serve --dev-cert`` pinned to core 0, then drives cache hits from this
process pinned to core 1 with the aioquic client in ``h3client`` (connections x
streams, fixed duration). Prints req/s, MB/s and the client's own CPU share:
a share near 100 % means the figure is the client's limit, not the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.h3client import LoadResult, h3_load


async def qh3_load(
    port: int, path: str, cafile: str, connections: int, streams: int, duration: float
) -> LoadResult:
    """The same bounded load from qh3's client (Rust core): less client-bound than aioquic's."""
    from qh3.asyncio.client import connect
    from qh3.asyncio.protocol import QuicConnectionProtocol
    from qh3.h3.connection import H3_ALPN, H3Connection
    from qh3.h3.events import DataReceived, HeadersReceived
    from qh3.quic.configuration import QuicConfiguration

    class Client(QuicConnectionProtocol):  # type: ignore[misc]
        def __init__(self, *a: object, **k: object) -> None:
            super().__init__(*a, **k)
            self.h3 = H3Connection(self._quic)
            self.waiters: dict[int, asyncio.Future[None]] = {}
            self.received = 0

        def quic_event_received(self, event: object) -> None:
            for ev in self.h3.handle_event(event):
                if isinstance(ev, DataReceived):
                    self.received += len(ev.data)
                if isinstance(ev, HeadersReceived | DataReceived) and ev.stream_ended:
                    self.waiters.pop(ev.stream_id).set_result(None)

        async def get(self) -> None:
            sid = self._quic.get_next_available_stream_id()
            fut = asyncio.get_running_loop().create_future()
            self.waiters[sid] = fut
            head = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"),
                    (b":path", path.encode())]  # fmt: skip
            self.h3.send_headers(sid, head, end_stream=True)
            self.transmit()
            await fut

    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    config.load_verify_locations(cafile=cafile)
    count = 0
    deadline = 0.0

    async def worker(client: Client) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            await client.get()
            count += 1

    async def run() -> LoadResult:
        nonlocal deadline
        from contextlib import AsyncExitStack

        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    connect("127.0.0.1", port, configuration=config, create_protocol=Client)
                )
                for _ in range(connections)
            ]
            for c in clients:
                await c.get()
                c.received = 0
            cpu0, start = time.process_time(), time.monotonic()
            deadline = start + duration
            await asyncio.gather(*(worker(c) for c in clients for _ in range(streams)))
            elapsed, cpu = time.monotonic() - start, time.process_time() - cpu0
            return LoadResult(count, sum(c.received for c in clients), elapsed, cpu)

    return await run()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--backends", default="qh3,aioquic")
    parser.add_argument("--client", default="qh3", choices=("qh3", "aioquic"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="h3measure-"))
    root = tmp / "root"
    root.mkdir()
    (root / "1k.bin").write_bytes(os.urandom(1024))
    (root / "256k.bin").write_bytes(os.urandom(256 * 1024))
    env = {**os.environ, "XDG_STATE_HOME": str(tmp / "state")}
    origin_port = _free_port()
    origin = subprocess.Popen(
        [sys.executable, "-m", "origin", "serve", "--root", str(root), "--listen", f"127.0.0.1:{origin_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.sched_setaffinity(0, {1})
    try:
        _wait(origin_port)
        for backend in args.backends.split(","):
            port = _free_port()
            edge = subprocess.Popen(
                ["taskset", "-c", "0", sys.executable, "-m", "edge.cli", "serve",
                 "--upstream", f"http://127.0.0.1:{origin_port}", "--listen", f"127.0.0.1:{_free_port()}",
                 "--tls-listen", f"127.0.0.1:{port}", "--quic-listen", f"127.0.0.1:{port}",
                 "--dev-cert", "--quic-backend", backend, "--admin-listen", ""],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                _wait(port)
                ca = str(tmp / "state" / "edge-cdn" / "certs" / "ca.pem")
                for path in ("/1k.bin", "/256k.bin"):
                    if args.client == "qh3":
                        load = qh3_load(port, path, ca, args.connections, args.streams, args.duration)
                    else:
                        load = h3_load(
                            "127.0.0.1", port, path, ca, args.connections, args.streams, args.duration
                        )
                    result = asyncio.run(load)
                    share = 100 * result.cpu_seconds / result.seconds
                    print(
                        f"server {backend:8} client {args.client:8} {path:10} {result.rps:8.0f} req/s {result.mbps:7.1f} MB/s "
                        f"client CPU {share:3.0f}%",
                        flush=True,
                    )
            finally:
                edge.terminate()
                edge.wait(10)
    finally:
        origin.terminate()
        origin.wait(10)


if __name__ == "__main__":
    main()
