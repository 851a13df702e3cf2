"""SIGTERM drains the node: readiness turns 503, the ports stop accepting (cleartext, TLS, new
QUIC connections), a download in flight finishes whole, then the process exits 0. Real
processes on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from edge.wiring.devcert import DevCert, ensure_dev_cert
from tests.support.h3client import h3_client
from tests.support.nodes import free_port

REPO = Path(__file__).resolve().parents[2]
SIZE = 24 * 1024 * 1024


def wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        assert proc.poll() is None, "the process exited before listening"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port} after {deadline} s")


def readyz(admin: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@dataclass
class Node:
    """An `edge serve` process (30 s of shutdown grace) in front of an `origin serve` one."""

    edge: subprocess.Popen[bytes]
    port: int
    admin: int
    tls: int
    cert: DevCert | None


@contextlib.contextmanager
def node(root: Path, secure: bool = False, *flags: str) -> Iterator[Node]:
    """Origin and edge on loopback; with ``secure`` a dev certificate and HTTPS on ``tls``
    (HTTP/3 too unless ``flags`` say otherwise). Both are killed if a test leaves them up."""
    origin_port, port, admin, tls = free_port(), free_port(), free_port(), free_port()
    cert = ensure_dev_cert(root / "cert") if secure else None
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "origin", "serve", "--root", str(root), "--listen", f"127.0.0.1:{origin_port}"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
    ]  # fmt: skip
    try:
        wait_port(origin_port, procs[0])
        secure_flags = []
        if cert is not None:
            secure_flags = [
                "--cert",
                str(cert.cert),
                "--key",
                str(cert.key),
                "--tls-listen",
                f"127.0.0.1:{tls}",
            ]
        edge = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", "--upstream", f"http://127.0.0.1:{origin_port}",
             "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}", "--shutdown-grace", "30",
             "--access-log", "off", *secure_flags, *flags],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        procs.append(edge)
        wait_port(tls if cert is not None else port, edge)
        yield Node(edge, port, admin, tls, cert)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def start_download(sock: socket.socket | ssl.SSLSocket, host: bytes) -> bytearray:
    """Ask for /big.bin on a client with a small window (a slow reader); the body bytes so far."""
    sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
    received = bytearray()
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, rest = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % SIZE in head
    return bytearray(rest)


def slow_socket(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # a slow client: a small window
    return sock


def finish_download(sock: socket.socket | ssl.SSLSocket, got: bytearray, pace: float = 0.0) -> bytes:
    while len(got) < SIZE:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(got)} of {SIZE} bytes"
        got += chunk
        if pace:
            time.sleep(pace)  # the scenario: a slow reader, not a wait for the node
    sock.close()
    return bytes(got)


def wait_refused(port: int, what: str) -> None:
    """Until a TCP connect to ``port`` fails (its listener closed)."""
    end = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return
        assert time.monotonic() < end, f"{what} still accepts connections"
        time.sleep(0.02)


def test_sigterm_lets_a_download_in_flight_finish_then_exits_0(tmp_path: Path) -> None:
    body = os.urandom(SIZE)
    (tmp_path / "big.bin").write_bytes(body)
    with node(tmp_path) as n:
        assert readyz(n.admin) == 200
        client = slow_socket(n.port)
        got = start_download(client, b"cdn.test")

        n.edge.send_signal(signal.SIGTERM)
        # Readiness turns 503 while the response is still being sent (the admin API stays up).
        end = time.monotonic() + 10
        while readyz(n.admin) != 503:
            assert time.monotonic() < end, "readiness did not turn 503"
            time.sleep(0.02)
        assert n.edge.poll() is None, "the node exited with a response in flight"
        wait_refused(n.port, "the port")

        got_all = finish_download(client, got, pace=0.001)  # the slow client reads on: all of it
        assert hashlib.sha256(got_all).digest() == hashlib.sha256(body).digest()
        assert n.edge.wait(timeout=30) == 0


def test_sigterm_closes_the_tls_listener_first_and_a_tls_download_finishes(tmp_path: Path) -> None:
    body = os.urandom(SIZE)
    (tmp_path / "big.bin").write_bytes(body)
    with node(tmp_path, True, "--quic-listen", "") as n:
        assert n.cert is not None
        context = ssl.create_default_context(cafile=str(n.cert.ca))
        client = context.wrap_socket(slow_socket(n.tls), server_hostname="localhost")
        got = start_download(client, b"localhost")

        n.edge.send_signal(signal.SIGTERM)
        wait_refused(n.tls, "the TLS port")  # it stops accepting while the download goes on
        assert n.edge.poll() is None, "the node exited with a response in flight"
        got_all = finish_download(client, got)
        assert hashlib.sha256(got_all).digest() == hashlib.sha256(body).digest()
        assert n.edge.wait(timeout=30) == 0


def test_sigterm_refuses_new_http3_connections_and_serves_open_ones(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(SIZE))
    (tmp_path / "small.txt").write_bytes(b"small\n")
    with node(tmp_path, True) as n:
        assert n.cert is not None
        ca = str(n.cert.ca)
        # A download held in flight (nothing read) keeps the node draining while HTTP/3 is tried.
        client = slow_socket(n.port)
        start_download(client, b"cdn.test")

        async def scenario() -> tuple[int, bool, int]:
            async with h3_client("127.0.0.1", n.tls, ca) as open_one:
                before = (await open_one.request("/small.txt")).status
                n.edge.send_signal(signal.SIGTERM)
                async with httpx.AsyncClient() as http:
                    while (await http.get(f"http://127.0.0.1:{n.admin}/readyz")).status_code != 503:
                        await asyncio.sleep(0.02)
                try:
                    async with asyncio.timeout(2), h3_client("127.0.0.1", n.tls, ca) as new_one:
                        await new_one.request("/small.txt")
                    refused = False
                except (TimeoutError, ConnectionError):
                    refused = True
                after = (await asyncio.wait_for(open_one.request("/small.txt"), 10)).status
            return before, refused, after

        before, refused, after = asyncio.run(scenario())
        assert before == 200
        assert refused, "a new HTTP/3 connection was accepted during the drain"
        assert after == 200, "an HTTP/3 connection opened before the drain was not served"
        client.close()
        assert n.edge.wait(timeout=30) == 0
